"""The CUDA flavor's install step, offline: the Dockerfile downloads a release tarball (served
here from loopback) by the name and with the checksum the bake renderer gives it, installs what
its binaries and libraries need, and fails the build if a library is still missing.

NVIDIA's upstream and the real ai-dock tarballs are out of reach here, so the stage is built on
the Debian base with a tarball of the same layout (`cuda-<version>/` with executables, shared
libraries and VERSION.txt). Its library is a real one, ggml's CPU backend taken from the CPU
image, which needs OpenMP (libgomp.so.1) as the real tarball's libraries do; the Debian base
lacks it. What runs on a GPU is tested by test_gpu.py on GPU hosts.
"""

from __future__ import annotations

import functools
import hashlib
import io
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

from llama_images.bake import RenderOptions, bake_name, render
from llama_images.plan import make_plan
from llama_images.releases import ASSET_NAME, Asset, Release
from llama_images.targets import Overrides
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE, image_ref
from tests.matrices import no_fetch, request_for

pytestmark = pytest.mark.container

RELEASE = "b11669"
BINARY_CUDA = "12.8"
FAKE_SERVER = b'#!/bin/sh\necho "version: 11669 (release tarball)"\n'
# ggml's CPU backend and the base library it links, as the tarball carries its own libraries.
CPU_BACKEND = "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-x64.so"
GGML_BASE = "/usr/lib/x86_64-linux-gnu/libggml-base.so.0.27.0"
LIBRARY = "libggml-cpu.so"
# Same length as "libgomp.so.1", so the library's list of needed libraries can be edited in place.
UNKNOWN_LIBRARY = b"libmiss.so.1"


def tarball_bytes(library: bytes, base: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data, mode in (
            (f"cuda-{BINARY_CUDA}/llama-server", FAKE_SERVER, 0o755),
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


@dataclass(frozen=True)
class Releases:
    """Download URLs (LLAMA_CPP_RELEASE_URL) and the tarball's sha256 at each."""

    url: str
    sha256: str
    unknown_library_url: str  # a tarball whose library needs one no package provides
    unknown_library_sha256: str


@pytest.fixture(scope="module")
def release_server(main_build: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """Serves <url>/<release>/<asset> from loopback."""
    root = tmp_path_factory.mktemp("releases")
    library = file_from_image(client, image_ref("llama-cpp", "b11669-cpu"), CPU_BACKEND)
    base = file_from_image(client, image_ref("llama-cpp", "b11669-cpu"), GGML_BASE)
    assert library.count(b"libgomp.so.1") >= 1
    shas = []
    for prefix, data in (("", library), ("unknown/", library.replace(b"libgomp.so.1", UNKNOWN_LIBRARY))):
        tarball = tarball_bytes(data, base)
        asset = root / prefix / RELEASE / ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
        asset.parent.mkdir(parents=True)
        asset.write_bytes(tarball)
        shas.append(hashlib.sha256(tarball).hexdigest())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield Releases(url, shas[0], f"{url}/unknown", shas[1])
    server.shutdown()
    server.server_close()


def rendered_args(tmp_path: Path, download_url: str, sha256: str) -> dict[str, str]:
    """The build args production rendering gives a CUDA target built on the Debian base."""
    matrix = (REPO_ROOT / "matrix.yaml").read_text(encoding="utf-8")
    matrix = matrix.replace("https://github.com/ai-dock/llama.cpp-cuda/releases/download", download_url)
    matrix = matrix.replace("    image: debian:forky-slim\n", '    image: debian:forky-slim\n    cuda: "12.9"\n')
    matrix = matrix.replace("upstreams: [cuda-12.9]", "upstreams: [debian-forky]")
    matrix = matrix.replace('      cuda-12.9: "12.8"\n', '      debian-forky: "12.8"\n')
    path = tmp_path / "matrix.yaml"
    path.write_text(matrix, encoding="utf-8")
    plan = make_plan(
        request_for(path, ("cuda/*",), Overrides(platforms=("linux/amd64",), namespace=NAMESPACE)), no_fetch
    )
    name = ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
    release = Release(RELEASE, (Asset(name, f"{download_url}/{RELEASE}/{name}", sha256),))
    options = RenderOptions("test", "2026-01-01T00:00:00Z", releases={RELEASE: release})
    bake = render(plan.matrix, plan.targets, options)
    args: dict[str, str] = bake["target"][bake_name(f"cuda/debian-forky/{RELEASE}")]["args"]
    return args


def build_cuda_stage(args: dict[str, str], tag: str) -> subprocess.CompletedProcess[str]:
    # Host networking: the RUN step must reach the loopback release server.
    command = ["docker", "buildx", "build", "--load", "--network", "host", "--platform", "linux/amd64", "-t", tag]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(str(REPO_ROOT / "derivatives" / "llama-cpp"))
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)


def test_the_tarball_is_verified_and_installed_on_path_with_what_it_needs(
    client: Any, release_server: Releases, tmp_path: Path
) -> None:
    args = rendered_args(tmp_path, release_server.url, release_server.sha256)
    assert args["LLAMA_CPP_SHA256_AMD64"] == release_server.sha256
    tag = image_ref("cuda-stage-test", "ok")
    result = build_cuda_stage(args, tag)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "installing what the tarball needs: libgomp1" in result.stderr
    try:
        version = client.containers.run(tag, ["llama-server", "--version"], entrypoint=[], remove=True)
        assert version.decode().strip() == "version: 11669 (release tarball)"
        info = client.containers.run(tag, ["cat", "/opt/llama.cpp/VERSION.txt"], entrypoint=[], remove=True)
        assert RELEASE in info.decode()
        linked = client.containers.run(tag, ["ldd", f"/opt/llama.cpp/{LIBRARY}"], entrypoint=[], remove=True)
        assert b"libgomp.so.1 => /" in linked and b"not found" not in linked
    finally:
        client.images.remove(tag, force=True)


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
