"""The GitHub releases API (I/O edge): fetch one release, or find the newest.

The base URL comes from `GITHUB_API_URL` (GitHub Actions sets it; tests point it at a loopback
server); `GITHUB_TOKEN`, when set, raises the rate limit. The token goes into a header only.
"""

from __future__ import annotations

import os
import urllib.parse

from ..core.errors import ReleaseLookupError
from ..core.matrix import LATEST
from ..core.releases import DEFAULT_API_URL, Release, newest, parse_release, parse_release_list
from .web import RequestFailed, request_json

PAGE_SIZE = 100


def api_url() -> str:
    return os.environ.get("GITHUB_API_URL", DEFAULT_API_URL).rstrip("/")


def headers() -> dict[str, str]:
    found = {"Accept": "application/vnd.github+json", "User-Agent": "llama-images"}
    token = os.environ.get("GITHUB_TOKEN")
    if token:
        found["Authorization"] = f"Bearer {token}"
    return found


def fetch_release(repository: str, tag: str = LATEST, timeout: float = 20.0) -> Release:
    """GET /repos/<repository>/releases/tags/<tag>; for 'latest', the newest of the first page of
    /releases (newest first as the API lists them, re-ordered by build number)."""
    api = api_url()
    quoted = urllib.parse.quote(repository, safe="/")
    if tag == LATEST:
        url = f"{api}/repos/{quoted}/releases?per_page={PAGE_SIZE}"
    else:
        url = f"{api}/repos/{quoted}/releases/tags/{urllib.parse.quote(tag, safe='')}"
    try:
        payload = request_json("GET", url, headers=headers(), timeout=timeout)
    except RequestFailed as exc:
        status = exc.failure.status
        if status == 404:
            what = f"no release {tag} of {repository}" if tag != LATEST else f"no repository {repository}"
            raise ReleaseLookupError(f"{url} answered 404: {what}") from None
        hint = "pass an explicit --release bNNNN" if tag == LATEST else "publishing verifies each release there"
        if status in (401, 403, 429):
            hint = "set GITHUB_TOKEN (a higher rate limit), or try later"
        raise ReleaseLookupError(
            f"the releases API at {api} failed: {exc.failure.reason}; {hint}, or set GITHUB_API_URL"
        ) from None
    if tag == LATEST:
        return newest(parse_release_list(payload), repository)
    release = parse_release(payload)
    if release.tag != tag:
        raise ReleaseLookupError(f"{url} answered with release {release.tag}, not {tag}")
    return release
