"""The CUDA and vulkan images on a real NVIDIA GPU host: built from the matrix, llama-server sees
the GPU, a model's layers are offloaded to it (the GPU's memory in use grows by more than half the
model's size when they are), it generates (the timing line of a completion), and boot's
[cuda-compat] line tells what it decided. On a GPU older than every architecture the release is
built for (V100, P100, GTX 10xx under a 7.5-and-newer release), the CUDA image says so before
llama-server starts, names the vulkan image, and ends at the first failure.

Needs a GPU, NVIDIA's container toolkit (its runtime, or CDI specs naming nvidia.com/gpu), and the
registry and GitHub (NVIDIA's upstream image and the release tarball). Elsewhere it skips, saying
which of these is missing; with REQUIRE_GPU=1 (a host meant for these tests) it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from llama_serving import cuda_architectures
from llama_serving.gpu import recorded_capability

from tests import shipped
from tests.container.conftest import NAMESPACE, exec_text, invoke, namespace_args, wait_for
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = [pytest.mark.container, pytest.mark.gpu]

CUDA_TARGET = shipped.flavor_glob("cuda")
CUDA_IMAGE = shipped.target("cuda", namespace=NAMESPACE).image
VULKAN_TARGET = "vulkan/*"
VULKAN_IMAGE = shipped.target("vulkan", namespace=NAMESPACE).image
BLOCKS = 4
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
# "-lv 4": llama-server then logs where each layer went ("offloaded 5/5 layers to GPU").
OFFLOAD = "--n-gpu-layers 99 -lv 4"
# What the shipped CUDA target's tarballs are built for.
ARCHITECTURES = cuda_architectures.parse(
    ";".join(shipped.SHIPPED.release_source.cuda_architectures[shipped.target("cuda").binary_cuda or ""])
)


def host_gpus() -> list[tuple[str, str, tuple[int, int] | None]]:
    """(index, name, compute capability) of each GPU: nvidia-smi's, else the recorded one (an
    nvidia-smi before R510 lacks the field)."""
    query = ["nvidia-smi", "--query-gpu=index,name,compute_cap", "--format=csv,noheader"]
    found = subprocess.run(query, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        names = ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"]
        rows = subprocess.run(names, capture_output=True, text=True, check=False).stdout
        return [(i.strip(), n.strip(), recorded_capability(n)) for i, n in (r.split(",", 1) for r in rows.splitlines())]
    gpus = []
    for row in found.stdout.splitlines():
        index, name, capability = (cell.strip() for cell in row.split(","))
        major, _, minor = capability.partition(".")
        gpus.append((index, name, (int(major), int(minor)) if minor.isdigit() else recorded_capability(name)))
    return gpus


def runs_release(capability: tuple[int, int] | None) -> bool:
    return capability is None or cuda_architectures.runs_on(ARCHITECTURES, capability)


def gpu_unavailable() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this host (nvidia-smi not found)"
    if subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode != 0:
        return "nvidia-smi finds no usable GPU"
    if gpu_request() is None:
        return "the Docker engine has no NVIDIA runtime and no CDI spec names nvidia.com/gpu (nvidia-container-toolkit)"
    return None


def gpu_request() -> list[docker.types.DeviceRequest] | None:
    """GPU 0 only, the one whose memory is read (given every GPU, llama-server would split the
    layers across them): through NVIDIA's runtime (--gpus), else through CDI."""
    runtimes = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True, check=False
    ).stdout
    if "nvidia" in runtimes:
        return [docker.types.DeviceRequest(device_ids=["0"], capabilities=[["gpu"]])]
    for directory in CDI_DIRS:
        for spec in (*directory.glob("*.yaml"), *directory.glob("*.json")) if directory.is_dir() else ():
            if "nvidia.com/gpu" in spec.read_text(encoding="utf-8", errors="replace"):
                return [docker.types.DeviceRequest(driver="cdi", device_ids=["nvidia.com/gpu=0"])]
    return None


