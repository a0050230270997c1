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
What runs on a GPU is tested by test_gpu.py on GPU hosts.
"""

from __future__ import annotations

import functools
import hashlib
import io
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
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

# The shipped CUDA target's release and binaries, built here on the Debian base from a stand-in.
CUDA = shipped.target("cuda")
CPU = shipped.target("cpu", namespace=NAMESPACE)
RELEASE = CUDA.release
BINARY_CUDA = CUDA.binary_cuda or ""
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


def build(context: Path, tag: str | None, *args: str, output: Path | None = None) -> subprocess.CompletedProcess[str]:
    """docker buildx build for linux/amd64, loaded into the engine (or its files written to `output`)."""
    command = ["docker", "buildx", "build", "--platform", "linux/amd64", *args]
    command += ["--output", f"type=local,dest={output}"] if output else ["--load", "-t", str(tag)]
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
    out = tmp_path_factory.mktemp("fake-cuda")
    result = build(context, None, "--build-arg", f"RUNPATH={BUILD_TREE_RUNPATH}", output=out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def tarball_bytes(server: bytes, library: bytes, base: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data, mode in (
            (f"cuda-{BINARY_CUDA}/llama-server", server, 0o755),
            (f"cuda-{BINARY_CUDA}/{LIBRARY}", library, 0o755),
            (f"cuda-{BINARY_CUDA}/libggml-base.so.0", base, 0o755),
            (f"cuda-{BINARY_CUDA}/VERSION.txt", f"llama.cpp version: {RELEASE}\n".encode(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Releases:
    """Download URLs (LLAMA_CPP_RELEASE_URL) and the tarball's sha256 at each."""

    url: str
    sha256: str
    unknown_library_url: str  # a tarball whose library needs one no package provides
    unknown_library_sha256: str


@pytest.fixture(scope="module")
def release_server(ggml: dict[str, bytes], fakes: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """Serves <url>/<release>/<asset> from loopback."""
    root = tmp_path_factory.mktemp("releases")
    library = ggml[LIBRARY]
    assert library.count(b"libgomp.so.1") >= 1
    server = (fakes / "llama-server").read_bytes()
    assert BUILD_TREE_RUNPATH.encode() in server  # the RUNPATH a CMake build tree gives
    shas = []
    for prefix, data in (("", library), ("unknown/", library.replace(b"libgomp.so.1", UNKNOWN_LIBRARY))):
        tarball = tarball_bytes(server, data, ggml["base"])
        asset = root / prefix / RELEASE / ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
        asset.parent.mkdir(parents=True)
        asset.write_bytes(tarball)
        shas.append(hashlib.sha256(tarball).hexdigest())
    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}"
    yield Releases(url, shas[0], f"{url}/unknown", shas[1])
    http.shutdown()
    http.server_close()


def rendered_args(tmp_path: Path, download_url: str, sha256: str) -> dict[str, str]:
    """The build args production rendering gives a CUDA target built on the Debian base."""
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
    return args


def build_cuda_stage(args: dict[str, str], tag: str) -> subprocess.CompletedProcess[str]:
    # Host networking: the RUN step must reach the loopback release server.
    build_args = [item for key, value in args.items() for item in ("--build-arg", f"{key}={value}")]
    return build(REPO_ROOT / "derivatives" / "llama-cpp", tag, "--network", "host", *build_args)


@pytest.fixture(scope="module")
def stage_image(client: Any, release_server: Releases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = rendered_args(tmp_path_factory.mktemp("matrix"), release_server.url, release_server.sha256)
    assert args["LLAMA_CPP_SHA256_AMD64"] == release_server.sha256
    assert args["LLAMA_CPP_CUDA_VERSION"] == BINARY_CUDA and "CUDA_VERSION" not in args
    result = build_cuda_stage(args, STAGE_IMAGE)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "installing what the tarball needs: libgomp1" in result.stderr
    assert f"RUNPATH {BUILD_TREE_RUNPATH} -> $ORIGIN: llama-server" in result.stderr
    yield STAGE_IMAGE
    client.images.remove(STAGE_IMAGE, force=True)


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


def test_a_library_nothing_provides_fails_the_build_and_is_named(release_server: Releases, tmp_path: Path) -> None:
    args = rendered_args(tmp_path, release_server.unknown_library_url, release_server.unknown_library_sha256)
    result = build_cuda_stage(args, image_ref("cuda-stage-test", "unknown-library"))
    assert result.returncode != 0
    assert "missing shared libraries:" in result.stderr and "libmiss.so.1" in result.stderr


def test_a_tarball_with_another_checksum_fails_the_build(release_server: Releases, tmp_path: Path) -> None:
    args = rendered_args(tmp_path, release_server.url, "0" * 64)
    result = build_cuda_stage(args, image_ref("cuda-stage-test", "bad"))
    assert result.returncode != 0
    assert "FAILED" in result.stderr


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
    -L) echo "GPU 0: {gpu} (UUID: GPU-5e1f0000-0000-0000-0000-000000000000)" ;;
esac
"""


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
    volumes = {str(compat_dir(tmp_path / "compat", fakes / compat / "libcuda.so")): str(COMPAT_DIR)}
    if gpu is not None:
        smi = tmp_path / "nvidia-smi"
        smi.write_text(FAKE_NVIDIA_SMI.format(gpu=gpu, driver=driver), encoding="utf-8")
        smi.chmod(0o755)
        volumes[str(smi)] = "/usr/bin/nvidia-smi"
        volumes[str(fakes / "driver" / "libcuda.so")] = "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    container = client.containers.run(
        stage_image,
        detach=True,
        environment=env,
        volumes={host: {"bind": path, "mode": "ro"} for host, path in volumes.items()},
    )
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
