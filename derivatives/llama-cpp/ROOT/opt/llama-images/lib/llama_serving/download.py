"""The download phase before llama-server starts: a hub repo's files or a URL's file fetched with
aria2 (several connections per file, the parts of a split model side by side, resumed from its
control file after an interruption), each checked against the hub's sha256 before it enters the
cache, in the cache layout llama-server itself reads. A model already in the cache is not fetched
again; one in another cache on the volume (the reference image's /workspace/llama.cpp, a hub
cache such as $HF_HOME/hub) is linked in after its sha256 is checked; with the hub unreachable a
cached model is served as it is (llama_serving.caches).

The hub is asked what llama-server's own `-hf` asks (GET /api/models/<repo>/refs, GET
/api/models/<repo>/tree/<commit>?recursive=true, HEAD /<repo>/resolve/<commit>/<path>). Tokens
travel in request headers and aria2's input (its stdin), never in its arguments or the log.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from . import aria2, hub
from .aria2 import Transfer
from .caches import adopt, in_cache, link_snapshot, serve_cached, write_text
from .child import Child, Stall
from .config import ModelSource, Plan, mask_url, option_value
from .download_types import DownloadError, Prepared, Settings, Ui
from .hub import HubError, RepoCache, RepoFile

USER_AGENT = "llama-images"
REDIRECTS = 5
STATUS_SECONDS = 1.0


def prepare(plan: Plan, settings: Settings, ui: Ui) -> Prepared:
    """Every model of the plan in the cache, or DownloadError with the cause."""
    prepared = Prepared()
    for source in plan.sources:
        if ui.stopping.is_set():
            break
        if source.kind == "hf":
            path, offline = prepare_repo(source.value, settings, ui)
            prepared.hf_files[source.value] = path
            prepared.offline |= offline
        elif source.kind == "url":
            prepare_url(source, settings, ui)
    return prepared


# ---- HTTP ----------------------------------------------------------------------------------


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


def credentials(url: str) -> tuple[str, str | None]:
    """(the URL without user and password, a basic Authorization header for them)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    pair = f"{parts.username}:{parts.password or ''}"
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, "Basic " + base64.b64encode(pair.encode()).decode()


def ask(method: str, url: str, authorization: str | None, timeout: float) -> Answer:
    """One request, redirects not followed; DownloadError when nothing answers."""
    request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
    if authorization:
        request.add_header("Authorization", authorization)
    request.add_header("Accept", "application/json")
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read() if method != "HEAD" else b"")
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(OSError):
            body = exc.read()
        return Answer(exc.code, dict(exc.headers or {}), body if method != "HEAD" else b"")
    except TimeoutError:
        raise DownloadError(f"no download progress for {timeout:g} s: {mask_url(url)} did not answer") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise DownloadError(f"no download progress for {timeout:g} s: {mask_url(url)} did not answer") from None
        raise DownloadError(f"cannot reach {mask_url(url)}: {getattr(reason, 'strerror', None) or reason}") from None


def failure(answer: Answer, method: str, url: str) -> str:
    """`GET failed (401): <the server's error>` (llama-server's wording), with the URL."""
    message = ""
    found = hub.read_json(answer.body.decode(errors="replace")) if answer.body else None
    if isinstance(found, dict) and isinstance(found.get("error"), str):
        message = f": {found['error']}"
    return f"{method} failed ({answer.status}){message} ({mask_url(url)})"


def api_get(url: str, settings: Settings) -> Any:
    answer = ask("GET", url, bearer(settings), settings.stall_timeout)
    if answer.status != 200:
        hint = "; set HF_TOKEN to a token with access to it" if answer.status in (401, 403) else ""
        raise DownloadError(failure(answer, "GET", url) + hint)
    found = hub.read_json(answer.body.decode(errors="replace"))
    if found is None:
        raise DownloadError(f"GET {mask_url(url)}: the answer is not JSON")
    return found


def bearer(settings: Settings) -> str | None:
    return f"Bearer {settings.token}" if settings.token else None


@dataclass(frozen=True)
class Located:
    """Where a file's bytes are fetched from, and how."""

    url: str
    authorization: str | None
    size: int
    ranges: bool
    etag: str = ""
    sha256: str | None = None
    disposition: str = ""  # Content-Disposition: the file's name when a URL does not say it


