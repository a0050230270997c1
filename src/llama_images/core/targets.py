"""Matrix -> targets, and selection of targets by id globs.

Ids are stable and readable: `base/<upstream>` for a base image and
`<flavor>/<upstream>/<release>` for a llama.cpp image, e.g. `cuda/cuda-12.8/b9159`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from .errors import MatrixError, NothingSelectedError, did_you_mean
from .model import SOURCE_RELEASE_TARBALL, Flavor, Matrix, Upstream, render_tag
from .options import Overrides, check_overrides
from .yamlnodes import join_key


@dataclass(frozen=True)
class BaseTarget:
    """base-image built FROM one upstream."""

    id: str
    upstream: Upstream
    image: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class ImageTarget:
    """The llama.cpp image of one flavor and release on one base."""

    id: str
    flavor: Flavor
    release: str
    base: BaseTarget
    image: str
    tag: str
    platforms: tuple[str, ...]

    @property
    def binary_cuda(self) -> str | None:
        return self.flavor.binary_cuda.get(self.base.upstream.name)


Target = BaseTarget | ImageTarget


def base_id(upstream_name: str) -> str:
    return f"base/{upstream_name}"


def base_of(image_id: str) -> str | None:
    """The id of the base an image target's id stands on (`cpu/debian-forky/b11669` ->
    `base/debian-forky`); None for an id that is not an image target's."""
    parts = image_id.split("/")
    return base_id(parts[1]) if len(parts) == 3 else None


def run_id(target: Target) -> str:
    """The target's id with the release this run resolved: `cuda/cuda-12.8/latest` built from
    b9300 is `cuda/cuda-12.8/b9300` (in job and artifact names, records and reports alike)."""
    if isinstance(target, ImageTarget):
        prefix, _, release = target.id.rpartition("/")
        if release != target.release:
            return f"{prefix}/{target.release}"
    return target.id


def apply_overrides(matrix: Matrix, overrides: Overrides) -> Matrix:
    """A matrix with the command line's overrides applied."""
    check_overrides(overrides)
    check_architectures_declared(matrix, overrides)
    flavors = dict(matrix.flavors)
    for name, flavor in matrix.flavors.items():
        if flavor.source == SOURCE_RELEASE_TARBALL:
            if overrides.release is not None:
                flavor = replace(flavor, releases=(overrides.release,))
            if overrides.binary_cuda is not None:
                cuda = overrides.binary_cuda
                flavor = replace(flavor, binary_cuda=MappingProxyType(dict.fromkeys(flavor.binary_cuda, cuda)))
        if overrides.custom_tag is not None:
            # The custom tag stands in for the release part of the tag: my-build-cuda-12.8.
            flavor = replace(flavor, tag=flavor.tag.replace("{release}", overrides.custom_tag))
        flavors[name] = flavor
    images = replace(
        matrix.images,
        repository=overrides.repository or matrix.images.repository,
        registry=overrides.registry or matrix.images.registry,
        namespace=overrides.namespace or matrix.images.namespace,
    )
    return replace(matrix, images=images, flavors=MappingProxyType(flavors))


def check_architectures_declared(matrix: Matrix, overrides: Overrides) -> None:
    """--cuda-version installs tarballs of that CUDA version: the matrix must say which GPU
    architectures they are built for, as it must for every version its flavors name."""
    cuda = overrides.binary_cuda
    tarballs = any(flavor.source == SOURCE_RELEASE_TARBALL for flavor in matrix.flavors.values())
    if cuda is None or not tarballs or cuda in matrix.release_source.cuda_architectures:
        return
    raise MatrixError(
        [
            matrix.problem(
                "release_source.cuda_architectures",
                f"--cuda-version {cuda}: no GPU architectures are declared for the CUDA {cuda} tarballs",
                f'add `"{cuda}": [75-virtual, ...]` under release_source.cuda_architectures '
                "(the release's VERSION.txt lists them)",
            )
        ]
    )


