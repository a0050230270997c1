"""The launcher's GPU facts (llama_serving/gpu.py): the CPU-fallback decision for every flavor,
CUDA errors in llama-server's output, and CUDA's kernel cache. The output lines are real, from
public reports (source in each comment) or from this project's images where said."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from llama_serving import gpu, status
from llama_serving.gpu import Facts, cuda_cache_environment, diagnose, parse_devices, read_facts, verdict

# --list-devices on a CUDA host (ollama/ollama#16508).
LISTED_CUDA = """\
Available devices:
  CUDA0: NVIDIA GeForce RTX 3080 Ti (11909 MiB, 11650 MiB free)
  CUDA1: NVIDIA RTX PRO 4000 Blackwell SFF Edition (24026 MiB, 23795 MiB free)
"""
# --list-devices of a Vulkan build on an NVIDIA GPU (ggml-org/llama.cpp#16659).
LISTED_VULKAN = """\
ggml_vulkan: Found 1 Vulkan devices:
ggml_vulkan: 0 = NVIDIA GeForce RTX 2060 (NVIDIA) | uma: 0 | fp16: 1 | bf16: 1 | warp size: 32 | shared memory: 49152 \
| int dot: 1 | matrix cores: NV_coopmat2
Available devices:
  Vulkan0: NVIDIA GeForce RTX 2060 (6144 MiB, 5136 MiB free)
"""
# This project's vulkan image with GGML_VK_VISIBLE_DEVICES=0 and no GPU: Mesa's lavapipe.
LISTED_LAVAPIPE = "Available devices:\n  Vulkan0: llvmpipe (LLVM 21.1.8, 256 bits) (24105 MiB, 22648 MiB free)\n"
# Any image without a usable device (this project's cpu image).
LISTED_NONE = "Available devices:\n  (none)\n"
# ggml_cuda_init's line when CUDA does not start (then the list is empty): noonghunna/club-3090#222,
# ggml-org/llama.cpp#17542, ollama/ollama#7666 (driver 515.65.01), abetlen/llama-cpp-python#1890,
# ggml-org/llama.cpp#7218.
INIT = "ggml_cuda_init: failed to initialize CUDA: "
INIT_804 = INIT + "forward compatibility was attempted on non supported HW"
INIT_803 = INIT + "system has unsupported display driver / cuda driver combination"
INIT_35 = INIT + "CUDA driver version is insufficient for CUDA runtime version"
INIT_100 = INIT + "no CUDA-capable device is detected"
INIT_999 = INIT + "unknown error"
# A kernel launch on a driver older than the PTX (ggml-org/llama.cpp#6433), and the older format
# (ggml-org/llama.cpp#1648).
PTX_222 = [
    "ggml_cuda_compute_forward: RMS_NORM failed",
    "CUDA error: the provided PTX was compiled with an unsupported toolchain.",
    "  current device: 0, in function ggml_cuda_compute_forward at F:\\LLM\\llama.cpp\\ggml-cuda.cu:2392",
]
PTX_222_OLD = [
    "CUDA error 222 at .../llama.cpp/ggml-cuda.cu:420: the provided PTX was compiled with an unsupported toolchain."
]
SMI_H100 = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e1f0000-0000-0000-0000-000000000000)",)
SMI_RTX = ("GPU 0: NVIDIA GeForce RTX 2080 Ti (UUID: GPU-6a96a2af-2271-5627-34c5-91dcb4f408aa)",)

# The NVIDIA host as each flavor's container sees it with --gpus all: nvidia-smi, the device
# nodes, the PCI device and the driver.
NVIDIA_GIVEN = Facts(pci_vendors=("NVIDIA",), nvidia_smi=SMI_H100, nvidia_nodes=("/dev/nvidia0",), driver="570.133.20")
# The same host without --gpus: the PCI device and /proc's driver version only.
NVIDIA_NOT_GIVEN = Facts(pci_vendors=("NVIDIA",), driver="570.133.20")
AMD_GIVEN = Facts(pci_vendors=("AMD",), render_nodes=("/dev/dri/renderD128",))
AMD_NOT_GIVEN = Facts(pci_vendors=("AMD",))


def facts(backend: str, host: Facts | None = None, **more: Any) -> Facts:
    """The host as a container of `backend`'s image sees it."""
    return replace(host or Facts(), backend=backend, **more)


