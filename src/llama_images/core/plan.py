"""The pipeline behind the tasks, as small steps: override -> expand -> select -> resolve releases
-> drop what can't or needn't be built. Pure: the loaded matrix comes in as a value, the release
lookup and the registry's "is this tag published?" as functions, so every decision is tested
without a file, a network or an engine. Rendering the plan is bake.py's `render_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .errors import ReleaseLookupError, UsageError
from .model import LATEST, SOURCE_RELEASE_TARBALL, Matrix
from .options import Request, Selection
from .releases import Fetcher, Release, look_up_pinned, resolve_latest, unavailable_platforms
from .report import Skipped
from .targets import BaseTarget, ImageTarget, Target, apply_overrides, expand, run_id, select


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    targets: tuple[Target, ...]
    releases: dict[str, Release]
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def images(self) -> tuple[ImageTarget, ...]:
        return tuple(t for t in self.targets if isinstance(t, ImageTarget))


def select_targets(loaded: Matrix, selection: Selection) -> tuple[Matrix, tuple[Target, ...]]:
    """The matrix with the selection's overrides, and the selected targets, bases included."""
    matrix = apply_overrides(loaded, selection.overrides)
    targets = expand(matrix, selection.overrides.platforms)
    selected = select(targets, selection.filters or matrix.default_targets)
    check_overrides_apply(selection, selected)
    return matrix, selected


def make_plan(loaded: Matrix, request: Request, fetch: Fetcher) -> Plan:
    """What a run builds from the loaded matrix. Publishing (`--push`, for `bake` and `build`
    alike) looks every release up: each tarball's checksum goes into the build and a missing
    tarball stops the run, or with skip_unavailable is left out and reported."""
    matrix, selected = select_targets(loaded, request.selection)
    resolved, releases = resolve_latest(matrix, selected, fetch)
    if request.push:
        releases = look_up_pinned(matrix, resolved, releases, fetch)
    targets, skipped = drop_unavailable(resolved, releases, request.skip_unavailable)
    had_images = any(isinstance(t, ImageTarget) for t in selected)
    return Plan(matrix, with_needed_bases(targets, had_images), releases, tuple(skipped))


def skip_published(plan: Plan, published: Callable[[str], bool]) -> Plan:
    """The plan without the image targets whose tag the registry has (`--skip-existing`)."""
    targets, already = drop_published(plan.targets, published)
    had_images = bool(plan.images)
    return replace(plan, targets=with_needed_bases(targets, had_images), skipped=(*plan.skipped, *already))


def builds_for_host(request: Request) -> bool:
    """A local build (no --push) builds for the machine's own platform unless --platform names
    platforms: the images are loaded to run here, and another platform's half, built under
    emulation, costs minutes. Publishing keeps every platform the matrix declares."""
    return not request.push and not request.selection.overrides.platforms


def on_host(plan: Plan, host_platform: str) -> Plan:
    """The plan with each target that declares the host's platform narrowed to it; a target that
    does not keep the platforms it declares (built under emulation, as its matrix asks)."""

    def narrowed(platforms: tuple[str, ...]) -> tuple[str, ...]:
        return (host_platform,) if host_platform in platforms else platforms

    targets: list[Target] = []
    for target in plan.targets:
        if isinstance(target, ImageTarget):
            base = replace(target.base, platforms=narrowed(target.base.platforms))
            targets.append(replace(target, base=base, platforms=narrowed(target.platforms)))
        else:
            targets.append(replace(target, platforms=narrowed(target.platforms)))
    return replace(plan, targets=tuple(targets))


def check_overrides_apply(selection: Selection, selected: Sequence[Target]) -> None:
    """--release and --cuda-version change release-tarball targets only; asked for with none
    selected they would silently do nothing. `--release latest` is the exception: "the newest
    wherever a release is chosen", as the publishing workflow passes for any selection."""
    overrides = selection.overrides
    tarball_selected = any(isinstance(t, ImageTarget) and t.flavor.source == SOURCE_RELEASE_TARBALL for t in selected)
    release = None if overrides.release == LATEST else overrides.release
    for option, value in (("--release", release), ("--cuda-version", overrides.binary_cuda)):
        if value is not None and not tarball_selected:
            raise UsageError(
                f"{option} applies to release-tarball flavors (prebuilt CUDA binaries), and none is selected; "
                "a debian-package flavor builds what its package carries"
            )


def drop_unavailable(
    targets: Sequence[Target], releases: dict[str, Release], skip: bool
) -> tuple[tuple[Target, ...], list[Skipped]]:
    """Narrow each tarball target to the platforms its release has a tarball for.

    Without `skip` any missing tarball is an error naming every missing asset; with it the
    platforms (or whole targets) are left out and reported.
    """
    kept: list[Target] = []
    skipped: list[Skipped] = []
    errors: list[str] = []
    for target in targets:
        if not isinstance(target, ImageTarget) or target.release not in releases:
            kept.append(target)
            continue
        missing = unavailable_platforms(target, releases[target.release])
        if not missing:
            kept.append(target)
            continue
        for platform, reason in missing.items():
            errors.append(f"{run_id(target)} ({platform}): {reason}")
        reasons = sorted(set(missing.values()))
        skipped.append(Skipped(run_id(target), target.image, tuple(missing), "; ".join(reasons)))
        remaining = tuple(p for p in target.platforms if p not in missing)
        if remaining:
            kept.append(replace(target, platforms=remaining))
    if errors and not skip:
        raise ReleaseLookupError(
            "the release lacks tarballs these targets need (a scheduled run passes --skip-unavailable to "
            "publish the rest):\n  " + "\n  ".join(errors)
        )
    return tuple(kept), skipped


def drop_published(
    targets: Sequence[Target], published: Callable[[str], bool]
) -> tuple[tuple[Target, ...], list[Skipped]]:
    """Leave out image targets whose tag the registry already has; a failed week is retried next
    week, and an old release is not rebuilt."""
    kept: list[Target] = []
    skipped: list[Skipped] = []
    for target in targets:
        if isinstance(target, ImageTarget) and published(target.image):
            skipped.append(Skipped(run_id(target), target.image, target.platforms, "already published"))
        else:
            kept.append(target)
    return tuple(kept), skipped


def with_needed_bases(targets: Sequence[Target], had_images: bool) -> tuple[Target, ...]:
    """Bases are built with what needs them, for the platforms needed, never alone (unless only
    bases were selected)."""
    images = [t for t in targets if isinstance(t, ImageTarget)]
    if not images:
        return () if had_images else tuple(targets)
    needed: dict[str, list[str]] = {}
    for image in images:
        needed.setdefault(image.base.id, [])
        for platform in image.platforms:
            if platform not in needed[image.base.id]:
                needed[image.base.id].append(platform)
    result: list[Target] = []
    for target in targets:
        if isinstance(target, BaseTarget):
            if target.id in needed:
                wanted = tuple(p for p in target.platforms if p in needed[target.id])
                result.append(replace(target, platforms=wanted))
        else:
            result.append(target)
    return tuple(result)


def table(targets: Sequence[Target]) -> list[tuple[str, str, str, str]]:
    """Rows of `invoke matrix`: id, image, the upstream it stands on, platforms."""
    rows = []
    for target in targets:
        upstream = target.base.upstream if isinstance(target, ImageTarget) else target.upstream
        rows.append((target.id, target.image, upstream.image, ",".join(target.platforms)))
    return rows
