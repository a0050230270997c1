"""A loopback stand-in for the parts of the Hugging Face hub that llama-server's `-hf` uses.

The test machines cannot reach huggingface.co, so container tests point llama-server at this
server with `HF_ENDPOINT` (or `MODEL_ENDPOINT`) and let the real `-hf` code path run against it.
It answers what the bundled llama-server (Debian's build 11669) was observed to request, in
this order (tests/container/llama/test_models.py records and checks it):

1. `GET  /api/models/<org>/<repo>/refs`: the branches, `main` with its `targetCommit`;
2. `GET  /api/models/<org>/<repo>/tree/<commit>?recursive=true`: the files, GGUFs with `lfs`;
3. `HEAD /<org>/<repo>/resolve/<commit>/<path>`, then `GET` of the same URL: the file's bytes.

File downloads answer ranged requests (`Range: bytes=A-B`, `A-`, `-N`) with 206, as the hub's CDN
does, unless `ranges=False` (then every GET gets the whole file and `Accept-Ranges: none`).
`download_rate` caps each connection (a CDN's per-connection limit), `link_rate` all of them
together (the machine's link). With `cdn=True` a resolve of an LFS file answers 302 to a second
origin (another port) holding a signed URL, as huggingface.co does; that origin refuses requests
that carry an `Authorization` header, as a presigned object store does.

A repository can be gated (answers 401 unless `Authorization: Bearer <its token>` is sent);
`GET /api/whoami-v2` answers 200 for a gated repo's token (or one in `tokens`), 401 otherwise, as
the hub checks a token. The whole hub can be told to fail: answer 500, stall (a timeout for the client), cut a file
download short, stall in the middle of a file, or serve bytes that differ from the sha256 its
tree lists. Every request is recorded. Run `python -m tests.support.fake_hf_hub MODEL.gguf` to
serve one repository by hand.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
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


@functools.cache
def _digest(kind: str, data: bytes) -> str:
    """A file's digest, once per file: a benchmark's file is hundreds of MB, asked for per request."""
    if kind == "git":
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return hashlib.new(kind, data).hexdigest()


class Fault(Enum):
    """How the hub misbehaves, for every request that follows."""

    NONE = "none"
    SERVER_ERROR = "500"  # every request answers 500
    STALL = "stall"  # requests are accepted and never answered
    TRUNCATE = "truncate"  # file downloads announce their full length, then stop half way
    STALL_DOWNLOAD = "stall-download"  # file downloads send half of what they announce, then hang
    CORRUPT = "corrupt"  # file downloads serve other bytes than the tree's sha256 (same length)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    authorization: str | None
    user_agent: str | None
    range: str | None = None
    origin: str = "hub"  # "hub", or "cdn" for the second origin of cdn=True


@dataclass
class HubRepo:
    """One model repository: files by path, at one commit."""

    name: str
    files: dict[str, bytes]
    token: str | None = None  # gated: only this bearer token gets in
    commit: str = ""
    lfs: tuple[str, ...] = (".gguf",)

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
                "oid": _digest("git", data),
            }
            if path.endswith(self.lfs):
                # Large files live in Git LFS on the real hub; the lfs oid is the sha256.
                entry["lfs"] = {"oid": _digest("sha256", data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


@dataclass
class FakeHub:
    """A threaded HTTP server; `url` is what HF_ENDPOINT is set to. Use as a context manager."""

    host: str = "127.0.0.1"
    port: int = 0
    fault: Fault = Fault.NONE
    # Bytes per second of each file download connection (0: as fast as possible): a CDN's cap.
    download_rate: int = 0
    # Bytes per second of all file downloads together (0: no limit): the link's capacity.
    link_rate: int = 0
    ranges: bool = True  # False: Range headers are ignored, as by a server without range support
    cdn: bool = False  # LFS files are served by a second origin the hub redirects to
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    cdn_port: int = 0
    tokens: set[str] = field(default_factory=set)  # tokens /api/whoami-v2 accepts besides the repos'
    lfs: tuple[str, ...] = (".gguf",)  # file endings kept in Git LFS: sha256 in the tree, served by the CDN
    peak_downloads: int = 0  # the most file downloads (GET bodies) in flight at once
    bytes_sent: int = 0  # file bytes sent, both origins together
    _downloads: int = 0
    _server: ThreadingHTTPServer | None = None
    _cdn_server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _link: _Bucket | None = None

    def add_repo(self, name: str, files: Mapping[str, bytes], token: str | None = None) -> HubRepo:
        repo = HubRepo(name, dict(files), token, lfs=self.lfs)
        self.repos[name] = repo
        return repo

    @property
    def url(self) -> str:
        """Where the hub answers; after stop() the same address refuses connections."""
        assert self.port, "the hub has not been started"
        return f"http://{self.host}:{self.port}"

    @property
    def cdn_url(self) -> str:
        assert self.cdn_port, "the hub has no CDN origin (cdn=True) or has not been started"
        return f"http://{self.host}:{self.cdn_port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubHandler):
            fake_hub = hub
            origin = "hub"

        class CdnHandler(_HubHandler):
            fake_hub = hub
            origin = "cdn"

        self._release.clear()
        self._link = _Bucket(self.link_rate) if self.link_rate else None
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        # Keep the port: a restarted hub answers where the container expects it.
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        if self.cdn:
            self._cdn_server = ThreadingHTTPServer((self.host, self.cdn_port), CdnHandler)
            self._cdn_server.daemon_threads = True
            self.cdn_port = self._cdn_server.server_address[1]
            threading.Thread(target=self._cdn_server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering: afterwards connections are refused, as for an unreachable hub."""
        self._release.set()
        for server in (self._server, self._cdn_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._cdn_server = None

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

    def file_gets(self, name: str = "") -> list[RecordedRequest]:
        """GETs of file bytes (either origin), of files whose path ends with `name`."""
        with self._lock:
            found = [r for r in self.requests if r.method == "GET" and ("/resolve/" in r.path or r.origin == "cdn")]
        return [r for r in found if urlsplit(r.path).path.endswith(name)]

    def _download_started(self) -> None:
        with self._lock:
            self._downloads += 1
            self.peak_downloads = max(self.peak_downloads, self._downloads)

    def _download_ended(self) -> None:
        with self._lock:
            self._downloads -= 1


class _Bucket:
    """A token bucket shared by every connection: the link's capacity."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, size: int) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + size / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


class _HubHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    origin: str
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
                self.command,
                self.path,
                headers.get("Authorization"),
                headers.get("User-Agent"),
                headers.get("Range"),
                self.origin,
            )
        )
        if hub.fault is Fault.STALL:
            hub._release.wait(600)
            return
        if hub.fault is Fault.SERVER_ERROR:
            self._json(500, {"error": "Internal Error"}, head)
            return
        if self.origin == "cdn":
            self._cdn(head)
            return
        if urlsplit(self.path).path == "/api/whoami-v2":
            self._whoami(head)
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
            if hub.cdn and path.endswith(hub.lfs):
                self._redirect_to_cdn(repo, repo.files[path], head)
            else:
                self._file(repo.commit, repo.files[path], head)
        else:
            self._json(404, {"error": "Entry not found"}, head)

    def _whoami(self, head: bool) -> None:
        hub = self.fake_hub
        known = hub.tokens | {repo.token for repo in hub.repos.values() if repo.token}
        if self.headers.get("Authorization", "").removeprefix("Bearer ") in known:
            self._json(200, {"type": "user", "name": "tester"}, head)
        else:
            self._json(401, {"error": "Invalid credentials in Authorization header"}, head)

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

    def _redirect_to_cdn(self, repo: HubRepo, data: bytes, head: bool) -> None:
        """huggingface.co's answer for an LFS file: 302 to a signed URL on another origin."""
        sha256 = _digest("sha256", data)
        signature = hashlib.sha256(f"{repo.name}{sha256}".encode()).hexdigest()[:32]
        self.send_response(302)
        self.send_header("Location", f"{self.fake_hub.cdn_url}/cdn/{sha256}?X-Amz-Signature={signature}")
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self, head: bool) -> None:
        """The second origin: files by sha256, refusing a second credential as S3 does."""
        if self.headers.get("Authorization"):
            self._json(400, {"error": "Only one auth mechanism allowed"}, head)
            return
        sha256 = urlsplit(self.path).path.removeprefix("/cdn/")
        for repo in self.fake_hub.repos.values():
            for data in repo.files.values():
                if _digest("sha256", data) == sha256:
                    self._file(repo.commit, data, head)
                    return
        self._json(404, {"error": "NoSuchKey"}, head)

    def _file(self, commit: str, data: bytes, head: bool) -> None:
        hub = self.fake_hub
        sha256 = _digest("sha256", data)
        wanted = self._range(len(data)) if hub.ranges else None
        if wanted == "unsatisfiable":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = wanted if isinstance(wanted, tuple) else (0, len(data) - 1)
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Accept-Ranges", "bytes" if hub.ranges else "none")
        self.end_headers()
        if head:
            return
        if hub.fault is Fault.CORRUPT:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        body = memoryview(data)[start : end + 1]  # no copy: a benchmark serves hundreds of MB
        if hub.fault in (Fault.TRUNCATE, Fault.STALL_DOWNLOAD):
            # The announced length, then half of it: an interrupted (or hanging) download.
            body = body[: len(body) // 2]
            self.close_connection = True
        hub._download_started()
        try:
            self._send_body(body)
            if hub.fault is Fault.STALL_DOWNLOAD:
                hub._release.wait(600)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            hub._download_ended()

    def _send_body(self, body: memoryview) -> None:
        hub = self.fake_hub
        chunk = 256 * 1024
        started = time.monotonic()
        for offset in range(0, len(body), chunk):
            if hub._release.is_set():
                return
            piece = body[offset : offset + chunk]
            if hub._link is not None:
                hub._link.take(len(piece))
            self.wfile.write(piece)
            with hub._lock:
                hub.bytes_sent += len(piece)
            if hub.download_rate:
                self.wfile.flush()
                # Paced against the start, so sleeping's overhead does not slow a connection down.
                ahead = started + (offset + len(piece)) / hub.download_rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    def _range(self, size: int) -> tuple[int, int] | str | None:
        """(first, last) byte of a single-range request, "unsatisfiable", or None (no Range)."""
        wanted = self.headers.get("Range", "")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        if match is None or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if first == "":  # the last N bytes
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            return "unsatisfiable"
        return start, end


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve GGUF files as a fake Hugging Face hub repository.")
    parser.add_argument("files", nargs="+", type=Path, help=".gguf files to put in the repository")
    parser.add_argument("--repo", default="org/repo-GGUF", help="repository name (default: org/repo-GGUF)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", help="make the repository gated behind this token")
    parser.add_argument("--rate", type=int, default=0, help="bytes per second per connection (0: unlimited)")
    parser.add_argument("--link-rate", type=int, default=0, help="bytes per second in all (0: unlimited)")
    parser.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    parser.add_argument("--cdn", action="store_true", help="redirect LFS files to a second origin")
    args = parser.parse_args()
    hub = FakeHub(
        args.host, args.port, download_rate=args.rate, link_rate=args.link_rate, ranges=not args.no_ranges, cdn=args.cdn
    )
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
