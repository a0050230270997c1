"""Downloads: through the image's own downloader when a derivative declares one
(/etc/llama-images/downloader.toml: `command = [...]`; the llama.cpp image's is its aria2-based,
sha256-checking parallel downloader), else through the plain one here (one connection per file,
the hub's sha256 and the announced size checked). The base image never imports a derivative:
the seam is a command and a JSON request.

The request (plan.Fetch, as JSON on the command's stdin) names what to fetch and where, and the
variable holding the token that may go with it; the token itself is read from the environment
by whoever sends it, and goes only to the origin it is meant for (never to a CDN a hub
redirects to). Nothing secret is in a process's arguments. The command exits 0 when the file
(or repo) is in place and checked, else non-zero with the cause as its last line.

I/O edge. Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from llama_runtime import paths

from .output import Output
from .plan import Fetch, hub_file_url, masked_url

USER_AGENT = "llama-images-provisioner"
TIMEOUT = 60.0
REDIRECTS = 8
CHUNK = 1 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """A download that failed: one line with the cause (no secret in it)."""


Downloader = Callable[[Fetch, Output], None]


@dataclass(frozen=True)
class Chosen:
    name: str
    run: Downloader


def choose(declaration: Path = paths.DOWNLOADER_DECLARATION, env: Mapping[str, str] | None = None) -> Chosen:
    """The declared downloader, else the plain one; a declaration that cannot be used is named."""
    try:
        with declaration.open("rb") as handle:
            command = tomllib.load(handle).get("command")
    except FileNotFoundError:
        return Chosen("the plain downloader (one connection per file, sha256 checked)", plain(env))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FetchError(f"{declaration}: not readable TOML ({exc}); fix the file or remove it") from None
    if not (isinstance(command, list) and command and all(isinstance(w, str) for w in command)):
        raise FetchError(f'{declaration}: `command` must be a list of strings, e.g. ["/path/to/tool", "fetch"]')
    return Chosen(f"the image's downloader ({PurePosixPath(command[0]).name})", declared(command))


def declared(command: list[str]) -> Downloader:
    def run(fetch: Fetch, out: Output) -> None:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise FetchError(f"cannot run {command[0]}: {exc.strerror}") from None
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(OSError):
            process.stdin.write(json.dumps(fetch.request()))
            process.stdin.close()
        last = ""
        for line in process.stdout:
            if line.strip():
                last = line.strip()
                out.raw("  " + line)
        if process.wait() != 0:
            raise FetchError(out.masked(last) or f"{command[0]} exited with status {process.returncode}")

    return run


# ---- the plain downloader -------------------------------------------------------------------


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.rpartition("@")[2].lower()


LINKED = ("X-Linked-Etag", "X-Linked-Size", "X-Repo-Commit")


@contextlib.contextmanager
def answer(method: str, url: str, authorization: str | None) -> Iterator[tuple[Any, dict[str, str]]]:
    """One request, following redirects by hand: the token goes only to the first origin. With
    the response, what the hub said on the way (its sha256, size and commit ride on the redirect
    to its CDN)."""
    first = origin(url)
    linked: dict[str, str] = {}
    for _ in range(REDIRECTS + 1):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
        if authorization and origin(url) == first:
            request.add_header("Authorization", authorization)
        try:
            response = OPENER.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                for name in LINKED:
                    if exc.headers.get(name):
                        linked.setdefault(name, str(exc.headers[name]))
                url = urljoin(url, exc.headers["Location"])
                continue
            hint = "; check the token (its variable is named in the manifest's auth)" if exc.code in (401, 403) else ""
            raise FetchError(f"{method} {masked_url(url)} answered {exc.code}{hint}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"cannot reach {masked_url(url)}: {getattr(reason, 'strerror', None) or reason}") from None
        for name in LINKED:
            if response.headers.get(name):
                linked.setdefault(name, str(response.headers[name]))
        with response:
            yield response, linked
        return
    raise FetchError(f"more than {REDIRECTS} redirects from {masked_url(url)}")


def disposition_name(header: str) -> str:
    found = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", header or "", re.I)
    return PurePosixPath(unquote(found.group(1))).name if found else ""


def stream_to(response: Any, target: Path, size: int, sha256: str, shown: str) -> None:
    """The body into `target` (through `<target>.incomplete`), its size and sha256 checked."""
    partial = target.with_name(target.name + ".incomplete")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as handle:
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{shown}: the download broke off ({exc.strerror or exc})") from None
    if size >= 0 and written != size:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{shown}: {written} bytes arrived, not {size}")
    if sha256 and digest.hexdigest() != sha256.lower():
        partial.unlink(missing_ok=True)
        raise FetchError(f"{shown}: sha256 mismatch: not what was published (the download was discarded)")
    partial.replace(target)


def linked_sha256(linked: Mapping[str, str]) -> str:
    found = linked.get("X-Linked-Etag", "").strip('"')
    return found if SHA256.fullmatch(found) else ""


def body_size(response: Any, linked: Mapping[str, str]) -> int:
    for value in (str(response.headers.get("Content-Length") or ""), linked.get("X-Linked-Size", "")):
        if value.isdigit():
            return int(value)
    return -1


def hub_cache(env: Mapping[str, str]) -> Path:
    """The Hugging Face cache a download without `dest` fills (what `hf download` fills)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or f"{env.get('HOME') or '/root'}/.cache/huggingface"
    return Path(home) / "hub"


