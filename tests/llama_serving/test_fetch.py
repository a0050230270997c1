"""The llama.cpp image's downloader for the provisioner (`llama-serving fetch`, llama_serving/fetch.py):
a manifest's hub files, hub repos and URLs with Debian's aria2c against the fake hub, sha256
checked, the token only at the hub, the hub's cache layout the launcher reads."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_serving import fetch

from tests.conftest import require_host_tools
from tests.support.fake_hf_hub import FakeHub, Fault
from tests.support.loopback import Answer, Loopback, serve

TOKEN = "hf_" + "F3tchT0k3n" * 4
MODEL = b"GGUF" + os.urandom(600_000)


@pytest.fixture(autouse=True)
def aria2() -> None:
    require_host_tools(("aria2c",), "aria2")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(cdn=True) as fake:
        fake.add_repo("org/gated-GGUF", {"model-Q4_K_M.gguf": MODEL, "README.md": b"# model\n"}, token=TOKEN)
        yield fake


def run(request: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str]:
    code = fetch.run(json.dumps(request), {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_TOKEN": TOKEN, **env})
    return code, capsys.readouterr().out


def hub_request(hub: FakeHub, **fields: str) -> dict[str, str]:
    return {"repo": "org/gated-GGUF", "revision": "main", "endpoint": hub.url, "token_env": "HF_TOKEN", **fields}


def test_a_hub_file_arrives_checked_and_the_token_never_reaches_the_cdn(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = hub_request(
        hub, kind="hf-file", url="https://huggingface.co/x", dest=f"{tmp_path}/models/", path="model-Q4_K_M.gguf"
    )
    code, said = run(request, tmp_path, capsys)
    assert code == 0, said
    assert (tmp_path / "models/model-Q4_K_M.gguf").read_bytes() == MODEL
    assert "(sha256 checked)" in said and TOKEN not in said
    cdn = [r for r in hub.requests if r.origin == "cdn"]
    assert cdn and all(r.authorization is None for r in cdn)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub.requests if r.origin == "hub")


def test_a_whole_repo_goes_to_a_directory_or_into_the_hub_cache(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, said = run(hub_request(hub, kind="hf-repo", url="x", dest=f"{tmp_path}/repo"), tmp_path, capsys)
    assert code == 0, said
    assert (tmp_path / "repo/README.md").read_bytes() == b"# model\n" and (
        tmp_path / "repo/model-Q4_K_M.gguf"
    ).read_bytes() == MODEL
    code, said = run(hub_request(hub, kind="hf-repo", url="x", dest=""), tmp_path, capsys)
    assert code == 0, said
    commit = hub.repos["org/gated-GGUF"].commit
    cache = tmp_path / "hub/models--org--gated-GGUF"
    assert (cache / "refs/main").read_text() == commit
    snapshot = cache / "snapshots" / commit / "model-Q4_K_M.gguf"
    assert snapshot.is_symlink() and snapshot.read_bytes() == MODEL
    assert (cache / "blobs" / hashlib.sha256(MODEL).hexdigest()).is_file()


def test_bytes_that_differ_from_the_hubs_sha256_are_discarded(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.fault = Fault.CORRUPT
    request = hub_request(hub, kind="hf-file", url="x", dest=f"{tmp_path}/m.gguf", path="model-Q4_K_M.gguf")
    code, said = run(request, tmp_path, capsys)
    assert code == 1 and said.splitlines()[-1].startswith("fetch: download failed: sha256 mismatch")
    assert not (tmp_path / "m.gguf").exists()


def test_a_url_is_named_by_its_content_disposition_and_its_token_stays_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Loopback()
    server.route(
        "/api/download/models/128713",
        Answer(200, b"lora bytes", {"Content-Disposition": 'attachment; filename="style.safetensors"'}),
    )
    with serve(server):
        request = {"kind": "url", "url": f"{server.url}/api/download/models/128713", "dest": f"{tmp_path}/loras/",
                   "token_env": "CIVITAI_TOKEN"}  # fmt: skip
        code, said = run(request, tmp_path, capsys, CIVITAI_TOKEN="civitai-secret-0123")
    assert code == 0, said
    assert (tmp_path / "loras/style.safetensors").read_bytes() == b"lora bytes"
    assert {r.headers.get("Authorization") for r in server.received} == {"Bearer civitai-secret-0123"}
    assert "civitai-secret-0123" not in said


def test_a_request_it_cannot_act_on_says_why_in_its_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, said = run({"kind": "ftp"}, tmp_path, capsys)
    assert code == 1 and said.splitlines()[-1].startswith("fetch: the request is not")