def test_devices_are_read_from_list_devices() -> None:
    assert [str(d) for d in parse_devices(LISTED_CUDA)] == [
        "CUDA0: NVIDIA GeForce RTX 3080 Ti (11909 MiB, 11650 MiB free)",
        "CUDA1: NVIDIA RTX PRO 4000 Blackwell SFF Edition (24026 MiB, 23795 MiB free)",
    ]
    assert [d.name for d in parse_devices(LISTED_VULKAN)] == ["Vulkan0"]  # not the ggml_vulkan lines
    assert [d.software for d in parse_devices(LISTED_LAVAPIPE)] == [True]
    assert parse_devices(LISTED_NONE) == []


@pytest.mark.parametrize(
    ("given", "listed", "note"),
    [
        (facts("cuda", NVIDIA_GIVEN), LISTED_CUDA, "GPU: CUDA0: NVIDIA GeForce RTX 3080 Ti"),
        (facts("vulkan", NVIDIA_GIVEN, capabilities="compute,utility,graphics"), LISTED_VULKAN, "GPU: Vulkan0: NVIDIA"),
        (facts("cpu"), "", None),
        (facts("cuda"), "", "no GPU visible: llama-server runs on the CPU (docker run --gpus all gives it one)"),
        (facts("vulkan"), LISTED_NONE, "no GPU found: llama-server runs on the CPU backend. Mesa's lavapipe"),
        (facts("vulkan", vulkan_devices_asked="0"), LISTED_LAVAPIPE, "no GPU: llama-server uses Vulkan0: llvmpipe"),
    ],
)
def test_a_gpu_in_use_or_no_gpu_at_all_is_no_alarm(given: Facts, listed: str, note: str | None) -> None:
    decided = verdict(given, listed)
    assert decided.warning == ""
    if note is None:
        assert decided.lines == ()
    else:
        assert len(decided.lines) == 1 and decided.lines[0].startswith(note), decided.lines


