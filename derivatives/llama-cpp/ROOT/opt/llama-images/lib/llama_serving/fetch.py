"""`llama-serving fetch`: the provisioner's downloads through this image's own downloader (aria2,
several connections per file, every file of a repo side by side, resumed after an interruption,
each checked against its sha256 and size before it is put in place). The base image declares the
seam (/etc/llama-images/downloader.toml names this command); the request comes as JSON on stdin:

    {"kind": "hf-file" | "hf-repo" | "url", "url": ..., "dest": ..., "repo": ..., "revision": ...,
     "path": ..., "endpoint": ..., "token_env": ..., "sha256": ...}

`dest` is a file, a directory (ending in "/"), or empty: the Hugging Face cache ($HF_HUB_CACHE,
else $HF_HOME/hub), in the hub's layout, where the launcher finds a model LLAMA_MODEL names. The
token is read from the variable `token_env` names and goes only to the origin it is meant for.
Exit 0 when everything is in place and checked; else 1, the cause as the last line.

I/O edge. Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from . import hub
from .aria2 import INCOMPLETE
from .caches import in_cache, link_snapshot, write_text
from .config import DEFAULT_CONNECTIONS, DEFAULT_ENDPOINT, DEFAULT_STALL_TIMEOUT, ConfigError, mask_url, number
from .download import (
    api_get,
    credentials,
    fetch_repo_files,
    list_repo,
    locate,
    run_aria2,
    transfer_for,
)
from .download_types import DownloadError, Settings, Ui
from .hub import HubError, RepoCache


class RequestError(Exception):
    """A request this command cannot act on."""


def hub_cache(env: Mapping[str, str]) -> str:
    if env.get("HF_HUB_CACHE"):
        return env["HF_HUB_CACHE"]
    home = env.get("HF_HOME") or f"{env.get('HOME') or '/root'}/.cache/huggingface"
    return f"{home}/hub"


def settings_for(request: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    token_env = str(request.get("token_env") or "")
    return Settings(
        cache=hub_cache(env),
        endpoint=str(request.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/") + "/",
        token=env.get(token_env) or None if token_env else None,
        connections=int(number(env, "LLAMA_DOWNLOAD_CONNECTIONS", DEFAULT_CONNECTIONS, 1, integer=True)),
        stall_timeout=number(env, "LLAMA_STALL_TIMEOUT", DEFAULT_STALL_TIMEOUT, 1),
        other_caches=(),
    )


def say(line: str) -> None:
    print(line, flush=True)


def console_ui() -> Ui:
    return Ui(status=lambda text: None, log=say, stopping=threading.Event(), register=lambda process: None)


def disposition_name(header: str) -> str:
    found = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", header or "", re.I)
    return PurePosixPath(unquote(found.group(1))).name if found else ""


def into_place(transfer_path: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(transfer_path).replace(target)


def fetch_url(request: Mapping[str, Any], settings: Settings, ui: Ui) -> None:
    url, basic = credentials(str(request["url"]))
    authorization = basic or (f"Bearer {settings.token}" if settings.token else None)
    located = locate(url, authorization, settings)
    dest = str(request.get("dest") or "")
    if not dest:
        raise RequestError(f"{mask_url(url)}: a download from outside the hub needs `dest`")
    target = Path(dest)
    if dest.endswith("/"):
        target /= disposition_name(located.disposition) or PurePosixPath(urlsplit(url).path).name or "download"
    sha256 = str(request.get("sha256") or "") or located.sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    transfer = transfer_for(located, str(target.parent), target.name + INCOMPLETE, located.size, target.name,
                            sha256, settings)  # fmt: skip
    run_aria2([transfer], settings, ui)
    into_place(transfer.path, target)
    say(f"in place: {target}")


def repo_listing(repo: str, revision: str, settings: Settings) -> tuple[str, list[hub.RepoFile]]:
    if revision in ("", "main"):
        return list_repo(repo, settings)
    try:
        return revision, hub.parse_tree(api_get(f"{settings.endpoint}api/models/{repo}/tree/{revision}?recursive=true",
                                                settings))  # fmt: skip
    except HubError as exc:
        raise DownloadError(str(exc)) from None


def into_cache(repo: str, revision: str, commit: str, files: list[hub.RepoFile], settings: Settings, ui: Ui) -> None:
    cache = RepoCache(settings.cache, repo)
    missing = [file for file in files if not in_cache(cache, file, commit)]
    if missing:
        fetch_repo_files(cache, commit, missing, settings, ui)
    for file in files:
        link_snapshot(cache, commit, file)
    write_text(cache.ref(revision or "main"), commit)
    say(f"in place: {len(files)} file(s) of {repo} in the Hugging Face cache ({cache.root})")


def fetch_hub_file(request: Mapping[str, Any], settings: Settings, ui: Ui) -> None:
    repo, revision, path = str(request["repo"]), str(request.get("revision") or "main"), str(request["path"])
    dest = str(request.get("dest") or "")
    if not dest:
        commit, files = repo_listing(repo, revision, settings)
        chosen = [file for file in files if file.path == path]
        if not chosen:
            raise RequestError(f"{repo} has no file {path} (at {revision})")
        into_cache(repo, revision, commit, chosen, settings, ui)
        return
    url = f"{settings.endpoint}{quote(repo)}/resolve/{quote(revision)}/{quote(path)}"
    located = locate(url, f"Bearer {settings.token}" if settings.token else None, settings)
    target = Path(dest) / PurePosixPath(path).name if dest.endswith("/") else Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    sha256 = str(request.get("sha256") or "") or located.sha256
    transfer = transfer_for(located, str(target.parent), target.name + INCOMPLETE, located.size,
                            f"{repo}/{path}", sha256, settings)  # fmt: skip
    run_aria2([transfer], settings, ui)
    into_place(transfer.path, target)
    say(f"in place: {target}")


def fetch_hub_repo(request: Mapping[str, Any], settings: Settings, ui: Ui) -> None:
    repo, revision = str(request["repo"]), str(request.get("revision") or "main")
    commit, files = repo_listing(repo, revision, settings)
    dest = str(request.get("dest") or "")
    if not dest:
        into_cache(repo, revision, commit, files, settings, ui)
        return
    root = Path(dest)
    wanted = [
        file for file in files if not (root / file.path).is_file() or (root / file.path).stat().st_size != file.size
    ]
    transfers = []
    for file in wanted:
        url = f"{settings.endpoint}{quote(repo)}/resolve/{commit}/{quote(file.path)}"
        located = locate(url, f"Bearer {settings.token}" if settings.token else None, settings)
        folder = (root / file.path).parent
        folder.mkdir(parents=True, exist_ok=True)
        transfers.append(transfer_for(located, str(folder), file.name + INCOMPLETE, file.size, file.path,
                                      file.sha256 or located.sha256, settings))  # fmt: skip
    if transfers:
        run_aria2(transfers, settings, ui)
    for file, transfer in zip(wanted, transfers, strict=True):
        into_place(transfer.path, root / file.path)
    say(f"in place: {len(files)} file(s) of {repo} in {root}")


def run(text: str, env: Mapping[str, str]) -> int:
    try:
        request = json.loads(text)
        if not isinstance(request, dict) or request.get("kind") not in ("url", "hf-file", "hf-repo"):
            raise RequestError('the request is not {"kind": "url" | "hf-file" | "hf-repo", ...}')
        settings = settings_for(request, env)
        ui = console_ui()
        {"url": fetch_url, "hf-file": fetch_hub_file, "hf-repo": fetch_hub_repo}[request["kind"]](request, settings, ui)
    except (ValueError, KeyError) as exc:
        say(f"fetch: the request cannot be read ({exc})")
        return 1
    except (RequestError, DownloadError, ConfigError, HubError) as exc:
        say(f"fetch: {exc}")
        return 1
    except OSError as exc:
        say(f"fetch: {exc.strerror or exc}")
        return 1
    return 0


def main(env: Mapping[str, str]) -> int:
    return run(sys.stdin.read(), env)
