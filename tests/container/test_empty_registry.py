"""`invoke clean` empties the loopback registry that `invoke engine` started (each test run
pushes to new namespaces there), and leaves a registry it did not start alone. Run against a
second registry of the same kind on its own port and folder, so the engine's stays as it is."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_host_tools

pytestmark = pytest.mark.container
SCRIPT = REPO_ROOT / "scripts" / "provision-engine.sh"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait_answering(address: str) -> None:
    deadline = time.monotonic() + 30
    while not answers(address):
        assert time.monotonic() < deadline, f"no registry at {address}"
        time.sleep(0.2)


def push_blob(address: str, content: bytes) -> str:
    """One blob, uploaded monolithically (the registry API, no engine needed); returns its digest."""
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    start = urllib.request.Request(f"http://{address}/v2/test/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=10) as reply:
        location = reply.headers["Location"]
    separator = "&" if "?" in location else "?"
    url = location if location.startswith("http") else f"http://{address}{location}"
    put = urllib.request.Request(
        f"{url}{separator}digest={digest}", data=content, method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    with urllib.request.urlopen(put, timeout=10) as reply:
        assert reply.status == 201
    return digest


def has_blob(address: str, digest: str) -> bool:
    request = urllib.request.Request(f"http://{address}/v2/test/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return False


def run_script(state: Path, address: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LLAMA_IMAGES_STATE_DIR": str(state), "LLAMA_IMAGES_REGISTRY": address,
                   "LLAMA_IMAGES_LOG_DIR": str(state / "log")}  # fmt: skip
    return subprocess.run(
        ["bash", str(SCRIPT), "--empty-registry"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def registry_address() -> Iterator[str]:
    require_host_tools(("docker-registry",), "docker-registry")
    yield f"127.0.0.1:{free_port()}"
    subprocess.run(["pkill", "-f", "^docker-registry serve .*/state/registry.yml$"], check=False)


def test_the_registry_the_script_started_is_emptied_and_answers_again(tmp_path: Path, registry_address: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("emptying the engine's registry is done as root (invoke engine runs as root)")
    state = tmp_path / "state"
    (state / "registry").mkdir(parents=True)
    config = state / "registry.yml"
    storage = f"storage:\n  filesystem:\n    rootdirectory: {state}/registry\n"
    config.write_text(f"version: 0.1\n{storage}http:\n  addr: {registry_address}\n", encoding="utf-8")
    # Started as `invoke engine` starts it: in the background of a shell that then exits.
    subprocess.run(["bash", "-c", f"nohup docker-registry serve {config} >/dev/null 2>&1 &"], check=True)
    wait_answering(registry_address)
    digest = push_blob(registry_address, b"pushed by an earlier test run")
    assert has_blob(registry_address, digest)

    emptied = run_script(state, registry_address)

    assert emptied.returncode == 0, emptied.stderr
    assert "emptying the loopback registry" in emptied.stderr
    assert answers(registry_address)
    assert not has_blob(registry_address, digest)


def test_a_registry_the_script_did_not_start_is_left_alone(tmp_path: Path, registry_address: str) -> None:
    state = tmp_path / "elsewhere"
    left = run_script(state, registry_address)
    assert left.returncode == 0, left.stderr
    assert "was not started by this script; left as it is" in left.stderr
    assert not (state / "registry").exists()