@pytest.mark.parametrize(
    ("given", "listed", "fix"),
    [
        # The CPU image on GPU hosts: the image to use instead.
        (facts("cpu", NVIDIA_GIVEN), LISTED_NONE, "this is the CPU image: use the CUDA image (tag <release>-cuda-"),
        (facts("cpu", AMD_GIVEN), LISTED_NONE, "use the vulkan image (tag <release>-vulkan) with --device /dev/dri"),
        # The CUDA image: the flag, the vendor, or the driver.
        (facts("cuda", NVIDIA_NOT_GIVEN), LISTED_NONE, "the GPU is not given to the container: docker run --gpus all"),
        (facts("cuda", AMD_GIVEN), LISTED_NONE, "the CUDA image needs an NVIDIA GPU: use the vulkan image"),
        (
            facts("cuda", NVIDIA_GIVEN, driver="515.65.01", needed_cuda="12.8", nvidia_smi=SMI_RTX),
            f"{INIT_35}\n{LISTED_NONE}",
            "CUDA error 35: driver 515.65.01 (CUDA 11.7) is older than this image's CUDA runtime: this image's "
            "CUDA 12.8 needs driver 570.26 or newer",
        ),
        (
            facts("cuda", NVIDIA_GIVEN, driver="470.57.02", nvidia_smi=SMI_RTX),
            f"{INIT_804}\n{LISTED_NONE}",
            "CUDA error 804: forward-compatibility libraries were loaded on a GPU that does not support them",
        ),
        (facts("cuda", NVIDIA_GIVEN), f"{INIT_803}\n{LISTED_NONE}", "CUDA error 803: the driver's kernel module"),
        (facts("cuda", NVIDIA_GIVEN), f"{INIT_100}\n{LISTED_NONE}", "CUDA error 100: no CUDA-capable device"),
        (facts("cuda", NVIDIA_GIVEN), f"{INIT_999}\n{LISTED_NONE}", "CUDA error 999 (unknown error)"),
        # The vulkan image: the flag, the capability, the group.
        (facts("vulkan", NVIDIA_NOT_GIVEN), LISTED_NONE, "docker run --gpus all"),
        (
            facts("vulkan", NVIDIA_GIVEN, capabilities="compute,utility"),
            LISTED_NONE,
            "NVIDIA's Vulkan driver is mounted only with the graphics capability: NVIDIA_DRIVER_CAPABILITIES is "
            "'compute,utility'",
        ),
        (facts("vulkan", NVIDIA_GIVEN, capabilities="all"), LISTED_NONE, "NVIDIA's Vulkan driver did not load"),
        (facts("vulkan", AMD_NOT_GIVEN), LISTED_NONE, "the GPU is not given to the container: docker run --device"),
        (
            facts("vulkan", AMD_GIVEN, render_usable=False, render_group=992),
            LISTED_NONE,
            "this user cannot open /dev/dri's render nodes: docker run --group-add 992",
        ),
        # Only lavapipe listed on a GPU host is still a fallback.
        (facts("vulkan", AMD_GIVEN, vulkan_devices_asked="0"), LISTED_LAVAPIPE, "Mesa's Vulkan drivers found no"),
    ],
)
def test_an_unused_gpu_is_a_loud_warning_naming_the_fix(given: Facts, listed: str, fix: str) -> None:
    decided = verdict(given, listed)
    assert decided.warning == "CPU fallback (GPU not used): "
    assert decided.lines[1].startswith("WARNING: CPU FALLBACK. ")
    assert decided.lines[2] == "WARNING: but llama-server lists no GPU device: it will run on the CPU, slowly."
    assert decided.lines[4].startswith("WARNING: ") and fix in decided.lines[4], decided.lines[4]
    assert decided.lines[0] == decided.lines[-1] == "!" * 78


def test_the_warning_names_what_the_container_sees() -> None:
    lines = verdict(facts("cpu", NVIDIA_GIVEN), LISTED_NONE).lines
    assert lines[1] == f"WARNING: CPU FALLBACK. nvidia-smi sees 1 GPU(s) ({SMI_H100[0]}),"
    assert lines[3] == "WARNING: llama-server --list-devices says: Available devices:; (none)"
    assert verdict(facts("vulkan", AMD_NOT_GIVEN), LISTED_NONE).lines[1] == (
        "WARNING: CPU FALLBACK. the host has AMD GPU(s),"
    )


def test_list_devices_runs_only_where_it_can_tell_something() -> None:
    assert not gpu.needs_listing(facts("cpu"))
    assert not gpu.needs_listing(facts("vulkan"))
    assert gpu.needs_listing(facts("vulkan", vulkan_devices_asked="0"))
    assert gpu.needs_listing(facts("cpu", AMD_NOT_GIVEN))


@pytest.mark.parametrize(
    ("lines", "start"),
    [
        (PTX_222, "CUDA error 222: driver 535.183.01 (CUDA 12.2) cannot compile this image's CUDA kernels"),
        (PTX_222_OLD, "CUDA error 222: driver 535.183.01 (CUDA 12.2) cannot compile"),
        ([f"0.00.031.404 E {INIT_804}"], "CUDA error 804"),
        ([INIT_803], "CUDA error 803"),
        ([INIT_35], "CUDA error 35"),
        ([INIT_100], "CUDA error 100"),
    ],
)
def test_cuda_errors_become_causes_that_name_the_driver_the_image_needs(lines: list[str], start: str) -> None:
    cause = diagnose(lines, facts("cuda", NVIDIA_GIVEN, driver="535.183.01", needed_cuda="12.8"))
    assert cause is not None and cause.startswith(start), cause
    if start.startswith(("CUDA error 222", "CUDA error 35")):
        assert "needs driver 570.26 or newer: update the host's driver, or use the vulkan image" in cause