@pytest.fixture(scope="module")
def gpu() -> list[docker.types.DeviceRequest]:
    reason = gpu_unavailable()
    if reason is not None:
        if os.environ.get("REQUIRE_GPU") == "1":
            pytest.fail(f"REQUIRE_GPU=1, but {reason}")
        pytest.skip(reason)
    request = gpu_request()
    assert request is not None
    return request


def build(target: str) -> None:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
    result = invoke("build", "--filter", target, "--platform", f"linux/{arch}", *namespace_args())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def cuda_image(gpu: Any) -> str:
    build(CUDA_TARGET)
    return CUDA_IMAGE


@pytest.fixture
def gpu0_runs_the_release(gpu: Any) -> None:
    """The CUDA image's serving tests use GPU 0: on a GPU the release has no kernels for, the
    clear message is what test_a_gpu_older_than_the_release_gets_the_clear_message checks."""
    index, name, capability = host_gpus()[0]
    if not runs_release(capability):
        pytest.skip(f"GPU {index} ({name}, compute capability {capability}) is older than the release's kernels")


@pytest.fixture(scope="module")
def vulkan_image(gpu: Any) -> str:
    build(VULKAN_TARGET)
    return VULKAN_IMAGE


def gpu_memory_used_mib() -> int:
    output = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(output.strip())


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 800 MB of weights: far more than the GPU's memory moves for other reasons."""
    path = tmp_path_factory.mktemp("gpu-model") / "model.gguf"
    return write_tiny_llama_gguf(path, n_embd=2048, n_ff=5632, n_blocks=BLOCKS)