def expand(matrix: Matrix, platforms: Sequence[str] = ()) -> tuple[Target, ...]:
    """Every target of the matrix, bases first, in file order.

    `platforms`, when given, narrows each target to those platforms; a target left with none
    is dropped (it cannot be built for what was asked).
    """
    bases: dict[str, BaseTarget] = {}
    images: list[ImageTarget] = []
    for flavor in matrix.flavors.values():
        for upstream_name in flavor.upstreams:
            upstream = matrix.upstreams[upstream_name]
            wanted = narrow(upstream.platforms, platforms)
            if not wanted:
                continue
            base = bases.get(upstream_name)
            if base is None:
                base = BaseTarget(
                    id=base_id(upstream_name),
                    upstream=upstream,
                    image=matrix.images.reference(matrix.images.base_repository, upstream_name),
                    platforms=wanted,
                )
                bases[upstream_name] = base
            for release in flavor.releases:
                tag = render_tag(
                    flavor.tag, release=release, cuda=upstream.cuda or "", flavor=flavor.name, upstream=upstream_name
                )
                images.append(
                    ImageTarget(
                        id=f"{flavor.name}/{upstream_name}/{release}",
                        flavor=flavor,
                        release=release,
                        base=base,
                        image=matrix.images.reference(matrix.images.repository, tag),
                        tag=tag,
                        platforms=wanted,
                    )
                )
    targets: tuple[Target, ...] = (*bases.values(), *images)
    check_unique(matrix, targets)
    return targets


def narrow(available: Sequence[str], wanted: Sequence[str]) -> tuple[str, ...]:
    if not wanted:
        return tuple(available)
    return tuple(p for p in available if p in wanted)


def check_unique(matrix: Matrix, targets: Iterable[Target]) -> None:
    """Two targets may not share an id or an image reference: one would overwrite the other."""
    problems = []
    seen_ids: dict[str, Target] = {}
    seen_images: dict[str, Target] = {}
    for target in targets:
        key = flavor_key(target)
        if target.id in seen_ids:
            problems.append(
                matrix.problem(key, f"target id '{target.id}' appears twice", "remove the repeated release or upstream")
            )
        seen_ids[target.id] = target
        other = seen_images.get(target.image)
        if other is not None:
            problems.append(
                matrix.problem(
                    join_key(key, "tag") if isinstance(target, ImageTarget) else key,
                    f"targets '{other.id}' and '{target.id}' would both be tagged {target.image}",
                    "make the tag template tell them apart, e.g. add {upstream} or {cuda}",
                )
            )
        seen_images[target.image] = target
    if problems:
        raise MatrixError(problems)


def flavor_key(target: Target) -> str:
    if isinstance(target, ImageTarget):
        return join_key("flavors", target.flavor.name)
    return join_key("upstreams", target.upstream.name)


def unmatched_patterns(targets: Sequence[Target], patterns: Sequence[str]) -> list[str]:
    return [p for p in patterns if not any(fnmatch.fnmatchcase(t.id, p) for t in targets)]


def select(targets: Sequence[Target], patterns: Sequence[str]) -> tuple[Target, ...]:
    """Targets whose id matches any pattern, plus the bases they build on.

    Every pattern must match something: a typo is an error, never an empty build.
    """
    missing = unmatched_patterns(targets, patterns)
    if missing:
        ids = [t.id for t in targets]
        # Suggest whole-flavor globs too: 'cpux' is closer to 'cpu/*' than to any full id.
        candidates = [*ids, *dict.fromkeys(i.split("/")[0] + "/*" for i in ids)]
        lines = [f"--filter '{p}' matches no target{did_you_mean(p, candidates)}" for p in missing]
        lines.append("targets: " + ", ".join(ids))
        raise NothingSelectedError("\n".join(lines))
    chosen = {t.id for t in targets if any(fnmatch.fnmatchcase(t.id, p) for p in patterns)}
    for target in targets:
        if isinstance(target, ImageTarget) and target.id in chosen:
            chosen.add(target.base.id)
    return tuple(t for t in targets if t.id in chosen)


def upstreams_of(targets: Iterable[Target], build_platform: str | None = None) -> Mapping[str, Upstream]:
    """The upstream images the given targets build FROM, with the platforms they need: the
    targets' own, and the build machine's (`build_platform`), on which the Dockerfiles' build
    stages (`FROM --platform=$BUILDPLATFORM`) run natively."""
    found: dict[str, Upstream] = {}
    for target in targets:
        base = target if isinstance(target, BaseTarget) else target.base
        known = found.get(base.upstream.name)
        needed = (*(known.platforms if known else ()), *base.platforms, *([build_platform] if build_platform else []))
        found[base.upstream.name] = replace(base.upstream, platforms=tuple(dict.fromkeys(needed)))
    return found
