"""The vulkan image on a real Vulkan device: Mesa's lavapipe, which runs on the CPU, so the whole
GPU code path (device listing, offload, generation, through the proxy) runs on this machine.
Without a GPU the image says so and serves on the CPU backend (lavapipe is slower); ggml's own
GGML_VK_VISIBLE_DEVICES=0 uses lavapipe anyway. Hardware GPUs: test_gpu.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import shipped
from tests.container.conftest import NAMESPACE, invoke, loopback_ports
from tests.container.llama.support import Llama, Models
from tests.container.runtime_support import TOKEN, bearer, request

pytestmark = pytest.mark.container

# Built with the cpu image in one bake, for this machine's platform, in a namespace of their own
# (the test session's cpu image stays as it is): the two share their layers.
OWN_NAMESPACE = f"{NAMESPACE}-vulkan"
VULKAN_IMAGE = shipped.target("vulkan", namespace=OWN_NAMESPACE).image
CPU_IMAGE = shipped.target("cpu", namespace=OWN_NAMESPACE).image
# lavapipe compiles ggml's shaders on first use: a minute or more on a busy two-core machine.
LAVAPIPE_SECONDS = 300


@pytest.fixture(scope="module")
def vulkan_image() -> str:
    """Built like the CPU image, by invoke build (bake), beside it."""
    selection = ("--filter", "cpu/*", "--filter", "vulkan/*", "--platform", "linux/amd64")
    built = invoke("build", *selection, "--namespace", OWN_NAMESPACE)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return VULKAN_IMAGE


@pytest.fixture
def start_vulkan(client: Any, vulkan_image: str) -> Iterator[Callable[..., Llama]]:
    started: list[Any] = []

    def start(env: dict[str, str], volumes: dict[str, str], **kwargs: Any) -> Llama:
        container = client.containers.run(
            vulkan_image,
            detach=True,
            environment=env,
            volumes={host: {"bind": path, "mode": "ro"} for host, path in volumes.items()},
            **kwargs,
        )
        started.append(container)
        return Llama(container)

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def list_devices(client: Any, image: str, env: dict[str, str] | None = None) -> str:
    output: bytes = client.containers.run(
        image, ["llama-server", "--list-devices"], entrypoint=[], environment=env or {}, remove=True, stderr=True
    )
    return output.decode(errors="replace")


def test_llama_server_lists_lavapipe_as_a_vulkan_device_when_asked(client: Any, vulkan_image: str) -> None:
    asked = list_devices(client, vulkan_image, {"GGML_VK_VISIBLE_DEVICES": "0"})
    assert "Vulkan0: llvmpipe (LLVM" in asked, asked
    # By default ggml leaves out devices that run on the CPU: nothing to offload to.
    assert "Vulkan" not in list_devices(client, vulkan_image)


def test_the_image_is_the_cpu_image_plus_one_layer(client: Any, vulkan_image: str) -> None:
    """The vulkan stage is the cpu stage plus one RUN: same steps below it, same overlays on top.
    (Whether the layers' digests are the same too depends on the build cache holding one result
    per step; docs/benchmarks.md has the sizes and the shared layers of one build.)"""

    def steps(image: str) -> list[str]:
        history = client.images.get(image).history()
        return [entry["CreatedBy"] for entry in reversed(history)]

    vulkan, cpu = steps(vulkan_image), steps(CPU_IMAGE)
    added = [step for step in vulkan if step not in cpu]
    assert len(added) == 2, added  # the install and its ENV
    assert "libggml0-backend-vulkan" in added[0] and "mesa-vulkan-drivers" in added[0]
    assert [step for step in vulkan if step not in added] == cpu
    layers = client.images.get(vulkan_image).attrs["RootFS"]["Layers"]
    assert len(layers) == len(client.images.get(CPU_IMAGE).attrs["RootFS"]["Layers"]) + 1
    env = dict(item.split("=", 1) for item in client.images.get(vulkan_image).attrs["Config"]["Env"])
    assert env["LLAMA_CPP_BACKEND"] == "vulkan"
    assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")  # NVIDIA's Vulkan driver is mounted


def test_without_a_gpu_it_says_so_and_serves_on_the_cpu_backend(
    start_vulkan: Callable[..., Llama], models: Models
) -> None:
    llama = start_vulkan({"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": "-lv 4"}, models.volumes)
    llama.wait_healthy(120)
    llama.wait_status("serving /models/tiny.gguf")  # no CPU-fallback alarm: there is no GPU
    log = llama.llama_log()
    assert "[llama] no GPU found: llama-server runs on the CPU backend. Mesa's lavapipe" in log
    assert "GGML_VK_VISIBLE_DEVICES=0 uses it anyway" in log
    assert "CPU_Mapped model buffer size" in log and "Vulkan0 model buffer" not in log


def test_a_model_offloaded_to_lavapipe_answers_a_chat_through_the_proxy(
    start_vulkan: Callable[..., Llama], models: Models
) -> None:
    env = {
        "LLAMA_MODEL": models.path("tiny.gguf"),
        "LLAMA_ARGS": "-ngl 99 -lv 4",  # -lv 4: llama-server logs where each layer went
        "GGML_VK_VISIBLE_DEVICES": "0",
        "OPEN_BUTTON_TOKEN": TOKEN,
    }
    llama = start_vulkan(env, models.volumes, ports=loopback_ports((8000,)))
    llama.wait_healthy(LAVAPIPE_SECONDS)
    log = llama.llama_log()
    assert "[llama] no GPU: llama-server uses Vulkan0: llvmpipe" in log
    assert "load_tensors: offloaded 3/3 layers to GPU" in log, log[-3000:]
    assert "Vulkan0 model buffer size" in log
    payload = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    reply = request(
        llama.container, 8000, "/v1/chat/completions", method="POST", body=json.dumps(payload).encode(),
        headers={**bearer(), "Content-Type": "application/json"}, timeout=LAVAPIPE_SECONDS,
    )  # fmt: skip
    assert reply.status == 200, reply.body[:500]
    answer = json.loads(reply.body)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] >= 1
    assert "eval time =" in llama.llama_log()  # the generation's timing line


FAKE_NVIDIA_SMI = """#!/bin/sh
# What nvidia-smi prints on a host with one GPU when NVIDIA's runtime mounts it.
echo "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-5e1f0000-0000-0000-0000-000000000000)"
"""


def test_an_nvidia_gpu_vulkan_does_not_use_is_reported_with_the_fix(
    start_vulkan: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    """nvidia-smi (a stand-in, where NVIDIA's runtime mounts it) sees a GPU, Vulkan lists none: here
    because NVIDIA_DRIVER_CAPABILITIES was overridden without graphics."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
    smi.chmod(0o755)
    env = {"LLAMA_MODEL": models.path("tiny.gguf"), "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    llama = start_vulkan(env, {**models.volumes, str(smi): "/usr/local/bin/nvidia-smi"})
    llama.wait_healthy(120)
    llama.wait_status("CPU fallback (GPU not used): serving /models/tiny.gguf")
    log = llama.llama_log()
    assert "[llama] WARNING: CPU FALLBACK. nvidia-smi sees 1 GPU(s) (GPU 0: NVIDIA GeForce RTX 4090" in log
    assert (
        "[llama] WARNING: NVIDIA's Vulkan driver is mounted only with the graphics capability: "
        "NVIDIA_DRIVER_CAPABILITIES is 'compute,utility'"
    ) in log