def test_other_errors_are_left_to_the_generic_cause() -> None:
    assert (
        diagnose(["llama_model_load: error loading model: tensor 'x' data is not within the file bounds"], Facts())
        is None
    )
    assert diagnose(["CUDA error 2 at ggml-cuda.cu:1: out of memory"], Facts()) is None
    assert gpu.failure_cause(PTX_222, facts("vulkan")) is None  # CUDA errors only from the CUDA image


def test_the_kernel_cache_moves_to_tmp_where_workspace_cannot_be_written() -> None:
    env = {"LLAMA_CPP_BACKEND": "cuda", "CUDA_CACHE_PATH": "/workspace/.cache/nv/ComputeCache"}
    assert cuda_cache_environment(env, lambda path: True) == ({}, "")
    moved, note = cuda_cache_environment(env, lambda path: False)
    assert moved == {"CUDA_CACHE_PATH": "/tmp/nv-compute-cache"}
    assert "cannot be written at /workspace/.cache/nv/ComputeCache" in note and "compiles the kernels again" in note
    assert cuda_cache_environment({**env, "LLAMA_CPP_BACKEND": "vulkan"}, lambda path: False) == ({}, "")


def test_facts_are_read_from_sysfs_and_dev(tmp_path: Path) -> None:
    devices = tmp_path / "sys/bus/pci/devices"
    for address, klass, vendor in (
        ("0000:01:00.0", "0x030200", "0x10de"),  # NVIDIA 3D controller
        ("0000:02:00.0", "0x030000", "0x1a03"),  # the board's ASPEED VGA: not a GPU for llama.cpp
        ("0000:03:00.0", "0x068000", "0x10de"),  # an NVSwitch bridge: not a display controller
        ("0000:04:00.0", "0x030000", "0x1002"),  # AMD
    ):
        (devices / address).mkdir(parents=True)
        (devices / address / "class").write_text(f"{klass}\n", encoding="ascii")
        (devices / address / "vendor").write_text(f"{vendor}\n", encoding="ascii")
    (tmp_path / "dev/dri").mkdir(parents=True)
    (tmp_path / "dev/dri/renderD128").write_text("", encoding="ascii")
    (tmp_path / "dev/nvidia0").write_text("", encoding="ascii")
    (tmp_path / "dev/nvidiactl").write_text("", encoding="ascii")
    env = {"LLAMA_CPP_BACKEND": "vulkan", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics"}
    found = read_facts(env, tmp_path / "sys", tmp_path / "dev")
    assert found.pci_vendors == ("NVIDIA", "AMD")
    assert found.nvidia_nodes == (str(tmp_path / "dev/nvidia0"),)
    assert found.render_nodes == (str(tmp_path / "dev/dri/renderD128"),)
    assert found.backend == "vulkan" and found.capabilities == "compute,utility,graphics"
    assert read_facts({"LLAMA_CPP_BACKEND": "rocm"}, tmp_path / "none", tmp_path / "none").backend == "cpu"


# The GPUs' compute capability against the release's architectures (the shipped matrix's).
RELEASE_ARCHITECTURES = "75-virtual;80-virtual;86-virtual;89-virtual;90-virtual;100-virtual;120-virtual"
# ggml_cuda_init's report of a Pascal mining card (mozilla-ai/llamafile#403) as --list-devices
# prints it before its list.
LISTED_P104 = """\
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA P104-100, compute capability 6.1, VMM: yes
Available devices:
  CUDA0: NVIDIA P104-100 (8112 MiB, 8000 MiB free)
"""
SMI_V100 = ("GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-9c1e0000-0000-0000-0000-000000000000)",)
CUDA_HOST = Facts(
    backend="cuda", pci_vendors=("NVIDIA",), nvidia_nodes=("/dev/nvidia0",), architectures=RELEASE_ARCHITECTURES
)


def cuda_host(smi: tuple[str, ...], compute: tuple[tuple[str, str], ...] = (), **more: Any) -> Facts:
    return replace(CUDA_HOST, nvidia_smi=smi, compute=compute, **more)


@pytest.mark.parametrize(
    ("given", "listed", "shown"),
    [
        # nvidia-smi --query-gpu=name,compute_cap on a current driver.
        (cuda_host(SMI_V100, (("Tesla V100-SXM2-16GB", "7.0"),)), "", "Tesla V100-SXM2-16GB, compute capability 7.0 "
         "(nvidia-smi)"),
        # A driver whose nvidia-smi lacks compute_cap (470.182.03: huggingface/candle#733): ggml's report.
        (cuda_host(("GPU 0: NVIDIA P104-100 (UUID: GPU-1)",), (("NVIDIA P104-100", ""),)), LISTED_P104,
         "NVIDIA P104-100, compute capability 6.1 (ggml)"),
        # Neither: the recorded capability of the GPU's name.
        (cuda_host(("GPU 0: Tesla P100-PCIE-16GB (UUID: GPU-2)",)), "", "Tesla P100-PCIE-16GB, compute capability "
         "6.0 (recorded facts)"),
    ],
)  # fmt: skip
def test_a_gpu_the_release_has_no_kernels_for_is_said_plainly_before_the_start(
    given: Facts, listed: str, shown: str
) -> None:
    decided = gpu.architecture_verdict(given, listed)
    assert decided.warning == "GPU too old for this image (use the vulkan image): "
    text = "\n".join(decided.lines)
    assert "WARNING: NO GPU HERE CAN RUN THIS IMAGE'S CUDA KERNELS." in text
    assert f"WARNING: GPU 0: {shown}" in text
    assert "built for compute capability 7.5 and newer (75-virtual, 80-virtual, 86-virtual, 89-virtual" in text
    assert "WARNING: use the vulkan image (tag <release>-vulkan) with --gpus all: it runs on this GPU." in text


def test_gpus_the_release_runs_on_get_one_line_and_no_warning() -> None:
    smi = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-3)", "GPU 1: NVIDIA L40S (UUID: GPU-4)")
    decided = gpu.architecture_verdict(cuda_host(smi, (("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA L40S", "8.9"))))
    assert decided.warning == ""
    assert decided.lines == (
        "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0 (nvidia-smi); GPU 1: NVIDIA L40S, compute capability "
        "8.9 (nvidia-smi); this image's CUDA kernels: compute capability 7.5 and newer (75-virtual, 80-virtual, "
        "86-virtual, 89-virtual, 90-virtual, 100-virtual, 120-virtual)",
    )
    # A GPU whose capability nothing tells is not refused.
    unknown = gpu.architecture_verdict(cuda_host(("GPU 0: NVIDIA Mystery 9000 (UUID: GPU-5)",)))
    assert unknown.warning == "" and "compute capability unknown (unknown)" in unknown.lines[0]
    # No declaration (an image built before it), or another backend: nothing to say.
    assert gpu.architecture_verdict(replace(cuda_host(SMI_V100), architectures="")) == gpu.Verdict()
    assert gpu.architecture_verdict(replace(cuda_host(SMI_V100), backend="vulkan")) == gpu.Verdict()


