"""The CUDA image on a real NVIDIA GPU host: built from the matrix, serving with layers on the GPU.

Needs a GPU, NVIDIA's container toolkit, and the registry and GitHub (NVIDIA's upstream image and
the release tarball). Elsewhere it skips, saying which of these is missing.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.container.conftest import exec_text, image_ref, invoke, namespace_args, wait_for
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = [pytest.mark.container, pytest.mark.gpu]

TARGET = "cuda/cuda-12.9/*"
IMAGE = image_ref("llama-cpp", "b11669-cuda-12.9")


def gpu_unavailable() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this host (nvidia-smi not found)"
    if subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode != 0:
        return "nvidia-smi finds no usable GPU"
    runtimes = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}} {{json .CDISpecDirs}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if "nvidia" not in runtimes:
        return "the Docker engine has no NVIDIA runtime (install nvidia-container-toolkit)"
    return None


@pytest.fixture(scope="module")
def cuda_image() -> str:
    reason = gpu_unavailable()
    if reason is not None:
        pytest.skip(reason)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    result = invoke("build", "--filter", TARGET, "--platform", f"linux/{arch}", *namespace_args())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return IMAGE


@pytest.fixture
def gpu_container(cuda_image: str, client: Any, tmp_path: Path) -> Iterator[Any]:
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    container = client.containers.run(
        cuda_image,
        detach=True,
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "LLAMA_ARGS": "--n-gpu-layers 99"},
        volumes={str(tmp_path): {"bind": "/models", "mode": "ro"}},
        device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
    )
    yield container
    container.remove(force=True)


def test_llama_server_on_the_gpu_answers_and_offloads_layers(gpu_container: Any) -> None:
    wait_for(
        lambda: exec_text(gpu_container, "curl", "-fsS", "http://127.0.0.1:18000/health") == (0, '{"status":"ok"}'),
        120,
        "llama-server did not report healthy",
        gpu_container,
    )
    logs = gpu_container.logs().decode(errors="replace")
    assert "CUDA" in logs
    assert "layers to GPU" in logs and "offloaded 0/" not in logs, logs[-3000:]
    code, smi = exec_text(gpu_container, "nvidia-smi", "-L")
    assert code == 0 and "GPU 0" in smi
