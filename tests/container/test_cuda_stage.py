"""The CUDA flavor's install step, offline: the Dockerfile downloads a release tarball (served
here from loopback) by the name and with the checksum the bake renderer gives it.

NVIDIA's upstream and the real ai-dock tarballs are out of reach here, so the stage is built on
the Debian base with a tarball of the same layout (`cuda-<version>/` with executables and
VERSION.txt); what runs on a GPU is tested by test_gpu.py on GPU hosts.
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
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llama_images.bake import RenderOptions, bake_name, render
from llama_images.plan import make_plan
from llama_images.releases import ASSET_NAME, Asset, Release
from llama_images.targets import Overrides
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE
from tests.matrices import no_fetch, request_for

pytestmark = pytest.mark.container

RELEASE = "b11669"
BINARY_CUDA = "12.8"
FAKE_SERVER = b'#!/bin/sh\necho "version: 11669 (release tarball)"\n'


def tarball_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data, mode in (
            (f"cuda-{BINARY_CUDA}/llama-server", FAKE_SERVER, 0o755),
            (f"cuda-{BINARY_CUDA}/VERSION.txt", f"llama.cpp version: {RELEASE}\n".encode(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def release_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Serves <url>/<release>/<asset> from loopback; yields (download url, sha256)."""
    root = tmp_path_factory.mktemp("releases")
    data = tarball_bytes()
    asset = root / RELEASE / ASSET_NAME.format(release=RELEASE, cuda=BINARY_CUDA, arch="amd64")
    asset.parent.mkdir()
    asset.write_bytes(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hashlib.sha256(data).hexdigest()
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


def test_the_tarball_is_verified_and_installed_on_path(
    main_build: Any, client: Any, release_server: tuple[str, str], tmp_path: Path
) -> None:
    url, sha256 = release_server
    args = rendered_args(tmp_path, url, sha256)
    assert args["LLAMA_CPP_SHA256_AMD64"] == sha256
    tag = "llama-images-test/cuda-stage:ok"
    result = build_cuda_stage(args, tag)
    assert result.returncode == 0, result.stderr[-4000:]
    try:
        version = client.containers.run(tag, ["llama-server", "--version"], entrypoint=[], remove=True)
        assert version.decode().strip() == "version: 11669 (release tarball)"
        info = client.containers.run(tag, ["cat", "/opt/llama.cpp/VERSION.txt"], entrypoint=[], remove=True)
        assert RELEASE in info.decode()
    finally:
        client.images.remove(tag, force=True)


def test_a_tarball_with_another_checksum_fails_the_build(
    main_build: Any, release_server: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = release_server
    result = build_cuda_stage(rendered_args(tmp_path, url, "0" * 64), "llama-images-test/cuda-stage:bad")
    assert result.returncode != 0
    assert "FAILED" in result.stderr
