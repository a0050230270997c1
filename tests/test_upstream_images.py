"""Which upstreams must be made here, decided without an engine (the engine's answers are given)."""

from __future__ import annotations

import pytest

from llama_images.errors import EngineError
from llama_images.matrix import Upstream
from llama_images.upstream_images import LocalImage, debian_suite, ensure_upstreams, missing_upstreams

CUDA = Upstream("cuda-12.9", "nvidia/cuda:12.9.1-runtime-ubuntu24.04", "12.9", ("linux/amd64",))
DEBIAN = Upstream("debian-forky", "debian:forky-slim", None, ("linux/amd64", "linux/arm64"))


@pytest.mark.parametrize(
    ("image", "suite"),
    [
        ("debian:forky-slim", "forky"),
        ("debian:sid", "sid"),
        ("docker.io/library/debian:trixie-slim", "trixie"),
        ("debian:12-slim", None),
        ("nvidia/cuda:12.9.1-runtime-ubuntu24.04", None),
    ],
)
def test_debian_suite_is_read_from_the_image_name(image: str, suite: str | None) -> None:
    assert debian_suite(image) == suite


def test_a_stand_in_made_for_fewer_platforms_is_made_again() -> None:
    engine = {
        DEBIAN.image: LocalImage(True, ("linux/amd64",)),  # made here, amd64 only
        CUDA.image: LocalImage(True, None),  # pulled by the user: trusted as it is
    }
    assert missing_upstreams({"a": DEBIAN, "b": CUDA}, engine.__getitem__) == [DEBIAN]


def test_an_upstream_in_its_registry_needs_nothing_here() -> None:
    made: list[str] = []
    ensure_upstreams({"cuda": CUDA}, made.append, published=lambda _: True, inspect=lambda _: LocalImage(False, None))
    assert made == []


def test_an_unreachable_non_debian_upstream_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match=r"nvidia/cuda:12\.9\.1-runtime-ubuntu24\.04 \(cuda-12\.9\) is neither"):
        ensure_upstreams({"cuda": CUDA}, print, published=lambda _: False, inspect=lambda _: LocalImage(False, None))