@pytest.fixture
def run_gpu(gpu: list[Any], client: Any, model: Path) -> Iterator[Callable[[str, str], Any]]:
    started: list[Any] = []

    def run(image: str, llama_args: str) -> Any:
        container = client.containers.run(
            image,
            detach=True,
            environment={"LLAMA_MODEL": f"/models/{model.name}", "LLAMA_ARGS": llama_args},
            volumes={str(model.parent): {"bind": "/models", "mode": "ro"}},
            device_requests=gpu,
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


def list_devices(client: Any, image: str, gpu: list[Any]) -> str:
    output: bytes = client.containers.run(
        image, ["llama-server", "--list-devices"], entrypoint=[], remove=True, stderr=True, device_requests=gpu
    )
    return output.decode()


def generate(container: Any) -> str:
    """A completion; its timing line in the log says the GPU's kernels ran."""
    code, body = exec_text(
        container, "curl", "-fsS", "http://127.0.0.1:18000/completion", "-H", "Content-Type: application/json",
        "-d", '{"prompt": "Once upon a time", "n_predict": 16, "ignore_eos": true}',
    )  # fmt: skip
    assert code == 0, body
    return body


def assert_offloaded_and_generating(container: Any, model: Path, device: str, cpu_memory: int) -> None:
    gpu_memory = gpu_memory_used_mib()
    logs = container.logs().decode(errors="replace")
    offloaded = re.search(r"offloaded (\d+)/(\d+) layers to GPU", logs)
    assert offloaded is not None and offloaded.group(1) == offloaded.group(2), logs[-3000:]
    assert f"{device} model buffer size" in logs
    assert "CPU FALLBACK" not in logs
    model_mib = model.stat().st_size / 2**20
    assert gpu_memory - cpu_memory > model_mib / 2, (cpu_memory, gpu_memory, model_mib)
    assert '"tokens_predicted":16' in generate(container)
    wait_for(lambda: "eval time =" in container.logs().decode(errors="replace"), 30, "no timing line", container)
    timing = re.search(r"eval time = +([\d.]+) ms / +16 tokens", container.logs().decode(errors="replace"))
    assert timing is not None and float(timing.group(1)) > 0
    assert exec_text(container, "cat", "/run/llama-images/status/llama") == (0, f"serving /models/{model.name}\n")


def test_llama_server_lists_a_cuda_device(
    cuda_image: str, client: Any, gpu: list[Any], gpu0_runs_the_release: None
) -> None:
    assert re.search(r"^\s*CUDA0: ", list_devices(client, cuda_image, gpu), re.MULTILINE)


def test_the_model_is_offloaded_to_the_gpu_and_generates(
    run_gpu: Callable[[str, str], Any], cuda_image: str, model: Path, gpu0_runs_the_release: None
) -> None:
    on_cpu = run_gpu(cuda_image, "--n-gpu-layers 0")
    cpu_memory = gpu_memory_used_mib()
    on_cpu.remove(force=True)
    on_gpu = run_gpu(cuda_image, OFFLOAD)
    assert_offloaded_and_generating(on_gpu, model, "CUDA0", cpu_memory)
    decided = [line for line in on_gpu.logs().decode(errors="replace").splitlines() if line.startswith("[cuda-compat]")]
    # A driver for CUDA 12.8 (R570+) runs it natively; an older one on a data-center GPU only
    # through the compat libraries, after a successful cuInit through them.
    assert len(decided) == 1 and (
        decided[0].startswith("[cuda-compat] not needed: the driver runs the image's CUDA natively")
        or decided[0].startswith(
            "[cuda-compat] using forward compatibility from /opt/llama-images/cuda-compat: cuInit OK"
        )
    ), decided
    assert "cuInit OK" in decided[0]


def test_the_vulkan_image_uses_the_gpu_through_nvidias_vulkan_driver(
    run_gpu: Callable[[str, str], Any], vulkan_image: str, client: Any, model: Path, gpu: list[Any]
) -> None:
    listed = list_devices(client, vulkan_image, gpu)
    assert re.search(r"^\s*Vulkan0: NVIDIA ", listed, re.MULTILINE), listed
    cpu_memory = gpu_memory_used_mib()
    on_gpu = run_gpu(vulkan_image, OFFLOAD)
    assert_offloaded_and_generating(on_gpu, model, "Vulkan0", cpu_memory)


def test_a_gpu_older_than_the_release_gets_the_clear_message(
    cuda_image: str, client: Any, gpu: list[Any], model: Path
) -> None:
    """V100, P100, P40, GTX 10xx: ggml has no kernels for them in a 7.5-and-newer release. The
    launcher says so before the first start, naming the vulkan image, and ends at the first
    failure (ggml's abort or CUDA error 209), not after every retry."""
    older = [(index, name) for index, name, capability in host_gpus() if not runs_release(capability)]
    if not older:
        pytest.skip(
            f"no GPU on this host older than the release's kernels ({cuda_architectures.describe(ARCHITECTURES)})"
        )
    index, name = older[0]
    request = [docker.types.DeviceRequest(device_ids=[index], capabilities=[["gpu"]])]
    if gpu[0].driver == "cdi":
        request = [docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={index}"])]
    container = client.containers.run(
        cuda_image,
        detach=True,
        environment={"LLAMA_MODEL": f"/models/{model.name}", "LLAMA_ARGS": OFFLOAD, "LLAMA_START_ATTEMPTS": "3"},
        volumes={str(model.parent): {"bind": "/models", "mode": "ro"}},
        device_requests=request,
    )
    try:
        wait_for(
            lambda: "FATAL" in exec_text(container, "supervisorctl", "status", "llama")[1],
            600, "llama did not end FATAL", container,
        )  # fmt: skip
        log = exec_text(container, "supervisorctl", "tail", "-100000", "llama")[1]
        warned = log.index("WARNING: NO GPU HERE CAN RUN THIS IMAGE'S CUDA KERNELS.")
        assert warned < log.index("starting llama-server (attempt 1/3)") and name in log[warned:]
        assert "use the vulkan image (tag <release>-vulkan)" in log
        assert log.count("starting llama-server (attempt") == 1, log[-3000:]
        status = exec_text(container, "cat", "/run/llama-images/status/llama")[1]
        assert status.startswith("failed: GPU too old for this image (use the vulkan image): "), status
        assert "vulkan image (tag <release>-vulkan)" in status
    finally:
        container.remove(force=True)
