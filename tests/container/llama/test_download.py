"""The launcher's download phase in the CPU image (issue: cold start at the link's speed): a model
downloaded with many connections resumes after the container is killed, the hub's CDN gets no
token, a server without ranges is served with one connection, LLAMA_DOWNLOAD_CONNECTIONS=0 leaves
the download to llama-server, and a /workspace volume from the reference image keeps its models.
The download itself is tested in depth without Docker: tests/llama_serving/test_download.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import shipped
from tests.container.llama.support import Llama, Models, bridge_gateway, model_ids
from tests.support.fake_hf_hub import FakeHub

pytestmark = pytest.mark.container

REPO = "org/repo-GGUF"
TOKEN = "hf_" + "G4t3d" * 7


def padded(models: Models, extra: int) -> bytes:
    """The tiny model with `extra` bytes after its tensors: a bigger download that still loads."""
    return (models.dir / "tiny.gguf").read_bytes() + bytes(extra)


def test_a_killed_container_downloads_only_the_rest_on_its_next_start(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, client: Any, tmp_path: Path
) -> None:
    big = padded(models, 8_000_000)
    workspace = {str(tmp_path): "/workspace"}
    with FakeHub(bridge_gateway(client), download_rate=50_000) as slow:  # 16 x 50 kB/s: 10 s
        slow.add_repo(REPO, {"tiny-Q4_K_M.gguf": big})
        env = {"LLAMA_MODEL": REPO, "HF_ENDPOINT": slow.url}
        first = start_llama(env=env, volumes=workspace, read_only=False)
        blobs = tmp_path / ".cache/llama/models--org--repo-GGUF/blobs"

        def half_kept() -> bool:  # half of it arrived, and aria2 has saved its control file since
            return slow.bytes_sent > len(big) // 2 and any(blobs.glob("*.aria2"))

        first.wait(half_kept, 60, "half of the download did not arrive")
        time.sleep(2.5)  # aria2 saves its control file every 2 s
        first.container.kill()  # SIGKILL, as a host that goes away
        sent = slow.bytes_sent
        slow.download_rate = 1_000_000
        second = start_llama(env=env, volumes=workspace, read_only=False)
        second.wait_healthy(120)
        rest = slow.bytes_sent - sent
    assert rest < 0.85 * len(big), (rest, len(big))
    (blob,) = (tmp_path / ".cache/llama/models--org--repo-GGUF/blobs").iterdir()
    assert blob.name == hashlib.sha256(big).hexdigest() and blob.read_bytes() == big


def test_a_gated_repo_behind_the_hubs_cdn_gets_the_token_only_at_the_hub(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, client: Any
) -> None:
    with FakeHub(bridge_gateway(client), cdn=True, download_rate=200_000) as gated:
        gated.add_repo(REPO, {"tiny-Q4_K_M.gguf": padded(models, 2_000_000)}, token=TOKEN)
        llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": gated.url, "HF_TOKEN": TOKEN})
        llama.wait(lambda: gated.bytes_sent > 500_000, 60, "the download did not start")
        code, processes = llama.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        llama.wait_healthy(120)
        cdn_gets = [r for r in gated.requests if r.origin == "cdn"]
    assert code == 0 and "aria2c" in processes and TOKEN not in processes
    assert len(cdn_gets) > 1 and all(r.authorization is None for r in cdn_gets)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in gated.requests if r.origin == "hub")
    assert TOKEN not in llama.log()


def test_a_server_without_range_support_is_downloaded_over_one_connection(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, client: Any
) -> None:
    with FakeHub(bridge_gateway(client), ranges=False) as plain:
        plain.add_repo(REPO, {"tiny-Q4_K_M.gguf": padded(models, 1_000_000)})
        llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": plain.url})
        llama.wait_healthy(120)
    gets = plain.file_gets()
    assert len(gets) == 1 and gets[0].range is None and plain.peak_downloads == 1


def test_llama_download_connections_0_leaves_the_download_to_llama_server(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub
) -> None:
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": (models.dir / "tiny.gguf").read_bytes()})
    llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": hub.url, "LLAMA_DOWNLOAD_CONNECTIONS": "0"})
    llama.wait_healthy()
    # llama-server alone: its user agent names the build Debian's package carries.
    assert {r.user_agent for r in hub.requests} == {f"llama-cpp/{shipped.target('cpu').release}-Debian"}
    assert len(hub.file_gets()) == 1


def test_a_model_the_reference_image_cached_in_workspace_llama_cpp_is_served_with_the_hub_unreachable(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub, tmp_path: Path
) -> None:
    """The reference's llama-server kept -hf downloads in ~/.cache/llama.cpp, a link to
    ${WORKSPACE}/llama.cpp: <org>_<repo>_<file> beside manifest=<org>=<repo>=<tag>.json."""
    data = (models.dir / "tiny.gguf").read_bytes()
    folder = tmp_path / "llama.cpp"
    folder.mkdir()
    (folder / "org_repo-GGUF_tiny-Q4_K_M.gguf").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    manifest = {"ggufFile": {"rfilename": "tiny-Q4_K_M.gguf", "lfs": {"sha256": sha, "size": len(data)}}}
    (folder / "manifest=org=repo-GGUF=latest.json").write_text(json.dumps(manifest), encoding="utf-8")
    unreachable = hub.url
    hub.stop()
    llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": unreachable},
                        volumes={str(tmp_path): "/workspace"}, read_only=False)  # fmt: skip
    llama.wait_healthy()
    assert model_ids(llama.curl("/v1/models")[1]) == [REPO]
    assert "linked in from /workspace/llama.cpp" in llama.llama_log()
    blob = tmp_path / f".cache/llama/models--org--repo-GGUF/blobs/{sha}"
    assert blob.stat().st_ino == (folder / "org_repo-GGUF_tiny-Q4_K_M.gguf").stat().st_ino  # linked, not copied
