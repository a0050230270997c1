"""Releases of the prebuilt llama.cpp CUDA tarballs: what a release carries and which is newest.

Pure: parsing the GitHub API's JSON and every decision made from it. `github.py` is the HTTP edge
that fetches it.

What ai-dock/llama.cpp-cuda publishes: current releases carry CUDA 12.8 tarballs, one per
architecture (`llama.cpp-<tag>-cuda-12.8-amd64.tar.gz`, `...-arm64.tar.gz`); older releases
carried several CUDA versions and no architecture suffix. The Dockerfile installs the
per-architecture form; an older release is reported as lacking it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import ReleaseLookupError
from .matrix import LATEST, SOURCE_RELEASE_TARBALL, Matrix, render_tag
from .model import arch
from .targets import ImageTarget, Target

DEFAULT_API_URL = "https://api.github.com"
# The name of a release asset; derivatives/llama-cpp/Dockerfile downloads the same name.
ASSET_NAME = "llama.cpp-{release}-cuda-{cuda}-{arch}.tar.gz"
TARBALL = re.compile(
    r"llama\.cpp-(?P<release>[A-Za-z0-9_.-]+?)-cuda-(?P<cuda>[0-9]+\.[0-9]+)(?:-(?P<arch>amd64|arm64))?\.tar\.gz"
)
ARCHES = ("amd64", "arm64")
BUILD_NUMBER = re.compile(r"b([0-9]+)")


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Tarball:
    """One prebuilt tarball of a release: its CUDA version and architecture (None: older releases
    named no architecture)."""

    cuda: str
    arch: str | None
    asset: Asset


@dataclass(frozen=True)
class Release:
    tag: str
    assets: tuple[Asset, ...]
    draft: bool = False
    prerelease: bool = False
    published_at: str = ""  # ISO 8601, as the API writes it (sorts as text)

    def asset(self, name: str) -> Asset | None:
        return next((a for a in self.assets if a.name == name), None)

    @property
    def tarballs(self) -> tuple[Tarball, ...]:
        found = []
        for asset in self.assets:
            match = TARBALL.fullmatch(asset.name)
            if match and match.group("release") == self.tag:
                found.append(Tarball(match.group("cuda"), match.group("arch"), asset))
        return tuple(found)

    def carries(self) -> str:
        """What the release holds, for people: "CUDA 12.8: amd64, arm64"."""
        by_cuda: dict[str, list[str]] = {}
        for tarball in self.tarballs:
            by_cuda.setdefault(tarball.cuda, []).append(tarball.arch or "no architecture (older format)")
        if not by_cuda:
            return "no llama.cpp CUDA tarballs"
        parts = [f"CUDA {cuda}: {', '.join(arches)}" for cuda, arches in sorted(by_cuda.items(), key=version_key)]
        return "; ".join(parts)


def version_key(item: tuple[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in item[0].split("."))


def build_number(tag: str) -> int:
    """b9159 -> 9159; tags of another form sort before every build."""
    match = BUILD_NUMBER.fullmatch(tag)
    return int(match.group(1)) if match else -1


def parse_release(payload: Any) -> Release:
    """A release from the API's JSON; an asset's `digest` ("sha256:...") gives its checksum."""
    try:
        if not isinstance(payload, Mapping):
            raise TypeError("a release object")
        tag = payload["tag_name"]
        if not isinstance(tag, str):
            raise TypeError("tag_name as text")
        assets = []
        for item in payload.get("assets") or []:
            digest = item.get("digest") or ""
            sha256 = (
                digest.removeprefix("sha256:") if isinstance(digest, str) and digest.startswith("sha256:") else None
            )
            assets.append(Asset(str(item["name"]), str(item["browser_download_url"]), sha256))
        return Release(
            tag,
            tuple(assets),
            draft=bool(payload.get("draft", False)),
            prerelease=bool(payload.get("prerelease", False)),
            published_at=str(payload.get("published_at") or ""),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReleaseLookupError(f"the releases API answered without {exc}; is the API URL right?") from None


def parse_release_list(payload: Any) -> list[Release]:
    if not isinstance(payload, list):
        raise ReleaseLookupError("the releases API answered something other than a list of releases")
    return [parse_release(item) for item in payload]


def newest(releases: Sequence[Release], repository: str) -> Release:
    """The newest published release: drafts and prereleases skipped. The source publishes many
    releases with one creation time, so the list order says nothing: order by the tag's build
    number, then by publish time."""
    published = [r for r in releases if not r.draft and not r.prerelease]
    if not published:
        raise ReleaseLookupError(f"{repository} has no published release (drafts and prereleases are skipped)")
    return max(published, key=lambda r: (build_number(r.tag), r.published_at))


def checksum_args(release: Release, cuda: str) -> dict[str, str]:
    """Build args with the sha256 of each architecture's tarball, where the release knows it."""
    args = {}
    for architecture in ARCHES:
        asset = release.asset(ASSET_NAME.format(release=release.tag, cuda=cuda, arch=architecture))
        if asset is not None and asset.sha256:
            args[f"LLAMA_CPP_SHA256_{architecture.upper()}"] = asset.sha256
    return args


# (repository, tag or "latest") -> the release.
Fetcher = Callable[[str, str], Release]


def resolve_latest(
    matrix: Matrix, targets: Sequence[Target], fetch: Fetcher
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
    matrix: Matrix, targets: Sequence[Target], found: Mapping[str, Release], fetch: Fetcher
) -> dict[str, Release]:
    """Fetch the pinned releases of the tarball targets too (those not looked up already)."""
    releases = dict(found)
    for target in tarball_targets(targets):
        if target.release not in releases:
            releases[target.release] = fetch(matrix.release_source.github_repository, target.release)
    return releases


def unavailable_platforms(target: ImageTarget, release: Release) -> dict[str, str]:
    """Platform -> why the release cannot give this target that platform (empty: all there)."""
    if target.flavor.source != SOURCE_RELEASE_TARBALL:
        return {}
    missing = {}
    for platform in target.platforms:
        name = ASSET_NAME.format(release=release.tag, cuda=target.binary_cuda, arch=arch(platform))
        if release.asset(name) is not None:
            continue
        old_format = [t for t in release.tarballs if t.cuda == target.binary_cuda and t.arch is None]
        if old_format:
            missing[platform] = (
                f"release {release.tag} has {old_format[0].asset.name} (older format, no architecture), not {name}"
            )
        else:
            missing[platform] = f"release {release.tag} has no asset {name} (it carries {release.carries()})"
    return missing
