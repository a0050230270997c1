"""A loopback stand-in for the parts of the Hugging Face hub that llama-server's `-hf` uses.

The test machines cannot reach huggingface.co, so container tests point llama-server at this
server with `HF_ENDPOINT` (or `MODEL_ENDPOINT`) and let the real `-hf` code path run against it.
It answers what the bundled llama-server (Debian's build 11669) was observed to request, in
this order (tests/container/llama/test_models.py records and checks it):

1. `GET  /api/models/<org>/<repo>/refs`: the branches, `main` with its `targetCommit`;
2. `GET  /api/models/<org>/<repo>/tree/<commit>?recursive=true`: the files, GGUFs with `lfs`;
3. `HEAD /<org>/<repo>/resolve/<commit>/<path>`, then `GET` of the same URL: the file's bytes.

A repository can be gated (answers 401 unless `Authorization: Bearer <its token>` is sent), and
the whole hub can be told to fail: answer 500, stall (a timeout for the client), or cut a file
download short. Every request is recorded. Run `python -m tests.support.fake_hf_hub MODEL.gguf`
to serve one repository by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "Fault", "HubRepo", "RecordedRequest"]


class Fault(Enum):
    """How the hub misbehaves, for every request that follows."""

    NONE = "none"
    SERVER_ERROR = "500"  # every request answers 500
    STALL = "stall"  # requests are accepted and never answered
    TRUNCATE = "truncate"  # file downloads announce their full length, then stop half way


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    authorization: str | None
    user_agent: str | None
    range: str | None = None


@dataclass
class HubRepo:
    """One model repository: files by path, at one commit."""

    name: str
    files: dict[str, bytes]
    token: str | None = None  # gated: only this bearer token gets in
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(self.name.encode()).hexdigest()

    def tree(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for path, data in sorted(self.files.items()):
            entry: dict[str, Any] = {
                "type": "file",
                "path": path,
                "size": len(data),
                "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
            }
            if path.endswith(".gguf"):
                # Large files live in Git LFS on the real hub; the lfs oid is the sha256.
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


@dataclass
class FakeHub:
    """A threaded HTTP server; `url` is what HF_ENDPOINT is set to. Use as a context manager."""

    host: str = "127.0.0.1"
    port: int = 0
    fault: Fault = Fault.NONE
    # Bytes per second for file downloads (0: as fast as possible), so progress can be watched.
    download_rate: int = 0
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)

    def add_repo(self, name: str, files: Mapping[str, bytes], token: str | None = None) -> HubRepo:
        repo = HubRepo(name, dict(files), token)
        self.repos[name] = repo
        return repo

    @property
    def url(self) -> str:
        """Where the hub answers; after stop() the same address refuses connections."""
        assert self.port, "the hub has not been started"
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubHandler):
            fake_hub = hub

        self._release.clear()
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        # Keep the port: a restarted hub answers where the container expects it.
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering: afterwards connections are refused, as for an unreachable hub."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def request_lines(self) -> list[str]:
        """The requests as `METHOD path`, in the order they came."""
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]


class _HubHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        hub = self.fake_hub
        headers = self.headers
        hub.record(
            RecordedRequest(
                self.command, self.path, headers.get("Authorization"), headers.get("User-Agent"), headers.get("Range")
            )
        )
        if hub.fault is Fault.STALL:
            hub._release.wait(600)
            return
        if hub.fault is Fault.SERVER_ERROR:
            self._json(500, {"error": "Internal Error"}, head)
            return
        route = self._route()
        if route is None:
            self._json(404, {"error": "Repository not found"}, head)
            return
        repo, kind, rest = route
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._json(401, {"error": f"Access to model {repo.name} is restricted. You must have access to it."}, head)
            return
        if kind == "refs":
            branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commit}
            self._json(200, {"branches": [branch], "tags": [], "converts": [], "pullRequests": []}, head)
        elif kind == "tree" and rest == repo.commit:
            self._json(200, repo.tree(), head)
        elif kind == "resolve" and (path := self._resolve(repo, rest)) is not None:
            self._file(repo, repo.files[path], head)
        else:
            self._json(404, {"error": "Entry not found"}, head)

    def _route(self) -> tuple[HubRepo, str, str] | None:
        """(repo, "refs" | "tree" | "resolve", the rest of the path) for a known repo."""
        path = unquote(urlsplit(self.path).path)
        for name, repo in self.fake_hub.repos.items():
            if path == f"/api/models/{name}/refs":
                return repo, "refs", ""
            if path.startswith(f"/api/models/{name}/tree/"):
                return repo, "tree", path.removeprefix(f"/api/models/{name}/tree/")
            if path.startswith(f"/{name}/resolve/"):
                return repo, "resolve", path.removeprefix(f"/{name}/resolve/")
        return None

    @staticmethod
    def _resolve(repo: HubRepo, rest: str) -> str | None:
        """The file `<revision>/<path>` names, for the repo's commit or its branch `main`."""
        revision, _, path = rest.partition("/")
        return path if revision in (repo.commit, "main") and path in repo.files else None

    def _json(self, status: int, body: object, head: bool) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _file(self, repo: HubRepo, data: bytes, head: bool) -> None:
        hub = self.fake_hub
        sha256 = hashlib.sha256(data).hexdigest()
        start = self._range_start(len(data))
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        body = data[start:]
        if hub.fault is Fault.TRUNCATE:
            # The announced length, then half of it and a closed connection: an interrupted download.
            body = body[: len(body) // 2]
            self.close_connection = True
        chunk = 64 * 1024
        try:
            for offset in range(0, len(body), chunk):
                if hub._release.is_set():
                    return
                self.wfile.write(body[offset : offset + chunk])
                if hub.download_rate:
                    self.wfile.flush()
                    time.sleep(chunk / hub.download_rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _range_start(self, size: int) -> int:
        """The first byte a `Range: bytes=N-` request asks for (a resumed download), else 0."""
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-") and wanted[6:-1].isdigit():
            start = int(wanted[6:-1])
            return start if start < size else 0
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve GGUF files as a fake Hugging Face hub repository.")
    parser.add_argument("files", nargs="+", type=Path, help=".gguf files to put in the repository")
    parser.add_argument("--repo", default="org/repo-GGUF", help="repository name (default: org/repo-GGUF)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", help="make the repository gated behind this token")
    parser.add_argument("--rate", type=int, default=0, help="download bytes per second (0: unlimited)")
    args = parser.parse_args()
    hub = FakeHub(args.host, args.port, download_rate=args.rate)
    hub.add_repo(args.repo, {path.name: path.read_bytes() for path in args.files}, args.token)
    with hub:
        print(f"HF_ENDPOINT={hub.url}  LLAMA_MODEL={args.repo}", flush=True)
        shown = 0
        try:
            while True:
                time.sleep(0.5)
                lines = hub.request_lines()
                for line in lines[shown:]:
                    print(line, flush=True)
                shown = len(lines)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