def locate(url: str, authorization: str | None, settings: Settings) -> Located:
    """HEAD, following redirects by hand: a token (or password) goes only to the origin it was
    meant for, never to the CDN a hub redirects to (whose signed URL is its credential)."""
    first = origin(url)
    linked_size = -1
    linked_sha = None
    for _ in range(REDIRECTS + 1):
        answer = ask("HEAD", url, authorization, settings.stall_timeout)
        headers = {k.lower(): v for k, v in answer.headers.items()}
        linked_size = int(headers["x-linked-size"]) if headers.get("x-linked-size", "").isdigit() else linked_size
        linked = headers.get("x-linked-etag", "").strip('"')
        linked_sha = linked if hub.SHA256.fullmatch(linked) else linked_sha
        if answer.status in (301, 302, 303, 307, 308) and headers.get("location"):
            url = urljoin(url, headers["location"])
            if origin(url) != first:
                # A signed URL may answer only the method it was signed for: it is not asked first.
                return Located(url, None, linked_size, True, linked_sha or "", linked_sha)
            continue
        if answer.status >= 400:
            hint = "; set HF_TOKEN to a token with access to it" if answer.status in (401, 403) else ""
            raise DownloadError(failure(answer, "HEAD", url) + hint)
        length = headers.get("content-length", "")
        size = int(length) if length.isdigit() else linked_size
        ranges = headers.get("accept-ranges", "none").lower() != "none"
        return Located(
            url,
            authorization,
            size,
            ranges,
            headers.get("etag", ""),
            linked_sha,
            headers.get("content-disposition", ""),
        )
    raise DownloadError(f"more than {REDIRECTS} redirects from {mask_url(url)}")


# ---- a hub repo ----------------------------------------------------------------------------


def prepare_repo(value: str, settings: Settings, ui: Ui) -> tuple[str, bool]:
    """The repo's chosen files in the cache: (the model file's path in the repo, offline)."""
    repo, tag = hub.split_repo(value)
    cache = RepoCache(settings.cache, repo)
    listing: tuple[str, list[RepoFile]] | None = None
    problem: DownloadError | None = None
    if not settings.offline:
        try:
            listing = list_repo(repo, settings)
        except DownloadError as exc:
            problem = exc
    if listing is None:
        # As llama-server does: without the hub's answer, the cache serves if it holds the model.
        path = serve_cached(repo, tag, settings, ui)
        if path is not None:
            why = "--offline" if settings.offline else f"the hub failed: {problem}"
            ui.log(f"{value}: serving the cached copy ({why})")
            return path, True
        if problem is None:
            raise DownloadError(f"{value} is not in the cache ({settings.cache}) and --offline forbids the hub")
        raise problem
    commit, files = listing
    try:
        chosen = hub.choose_files(files, repo, tag, settings.hf_file, settings.mmproj)
    except HubError as exc:
        raise DownloadError(str(exc)) from None
    missing = [file for file in chosen if not in_cache(cache, file, commit)]
    for file in list(missing):
        if adopt(cache, file, repo, settings, ui):
            missing.remove(file)
    if missing:
        fetch_repo_files(cache, commit, missing, settings, ui)
    for file in chosen:
        link_snapshot(cache, commit, file)
    write_text(cache.ref(), commit)
    return chosen[0].path, False


def list_repo(repo: str, settings: Settings) -> tuple[str, list[RepoFile]]:
    api = f"{settings.endpoint}api/models/{repo}"
    try:
        commit = hub.parse_refs(api_get(f"{api}/refs", settings), repo)
        files = hub.parse_tree(api_get(f"{api}/tree/{commit}?recursive=true", settings))
    except HubError as exc:
        raise DownloadError(str(exc)) from None
    return commit, files


def fetch_repo_files(cache: RepoCache, commit: str, files: Sequence[RepoFile], settings: Settings, ui: Ui) -> None:
    transfers = []
    blobs = Path(cache.blob("x")).parent
    blobs.mkdir(parents=True, exist_ok=True)
    for file in files:
        url = f"{settings.endpoint}{quote(cache.repo)}/resolve/{commit}/{quote(file.path)}"
        located = locate(url, bearer(settings), settings)
        transfers.append(transfer_for(located, str(blobs), file.oid + aria2.INCOMPLETE, file.size, file.name,
                                      file.sha256, settings))  # fmt: skip
    run_aria2(transfers, settings, ui)
    for file, transfer in zip(files, transfers, strict=True):
        Path(transfer.path).replace(cache.blob(file.oid))


