"""First-boot provisioning: PIP_PACKAGES from a package index and PROVISIONING_SCRIPT from a path
and from a URL, both served by a loopback server the test starts; a script in the reference
image's style (`${WORKSPACE}`, `git clone`, `wget`, its tools) against a git repository served there.

The server runs in a sidecar container whose network namespace the image joins, so it is on the
image's own 127.0.0.1: no host port, no bridge address. The sidecar also publishes the image's
external ports (a joined container cannot publish its own).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import CPU_IMAGE, exec_text, loopback_ports, wait_for
from tests.container.runtime_support import (
    TOKEN,
    bearer,
    program_states,
    request,
    wait_answering,
)

pytestmark = pytest.mark.container

INDEX_PORT = 8999


def probe_wheel() -> tuple[str, bytes]:
    """A minimal pure-Python wheel: module llama_images_probe with VALUE = 42."""
    name = "llama_images_probe-1.0-py3-none-any.whl"
    files = {
        "llama_images_probe.py": b"VALUE = 42\n",
        "llama_images_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: llama-images-probe\nVersion: 1.0\n",
        "llama_images_probe-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    record += "llama_images_probe-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr("llama_images_probe-1.0.dist-info/RECORD", record)
    return name, buffer.getvalue()


@pytest.fixture
def served_files(tmp_path: Path) -> Path:
    root = tmp_path / "srv"
    name, data = probe_wheel()
    (root / "simple" / "llama-images-probe").mkdir(parents=True)
    (root / name).write_bytes(data)
    (root / "simple" / "llama-images-probe" / "index.html").write_text(
        f'<a href="../../{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>\n'
    )
    (root / "provision.sh").write_text("#!/usr/bin/env bash\necho 'provisioned from a URL'\ntouch /tmp/from-url\n")
    return root


@pytest.fixture
def with_index(main_build: Any, client: Any, served_files: Path) -> Iterator[Callable[..., Any]]:
    """Runs the image in the network namespace of a sidecar serving `served_files` on 127.0.0.1."""
    started: list[Any] = []

    def run(environment: dict[str, str]) -> tuple[Any, Any]:
        sidecar = client.containers.run(
            CPU_IMAGE,
            ["python3", "-m", "http.server", str(INDEX_PORT), "--bind", "127.0.0.1", "--directory", "/srv"],
            entrypoint=[],
            detach=True,
            volumes={str(served_files): {"bind": "/srv", "mode": "ro"}},
            ports=loopback_ports(),
        )
        started.append(sidecar)
        container = client.containers.run(
            CPU_IMAGE, detach=True, environment=environment, network_mode=f"container:{sidecar.id}"
        )
        started.append(container)
        return sidecar, container

    yield run
    for container in reversed(started):
        container.remove(force=True)


def test_pip_packages_install_from_a_package_index_into_the_users_environment(
    with_index: Callable[..., Any],
) -> None:
    sidecar, container = with_index(
        {
            "PIP_PACKAGES": "llama-images-probe==1.0",
            "PIP_INDEX_URL": f"http://127.0.0.1:{INDEX_PORT}/simple",
            "OPEN_BUTTON_TOKEN": TOKEN,
        }
    )
    wait_answering(sidecar, 1111, "/api/health", seconds=180)
    assert exec_text(container, "python", "-c", "import llama_images_probe; print(llama_images_probe.VALUE)") == (
        0,
        "42\n",
    )
    boot = request(sidecar, 1111, "/api/boot", headers=bearer()).json()
    assert boot["packages"] == "done"


def test_provisioning_script_from_a_url_runs_and_its_url_stays_out_of_the_logs(
    with_index: Callable[..., Any],
) -> None:
    signature = "X-Amz-Signature=s3cr3t-signature"  # a signed URL's query is a credential
    sidecar, container = with_index(
        {
            "PROVISIONING_SCRIPT": f"http://127.0.0.1:{INDEX_PORT}/provision.sh?{signature}",
            "OPEN_BUTTON_TOKEN": TOKEN,
        }
    )
    wait_answering(sidecar, 1111, "/api/health", seconds=120)

    def done() -> bool:
        return bool(request(sidecar, 1111, "/api/boot", headers=bearer()).json()["provisioning"] == "done")

    wait_for(done, 60, "provisioning did not finish", container)
    assert exec_text(container, "ls", "/tmp/from-url")[0] == 0
    assert "provisioned from a URL" in exec_text(container, "cat", "/var/log/provisioning.log")[1]
    assert "provisioned from a URL" in container.logs().decode()
    shown = [
        container.logs().decode(),
        exec_text(container, "cat", "/var/log/provisioning.log")[1],
        json.dumps(request(sidecar, 1111, "/api/boot", headers=bearer()).json()),
    ]
    assert not [text for text in shown if "s3cr3t" in text]


def test_provisioning_script_from_a_path_runs_in_the_background_once(
    run_container: Callable[..., Any], tmp_path: Path
) -> None:
    script = tmp_path / "provision.sh"
    script.write_text("#!/usr/bin/env bash\necho 'provisioning started'\nsleep 8\necho 'provisioning finished'\n")
    container = run_container(
        environment={"PROVISIONING_SCRIPT": "/provision.sh", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(script): {"bind": "/provision.sh", "mode": "ro"}},
    )
    wait_answering(container, 1111, "/api/health")
    # The portal answers while the script still runs.
    assert program_states(container)["provisioning"] == "RUNNING"
    assert request(container, 1111, "/api/boot", headers=bearer()).json()["provisioning"] == "running provision.sh"

    def done() -> bool:
        return bool(request(container, 1111, "/api/boot", headers=bearer()).json()["provisioning"] == "done")

    wait_for(done, 60, "provisioning did not finish", container)
    container.restart(timeout=10)
    wait_answering(container, 1111, "/api/health")
    wait_for(
        lambda: (
            "done on an earlier boot"
            in (request(container, 1111, "/api/boot", headers=bearer()).json()["provisioning"] or "")
        ),
        30,
        "the second boot did not skip provisioning",
        container,
    )
    assert container.logs().decode().count("provisioning finished") == 1


def test_a_failing_provisioning_script_is_shown_and_retried(run_container: Callable[..., Any], tmp_path: Path) -> None:
    script = tmp_path / "provision.sh"
    script.write_text("#!/usr/bin/env bash\necho 'trying'\nexit 4\n")
    container = run_container(
        environment={"PROVISIONING_SCRIPT": "/provision.sh", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(script): {"bind": "/provision.sh", "mode": "ro"}},
    )
    wait_answering(container, 1111, "/api/health")
    failed = "failed: the script exited with status 4; retried on the next boot"

    def reported() -> bool:
        return bool(request(container, 1111, "/api/boot", headers=bearer()).json()["provisioning"] == failed)

    wait_for(reported, 30, "the failure was not reported", container)
    container.restart(timeout=10)
    wait_answering(container, 1111, "/api/health")
    wait_for(lambda: container.logs().decode().count("trying") == 2, 30, "not retried on the next boot", container)


# A provisioning script in the reference image's style (its example scripts use ${WORKSPACE},
# `git clone` and `wget`), and the tools and settings its scripts count on.
REFERENCE_STYLE_SCRIPT = f"""#!/bin/bash
set -euo pipefail
cd "${{WORKSPACE}}"
git clone http://127.0.0.1:{INDEX_PORT}/models.git "${{WORKSPACE}}/models-repo"
git -C "${{WORKSPACE}}/models-repo" lfs install --local
wget -q -O "${{DATA_DIRECTORY}}weights.bin" http://127.0.0.1:{INDEX_PORT}/weights.bin
jq -r .name "${{WORKSPACE}}/models-repo/model.json" > "${{WORKSPACE}}/model-name"
unzip -q -o "${{WORKSPACE}}/models-repo/bundle.zip" -d "${{WORKSPACE}}/unzipped"
rsync -a "${{WORKSPACE}}/unzipped/" "${{WORKSPACE}}/synced/"
uv --version
ss -ltn | grep ':{INDEX_PORT} ' >/dev/null
ip -o link show lo
ps -p $$ -o comm=
nc -z 127.0.0.1 {INDEX_PORT}
printf '%s %s %s\\n' "${{PYTHONUNBUFFERED}}" "${{PIP_BREAK_SYSTEM_PACKAGES}}" "${{DATA_DIRECTORY}}" \\
    > "${{WORKSPACE}}/settings"
