"""The pipeline behind the tasks, as small steps: load -> override -> expand -> select -> resolve.

Each step is a plain function of the one before; tasks.py only parses options and prints.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bake import RenderOptions, bake_name, render
from .engine import REPO_ROOT
from .errors import ReleaseLookupError, UsageError
from .matrix import DEFAULT_MATRIX, LATEST, SOURCE_RELEASE_TARBALL, Matrix, load_matrix
from .pipcert import pip_cert
from .releases import Fetcher, Release, fetch_release, look_up_pinned, missing_assets, resolve_latest
from .targets import ImageTarget, Overrides, Target, apply_overrides, expand, select


@dataclass(frozen=True)
class Request:
    """What a task was asked for."""

    matrix_file: Path = DEFAULT_MATRIX
    filters: tuple[str, ...] = ()  # empty: the matrix's default_targets
    overrides: Overrides = field(default_factory=Overrides)
    push: bool = False
    sbom: bool = True
    # Look pinned releases up too (checksums, assets present); `build --push` does.
    look_up_releases: bool = False


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    targets: tuple[Target, ...]
    releases: dict[str, Release]

    @property
    def bake_names(self) -> dict[str, str]:
        return {bake_name(t.id): t.id for t in self.targets}


def make_plan(request: Request, fetch: Fetcher = fetch_release) -> Plan:
    matrix = apply_overrides(load_matrix(request.matrix_file), request.overrides)
    targets = expand(matrix, request.overrides.platforms)
    selected = select(targets, request.filters or matrix.default_targets)
    check_overrides_apply(request.overrides, selected)
    resolved, releases = resolve_latest(matrix, selected, fetch)
    if request.look_up_releases:
        # Publishing: every tarball's checksum goes into the build, and every asset must exist.
        releases = look_up_pinned(matrix, resolved, releases, fetch)
    missing = missing_assets(resolved, releases)
    if missing:
        raise ReleaseLookupError("the release lacks tarballs these targets need:\n  " + "\n  ".join(missing))
    return Plan(matrix, resolved, releases)


def check_overrides_apply(overrides: Overrides, selected: Sequence[Target]) -> None:
    """--release and --cuda-version change release-tarball targets only; asked for with none
    selected they would silently do nothing. `--release latest` is the exception: "the newest
    wherever a release is chosen", as the publishing workflow passes for any selection."""
    tarball_selected = any(isinstance(t, ImageTarget) and t.flavor.source == SOURCE_RELEASE_TARBALL for t in selected)
    release = None if overrides.release == LATEST else overrides.release
    for option, value in (("--release", release), ("--cuda-version", overrides.binary_cuda)):
        if value is not None and not tarball_selected:
            raise UsageError(
                f"{option} applies to release-tarball flavors (prebuilt CUDA binaries), and none is selected; "
                "a debian-package flavor builds what its package carries"
            )


def render_plan(plan: Plan, request: Request) -> dict[str, Any]:
    options = RenderOptions(
        revision=git_revision(),
        created=now(),
        source=source_url(),
        push=request.push,
        sbom=request.sbom,
        releases=plan.releases,
        pip_cert=pip_cert(),
    )
    return render(plan.matrix, plan.targets, options)


def git_revision(repo: Path = REPO_ROOT) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=False, capture_output=True, text=True)
    revision = result.stdout.strip() if result.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, check=False, capture_output=True, text=True)
    return f"{revision}-dirty" if result.returncode == 0 and dirty.stdout.strip() else revision


def source_url(repo: Path = REPO_ROOT) -> str | None:
    """The repository's web address: GitHub Actions names it; elsewhere the `origin` remote."""
    if os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{os.environ['GITHUB_REPOSITORY']}"
    result = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=repo, check=False, capture_output=True, text=True
    )
    remote = result.stdout.strip()
    if result.returncode != 0 or not remote:
        return None
    scp_like = re.fullmatch(r"git@([^:]+):(.+?)(?:\.git)?", remote)
    if scp_like:
        return f"https://{scp_like.group(1)}/{scp_like.group(2)}"
    return remote.removesuffix(".git") if remote.startswith("https://") else None


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def table(targets: Sequence[Target]) -> list[tuple[str, str, str, str]]:
    """Rows of `invoke matrix`: id, image, the upstream it stands on, platforms."""
    rows = []
    for target in targets:
        upstream = target.base.upstream if isinstance(target, ImageTarget) else target.upstream
        rows.append((target.id, target.image, upstream.image, ",".join(target.platforms)))
    return rows
