"""'latest' resolves through the GitHub releases API; tests serve that API on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from llama_images.errors import ReleaseLookupError
from llama_images.matrix import parse_matrix
from llama_images.plan import Request, make_plan, render_plan
from llama_images.releases import fetch_release, resolve_latest
from llama_images.targets import expand, select

from .matrices import VALID, broken

LATEST_PAYLOAD = {
    "tag_name": "b9300",
    "assets": [
        {
            "name": "llama.cpp-b9300-cuda-12.8-amd64.tar.gz",
            "browser_download_url": "https://github.com/ai-dock/llama.cpp-cuda/releases/download/b9300/x.tar.gz",
            "digest": "sha256:" + "d" * 64,
        }
    ],
}


B9000_ASSETS = (("12.8", "amd64"), ("12.8", "arm64"), ("13.0", "amd64"))


def release_payload(tag: str, assets: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {
        "tag_name": tag,
        "assets": [
            {
                "name": f"llama.cpp-{tag}-cuda-{cuda}-{arch}.tar.gz",
                "browser_download_url": f"https://github.com/ai-dock/llama.cpp-cuda/releases/download/{tag}/x",
                "digest": "sha256:" + hashlib.sha256(f"{tag}{cuda}{arch}".encode()).hexdigest(),
            }
            for cuda, arch in assets
        ],
    }


class FakeGitHub(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []
    releases: ClassVar[dict[str, dict[str, Any]]] = {}

    def do_GET(self) -> None:
        FakeGitHub.requests.append(self.path)
        payload = FakeGitHub.releases.get(self.path.removeprefix("/repos/ai-dock/llama.cpp-cuda/releases/"))
        if payload is not None:
            body = json.dumps(payload).encode()
            self.send_response(200)
        else:
            body = b'{"message": "Not Found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def github_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("GITHUB_API_URL", url)
    FakeGitHub.requests = []
    FakeGitHub.releases = {"latest": LATEST_PAYLOAD, "tags/b9000": release_payload("b9000", B9000_ASSETS)}
    yield url
    server.shutdown()
    server.server_close()


def test_latest_becomes_the_newest_release_tag_with_checksums(github_api: str) -> None:
    matrix = parse_matrix(broken("[b9159, b9000]", "[latest, b9000]"))
    targets = select(expand(matrix), ["cuda/cuda-12.9/*"])
    resolved, releases = resolve_latest(matrix, targets)
    images = {t.id: t.image for t in resolved}
    assert images["cuda/cuda-12.9/latest"] == "docker.io/example/llama-cpp:b9300-cuda-12.9"
    assert images["cuda/cuda-12.9/b9000"] == "docker.io/example/llama-cpp:b9000-cuda-12.9"
    assert releases["b9300"].assets[0].sha256 == "d" * 64
    assert FakeGitHub.requests == ["/repos/ai-dock/llama.cpp-cuda/releases/latest"]


def test_nothing_is_fetched_unless_a_selected_target_asks_for_latest(github_api: str) -> None:
    matrix = parse_matrix(broken("[b9159, b9000]", "[latest, b9000]"))
    _, releases = resolve_latest(matrix, select(expand(matrix), ["cpu/*"]))
    assert releases == {}
    assert FakeGitHub.requests == []


def test_unknown_release_and_unreachable_api_are_clear_errors(github_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ReleaseLookupError, match="answered 404"):
        fetch_release("ai-dock/llama.cpp-cuda", "b1")
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")
    with pytest.raises(ReleaseLookupError, match="pass an explicit --release"):
        fetch_release("ai-dock/llama.cpp-cuda")


def test_publishing_looks_up_pinned_releases_for_their_checksums(
    github_api: str, write_matrix: Callable[[str], Path]
) -> None:
    plan = make_plan(Request(write_matrix(VALID), ("cuda/*/b9000",), push=True, look_up_releases=True))
    assert set(plan.releases) == {"b9000"}
    args = render_plan(plan, Request(push=True))["target"]["cuda_cuda-12_9_b9000"]["args"]
    assert args["LLAMA_CPP_SHA256_ARM64"] == hashlib.sha256(b"b900012.8arm64").hexdigest()
    # A local build does not ask the API for pinned releases.
    FakeGitHub.requests = []
    assert make_plan(Request(write_matrix(VALID), ("cuda/*/b9000",))).releases == {}
    assert FakeGitHub.requests == []


def test_a_missing_tarball_stops_the_run_before_building(github_api: str, write_matrix: Callable[[str], Path]) -> None:
    FakeGitHub.releases["tags/b9000"] = release_payload("b9000", (("12.8", "amd64"), ("13.0", "amd64")))
    with pytest.raises(ReleaseLookupError) as caught:
        make_plan(Request(write_matrix(VALID), ("cuda/*/b9000",), push=True, look_up_releases=True))
    assert str(caught.value).endswith(
        "cuda/cuda-12.9/b9000: release b9000 has no asset llama.cpp-b9000-cuda-12.8-arm64.tar.gz"
    )
