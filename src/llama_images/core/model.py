"""The matrix model: frozen dataclasses and the value formats they accept. Pure, no I/O.

`matrix.py` reads a file into this model; `targets.py` expands it into targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import Problem

SOURCE_RELEASE_TARBALL = "release-tarball"
SOURCE_DEBIAN_PACKAGE = "debian-package"
SOURCES = (SOURCE_RELEASE_TARBALL, SOURCE_DEBIAN_PACKAGE)
# The ggml backend an image runs on; each is a stage of derivatives/llama-cpp/Dockerfile.
# Release tarballs are CUDA builds; a debian-package flavor adds Debian's backend package.
BACKEND_CUDA = "cuda"
DEBIAN_BACKENDS = ("cpu", "vulkan")
LATEST = "latest"
TAG_FIELDS = ("release", "cuda", "flavor", "upstream")

REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
NAME = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]|[a-z0-9]")
_NAME_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
IMAGE_REF = re.compile(
    rf"(?:[a-z0-9.-]+(?::[0-9]+)?/)?{_NAME_PART}(?:/{_NAME_PART})*(?::{_TAG})?(?:@sha256:[0-9a-f]{{64}})?"
)
DOCKER_TAG = re.compile(_TAG)
CUDA_VERSION = re.compile(r"[0-9]{1,2}\.[0-9]{1,2}")
PLATFORM = re.compile(r"linux/(amd64|arm64|arm/v6|arm/v7|ppc64le|s390x|386|riscv64)")
RELEASE = re.compile(r"latest|b[0-9]+")
GITHUB_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
HTTP_URL = re.compile(r"https?://[^\s{}]+")
# A GPU architecture as CMake's CUDA_ARCHITECTURES names it: 75-virtual (PTX, compiled by the
# driver for 7.5 and newer), 86-real (machine code for 8.x from 8.6), 90 (both), 90a-real.
CUDA_ARCHITECTURE = re.compile(r"[1-9][0-9]{1,2}[af]?(-real|-virtual)?")
# The prebuilt tarballs exist for these architectures only.
TARBALL_PLATFORMS = ("linux/amd64", "linux/arm64")


def arch(platform: str) -> str:
    """A platform's architecture as names use it: linux/amd64 -> amd64, linux/arm/v7 -> armv7."""
    return platform.removeprefix("linux/").replace("/", "")


@dataclass(frozen=True)
class ImageNames:
    """Where images are published: `<registry>/<namespace>/<repository>:<tag>`."""

    registry: str
    namespace: str
    repository: str
    base_repository: str

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.registry}/{self.namespace}/{repository}:{tag}"


@dataclass(frozen=True)
class Upstream:
    """An image that base-image builds FROM."""

    name: str
    image: str
    cuda: str | None
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseSource:
    """Where the prebuilt llama.cpp CUDA release tarballs come from, and the GPU architectures
    the tarballs of each CUDA version are built for (the image checks its binaries against them
    at build time, and its launcher tells a GPU none of them runs on before llama-server starts)."""

    github_repository: str
    download_url: str
    # CUDA version of a tarball -> CMake CUDA architectures, e.g. "12.8" -> ("75-virtual", ...).
    cuda_architectures: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Flavor:
    """How llama.cpp gets into the image, on which upstreams, for which releases, tagged how."""

    name: str
    source: str
    upstreams: tuple[str, ...]
    releases: tuple[str, ...]
    tag: str
    # Upstream name -> CUDA version of the prebuilt binaries installed on it (tarball flavors).
    binary_cuda: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The ggml backend: cuda for release tarballs, cpu or vulkan for Debian's packages.
    backend: str = DEBIAN_BACKENDS[0]


@dataclass(frozen=True)
class Matrix:
    file: str
    images: ImageNames
    release_source: ReleaseSource
    upstreams: Mapping[str, Upstream]
    flavors: Mapping[str, Flavor]
    default_targets: tuple[str, ...]
    # Key path -> line, so problems found after loading (expansion) still point into the file.
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def line_of(self, key: str) -> int:
        while key and key not in self.lines:
            key = key.rpartition(".")[0]
        return self.lines.get(key, 1)

    def problem(self, key: str, message: str, fix: str) -> Problem:
        return Problem(self.file, self.line_of(key), key, message, fix)


def render_tag(template: str, *, release: str, cuda: str, flavor: str, upstream: str) -> str:
    return template.format(release=release, cuda=cuda, flavor=flavor, upstream=upstream)