def test_a_host_with_one_gpu_too_old_is_told_which_gpus_to_give() -> None:
    smi = ("GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-6)", "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-7)")
    decided = gpu.architecture_verdict(
        cuda_host(smi, (("Tesla V100-SXM2-16GB", "7.0"), ("NVIDIA A100-SXM4-80GB", "8.0")))
    )
    text = "\n".join(decided.lines)
    assert "SOME GPUS HERE CANNOT RUN" in text and "GPU 0: Tesla V100-SXM2-16GB" in text and "A100" not in text
    assert "docker run --gpus '\"device=1\"'" in text and "CUDA_VISIBLE_DEVICES=1" in text


@pytest.mark.parametrize(
    ("name", "capability"),
    [
        ("Tesla K80", (3, 7)),
        ("Tesla M60", (5, 2)),
        ("Tesla P100-PCIE-16GB", (6, 0)),
        ("Tesla P40", (6, 1)),
        ("NVIDIA GeForce GTX 1080 Ti", (6, 1)),
        ("NVIDIA P104-100", (6, 1)),
        ("Tesla V100-SXM2-16GB", (7, 0)),
        ("NVIDIA TITAN V", (7, 0)),
        ("Tesla T4", (7, 5)),
        ("NVIDIA GeForce RTX 2080 Ti", (7, 5)),
        ("NVIDIA A100-SXM4-80GB", (8, 0)),
        ("NVIDIA A10G", (8, 6)),
        ("NVIDIA RTX A6000", (8, 6)),
        ("NVIDIA GeForce RTX 3090", (8, 6)),
        ("NVIDIA L40S", (8, 9)),
        ("NVIDIA RTX 6000 Ada Generation", (8, 9)),
        ("NVIDIA GeForce RTX 4090", (8, 9)),
        ("NVIDIA H100 80GB HBM3", (9, 0)),
        ("NVIDIA GH200 480GB", (9, 0)),
        ("NVIDIA B200", (10, 0)),
        ("NVIDIA GeForce RTX 5090", (12, 0)),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", (12, 0)),
        ("NVIDIA Mystery 9000", None),
    ],
)
def test_recorded_compute_capabilities(name: str, capability: tuple[int, int] | None) -> None:
    assert gpu.recorded_capability(name) == capability


