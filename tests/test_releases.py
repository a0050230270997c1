"""'latest' resolves through the GitHub releases API; tests serve that API on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from llama_images.errors import ReleaseLookupError
from llama_images.matrix import parse_matrix
from llama_images.releases import fetch_release, resolve_latest
from llama_images.targets import expand, select

from .matrices import broken

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


class FakeGitHub(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        FakeGitHub.requests.append(self.path)
        if self.path == "/repos/ai-dock/llama.cpp-cuda/releases/latest":
            body = json.dumps(LATEST_PAYLOAD).encode()
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