echo 'reference-style provisioning finished'
"""


def bare_repository(folder: Path) -> None:
    """A git repository served over git's dumb HTTP protocol by a plain file server."""
    work = folder.parent / "models-work"
    work.mkdir()
    (work / "model.json").write_text('{"name": "tiny-model"}\n')
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("config/settings.txt", "zipped\n")
    (work / "bundle.zip").write_bytes(bundle.getvalue())
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "models"]):
        subprocess.run([*git, "-C", str(work), *command], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "update-server-info"], check=True)


def test_a_reference_style_provisioning_script_finds_its_settings_and_tools(
    with_index: Callable[..., Any], served_files: Path
) -> None:
    """What a user met: WORKSPACE empty, git and wget (and jq, uv, ss, ...) missing, so such a
    script failed at its first line."""
    bare_repository(served_files / "models.git")
    (served_files / "weights.bin").write_bytes(b"\x00weights\xff" * 100)
    (served_files / "reference-style.sh").write_text(REFERENCE_STYLE_SCRIPT)
    sidecar, container = with_index(
        {"PROVISIONING_SCRIPT": f"http://127.0.0.1:{INDEX_PORT}/reference-style.sh", "OPEN_BUTTON_TOKEN": TOKEN}
    )
    wait_answering(sidecar, 1111, "/api/health", seconds=120)

    def finished() -> bool:
        state = request(sidecar, 1111, "/api/boot", headers=bearer()).json()["provisioning"] or ""
        return state == "done" or state.startswith("failed")

    wait_for(finished, 90, "provisioning did not finish", container)
    log = exec_text(container, "cat", "/var/log/provisioning.log")[1]
    assert request(sidecar, 1111, "/api/boot", headers=bearer()).json()["provisioning"] == "done", log
    assert "reference-style provisioning finished" in log
    assert exec_text(container, "cat", "/workspace/models-repo/model.json") == (0, '{"name": "tiny-model"}\n')
    assert exec_text(container, "cat", "/workspace/model-name") == (0, "tiny-model\n")
    assert exec_text(container, "cat", "/workspace/synced/config/settings.txt") == (0, "zipped\n")
    assert exec_text(container, "stat", "-c", "%s", "/workspace/weights.bin") == (0, "900\n")
    assert exec_text(container, "cat", "/workspace/settings") == (0, "1 1 /workspace/\n")