def transfer_for(
    located: Located, directory: str, out: str, size: int, shown: str, sha256: str | None, settings: Settings
) -> Transfer:
    connections = settings.connections if located.ranges else 1
    if not located.ranges:
        # A partial file cannot be resumed from a server that ignores ranges: start it again.
        discard(f"{directory}/{out}")
    headers = (f"Authorization: {located.authorization}",) if located.authorization else ()
    return Transfer(
        located.url, directory, out, size if size >= 0 else located.size, shown, sha256, headers, connections
    )


def discard(path: str) -> None:
    for name in (path, path + ".aria2"):
        Path(name).unlink(missing_ok=True)


# ---- a URL -----------------------------------------------------------------------------------


def prepare_url(source: ModelSource, settings: Settings, ui: Ui) -> None:
    """The URL's file at its cache path; a cached copy is kept while the server's ETag is the same
    (llama-server's rule, with its `<file>.etag` beside it) and used when the server is unreachable."""
    final = Path(source.download_path(settings.cache))
    etag_file = final.with_name(final.name + ".etag")
    url, basic = credentials(source.value)
    authorization = basic or (bearer(settings) if origin(url) == origin(settings.endpoint) else None)
    try:
        located = locate(url, authorization, settings)
    except DownloadError as exc:
        if final.is_file():
            ui.log(f"{source.shown()}: serving the cached copy ({exc})")
            return
        raise
    with contextlib.suppress(OSError):
        if final.is_file() and (not located.etag or etag_file.read_text(encoding="utf-8").strip() == located.etag):
            return
    final.parent.mkdir(parents=True, exist_ok=True)
    transfer = transfer_for(located, str(final.parent), final.name + aria2.INCOMPLETE, located.size, final.name,
                            located.sha256, settings)  # fmt: skip
    run_aria2([transfer], settings, ui)
    problem = gguf_problem(Path(transfer.path))
    if problem:
        discard(transfer.path)
        raise DownloadError(f"{source.shown()}: {problem}")
    Path(transfer.path).replace(final)
    if located.etag:
        write_text(str(etag_file), located.etag)


def gguf_problem(path: Path) -> str | None:
    with contextlib.suppress(OSError), path.open("rb") as handle:
        magic = handle.read(4)
        return None if magic == b"GGUF" else f"the download is not a GGUF file (it starts with {magic!r})"
    return "the download cannot be read"


# ---- aria2 -----------------------------------------------------------------------------------

# How long aria2 gets to save its control files after SIGTERM (a stop, a stall) before SIGKILL.
ARIA2_END_GRACE_SECONDS = 5.0


def run_aria2(transfers: Sequence[Transfer], settings: Settings, ui: Ui) -> None:
    """aria2 until every transfer is done and checked; DownloadError (the cause) otherwise."""
    for transfer in transfers:
        # A file without its control file cannot say which of its parts arrived: start it again.
        if Path(transfer.path).exists() and not Path(transfer.path + ".aria2").exists():
            discard(transfer.path)
    progress = aria2.Progress()
    lock = threading.Lock()

    def take(line: str) -> None:
        with lock:
            progress.read(line)

    try:
        child = Child.start(aria2.command(transfers, os.getpid()), take, stdin=True)
    except OSError as exc:
        raise DownloadError(f"cannot run aria2c: {exc.strerror}") from None
    ui.register(child.process)
    child.send(aria2.input_text(transfers))
    started = time.monotonic()
    hashes = {transfer.path: FollowingHash(transfer.path) for transfer in transfers if transfer.sha256}
    for following in hashes.values():
        following.start()
    try:
        stalled = watch_aria2(child, transfers, progress, lock, settings, ui)
    finally:
        for following in hashes.values():
            following.stop()
    code = child.finish()
    ui.register(None)
    if ui.stopping.is_set():
        raise DownloadError("stopped")
    if stalled:
        raise DownloadError(stalled)
    if code == 0:
        check_downloaded(transfers, hashes, ui)
        took = max(time.monotonic() - started, 0.001)
        total = sum(max(t.size, 0) for t in transfers)
        names = ", ".join(t.shown for t in transfers)
        checked = " (sha256 checked)" if all(t.sha256 for t in transfers) else ""
        ui.log(f"downloaded {names}{checked}: {total / 1e6:.1f} MB in {took:.1f} s ({aria2.human_rate(total / took)})")
        return
    with lock:
        detail = mask_urls(progress.cause())
    if code in (8, -signal.SIGABRT):  # cannot resume (aria2 1.36 may abort on it): start again
        for transfer in transfers:
            discard(transfer.path)
    meaning = aria2.EXIT_MEANINGS.get(code, f"aria2c exit status {code}")
    raise DownloadError(f"download failed: {meaning}" + (f": {detail}" if detail and detail != meaning else ""))


