"""The CUDA flavor offline: its install step, the base's handling of NVIDIA's compat libraries,
and boot's forward-compatibility decision with a stand-in driver.

NVIDIA's upstream and the real ai-dock tarballs are out of reach here, so:
- the cuda stage is built on the Debian base from a tarball of the release's layout
  (`cuda-<version>/` with executables, shared libraries and VERSION.txt) served from loopback, by
  the name and with the checksum the bake renderer gives it. Its llama-server is a small ELF
  program built here (tests/support/fake_cuda) the way CMake builds the release: with a RUNPATH
  into the build tree on /workspace and an empty entry (the working directory). Its library is a
  real one, ggml's CPU backend taken from the CPU image, which needs OpenMP (libgomp.so.1) as the
  real tarball's libraries do; the Debian base lacks it.
- the base's `system` stage is built on a stand-in CUDA upstream: Debian with NVIDIA's
  CUDA_VERSION and a compat directory where NVIDIA's images have it, /usr/local/cuda/compat.
- boot's decision runs against a stand-in driver: an nvidia-smi script and libcuda.so.1 builds
  whose cuInit returns what a real driver returns in each case (0, or 804 through compat
  libraries on an unsupported GPU), mounted where NVIDIA's Container Toolkit mounts the real ones.
- the release's GPU code is a library carrying a fat binary (tests/support/fatbin.py) for the
  architectures the matrix declares; the stand-in llama-server prints, when told, what a real one
  printed on a GPU the release has no kernels for (ggml's abort).
- NVIDIA's upstream sets ENV CUDA_VERSION (its own, e.g. 12.9.1 under 12.8 binaries, as the
  reference image builds): a stand-in base with that ENV checks nothing reads it in its place.
What runs on a GPU is tested by test_gpu.py on GPU hosts.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_runtime.paths import CUDA_COMPAT_LIBRARIES as COMPAT_DIR

from llama_images.core.bake import RenderOptions, bake_name, render
from llama_images.core.options import Overrides
from llama_images.core.releases import ASSET_NAME, Asset, Release
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE, exec_text, image_ref, wait_for
from tests.matrices import no_fetch, planned, request_for
from tests.support.elf import search_paths
from tests.support.fatbin import section
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

# The shipped CUDA target's release and binaries, built here on the Debian base from a stand-in.
CUDA = shipped.target("cuda")
CPU = shipped.target("cpu", namespace=NAMESPACE)
RELEASE = CUDA.release
BINARY_CUDA = CUDA.binary_cuda or ""
ARCHITECTURES = shipped.SHIPPED.release_source.cuda_architectures[BINARY_CUDA]
# The CUDA version NVIDIA's upstream would set in its ENV, and another release CUDA version a
# plain build may ask for (--build-arg CUDA_VERSION, as the reference's README builds).
UPSTREAM_CUDA_ENV = "12.9.1"
OTHER_CUDA = "12.9"
# ggml's CPU backend and the base library it links, as the tarball carries its own libraries.
CPU_BACKEND = "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-x64.so"
GGML_BASE = "/usr/lib/x86_64-linux-gnu/libggml-base.so.0.27.0"
LIBRARY = "libggml-cpu.so"
# Same length as "libgomp.so.1", so the library's list of needed libraries can be edited in place.
UNKNOWN_LIBRARY = b"libmiss.so.1"
# The release's CMake build tree, on what is our users' volume; ":" adds an empty entry.
BUILD_TREE_RUNPATH = "/workspace/llama.cpp/build/bin:"
FAKES = REPO_ROOT / "tests/support/fake_cuda"
# The compat libraries' driver (cuda-compat-12-8) as their file name gives it.
COMPAT_DRIVER = "570.124.06"
STAGE_IMAGE = image_ref("cuda-stage-test", "ok")
NVIDIA_LIKE_BASE = image_ref("cuda-stage-test", "base-with-cuda-version-env")


def build(context: Path, tag: str | None, *args: str, output: Path | None = None) -> subprocess.CompletedProcess[str]:
    """docker buildx build for linux/amd64, loaded into the engine as `tag` (or its files written
    to `output`; with neither, only built: a build meant to fail)."""
    command = ["docker", "buildx", "build", "--platform", "linux/amd64", *args]
    if output:
        command += ["--output", f"type=local,dest={output}"]
    else:
        command += ["--load", "-t", tag] if tag else ["--output", "type=cacheonly"]
    return subprocess.run([*command, str(context)], capture_output=True, text=True, check=False, timeout=900)


def file_from_image(client: Any, image: str, path: str) -> bytes:
    """A file's bytes, copied out of the image's amd64 variant (logs are not binary-safe)."""
    container = client.containers.create(image, ["true"], entrypoint=[], platform="linux/amd64")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(archive.getmembers()[0])
            assert member is not None
            return member.read()
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def ggml(main_build: Any, client: Any) -> dict[str, bytes]:
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    return {
        LIBRARY: file_from_image(client, CPU.image, CPU_BACKEND),
        "base": file_from_image(client, CPU.image, GGML_BASE),
    }


@pytest.fixture(scope="module")
def fakes(ggml: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in llama-server and libcuda builds (tests/support/fake_cuda/Dockerfile)."""
    context = tmp_path_factory.mktemp("fake-cuda-src")
    shutil.copytree(FAKES, context, dirs_exist_ok=True)
    (context / "libggml-base.so.0").write_bytes(ggml["base"])
    (context / "fatbin.bin").write_bytes(section(ARCHITECTURES))  # the GPU code the matrix declares
    out = tmp_path_factory.mktemp("fake-cuda")
    result = build(context, None, "--build-arg", f"RUNPATH={BUILD_TREE_RUNPATH}", output=out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def tarball_bytes(files: dict[str, bytes], cuda: str = BINARY_CUDA) -> bytes:
    """A release tarball: `files` in `cuda-<version>/`, with the VERSION.txt ai-dock's build writes."""
    version = f"llama.cpp version: {RELEASE}\nCUDA version: {cuda}\nArchitectures: {';'.join(ARCHITECTURES)}\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {**files, "VERSION.txt": version.encode()}.items():
            info = tarfile.TarInfo(f"cuda-{cuda}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644 if name.endswith(".txt") else 0o755, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Releases:
    """Download URLs (LLAMA_CPP_RELEASE_URL) of release variants, and each tarball's sha256."""

    url: str
    sha256: dict[str, str]  # variant -> sha256 of its tarball of BINARY_CUDA

    def of(self, variant: str) -> tuple[str, str]:
        """(LLAMA_CPP_RELEASE_URL, sha256) of a variant."""
        return (f"{self.url}/{variant}" if variant else self.url), self.sha256[variant]


@pytest.fixture(scope="module")
def release_server(ggml: dict[str, bytes], fakes: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """Serves <url>/<variant>/<release>/<asset> from loopback. Variants: "" the release as it is
    (and its tarball of OTHER_CUDA); "unknown" a library needs one no package provides; "broken"
    an ELF file cut short; "lib" llama-server finds libggml-base in lib/ through RUNPATH $ORIGIN/lib."""
    root = tmp_path_factory.mktemp("releases")
    library = ggml[LIBRARY]
    assert library.count(b"libgomp.so.1") >= 1
    server = (fakes / "llama-server").read_bytes()
    assert BUILD_TREE_RUNPATH.encode() in server  # the RUNPATH a CMake build tree gives
    release = {
        "llama-server": server,
        LIBRARY: library,
        "libggml-base.so.0": ggml["base"],
        "libggml-cuda.so": (fakes / "libggml-cuda.so").read_bytes(),
    }
    variants = {
        "": release,
        "unknown": {**release, LIBRARY: library.replace(b"libgomp.so.1", UNKNOWN_LIBRARY)},
        "broken": {**release, "libggml-broken.so": ggml["base"][:300]},
        "lib": {  # (without ggml's CPU backend, which would need libggml-base beside it)
            "llama-server": (fakes / "llama-server-lib").read_bytes(),
            "lib/libggml-base.so.0": ggml["base"],
            "libggml-cuda.so": release["libggml-cuda.so"],
        },
    }
    shas = {}
    for variant, files in variants.items():
        tarball = tarball_bytes(files)
        asset = root / variant / RELEASE / ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
        asset.parent.mkdir(parents=True, exist_ok=True)
        asset.write_bytes(tarball)
        shas[variant] = hashlib.sha256(tarball).hexdigest()
    other = root / RELEASE / ASSET_NAME.format(release=RELEASE, cuda=OTHER_CUDA, arch="amd64")
    other.write_bytes(tarball_bytes(release, OTHER_CUDA))
    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield Releases(f"http://127.0.0.1:{http.server_address[1]}", shas)
    http.shutdown()
    http.server_close()


@pytest.fixture(scope="module")
def nvidia_like_base(client: Any, main_build: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Debian base with the ENV CUDA_VERSION NVIDIA's images set (another version than the
    binaries', as the reference's cuda-12.9 base under 12.8 binaries)."""
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    context = tmp_path_factory.mktemp("nvidia-like-base")
    (context / "Dockerfile").write_text(
        f"FROM {CPU.base.image}\nENV CUDA_VERSION={UPSTREAM_CUDA_ENV}\n", encoding="utf-8"
    )
    result = build(context, NVIDIA_LIKE_BASE)
    assert result.returncode == 0, result.stderr[-3000:]
    yield NVIDIA_LIKE_BASE
    client.images.remove(NVIDIA_LIKE_BASE, force=True)


def rendered_args(tmp_path: Path, download_url: str, sha256: str, base: str) -> dict[str, str]:
    """The build args production rendering gives a CUDA target built on the Debian base (on
    `base`: that base with NVIDIA's ENV CUDA_VERSION)."""
    document = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text(encoding="utf-8"))
    document["release_source"]["download_url"] = download_url
    debian = CPU.base.upstream.name
    document["upstreams"][debian]["cuda"] = BINARY_CUDA
    document["flavors"][CUDA.flavor.name].update(upstreams=[debian], binary_cuda={debian: BINARY_CUDA})
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    plan = planned(request_for(path, ("cuda/*",), Overrides(platforms=("linux/amd64",), namespace=NAMESPACE)), no_fetch)
    name = ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
    release = Release(RELEASE, (Asset(name, f"{download_url}/{RELEASE}/{name}", sha256),))
    options = RenderOptions("test", "2026-01-01T00:00:00Z", releases={RELEASE: release})
    bake = render(plan.matrix, plan.targets, options)
    args: dict[str, str] = bake["target"][bake_name(f"{CUDA.flavor.name}/{debian}/{RELEASE}")]["args"]
    return {**args, "BASE_IMAGE": base}


def build_cuda_stage(args: dict[str, str], tag: str) -> subprocess.CompletedProcess[str]:
    """The derivative built with `args`: loaded as `tag`, or only built (a build meant to fail)."""
    # Host networking: the RUN step must reach the loopback release server.
    build_args = [item for key, value in args.items() for item in ("--build-arg", f"{key}={value}")]
    if not tag:
        build_args += ["--target", "llama-cuda"]
        return build(REPO_ROOT / "derivatives/llama-cpp", None, "--network", "host", *build_args)
    return build(REPO_ROOT / "derivatives" / "llama-cpp", tag, "--network", "host", *build_args)


@dataclass(frozen=True)
class Stage:
    image: str
    build: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def stage(
    client: Any, release_server: Releases, nvidia_like_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    """The cuda stage as the bake builds it, on a base whose ENV CUDA_VERSION names another version."""
    args = rendered_args(tmp_path_factory.mktemp("matrix"), *release_server.of(""), nvidia_like_base)
    assert args["LLAMA_CPP_SHA256_AMD64"] == release_server.sha256[""]
    assert args["LLAMA_CPP_CUDA_VERSION"] == BINARY_CUDA and "CUDA_VERSION" not in args
    assert args["LLAMA_CPP_CUDA_ARCHITECTURES"] == ";".join(ARCHITECTURES)
    result = build_cuda_stage(args, STAGE_IMAGE)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "installing what the tarball needs: libgomp1" in result.stderr
    assert f"RUNPATH {BUILD_TREE_RUNPATH} -> $ORIGIN: llama-server" in result.stderr
    yield Stage(STAGE_IMAGE, result)
    client.images.remove(STAGE_IMAGE, force=True)


@pytest.fixture(scope="module")
def stage_image(stage: Stage) -> str:
    return stage.image


def run(client: Any, image: str, script: str, **kwargs: Any) -> str:
    output: bytes = client.containers.run(image, ["bash", "-c", script], entrypoint=[], remove=True, **kwargs)
    return output.decode(errors="replace")


def test_the_tarball_is_verified_and_installed_on_path_with_what_it_needs(client: Any, stage_image: str) -> None:
    assert run(client, stage_image, "llama-server --version").strip() == "version: 11669 (release tarball)"
    assert RELEASE in run(client, stage_image, "cat /opt/llama.cpp/VERSION.txt")
    linked = run(client, stage_image, f"ldd /opt/llama.cpp/{LIBRARY}")
    assert "libgomp.so.1 => /" in linked and "not found" not in linked
    # The build tools (patchelf, readelf) are gone again.
    assert run(client, stage_image, "command -v patchelf readelf || echo none").strip() == "none"


def test_no_runpath_leads_into_the_users_volume(client: Any, stage_image: str) -> None:
    """The release's RUNPATH pointed into /workspace (and at the working directory, llama-server's
    is /workspace): a library a user leaves there would be loaded before the image's."""
    script = (
        "mkdir -p /workspace/llama.cpp/build/bin"
        " && cp /opt/llama.cpp/libggml-base.so.0 /workspace/llama.cpp/build/bin/"
        " && cp /opt/llama.cpp/libggml-base.so.0 /workspace/"
        " && cd /workspace && ldd /usr/local/bin/llama-server"
    )
    linked = run(client, stage_image, script)
    assert "libggml-base.so.0 => /opt/llama.cpp/libggml-base.so.0" in linked, linked
    # What readelf -d shows (the image keeps no readelf): $ORIGIN only.
    for name in ("llama-server", LIBRARY, "libggml-base.so.0"):
        paths = search_paths(file_from_image(client, stage_image, f"/opt/llama.cpp/{name}"))
        assert set(paths.values()) <= {"$ORIGIN"}, (name, paths)
    assert search_paths(file_from_image(client, stage_image, "/opt/llama.cpp/llama-server")) == {"RUNPATH": "$ORIGIN"}


def test_the_kernel_cache_is_on_the_volume_and_in_tmp_where_it_cannot_be(
    client: Any, stage_image: str, tmp_path: Path
) -> None:
    """CUDA_CACHE_PATH reaches llama-server (the stand-in prints it): the /workspace volume when it
    can be written; /tmp, said in the log, under a read-only root or --user without one."""
    image_env = client.images.get(stage_image).attrs["Config"]["Env"]
    assert "CUDA_CACHE_PATH=/workspace/.cache/nv/ComputeCache" in image_env
    assert "CUDA_CACHE_MAXSIZE=4294967296" in image_env
    assert "NVIDIA_DISABLE_REQUIRE=true" in image_env  # boot decides, not the toolkit's requirement check
    write_tiny_llama_gguf(tmp_path / "tiny.gguf").chmod(0o644)
    tmp_path.chmod(0o755)  # readable by --user 1000
    mounts = {str(tmp_path): {"bind": "/models", "mode": "ro"}}
    env = {"LLAMA_MODEL": "/models/tiny.gguf", "LLAMA_START_ATTEMPTS": "1"}
    writable_volume = {"/run": "uid=1000,gid=1000", "/tmp": "", "/workspace": "uid=1000"}
    cases: list[tuple[dict[str, Any], str, bool]] = [
        ({}, "/workspace/.cache/nv/ComputeCache", False),
        ({"read_only": True, "tmpfs": {"/run": "", "/tmp": ""}}, "/tmp/nv-compute-cache", True),
        ({"user": "1000:1000", "tmpfs": {"/run": "uid=1000,gid=1000", "/tmp": ""}}, "/tmp/nv-compute-cache", True),
        ({"user": "1000:1000", "tmpfs": writable_volume}, "/workspace/.cache/nv/ComputeCache", False),
    ]
    for options, path, moved in cases:
        container = client.containers.run(stage_image, detach=True, environment=env, volumes=mounts, **options)
        try:
            logs = wait_llama_logged(container, f"fake llama-server: CUDA_CACHE_PATH={path}", options)
            assert ("CUDA's kernel cache cannot be written at /workspace/.cache/nv/ComputeCache" in logs) is moved
        finally:
            container.remove(force=True)


def llama_log(container: Any) -> str:
    """Program llama's log (the launcher's lines and llama-server's output)."""
    return exec_text(container, "supervisorctl", "tail", "-100000", "llama")[1]


def wait_llama_logged(container: Any, text: str, run: object = None, seconds: float = 60) -> str:
    """Program llama's log once it shows `text` (`run`: the docker run options, for the message)."""
    what = f"{text!r} not in llama's log (docker run options {run})"
    wait_for(lambda: text in llama_log(container), seconds, what, container)
    return llama_log(container)


def wait_logged(container: Any, text: str, seconds: float = 60) -> str:
    """The container's log once it shows `text`."""
    wait_for(lambda: text in container.logs().decode(errors="replace"), seconds, f"{text!r} not logged", container)
    logs: str = container.logs().decode(errors="replace")
    return logs


def test_a_library_nothing_provides_fails_the_build_and_is_named(
    release_server: Releases, nvidia_like_base: str, tmp_path: Path
) -> None:
    args = rendered_args(tmp_path, *release_server.of("unknown"), nvidia_like_base)
    result = build_cuda_stage(args, image_ref("cuda-stage-test", "unknown-library"))
    assert result.returncode != 0
    assert "missing shared libraries:" in result.stderr and "libmiss.so.1" in result.stderr


def test_a_tarball_with_another_checksum_fails_the_build(
    release_server: Releases, nvidia_like_base: str, tmp_path: Path
) -> None:
    args = rendered_args(tmp_path, release_server.url, "0" * 64, nvidia_like_base)
    result = build_cuda_stage(args, image_ref("cuda-stage-test", "bad"))
    assert result.returncode != 0
    assert "FAILED" in result.stderr


def test_an_elf_file_readelf_cannot_read_fails_the_build(
    release_server: Releases, nvidia_like_base: str, tmp_path: Path
) -> None:
    """Its RUNPATH cannot be checked: before, the check passed it silently."""
    result = build_cuda_stage(rendered_args(tmp_path, *release_server.of("broken"), nvidia_like_base), "")
    assert result.returncode != 0
    assert "readelf cannot read these ELF files:" in result.stderr
    assert "/opt/llama.cpp/libggml-broken.so: readelf: Error" in result.stderr


def test_libraries_are_checked_again_after_the_runpath_rewrite(
    release_server: Releases, nvidia_like_base: str, tmp_path: Path
) -> None:
    """A library reached only through the release's own RUNPATH ($ORIGIN/lib) is found before the
    rewrite to $ORIGIN and missing after it: the image would not start llama-server."""
    result = build_cuda_stage(rendered_args(tmp_path, *release_server.of("lib"), nvidia_like_base), "")
    assert result.returncode != 0
    assert "RUNPATH $ORIGIN/lib -> $ORIGIN: llama-server" in result.stderr, result.stderr[-3000:]
    named = re.search(r"missing shared libraries after the RUNPATH rewrite:\n#\d+ [\d.]+ (\S+)", result.stderr)
    assert named is not None and named.group(1) == "libggml-base.so.0", result.stderr[-3000:]


def test_the_release_s_gpu_code_is_checked_against_the_declared_architectures(
    stage: Stage, client: Any, release_server: Releases, nvidia_like_base: str, tmp_path: Path
) -> None:
    declared = ";".join(ARCHITECTURES)
    assert f"CUDA architectures: {declared}, as the release's GPU code says" in stage.build.stderr
    assert f"LLAMA_CPP_CUDA_ARCHITECTURES={declared}" in client.images.get(stage.image).attrs["Config"]["Env"]
    # The matrix forgot one: the build names what it declared and what the binaries carry.
    args = rendered_args(tmp_path, *release_server.of(""), nvidia_like_base)
    result = build_cuda_stage({**args, "LLAMA_CPP_CUDA_ARCHITECTURES": ";".join(ARCHITECTURES[:-1])}, "")
    assert result.returncode != 0
    numbers = ", ".join(a.split("-")[0] for a in ARCHITECTURES)
    assert f"but the release's libggml-cuda.so carry PTX for {numbers}" in result.stderr
    assert "correct release_source.cuda_architectures in matrix.yaml" in result.stderr


def test_the_bake_installs_the_tarball_the_matrix_names_whatever_the_upstream_s_cuda_env(
    client: Any, stage_image: str
) -> None:
    assert f"CUDA version: {BINARY_CUDA}" in run(client, stage_image, "cat /opt/llama.cpp/VERSION.txt")
    env = client.images.get(stage_image).attrs["Config"]["Env"]
    assert f"LLAMA_CPP_CUDA_VERSION={BINARY_CUDA}" in env and f"CUDA_VERSION={UPSTREAM_CUDA_ENV}" in env


def test_a_plain_build_takes_cuda_version_as_the_reference_readme_builds(
    client: Any, release_server: Releases, nvidia_like_base: str
) -> None:
    """`docker buildx build --build-arg CUDA_VERSION=12.9 ...` on an upstream whose ENV says
    12.9.1: the 12.9 tarball (before, the argument was ignored: the 12.8 one)."""
    plain = [
        "--build-arg", f"BASE_IMAGE={nvidia_like_base}", "--build-arg", f"LLAMA_CPP_VERSION={RELEASE}",
        "--build-arg", "LLAMA_CPP_FLAVOR=cuda", "--build-arg", f"LLAMA_CPP_RELEASE_URL={release_server.url}",
    ]  # fmt: skip
    tag = image_ref("cuda-stage-test", "cuda-version-argument")
    result = build(REPO_ROOT / "derivatives/llama-cpp", tag, "--network", "host", *plain,
                   "--build-arg", f"CUDA_VERSION={OTHER_CUDA}")  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr[-4000:]
        assert f"CUDA version: {OTHER_CUDA}" in run(client, tag, "cat /opt/llama.cpp/VERSION.txt")
        assert f"LLAMA_CPP_CUDA_VERSION={OTHER_CUDA}" in client.images.get(tag).attrs["Config"]["Env"]
    finally:
        client.images.remove(tag, force=True)
    both = build(REPO_ROOT / "derivatives/llama-cpp", None, "--network", "host", *plain,
                 "--build-arg", f"CUDA_VERSION={OTHER_CUDA}", "--build-arg", f"LLAMA_CPP_CUDA_VERSION={BINARY_CUDA}",
                 "--target", "llama-cuda")  # fmt: skip
    assert both.returncode != 0
    assert (
        f"CUDA_VERSION={OTHER_CUDA} and LLAMA_CPP_CUDA_VERSION={BINARY_CUDA} name two tarballs: give one" in both.stderr
    )


def compat_dir(root: Path, library: Path) -> Path:
    """A compat directory as cuda-compat-12-8 lays it out: libcuda.so.<driver> and its soname link."""
    root.mkdir(parents=True)
    shutil.copy(library, root / f"libcuda.so.{COMPAT_DRIVER}")
    (root / "libcuda.so.1").symlink_to(f"libcuda.so.{COMPAT_DRIVER}")
    return root


def test_the_compat_libraries_leave_the_path_the_toolkit_applies(client: Any, fakes: Path, tmp_path: Path) -> None:
    """NVIDIA's images carry /usr/local/cuda-X.Y/compat, reached as /usr/local/cuda/compat, which
    the Container Toolkit puts in front of the driver by itself: the base's system stage moves it."""
    context = tmp_path / "upstream"
    compat_dir(context / "compat", fakes / "compat-ok" / "libcuda.so")
    (context / "Dockerfile").write_text(
        "FROM debian:forky-slim\n"
        "ENV CUDA_VERSION=12.8.1\n"
        "COPY compat /usr/local/cuda-12.8/compat\n"
        "RUN ln -s cuda-12.8 /usr/local/cuda\n",
        encoding="utf-8",
    )
    upstream = image_ref("cuda-stage-test", "stand-in-cuda-upstream")
    system = image_ref("cuda-stage-test", "system-on-cuda")
    try:
        assert (built := build(context, upstream)).returncode == 0, built.stderr[-3000:]
        result = build(
            REPO_ROOT / "base-image", system, "--target", "system", "--build-arg", f"UPSTREAM_IMAGE={upstream}"
        )
        assert result.returncode == 0, result.stderr[-4000:]
        found = run(
            client, system,
            "for p in /usr/local/cuda/compat /usr/local/cuda-12.8/compat; do test -e $p && echo left: $p; done;"
            f" ls {COMPAT_DIR}",
        )  # fmt: skip
        assert "left:" not in found, found
        assert f"libcuda.so.{COMPAT_DRIVER}" in found.split() and "libcuda.so.1" in found.split()
    finally:
        for image in (system, upstream):
            client.images.remove(image, force=True)


FAKE_NVIDIA_SMI = """#!/bin/sh
# nvidia-smi as NVIDIA's Container Toolkit mounts it, for one GPU.
case "$*" in
    *--query-gpu=name,driver_version*) echo "{gpu}, {driver}" ;;
    *--query-gpu=name,compute_cap*) {compute} ;;
    *--query-gpu=name*) echo "{gpu}" ;;
    -L) echo "GPU 0: {gpu} (UUID: GPU-5e1f0000-0000-0000-0000-000000000000)" ;;
esac
"""
# What nvidia-smi before R510 answers for the field (canonical/inference-snaps#128, 470.182.03).
NO_COMPUTE_CAP = """echo 'Field "compute_cap" is not a valid field to query.'; exit 2"""


def start_with_driver(
    client: Any,
    image: str,
    fakes: Path,
    tmp_path: Path,
    gpu: str | None,
    driver: str | None,
    compat: str = "compat-ok",
    env: dict[str, str] | None = None,
    capability: str | None = None,
    volumes: dict[str, str] | None = None,
) -> Any:
    """The image with a stand-in driver where NVIDIA's Container Toolkit mounts the real one:
    nvidia-smi (its compute capability `capability`, or the old driver's refusal when None) and
    a libcuda.so.1 whose cuInit succeeds (CUDA 12.2); compat libraries `compat`."""
    mounts = {str(compat_dir(tmp_path / "compat", fakes / compat / "libcuda.so")): str(COMPAT_DIR)}
    if gpu is not None:
        smi = tmp_path / "nvidia-smi"
        compute = f'echo "{gpu}, {capability}"' if capability else NO_COMPUTE_CAP
        smi.write_text(FAKE_NVIDIA_SMI.format(gpu=gpu, driver=driver, compute=compute), encoding="utf-8")
        smi.chmod(0o755)
        mounts[str(smi)] = "/usr/bin/nvidia-smi"
        mounts[str(fakes / "driver" / "libcuda.so")] = "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    mounts.update(volumes or {})
    return client.containers.run(
        image,
        detach=True,
        environment=env or {},
        volumes={host: {"bind": path, "mode": "ro"} for host, path in mounts.items()},
    )


def supervisord_library_path(container: Any) -> str | None:
    """LD_LIBRARY_PATH of supervisord, whose programs (llama-server among them) inherit it; None
    before it runs."""
    code, output = exec_text(
        container, "python3", "-c",
        "import pathlib\n"
        "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
        "    try:\n"
        "        if b'supervisord' in (p / 'cmdline').read_bytes():\n"
        "            env = dict(v.split('=', 1) for v in (p / 'environ').read_text().split('\\0') if '=' in v)\n"
        "            print('LD_LIBRARY_PATH=' + env.get('LD_LIBRARY_PATH', ''))\n"
        "    except OSError: pass\n",
    )  # fmt: skip
    assert code == 0, output
    return output.strip().removeprefix("LD_LIBRARY_PATH=") if output.startswith("LD_LIBRARY_PATH=") else None


@pytest.mark.parametrize(
    ("gpu", "driver", "compat", "env", "line", "used"),
    [
        (
            "NVIDIA H100 80GB HBM3", "535.183.01", "compat-ok", {},
            f"[cuda-compat] using forward compatibility from {COMPAT_DIR}: cuInit OK, CUDA 12.8 (compat libraries "
            f"of driver {COMPAT_DRIVER} (CUDA 12.8), driver 535.183.01 (CUDA 12.2), NVIDIA H100 80GB HBM3, image "
            "CUDA 12.8)",
            True,
        ),
        (
            "NVIDIA H100 80GB HBM3", "535.183.01", "compat-804", {},
            "[cuda-compat] not used: cuInit failed: error 804 (forward compatibility was attempted on non supported "
            "HW) through the compat libraries",
            False,
        ),
        (
            "NVIDIA H100 80GB HBM3", "535.183.01", "compat-ok", {"DISABLE_FORWARD_COMPAT": "true"},
            "[cuda-compat] DISABLE_FORWARD_COMPAT=true: not used (driver 535.183.01 (CUDA 12.2)",
            False,
        ),
        (
            "NVIDIA GeForce RTX 4090", "535.183.01", "compat-ok", {},
            "[cuda-compat] not used: NVIDIA supports it on data-center GPUs only, not GeForce/TITAN (driver "
            "535.183.01 (CUDA 12.2), NVIDIA GeForce RTX 4090, image CUDA 12.8); cuInit OK, CUDA 12.2; this image's "
            "CUDA 12.8 needs driver 570.26 or newer",
            False,
        ),
        (
            "NVIDIA H100 80GB HBM3", "570.133.20", "compat-ok", {},
            "[cuda-compat] not needed: the driver runs the image's CUDA natively (driver 570.133.20 (CUDA 12.8)",
            False,
        ),
        (
            None, None, "compat-ok", {}, "[cuda-compat] no NVIDIA GPU visible (docker run --gpus all gives it one)",
            False,
        ),
    ],
)  # fmt: skip
def test_boot_decides_and_probes_forward_compatibility(
    client: Any,
    stage_image: str,
    fakes: Path,
    tmp_path: Path,
    gpu: str | None,
    driver: str | None,
    compat: str,
    env: dict[str, str],
    line: str,
    used: bool,
) -> None:
    """A stand-in driver where the toolkit mounts the real one: nvidia-smi, and a libcuda.so.1
    whose cuInit succeeds (CUDA 12.2, a 535 driver); compat libraries whose cuInit succeeds
    (CUDA 12.8) or returns 804, as on a GPU that does not support them."""
    container = start_with_driver(client, stage_image, fakes, tmp_path, gpu, driver, compat, env, "9.0")
    try:
        wait_for(
            lambda: "[cuda-compat]" in container.logs().decode(errors="replace"), 60, "no [cuda-compat]", container
        )
        logs = container.logs().decode(errors="replace")
        shown = next(text for text in logs.splitlines() if text.startswith("[cuda-compat]"))
        assert shown.startswith(line), shown
        wait_for(lambda: supervisord_library_path(container) is not None, 30, "no supervisord", container)
        assert str(supervisord_library_path(container)).startswith(str(COMPAT_DIR)) is used
    finally:
        container.remove(force=True)


def llama_state(container: Any) -> str:
    return exec_text(container, "supervisorctl", "status", "llama")[1]


def model_volume(tmp_path: Path) -> dict[str, str]:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_llama_gguf(models / "tiny.gguf").chmod(0o644)
    models.chmod(0o755)
    return {str(models): "/models"}


# ggml's abort on a GPU the release has no kernels for, as common.cuh formats it (ggml-org/
# llama.cpp#15589 shows the line), for a V100 (7.0) and a P40 (6.1).
ABORT = "/opt/llama.cpp/ggml/src/ggml-cuda/common.cuh:112: ggml was not compiled with any CUDA arch <= {cc}"


@pytest.mark.parametrize(
    ("gpu", "driver", "capability", "listed_capability", "shown"),
    [
        # A current driver: nvidia-smi says 7.0.
        ("Tesla V100-SXM2-16GB", "570.133.20", "7.0", "7.0", "compute capability 7.0 (nvidia-smi)"),
        # R470, whose nvidia-smi lacks compute_cap: ggml's own report in --list-devices says 6.1.
        ("Tesla P40", "470.182.03", None, "6.1", "compute capability 6.1 (ggml)"),
    ],
)
def test_a_gpu_the_release_has_no_kernels_for_is_said_before_the_start_and_ends_at_the_first_failure(
    client: Any,
    stage_image: str,
    fakes: Path,
    tmp_path: Path,
    gpu: str,
    driver: str,
    capability: str | None,
    listed_capability: str,
    shown: str,
) -> None:
    """Before: --list-devices listed CUDA0 (no CPU-fallback warning), the abort was not recognised,
    and the user saw three failed starts and FATAL."""
    cc = listed_capability.replace(".", "") + "0"
    env = {
        "LLAMA_MODEL": "/models/tiny.gguf",
        "LLAMA_START_ATTEMPTS": "3",
        "FAKE_LIST_DEVICES": f"ggml_cuda_init: found 1 CUDA devices:\n  Device 0: {gpu}, compute capability "
        f"{listed_capability}, VMM: yes\nAvailable devices:\n  CUDA0: {gpu} (16160 MiB, 15800 MiB free)",
        "FAKE_OUTPUT": ABORT.format(cc=cc),
    }
    container = start_with_driver(
        client, stage_image, fakes, tmp_path, gpu, driver, env=env, capability=capability,
        volumes=model_volume(tmp_path),
    )  # fmt: skip
    try:
        wait_for(lambda: "FATAL" in llama_state(container), 90, "llama did not end FATAL", container)
        log = llama_log(container)
        warned = log.index("WARNING: NO GPU HERE CAN RUN THIS IMAGE'S CUDA KERNELS.")
        assert warned < log.index("starting llama-server (attempt 1/3)")
        assert f"WARNING: GPU 0: {gpu}, {shown}" in log
        assert "WARNING: use the vulkan image (tag <release>-vulkan) with --gpus all: it runs on this GPU." in log
        assert log.count("starting llama-server (attempt") == 1
        assert (
            "giving up after 1 attempt (the GPU or its driver cannot run this image's CUDA: retrying cannot help)"
            in (log)
        )
        status = exec_text(container, "cat", "/run/llama-images/status/llama")[1]
        assert status.startswith(
            f"failed: GPU too old for this image (use the vulkan image): the GPU's compute capability "
            f"{listed_capability} is older than every architecture this image's CUDA kernels are built for"
        ), status
        assert (
            "is older than every architecture this image's CUDA kernels are built for compute capability 7.5 and "
            "newer: use the vulkan image (tag <release>-vulkan), which runs on this GPU" in status
        )
    finally:
        container.remove(force=True)


def test_the_compat_decision_survives_a_settings_file_and_reaches_every_shell(
    client: Any, stage_image: str, fakes: Path, tmp_path: Path
) -> None:
    """`env >> /etc/environment` writes an LD_LIBRARY_PATH; before, it removed the compat libraries
    from llama-server's environment while [cuda-compat] still said they were used, and docker exec
    shells never had them."""
    env = {"LLAMA_MODEL": "/models/tiny.gguf", "LLAMA_START_ATTEMPTS": "1"}
    container = start_with_driver(
        client, stage_image, fakes, tmp_path, "NVIDIA H100 80GB HBM3", "535.183.01", env=env, capability="9.0",
        volumes=model_volume(tmp_path),
    )  # fmt: skip
    try:
        first = wait_llama_logged(container, "fake llama-server: LD_LIBRARY_PATH=")
        assert f"fake llama-server: LD_LIBRARY_PATH={COMPAT_DIR}" in first
        assert "fake llama-server: cwd=/\n" in first  # not /workspace: ggml loads backends from there
        wait_for(lambda: "FATAL" in llama_state(container), 60, "llama did not end FATAL", container)
        exec_text(
            container, "sh", "-c",
            "echo 'LD_LIBRARY_PATH=/usr/local/nvidia/lib' >> /etc/environment && supervisorctl start llama",
        )  # fmt: skip
        wait_for(lambda: llama_log(container).count("fake llama-server: LD_LIBRARY_PATH=") == 2, 60, "no restart",
                 container)  # fmt: skip
        log = llama_log(container)
        assert f"fake llama-server: LD_LIBRARY_PATH={COMPAT_DIR}:/usr/local/nvidia/lib\n" in log
        assert (
            f"[llama] WARNING: LD_LIBRARY_PATH from /etc/environment leaves out {COMPAT_DIR}, the CUDA "
            "forward-compatibility libraries boot chose (/run/llama-images/boot/cuda-compat): they stay first"
        ) in log
        for shell in (["bash", "-lc"], ["bash", "-ic"], ["sh", "-lc"]):
            output = exec_text(container, *shell, 'printf "<%s>" "$LD_LIBRARY_PATH"')[1]
            assert f"<{COMPAT_DIR}" in output, (shell, output)
    finally:
        container.remove(force=True)


def test_a_ggml_library_in_the_workspace_is_not_loaded(
    client: Any, main_build: Any, fakes: Path, tmp_path: Path
) -> None:
    """ggml's backend loader searches the executable's directory and then the working directory
    (Debian's build too): llama-server ran in /workspace, the users' volume, and loaded any
    libggml-*.so a user or a downloaded repo left there."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name in ("libggml-cpu.so", "libggml-cpu-zen9.so", "libggml-rpc.so", "libggml-vulkan.so"):
        shutil.copy(fakes / "planted.so", workspace / name)
        (workspace / name).chmod(0o755)
    volumes = {str(workspace): {"bind": "/workspace", "mode": "rw"}}
    volumes.update({host: {"bind": path, "mode": "ro"} for host, path in model_volume(tmp_path).items()})
    container = client.containers.run(
        CPU.image, detach=True, environment={"LLAMA_MODEL": "/models/tiny.gguf"}, volumes=volumes
    )
    try:
        wait_for(
            lambda: exec_text(container, "cat", "/run/llama-images/status/llama")[1].startswith("serving"),
            90, "llama-server did not serve", container,
        )  # fmt: skip
        assert exec_text(container, "cat", "/tmp/planted-library-loaded")[0] != 0, "a library in /workspace was loaded"
        # Started there, llama-server loads them: the files can be loaded, and the test can fail.
        exec_text(container, "sh", "-c", "cd /workspace && llama-server --list-devices")
        assert exec_text(container, "cat", "/tmp/planted-library-loaded")[1].startswith("llama-server")
    finally:
        container.remove(force=True)