# ggml's abort for a GPU it has no kernels for (ggml-org/llama.cpp#15589), and the same abort as
# ggml formats it for a V100 (common.cuh: "ggml was not compiled with any CUDA arch <= %d", 100 *
# major + 10 * minor).
NO_KERNELS_750 = [
    "ggml_cuda_init: found 1 CUDA devices:",
    "  Device 0: NVIDIA A100-SXM4-80GB, compute capability 8.0, VMM: yes",
    "/root/llama.cpp/ggml/src/ggml-cuda/../ggml-cuda/common.cuh:112: ggml was not compiled with any CUDA arch <= 750",
]
NO_KERNELS_700 = ["/opt/llama.cpp/ggml/src/ggml-cuda/common.cuh:112: ggml was not compiled with any CUDA arch <= 700"]
# Error 209 at a kernel launch: the old format (ggml-org/llama.cpp#4215) and the current one
# (boneylizard/llama-cpp-python-cu128-gemma3#6).
NO_KERNEL_IMAGE_OLD = [
    "CUDA error 209 at /home/user/Documents/devops/llama.cpp/ggml-cuda.cu:6701: no kernel image is available for "
    "execution on the device"
]
NO_KERNEL_IMAGE = [
    "ggml_cuda_compute_forward: RMS_NORM failed",
    "CUDA error: no kernel image is available for execution on the device",
    "  current device: 0, in function ggml_cuda_compute_forward at C:\\llama_cpp_python-0.3.9\\vendor\\llama.cpp\\ggml"
    "\\src\\ggml-cuda\\ggml-cuda.cu:2353",
]


