"""Which upstreams must be made here, decided without an engine (the engine's answers are given);
what the registry said is in test_tag_state.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llama_images.core.matrix import Upstream
from llama_images.core.targets import upstreams_of
from llama_images.edges.upstream_images import LocalImage, debian_suite, missing_upstreams
from tests import shipped

CUDA = Upstream("cuda-12.9", "nvidia/cuda:12.9.1-runtime-ubuntu24.04", "12.9", ("linux/amd64",))
DEBIAN = Upstream("debian-forky", "debian:forky-slim", None, ("linux/amd64", "linux/arm64"))


@pytest.mark.parametrize(
    ("image", "suite"),
    [
        ("debian:forky-slim", "forky"),
        ("debian:sid", "sid"),
        ("docker.io/library/debian:trixie-slim", "trixie"),
        ("llama-images-unreachable.invalid/library/debian:forky-slim", "forky"),
        ("127.0.0.1:5000/debian:sid", "sid"),
        ("localhost/debian:sid", "sid"),
        ("someone/debian:sid", None),
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


def test_an_upstream_made_here_also_holds_the_build_machines_platform() -> None:
    """An arm64 publishing job on an amd64 machine: the Dockerfiles' build stages
    (`FROM --platform=$BUILDPLATFORM`) run natively only when the stand-in has amd64 too; made
    for arm64 alone, they ran under emulation (a Python environment compiled under qemu)."""
    cpu = shipped.target("cpu")
    arm64_job = replace(cpu, base=replace(cpu.base, platforms=("linux/arm64",)))
    (needed,) = upstreams_of([arm64_job], "linux/amd64").values()
    assert needed.platforms == ("linux/arm64", "linux/amd64")
    (on_host,) = upstreams_of(
        [replace(cpu, base=replace(cpu.base, platforms=("linux/amd64",)))], "linux/amd64"
    ).values()
    assert on_host.platforms == ("linux/amd64",)
    engine = {needed.image: LocalImage(True, ("linux/arm64",))}  # made earlier for arm64 alone
    assert missing_upstreams({needed.name: needed}, engine.__getitem__) == [needed]