def check_downloaded(transfers: Sequence[Transfer], hashes: Mapping[str, FollowingHash], ui: Ui) -> None:
    """Each file as long as the hub said and, where it published one, of its sha256; a file that
    is not is discarded (never kept, never served: fetched again from scratch) and named."""
    for transfer in transfers:
        size = Path(transfer.path).stat().st_size if Path(transfer.path).exists() else -1
        if transfer.size >= 0 and size != transfer.size:
            discard(transfer.path)
            raise DownloadError(f"download failed: {transfer.shown} has {size} bytes, not {transfer.size}")
    mismatched = []
    for transfer in transfers:
        if transfer.path in hashes:
            ui.status(f"checking {transfer.shown} (sha256)")
            if hashes[transfer.path].finish() != transfer.sha256:
                discard(transfer.path)
                mismatched.append(transfer.shown)
    if mismatched:
        raise DownloadError(
            f"download failed: sha256 mismatch: {', '.join(mismatched)} is not what the hub published "
            "(the corrupt download was discarded)"
        )


class FollowingHash(threading.Thread):
    """The sha256 of a file aria2 is still writing, taken in file order as far as its control
    file records the pieces done (aria2 fetches them in order: --stream-piece-selector=inorder),
    so that little is left to read once the download ends."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.digest = hashlib.sha256()
        self.hashed = 0
        self.ended = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.ended.wait(0.5):
            with contextlib.suppress(OSError):
                done = aria2.completed_prefix(Path(self.path + ".aria2").read_bytes())
                if done:
                    self.advance(done)

    def advance(self, limit: float) -> None:
        with self.lock, contextlib.suppress(FileNotFoundError), Path(self.path).open("rb") as handle:
            handle.seek(self.hashed)
            while self.hashed < limit and not (self.ended.is_set() and limit != math.inf):
                chunk = handle.read(int(min(4 * aria2.MIB, limit - self.hashed)))
                if not chunk:
                    break
                self.digest.update(chunk)
                self.hashed += len(chunk)

    def stop(self) -> None:
        self.ended.set()
        self.join()

    def finish(self) -> str:
        """The whole file's sha256, once aria2 has ended well: the rest is read now."""
        self.advance(math.inf)
        return self.digest.hexdigest()


def watch_aria2(
    child: Child,
    transfers: Sequence[Transfer],
    progress: aria2.Progress,
    lock: threading.Lock,
    settings: Settings,
    ui: Ui,
) -> str:
    """Status and log lines while aria2 runs; ends a download that stops moving (the cause)."""
    last_done = -1
    stall = Stall(settings.stall_timeout)
    logged = time.monotonic()  # the first log line after log_seconds, with figures in it
    shown = 0.0

    def look() -> str:
        nonlocal last_done, logged, shown
        with lock:
            done = {t.path: progress.done.get(t.path, 0) for t in transfers}
            rate = sum(progress.rate.get(t.path, 0) for t in transfers)
        total = sum(done.values())
        if total != last_done:
            last_done = total
            stall.moved()
        if stall.stalled():
            return f"no download progress for {settings.stall_timeout:g} s"
        now = time.monotonic()
        found = aria2.progress(transfers, done, rate)
        if now - shown >= STATUS_SECONDS:
            shown = now
            ui.status(found)
        if now - logged >= ui.log_seconds:
            logged = now
            ui.log(found.line)
        return ""

    grace = ARIA2_END_GRACE_SECONDS
    return child.supervise(ui.stopping, look, stop_grace=lambda: grace, stall_grace=grace)


def mask_urls(text: str) -> str:
    return re.sub(r"https?://\S+", lambda m: mask_url(m.group(0)), text)


def settings_from(plan: Plan, env: Mapping[str, str]) -> Settings:
    """The phase's settings from the plan (LLAMA_ARGS read there) and the environment."""
    args = list(plan.args)
    token = plan.secrets.get("HF_TOKEN") or None
    return Settings(
        cache=plan.cache,
        endpoint=plan.endpoint,
        token=token if token and hub.HF_TOKEN_SHAPE.fullmatch(token) else None,
        connections=plan.connections,
        stall_timeout=plan.retries.stall_timeout,
        other_caches=plan.other_caches,
        offline="--offline" in args or env.get("LLAMA_ARG_OFFLINE", "") in ("1", "true"),
        mmproj="--no-mmproj" not in args,
        hf_file=option_value(args, "-hff", "--hf-file") or env.get("LLAMA_ARG_HF_FILE") or None,
    )
