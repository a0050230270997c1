"""The CUDA image on a real NVIDIA GPU host: built from the matrix, llama-server sees a CUDA
device, and a model's layers are offloaded to it (the GPU's memory in use grows by more than
half the model's size when they are).

Needs a GPU, NVIDIA's container toolkit, and the registry and GitHub (NVIDIA's upstream image and
the release tarball). Elsewhere it skips, saying which of these is missing.
"""

from __future__ import annotations

import contextlib
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.container.conftest import exec_text, image_ref, invoke, namespace_args, wait_for
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = [pytest.mark.container, pytest.mark.gpu]

TARGET = "cuda/cuda-12.9/*"
IMAGE = image_ref("llama-cpp", "b11669-cuda-12.9")
BLOCKS = 4
# GPU 0 only, the one whose memory is read: given every GPU, llama-server would split the layers
# across them, and GPU 0's share of a multi-GPU host would fall below the threshold.
GPU_0 = [docker.types.DeviceRequest(device_ids=["0"], capabilities=[["gpu"]])]


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


def gpu_memory_used_mib() -> int:
    output = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(output.strip())


@pytest.fixture(scope="module")
def cuda_image() -> str:
    reason = gpu_unavailable()
    if reason is not None:
        pytest.skip(reason)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    result = invoke("build", "--filter", TARGET, "--platform", f"linux/{arch}", *namespace_args())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 800 MB of weights: far more than the GPU's memory moves for other reasons."""
    path = tmp_path_factory.mktemp("gpu-model") / "model.gguf"
    return write_tiny_llama_gguf(path, n_embd=2048, n_ff=5632, n_blocks=BLOCKS)


@pytest.fixture
def run_gpu(cuda_image: str, client: Any, model: Path) -> Iterator[Callable[[str], Any]]:
    started: list[Any] = []

    def run(llama_args: str) -> Any:
        container = client.containers.run(
            cuda_image,
            detach=True,
            environment={"LLAMA_MODEL": f"/models/{model.name}", "LLAMA_ARGS": llama_args},
            volumes={str(model.parent): {"bind": "/models", "mode": "ro"}},
            device_requests=GPU_0,
        )
        started.append(container)
        wait_for(
            lambda: exec_text(container, "curl", "-fsS", "http://127.0.0.1:18000/health") == (0, '{"status":"ok"}'),
            300,
            "llama-server did not report healthy",
            container,
        )
        return container

    yield run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_llama_server_lists_a_cuda_device(cuda_image: str, client: Any) -> None:
    output = client.containers.run(
        cuda_image, ["llama-server", "--list-devices"], entrypoint=[], remove=True, stderr=True,
        device_requests=GPU_0,
    ).decode()  # fmt: skip
    assert re.search(r"^\s*CUDA0: ", output, re.MULTILINE), output


def test_the_model_is_offloaded_to_the_gpu(run_gpu: Callable[[str], Any], model: Path) -> None:
    on_cpu = run_gpu("--n-gpu-layers 0")
    cpu_memory = gpu_memory_used_mib()
    on_cpu.remove(force=True)
    on_gpu = run_gpu("--n-gpu-layers 99")
    gpu_memory = gpu_memory_used_mib()
    logs = on_gpu.logs().decode(errors="replace")
    offloaded = re.search(r"offloaded (\d+)/(\d+) layers to GPU", logs)
    assert offloaded is not None and offloaded.group(1) == offloaded.group(2), logs[-3000:]
    assert "CPU FALLBACK" not in logs
    model_mib = model.stat().st_size / 2**20
    assert gpu_memory - cpu_memory > model_mib / 2, (cpu_memory, gpu_memory, model_mib)
    assert exec_text(on_gpu, "cat", "/run/llama-images/status/llama") == (0, f"serving /models/{model.name}\n")
