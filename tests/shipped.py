"""The shipped matrix.yaml, read with the package's own loader: tests take target ids, tags,
images, releases and CUDA versions from it, so a matrix bump edits no test. Tests that need a
fixed matrix write their own (tests/matrices.py)."""

from __future__ import annotations

from typing import Any

from llama_images.core.bake import bake_name
from llama_images.core.model import SOURCE_RELEASE_TARBALL, arch
from llama_images.core.options import OPTION, Overrides
from llama_images.core.targets import ImageTarget, apply_overrides, expand, select
from llama_images.edges.files import load_matrix

from .conftest import REPO_ROOT

SHIPPED = load_matrix(REPO_ROOT / "matrix.yaml")
NAMESPACE = SHIPPED.images.namespace  # the namespace `invoke build` publishes to without --namespace


def target(flavor: str, **overrides: Any) -> ImageTarget:
    """The shipped matrix's first image target of `flavor`, with the overrides the options would
    apply (`namespace=`, `release=`, `custom_tag=`, ...)."""
    matrix = apply_overrides(SHIPPED, Overrides(**overrides))
    return next(t for t in expand(matrix) if isinstance(t, ImageTarget) and t.flavor.name == flavor)


def flavor_glob(flavor: str) -> str:
    """`--filter` for every target of a flavor on the upstream its first target stands on."""
    return f"{flavor}/{target(flavor).base.upstream.name}/*"


def default_bake_names() -> list[str]:
    """The bake targets `invoke build --matrix` builds: the default targets and their bases."""
    return [bake_name(t.id) for t in select(expand(SHIPPED), SHIPPED.default_targets)]


def workflow_default(option: str) -> str:
    """What the publishing workflow fills an option with when its input is left empty."""
    source = OPTION[option].workflow
    assert source is not None and source.empty is not None, option
    return source.empty


def tarballs() -> tuple[tuple[str, str], ...]:
    """(CUDA version, architecture) of every tarball the shipped matrix installs: what a release
    must carry for every shipped CUDA target to build."""
    found = {
        (t.binary_cuda or "", arch(platform))
        for t in expand(SHIPPED)
        if isinstance(t, ImageTarget) and t.flavor.source == SOURCE_RELEASE_TARBALL
        for platform in t.platforms
    }
    return tuple(sorted(found))
