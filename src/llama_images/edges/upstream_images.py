"""Upstream images for hosts that cannot pull them (I/O edge).

Real users pull `debian:forky-slim` and `nvidia/cuda:...`. Where no registry is reachable, a
Debian upstream is created locally under the exact name matrix.yaml uses (debootstrap of the
host's Debian mirror, one root filesystem per platform, assembled into one multi-platform image
by buildx), so the Dockerfiles keep their real FROM. Non-Debian upstreams cannot be made here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import EngineError
from ..core.matrix import Upstream
from ..core.tag_state import Lookup, TagState, last_line
from .engine import docker
from .registry import lookup_tag

# `debian:forky-slim`, also under a registry host (`docker.io/library/debian:sid`, `mirror.example:5000/debian:sid`).
DEBIAN_IMAGE = re.compile(r"(?:(?:[^/]*[.:][^/]*|localhost)/)?(?:library/)?debian:(?P<suite>[a-z]+)(?:-slim)?")
CREATED_LABEL = "io.llama-images.local-upstream.platforms"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_DIR = Path(os.environ.get("LLAMA_IMAGES_CACHE", Path.home() / ".cache" / "llama-images"))
# Inside the stand-in image only: the offline mirror serves frozen Release files that apt calls
# expired. A pulled upstream has no such file, so the Dockerfiles stay as they would be.
OFFLINE_APT_CONF = 'Acquire::Check-Valid-Until "false";\n'
ASSEMBLE_DOCKERFILE = """\
FROM scratch
ARG TARGETARCH
ADD rootfs-${TARGETARCH}.tar /
CMD ["bash"]
"""


@dataclass(frozen=True)
class LocalImage:
    """What the engine holds under an image name."""

    present: bool
    created_platforms: tuple[str, ...] | None  # set when this module made it


Inspector = Callable[[str], LocalImage]


def inspect_local(image: str) -> LocalImage:
    result = docker(["image", "inspect", "--format", "{{json .Config.Labels}}", image], EngineError, timeout=60)
    if result.returncode != 0:
        if "no such image" in result.stderr.lower():
            return LocalImage(False, None)
        raise EngineError(f"cannot inspect {image} in the engine: {last_line(result.stderr)}")
    labels = json.loads(result.stdout or "null") or {}
    created = labels.get(CREATED_LABEL)
    return LocalImage(True, tuple(created.split(",")) if created else None)


def missing_upstreams(upstreams: Mapping[str, Upstream], inspect: Inspector = inspect_local) -> list[Upstream]:
    """Upstreams the engine lacks, or holds as a stand-in without all needed platforms."""
    missing = []
    for upstream in upstreams.values():
        local = inspect(upstream.image)
        made_here = local.created_platforms
        if not local.present or (made_here is not None and not set(upstream.platforms) <= set(made_here)):
            missing.append(upstream)
    return missing


def debian_suite(image: str) -> str | None:
    match = DEBIAN_IMAGE.fullmatch(image)
    return match.group("suite") if match else None


# Why a Debian upstream is made here, by what its registry said.
MADE_BECAUSE = {
    TagState.ABSENT: "its registry says the tag is absent",
    TagState.UNREACHABLE: "its registry cannot be reached",
}


def ensure_upstreams(
    upstreams: Mapping[str, Upstream],
    log: Callable[[str], None] = print,
    lookup: Callable[[str], Lookup] = lookup_tag,
    inspect: Inspector = inspect_local,
    create: Callable[[str, str, tuple[str, ...], Callable[[str], None]], None] | None = None,
) -> None:
    """Make every upstream available to FROM: in the engine, in its registry, or (Debian) made here.

    A registry that has the image is enough: BuildKit pulls what it needs, for the platforms
    it builds, so nothing is downloaded here. A registry that refuses the lookup (credentials,
    rate limit) is an error naming the fix: making a stand-in would hide a real image.
    """
    for upstream in missing_upstreams(upstreams, inspect):
        found = lookup(upstream.image)
        if found.state is TagState.PUBLISHED:
            continue
        where = f"upstream {upstream.image} ({upstream.name})"
        if found.state is TagState.REFUSED:
            raise EngineError(
                f"{where}: its registry refused the lookup ({found.detail}); check the image name, log in "
                "(`docker login <registry>`) or wait for the rate limit to pass, or pull the image into the engine"
            )
        if found.state is TagState.UNKNOWN:
            raise EngineError(
                f"{where}: its registry's answer is not understood ({found.detail}); pull the image into the "
                "engine, or report this message"
            )
        because = MADE_BECAUSE[found.state]
        suite = debian_suite(upstream.image)
        if suite is None:
            raise EngineError(
                f"{where} is not in the engine and {because} ({found.detail}); only Debian upstreams can be "
                "created here. Build these targets on a host that reaches the registry, or narrow --filter to "
                "the CPU targets"
            )
        log(
            f"upstream {upstream.image}: {because} ({found.detail}); creating it from Debian '{suite}' "
            f"for {', '.join(upstream.platforms)}"
        )
        (create or create_debian_image)(upstream.image, suite, upstream.platforms, log)


def host_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    override = os.environ.get("LLAMA_IMAGES_DEBIAN_MIRROR")
    if override:
        return override
    try:
        for line in sources.read_text(encoding="utf-8").splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except (OSError, IndexError):
        pass
    return DEFAULT_MIRROR


def rootfs_tarball(suite: str, arch: str, mirror: str, log: Callable[[str], None]) -> Path:
    """A debootstrapped minbase root filesystem as a tar, cached across runs."""
    tarball = CACHE_DIR / "rootfs" / f"{suite}-{arch}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is missing: run `invoke engine` (it installs it) or apt-get install debootstrap")
    if os.geteuid() != 0:
        raise EngineError(f"creating debian:{suite} needs root (debootstrap); run as root or pull the image")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    # Debian 12's debootstrap has no script for newer suites; theirs is the same as sid's.
    script = Path("/usr/share/debootstrap/scripts") / suite
    script_args = [] if script.exists() else ["/usr/share/debootstrap/scripts/sid"]
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{suite}-{arch}-", dir=tarball.parent) as work:
        root = Path(work) / "root"
        log(f"debootstrap {suite} ({arch}) from {mirror}")
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--arch={arch}", suite, str(root), mirror, *script_args],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EngineError(f"debootstrap {suite} ({arch}) failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        (root / "etc/apt/apt.conf.d/99offline-mirror").write_text(OFFLINE_APT_CONF, encoding="utf-8")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def create_debian_image(image: str, suite: str, platforms: tuple[str, ...], log: Callable[[str], None]) -> None:
    mirror = host_mirror()
    with tempfile.TemporaryDirectory(prefix="upstream-") as context:
        for platform in platforms:
            arch = platform.removeprefix("linux/")
            link_or_copy(rootfs_tarball(suite, arch, mirror, log), Path(context) / f"rootfs-{arch}.tar")
        (Path(context) / "Dockerfile").write_text(ASSEMBLE_DOCKERFILE, encoding="utf-8")
        command = [
            "buildx", "build", "--load", "--quiet",
            # A fixed creation time: the same root filesystems give the same image under any name,
            # so builds on it share the build cache.
            "--build-arg", "SOURCE_DATE_EPOCH=0", "--provenance=false",
            "--platform", ",".join(platforms),
            "--label", f"{CREATED_LABEL}={','.join(platforms)}",
            "--tag", image, context,
        ]  # fmt: skip
        result = docker(command, EngineError, timeout=1800)
        if result.returncode != 0:
            raise EngineError(f"could not assemble {image}:\n{result.stderr[-3000:]}")
    log(f"upstream {image}: created locally for {', '.join(platforms)}")


def link_or_copy(source: Path, destination: Path) -> None:
    try:
        destination.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, destination)
