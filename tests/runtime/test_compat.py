"""CUDA forward compatibility: the decision over recorded driver facts, and what the probe's answer
makes of it. Driver lines and GPU names are as public reports show them (source in each comment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llama_runtime.compat import (
    Facts,
    Outcome,
    Plan,
    Probe,
    compat_driver,
    cuda_of_driver,
    driver_from_proc,
    gpu_class,
    listed_branches,
    minimum_driver,
    outcome,
    plan,
    run_probe,
)

COMPAT = Path("/opt/llama-images/cuda-compat")
# libcuda.so.<version> in cuda-compat-12-8 (the toolkit and this image read the version from it).
COMPAT_12_8 = "570.124.06"
H100 = ("NVIDIA H100 80GB HBM3",)
# nvidia-smi on a GeForce host (abetlen/llama-cpp-python#401): "NVIDIA-SMI 535.54.03  Driver Version:
# 535.54.03  CUDA Version: 12.2", GPU "NVIDIA GeForce RTX 2080 Ti".
RTX_2080 = ("NVIDIA GeForce RTX 2080 Ti",)
A100 = ("NVIDIA A100-SXM4-80GB",)
L40S = ("NVIDIA L40S",)
# NVIDIA_REQUIRE_CUDA of nvidia/cuda:12.8.1-runtime-ubuntu24.04 (its image config, as `docker
# inspect` shows it in public reports): cuda>=12.8, then for each branch every brand.
BRANDS = ("unknown", "grid", "tesla", "nvidia", "quadro", "quadrortx", "nvidiartx", "vapps", "vpc", "vcs", "vws",
          "cloudgaming")  # fmt: skip
REQUIRE_12_8_1 = "cuda>=12.8 " + " ".join(
    f"brand={brand},driver>={branch},driver<{branch + 1}" for branch in (470, 535, 550, 560, 565) for brand in BRANDS
)
UPSTREAM_BRANCHES = (470, 535, 550, 560, 565)


def facts(driver: str | None, gpus: tuple[str, ...], **kwargs: object) -> Facts:
    values: dict[str, object] = {"needed_cuda": "12.8", "compat_driver": COMPAT_12_8, "disabled": False}
    values.update(kwargs)
    return Facts(driver=driver, gpus=gpus, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "version"),
    [
        # cloud VM with a Tesla T4 (a public setup guide): the proprietary module's line.
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  525.60.13  Wed Nov 30 06:39:21 UTC 2022\n", "525.60.13"),
        # Ubuntu 24.04, nvidia-driver-565-open (nix-community/nixGL#186): the open module's line.
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  565.57.01  Release Build  "
            "(dvs-builder@U16-A24-9-2)  Thu Oct 10 12:15:00 UTC 2024\n"
            "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n",
            "565.57.01",
        ),
        # Two-part version (hyprwm/Hyprland#6715).
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.58  Release Build  (portage@localhost)  "
            "Sat Jun 29 14:36:22 MSK 2024\n",
            "555.58",
        ),
        ("", None),
        ("garbled\n", None),
    ],
)
def test_the_driver_version_is_read_from_both_kernel_modules(text: str, version: str | None) -> None:
    assert driver_from_proc(text) == version


def test_the_compat_libraries_version_comes_from_the_library_name() -> None:
    names = ["libcuda.so", "libcuda.so.1", f"libcuda.so.{COMPAT_12_8}", f"libnvidia-ptxjitcompiler.so.{COMPAT_12_8}"]
    assert compat_driver(names) == COMPAT_12_8
    assert compat_driver(["libcuda.so.1", "README"]) is None


def test_driver_branches_map_to_the_cuda_they_run() -> None:
    assert cuda_of_driver((535, 54, 3)) == (12, 2)
    assert cuda_of_driver((570, 133, 20)) == (12, 8)
    assert cuda_of_driver((580, 65, 6)) == (13, 0)
    assert cuda_of_driver((470, 57, 2)) == (11, 4)
    assert minimum_driver((12, 8)) == (570, 26)
    assert minimum_driver((12, 7)) == (570, 26)  # no 12.7: the next release's driver


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("NVIDIA H100 80GB HBM3", "data-center"),
        ("NVIDIA H200", "data-center"),
        ("NVIDIA B200", "data-center"),
        ("NVIDIA GB200", "data-center"),
        ("NVIDIA GH200 480GB", "data-center"),
        ("A100-SXM4-40GB", "data-center"),  # Tiiny-AI/PowerInfer#122
        ("GRID A100D-4C", "data-center"),  # a vGPU (marella/ctransformers#87)
        ("NVIDIA A10G", "data-center"),
        ("NVIDIA L40S", "data-center"),
        ("NVIDIA L4", "data-center"),
        ("Tesla T4", "data-center"),
        ("Tesla V100-SXM2-16GB", "data-center"),
        ("NVIDIA GeForce RTX 4090", "consumer"),
        ("NVIDIA GeForce RTX 2080 Ti", "consumer"),
        ("NVIDIA TITAN RTX", "consumer"),
        ("NVIDIA RTX A6000", "other"),  # professional: server SKUs are supported, the probe decides
        ("NVIDIA RTX 6000 Ada Generation", "other"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "other"),
        ("Quadro RTX 8000", "other"),
    ],
)
def test_gpu_classes(name: str, kind: str) -> None:
    assert gpu_class(name) == kind


@pytest.mark.parametrize(
    ("given", "action", "reason"),
    [
        (facts("570.133.20", H100), "native", "the driver runs the image's CUDA natively"),
        (facts("580.65.06", RTX_2080), "native", "the driver runs the image's CUDA natively"),
        (facts("535.183.01", H100), "compat", f"compat libraries of driver {COMPAT_12_8} (CUDA 12.8)"),
        (facts("525.125.06", ("GRID A100D-4C",)), "compat", "driver 525.125.06 (CUDA 12.0), GRID A100D-4C"),
        (facts("550.54.15", ("NVIDIA RTX A6000",)), "compat", "driver 550.54.15 (CUDA 12.4)"),
        (facts("535.54.03", RTX_2080), "native", "not GeForce/TITAN"),
        # The banner of faster-whisper#653 said "CUDA Version: 12.1" on this 2080 Ti with a 470
        # driver: the toolkit had put compat libraries in front (error 804). The driver's own
        # version decides here, not the banner.
        (facts("470.57.02", ("NVIDIA GeForce RTX 2080 Ti",)), "native", "driver 470.57.02 (CUDA 11.4)"),
        # R560 and R565 are branches nvidia/cuda:12.8.1 lists: the compat libraries are tried.
        (facts("565.57.01", H100), "compat", "driver 565.57.01 (CUDA 12.6), NVIDIA H100 80GB HBM3"),
        (facts("560.35.03", A100, listed_branches=UPSTREAM_BRANCHES), "compat", "driver 560.35.03 (CUDA 12.6)"),
        (facts("565.57.01", L40S, listed_branches=UPSTREAM_BRANCHES), "compat", "NVIDIA L40S, image CUDA 12.8"),
        # R575 runs CUDA 12.9 itself; under a CUDA 13.0 image it is tried through the compat libraries.
        (facts("575.57.08", L40S), "native", "the driver runs the image's CUDA natively (driver 575.57.08 (CUDA"),
        (facts("575.57.08", H100, needed_cuda="13.0", compat_driver="580.65.06"), "compat", "(CUDA 13.0)"),
        # A new-feature branch no list names: tried all the same, the probe decides.
        (facts("545.29.06", A100, listed_branches=UPSTREAM_BRANCHES), "compat", "driver 545.29.06 (CUDA 12.3)"),
        (facts("535.183.01", H100, disabled=True), "native", "DISABLE_FORWARD_COMPAT=true: not used"),
        (facts("535.183.01", H100, compat_driver=None), "native", "the image has no compat libraries for CUDA 12.8"),
        (facts("535.183.01", H100, needed_cuda="12.9"), "native", "no compat libraries for CUDA 12.9"),
        (facts("470.57.02", H100, needed_cuda="13.0", compat_driver="580.65.06"), "compat", "driver 470.57.02"),
        (facts(None, ()), "none", "no NVIDIA GPU visible (docker run --gpus all"),
        (facts("535.183.01", H100, needed_cuda=None), "none", "not a CUDA image"),
        (facts(None, H100), "native", "driver version unreadable (None) on NVIDIA H100 80GB HBM3"),
    ],
)
def test_decision_table(given: Facts, action: str, reason: str) -> None:
    chosen = plan(given)
    assert chosen.action == action, chosen
    assert reason in chosen.reason, chosen.reason


def test_the_upstreams_require_variable_gives_the_branches() -> None:
    assert listed_branches(REQUIRE_12_8_1) == UPSTREAM_BRANCHES
    assert listed_branches(None) is None and listed_branches("") is None


@pytest.mark.parametrize(
    ("given", "note"),
    [
        (facts("560.35.03", H100, listed_branches=UPSTREAM_BRANCHES), ""),
        (facts("565.57.01", A100), ""),  # NVIDIA's recorded list names it too
        (
            facts("545.29.06", A100, listed_branches=UPSTREAM_BRANCHES),
            "driver branch R545 is not among those the image's NVIDIA_REQUIRE_CUDA lists for forward compatibility "
            "(R470, R535, R550, R560, R565), where cuInit through them often fails with CUDA error 803",
        ),
        (
            facts("470.57.02", H100, needed_cuda="13.0", compat_driver="580.65.06"),
            "driver branch R470 is not among those NVIDIA lists for forward compatibility (R535, R550",
        ),
    ],
)
def test_the_branch_list_only_orders_the_explanation(given: Facts, note: str) -> None:
    chosen = plan(given)
    assert chosen.action == "compat"
    assert chosen.branch_note.startswith(note) and bool(chosen.branch_note) == bool(note), chosen.branch_note
    worked = outcome(chosen, Probe(0, cuda=12080), COMPAT)
    assert worked.library_dir == COMPAT
    if note:
        assert worked.line.endswith(f"; {chosen.branch_note}, but cuInit through them succeeded)")
    # cuGetErrorString's text for 803.
    failed = outcome(chosen, Probe(803, "system has unsupported display driver / cuda driver combination"), COMPAT)
    assert failed.library_dir is None
    probe = "cuInit failed: error 803 (system has unsupported display driver / cuda driver combination)"
    shown = f"not used: {chosen.branch_note}, and {probe}" if note else f"not used: {probe}"
    assert failed.line.startswith(shown), failed.line


@pytest.mark.parametrize(
    ("driver", "gpus"),
    [("560.35.03", H100), ("565.57.01", H100), ("560.35.03", A100), ("565.57.01", A100), ("565.57.01", L40S)],
)
def test_r560_and_r565_data_center_gpus_run_the_image_through_the_compat_libraries(
    driver: str, gpus: tuple[str, ...]
) -> None:
    """They failed with error 222 before: the branch was not in the list, so nothing was tried."""
    chosen = plan(facts(driver, gpus, listed_branches=listed_branches(REQUIRE_12_8_1)))
    decided = outcome(chosen, Probe(0, cuda=12080), COMPAT)
    assert decided.library_dir == COMPAT
    assert decided.line == (
        f"using forward compatibility from {COMPAT}: cuInit OK, CUDA 12.8 (compat libraries of driver {COMPAT_12_8} "
        f"(CUDA 12.8), driver {driver} (CUDA 12.6), {gpus[0]}, image CUDA 12.8)"
    )


def test_a_driver_too_old_for_the_image_is_told_which_driver_and_which_image_to_use() -> None:
    chosen = plan(facts("535.54.03", RTX_2080))
    assert "this image's CUDA 12.8 needs driver 570.26 or newer" in chosen.warning
    assert "vulkan image (tag <release>-vulkan)" in chosen.warning
    assert plan(facts("570.133.20", H100)).warning == ""
    # NVIDIA writes the third part with two digits: 580.65.06, not 580.65.6.
    assert "needs driver 580.65.06 or newer" in plan(facts("535.54.03", RTX_2080, needed_cuda="13.0")).warning


def test_compat_libraries_are_used_only_when_cuinit_through_them_succeeds() -> None:
    chosen = plan(facts("535.183.01", H100))
    used = outcome(chosen, Probe(0, cuda=12080), COMPAT)
    assert used.library_dir == COMPAT
    assert used.line.startswith(f"using forward compatibility from {COMPAT}: cuInit OK, CUDA 12.8")
    # The message is cuGetErrorString's for 804 (as in gpustack/gpustack#1540, a vLLM log).
    refused = outcome(chosen, Probe(804, "forward compatibility was attempted on non supported HW"), COMPAT)
    assert refused.library_dir is None
    assert refused.line.startswith(
        "not used: cuInit failed: error 804 (forward compatibility was attempted on non supported HW)"
    )
    assert "DISABLE_FORWARD_COMPAT=true skips the attempt" in refused.line
    assert "needs driver 570.26 or newer" in refused.line


def test_the_line_reports_the_native_probe_and_the_driver_advice() -> None:
    line = outcome(plan(facts("535.54.03", RTX_2080)), Probe(0, cuda=12020), COMPAT).line
    assert "not GeForce/TITAN" in line and "cuInit OK, CUDA 12.2" in line and "update the host's driver" in line
    missing = outcome(Plan("native", "not needed"), Probe(None, "libcuda.so.1: cannot open shared object file"), COMPAT)
    assert missing == Outcome("not needed; libcuda.so.1 not loaded (libcuda.so.1: cannot open shared object file)")
    no_gpu = outcome(plan(facts(None, ())), None, COMPAT)
    assert no_gpu.library_dir is None and "\n" not in no_gpu.line


def test_the_probe_without_a_driver_library_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    probe = run_probe(tmp_path, env)
    assert probe.code is None and "libcuda.so.1" in probe.message
