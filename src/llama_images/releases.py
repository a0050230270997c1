"""Releases of the prebuilt llama.cpp CUDA tarballs, from the GitHub releases API.

Parsing is pure (`parse_release`); `fetch_release` is the HTTP edge. The API base URL comes from
`GITHUB_API_URL` (set by GitHub Actions; tests point it at a loopback server).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import ReleaseLookupError
from .matrix import LATEST, SOURCE_RELEASE_TARBALL, Matrix, render_tag
from .targets import ImageTarget, Target

DEFAULT_API_URL = "https://api.github.com"
# The name of a release asset; derivatives/llama-cpp/Dockerfile downloads the same name.
ASSET_NAME = "llama.cpp-{release}-cuda-{cuda}-{arch}.tar.gz"
ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Release:
    tag: str
    assets: tuple[Asset, ...]

    def asset(self, name: str) -> Asset | None:
        return next((a for a in self.assets if a.name == name), None)


def parse_release(payload: Mapping[str, Any]) -> Release:
    """A release from the API's JSON; an asset's `digest` ("sha256:...") gives its checksum."""
    try:
        tag = str(payload["tag_name"])
        assets = []
        for item in payload.get("assets", []):
            digest = item.get("digest") or ""
            sha256 = digest.removeprefix("sha256:") if digest.startswith("sha256:") else None
            assets.append(Asset(str(item["name"]), str(item["browser_download_url"]), sha256))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReleaseLookupError(f"the releases API answered without {exc}; is the API URL right?") from None
    return Release(tag, tuple(assets))


def checksum_args(release: Release, cuda: str) -> dict[str, str]:
    """Build args with the sha256 of each architecture's tarball, where the release knows it."""
    args = {}
    for arch in ARCHES:
        asset = release.asset(ASSET_NAME.format(release=release.tag, cuda=cuda, arch=arch))
        if asset is not None and asset.sha256:
            args[f"LLAMA_CPP_SHA256_{arch.upper()}"] = asset.sha256
    return args


Fetcher = Callable[[str, str], Release]


def fetch_release(repository: str, tag: str = LATEST) -> Release:
    """GET /repos/<repository>/releases/latest (or /tags/<tag>)."""
    api = os.environ.get("GITHUB_API_URL", DEFAULT_API_URL).rstrip("/")
    path = "releases/latest" if tag == LATEST else f"releases/tags/{tag}"
    url = f"{api}/repos/{repository}/{path}"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.github+json"})
    token = os.environ.get("GITHUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as exc:
        raise ReleaseLookupError(f"{url} answered {exc.code}: no such release of {repository}?") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = (
            "pass an explicit --release bNNNN"
            if tag == LATEST
            else "publishing verifies each release's tarballs and checksums there"
        )
        raise ReleaseLookupError(f"cannot reach {url} ({reason}); {hint}, or set GITHUB_API_URL") from None
    except json.JSONDecodeError:
        raise ReleaseLookupError(f"{url} did not answer JSON") from None
    return parse_release(payload)


def resolve_latest(
    matrix: Matrix, targets: Sequence[Target], fetch: Fetcher = fetch_release
) -> tuple[tuple[Target, ...], dict[str, Release]]:
    """Give targets of release 'latest' the newest release's tag; ids stay as they are.

    Fetches only when a selected target asks for 'latest'. Returns the targets (a 'latest'
    target that turns out to equal a pinned one is dropped: it is the same image) and the
    looked-up releases by tag, for their checksums.
    """
    if not any(isinstance(t, ImageTarget) and t.release == LATEST for t in targets):
        return tuple(targets), {}
    latest = fetch(matrix.release_source.github_repository, LATEST)
    resolved: dict[str, Target] = {}
    for target in targets:
        if isinstance(target, ImageTarget) and target.release == LATEST:
            upstream = target.base.upstream
            tag = render_tag(
                target.flavor.tag,
                release=latest.tag,
                cuda=upstream.cuda or "",
                flavor=target.flavor.name,
                upstream=upstream.name,
            )
            target = replace(
                target, release=latest.tag, tag=tag, image=matrix.images.reference(matrix.images.repository, tag)
            )
        resolved.setdefault(target.image, target)
    return tuple(resolved.values()), {latest.tag: latest}


def tarball_targets(targets: Sequence[Target]) -> list[ImageTarget]:
    return [t for t in targets if isinstance(t, ImageTarget) and t.flavor.source == SOURCE_RELEASE_TARBALL]


def look_up_pinned(
    matrix: Matrix, targets: Sequence[Target], found: Mapping[str, Release], fetch: Fetcher = fetch_release
) -> dict[str, Release]:
    """Fetch the pinned releases of the tarball targets too (those not looked up already)."""
    releases = dict(found)
    for target in tarball_targets(targets):
        if target.release not in releases:
            releases[target.release] = fetch(matrix.release_source.github_repository, target.release)
    return releases


def missing_assets(targets: Sequence[Target], releases: Mapping[str, Release]) -> list[str]:
    """Tarballs a build would download that its looked-up release does not have.

    Checked before building, so a renamed or missing asset stops the run instead of one
    platform's build halfway through a push.
    """
    missing = []
    for target in tarball_targets(targets):
        release = releases.get(target.release)
        if release is None:
            continue
        for platform in target.platforms:
            name = ASSET_NAME.format(release=release.tag, cuda=target.binary_cuda, arch=platform.removeprefix("linux/"))
            if release.asset(name) is None:
                missing.append(f"{target.id}: release {release.tag} has no asset {name}")
    return missing