def plain(env_given: Mapping[str, str] | None = None) -> Downloader:
    def run(fetch: Fetch, out: Output) -> None:
        env = os.environ if env_given is None else env_given
        token = env.get(fetch.token_env, "") if fetch.token_env else ""
        authorization = f"Bearer {token}" if token else None
        if fetch.kind == "url":
            fetch_url(fetch, authorization, out)
        elif fetch.kind == "hf-file":
            fetch_hub_file(fetch, fetch.path, authorization, env, out)
        else:
            for path in repo_files(fetch, authorization):
                fetch_hub_file(fetch, path, authorization, env, out)

    return run


def fetch_url(fetch: Fetch, authorization: str | None, out: Output) -> None:
    shown = masked_url(fetch.url)
    with answer("GET", fetch.url, authorization) as (response, linked):
        target = Path(fetch.dest)
        if fetch.dest.endswith("/"):
            name = disposition_name(response.headers.get("Content-Disposition", ""))
            target = target / (name or PurePosixPath(urlsplit(fetch.url).path).name or "download")
        stream_to(response, target, body_size(response, linked), fetch.sha256 or linked_sha256(linked), shown)
    out.say(f"downloaded {shown} -> {target}")


def repo_files(fetch: Fetch, authorization: str | None) -> list[str]:
    api = f"{fetch.endpoint}api/models/{fetch.repo}"
    with answer("GET", f"{api}/refs", authorization) as (response, _):
        refs = json.load(response)
    branches = {b.get("name"): b.get("targetCommit") for b in refs.get("branches", []) if isinstance(b, dict)}
    commit = branches.get(fetch.revision) or fetch.revision
    with answer("GET", f"{api}/tree/{quote(str(commit))}?recursive=true", authorization) as (response, _):
        tree = json.load(response)
    return [str(item["path"]) for item in tree if isinstance(item, dict) and item.get("type") == "file"]


def fetch_hub_file(fetch: Fetch, path: str, authorization: str | None, env: Mapping[str, str], out: Output) -> None:
    url = hub_file_url(Fetch(fetch.kind, fetch.url, fetch.dest, fetch.repo, fetch.revision, path, fetch.endpoint))
    shown = f"{fetch.repo}/{path}"
    with answer("GET", url, authorization) as (response, linked):
        sha256 = (fetch.sha256 if fetch.kind == "hf-file" else "") or linked_sha256(linked)
        size = body_size(response, linked)
        if fetch.dest:
            base = Path(fetch.dest)
            target = (base / PurePosixPath(path).name) if fetch.kind == "hf-file" and fetch.dest.endswith("/") else base
            if fetch.kind == "hf-repo":
                target = base / path
            stream_to(response, target, size, sha256, shown)
            out.say(f"downloaded {shown} -> {target}{' (sha256 checked)' if sha256 else ''}")
            return
        commit = linked.get("X-Repo-Commit") or fetch.revision
        cache = hub_cache(env) / ("models--" + fetch.repo.replace("/", "--"))
        blob = cache / "blobs" / (sha256 or str(response.headers.get("ETag") or "").strip('"') or commit + path)
        if not blob.exists():
            stream_to(response, blob, size, sha256, shown)
    link = cache / "snapshots" / commit / path
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (cache / "refs").mkdir(parents=True, exist_ok=True)
    (cache / "refs" / fetch.revision).write_text(commit, encoding="utf-8")
    out.say(f"downloaded {shown} -> the Hugging Face cache ({cache}){' (sha256 checked)' if sha256 else ''}")


@contextlib.contextmanager
def locked(target: str) -> Iterator[None]:
    """One download of a file at a time, across processes (a second provisioner waits)."""
    if not target or target.endswith("/"):
        yield
        return
    lock = Path(target + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
