"""Loopback HTTP servers the tests start: a GitHub releases API, a Slack webhook receiver, a
directory of files.

Each answers from a script of responses per path (the last one repeats), and records every
request it got, so tests assert what the code under test really sent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Loopback:
    def __init__(self) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.received: list[Received] = []
        self.url = ""

    def route(self, path: str, *answers: Answer) -> None:
        self.routes[path] = list(answers)

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        self.received.append(Received(method, path, headers, body))
        answers = self.routes.get(path)
        if not answers:
            return Answer(404, {"message": "Not Found"})
        return answers.pop(0) if len(answers) > 1 else answers[0]


@contextmanager
def serve(loopback: Loopback, host: str = "127.0.0.1") -> Iterator[Loopback]:
    """Serve `loopback` on `host` (a container reaches the host at Docker's bridge gateway)."""

    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = loopback.answer(self.command, self.path, dict(self.headers), body)
            if answer.delay:
                time.sleep(answer.delay)
            data = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    loopback.url = f"http://{host}:{server.server_address[1]}"
    try:
        yield loopback
    finally:
        server.shutdown()
        server.server_close()


REPOSITORY = "ai-dock/llama.cpp-cuda"
RELEASES_PATH = f"/repos/{REPOSITORY}/releases?per_page=100"


def tag_path(tag: str) -> str:
    return f"/repos/{REPOSITORY}/releases/tags/{tag}"


def release(
    tag: str,
    tarballs: Sequence[tuple[str, str | None]],
    *,
    published_at: str = "2026-07-01T00:00:00Z",
    draft: bool = False,
    prerelease: bool = False,
) -> dict[str, Any]:
    """A release as the GitHub API lists it; (cuda, None) is an older tarball without arch."""
    assets = []
    for cuda, arch in tarballs:
        name = f"llama.cpp-{tag}-cuda-{cuda}-{arch}.tar.gz" if arch else f"llama.cpp-{tag}-cuda-{cuda}.tar.gz"
        assets.append(
            {
                "name": name,
                "browser_download_url": f"https://github.com/{REPOSITORY}/releases/download/{tag}/{name}",
                "digest": "sha256:" + sha256_of(tag, cuda, arch),
            }
        )
    return {
        "tag_name": tag,
        "draft": draft,
        "prerelease": prerelease,
        "created_at": "2026-07-01T00:00:00Z",
        "published_at": published_at,
        "assets": assets,
    }


def sha256_of(tag: str, cuda: str, arch: str | None) -> str:
    return hashlib.sha256(f"{tag}{cuda}{arch}".encode()).hexdigest()


CURRENT = (("12.8", "amd64"), ("12.8", "arm64"))


@contextmanager
def serve_directory(root: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """The files under `root` over plain HTTP (GET and HEAD; git's dumb protocol works with it);
    yields the base URL."""
    handler = functools.partial(QuietFiles, directory=str(root))
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