@pytest.mark.parametrize(
    ("lines", "start", "final"),
    [
        (NO_KERNELS_700, "the GPU's compute capability 7.0 is older than every architecture this image's CUDA "
         "kernels are built for compute capability 7.5 and newer: use the vulkan image (tag <release>-vulkan), "
         "which runs on this GPU (ggml: not compiled with any CUDA arch <= 700; the release: 75-virtual", True),
        (NO_KERNELS_750, "the GPU's compute capability 7.5 is older than", True),
        (NO_KERNEL_IMAGE_OLD, "CUDA error 209: this image's CUDA kernels have no code for this GPU (Tesla "
         "V100-SXM2-16GB (7.0)); they are built for compute capability 7.5 and newer", True),
        (NO_KERNEL_IMAGE, "CUDA error 209: this image's CUDA kernels have no code for this GPU", True),
        (PTX_222, "CUDA error 222", True),
        ([INIT_804], "CUDA error 804", True),
        ([INIT_803], "CUDA error 803", True),
        ([INIT_35], "CUDA error 35", True),
        ([INIT_100], "CUDA error 100", False),
        ([INIT_999], "CUDA error 999", False),
    ],
)  # fmt: skip
def test_failures_no_restart_can_fix_are_final_and_name_the_fix(lines: list[str], start: str, final: bool) -> None:
    facts = cuda_host(SMI_V100, (("Tesla V100-SXM2-16GB", "7.0"),), driver="570.133.20", needed_cuda="12.8")
    found = gpu.diagnosis(lines, facts)
    assert found is not None and found.cause.startswith(start), found
    assert found.final is final
    if found.code in ("209", gpu.NO_KERNELS):
        # The status line (300 characters, after the launcher's warning) still names the fix.
        shown = status.shown_line(gpu.UNSUPPORTED_PREFIX, f"failed: {found.cause}")[:300]
        assert "use the vulkan image (tag <release>-vulkan), which runs on" in shown, shown
        assert "75-virtual, 80-virtual" in found.cause  # the details after it, for the log


STAND_IN = """#!/bin/sh
# A llama-server that prints what a failing one printed, counting its starts.
echo started >> "{starts}"
cat "{output}"
exit 1
"""


@pytest.mark.parametrize(
    ("printed", "starts", "status"),
    [
        (NO_KERNEL_IMAGE, 1, "failed: CUDA error 209: this image's CUDA kernels have no code for this GPU"),
        (NO_KERNELS_700, 1, "failed: the GPU's compute capability 7.0 is older than every architecture"),
        (PTX_222, 1, "failed: CUDA error 222: driver 535.183.01 (CUDA 12.2) cannot compile"),
        # Out of memory may pass (another process frees the GPU): today's retries.
        (["CUDA error 2 at ggml-cuda.cu:1: out of memory"], 3, "failed: "),
    ],
)
def test_a_gpu_or_driver_that_cannot_work_ends_at_the_first_failure(
    printed: list[str], starts: int, status: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_serving import service, watch
    from llama_serving.config import make_plan

    output_file, starts_file = tmp_path / "output", tmp_path / "starts"
    output_file.write_text("\n".join(printed) + "\n", encoding="utf-8")
    (tmp_path / "bin").mkdir()
    server = tmp_path / "bin" / "llama-server"
    server.write_text(STAND_IN.format(starts=starts_file, output=output_file), encoding="utf-8")
    server.chmod(0o755)
    status_file = tmp_path / "status"
    monkeypatch.setattr(service, "STATUS_FILE", status_file)
    monkeypatch.setattr(watch, "PID_FILE", tmp_path / "pid")
    monkeypatch.setattr(watch, "REQUESTS_SERVED_FILE", tmp_path / "requests")
    facts = cuda_host(SMI_V100, (("Tesla V100-SXM2-16GB", "7.0"),), driver="535.183.01", needed_cuda="12.8")
    monkeypatch.setattr(gpu, "check", lambda env, log: gpu.Check(facts))
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(28))
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "LLAMA_CACHE": str(tmp_path / "cache")}
    made = make_plan({**env, "LLAMA_MODEL": str(model), "LLAMA_RETRY_DELAY": "0"}, 18999)
    assert made is not None
    cause = service.Runner(made, env).run()
    assert cause is not None
    assert len(starts_file.read_text(encoding="utf-8").splitlines()) == starts
    assert status_file.read_text(encoding="utf-8").startswith(status)
