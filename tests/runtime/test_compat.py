"""CUDA forward-compatibility decision over the cases the issue lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_runtime.compat import compat_decision

H100 = ["NVIDIA H100 80GB HBM3"]
RTX = ["NVIDIA GeForce RTX 4090"]


@pytest.mark.parametrize(
    ("driver", "image", "gpus", "use", "reason"),
    [
        ("12.9", "12.9.1", H100, False, "driver supports the image's CUDA natively"),
        ("13.0", "12.9.1", H100, False, "driver supports the image's CUDA natively"),
        ("12.2", "12.9.1", H100, True, "driver older than the image: using forward compatibility"),
        ("12.4", "13.1.0", ["Tesla T4"], True, "driver older than the image: using forward compatibility"),
        ("12.4", "13.1.0", RTX, False, "consumer GPU: forward compatibility unsupported"),
        ("12.2", "12.9.1", RTX, False, "consumer GPU: forward compatibility unsupported"),
        ("12.2", "12.9.1", ["NVIDIA RTX A6000"], False, "consumer GPU"),
        (None, "12.9.1", [], False, "no GPU visible"),
        ("garbled", "12.9.1", H100, False, "driver CUDA version unreadable ('garbled')"),
        (None, "12.9.1", H100, False, "driver CUDA version unreadable (None)"),
        ("12.2", None, H100, False, "not a CUDA image"),
    ],
)
def test_decision_table(
    tmp_path: Path, driver: str | None, image: str | None, gpus: list[str], use: bool, reason: str
) -> None:
    decision = compat_decision(driver_cuda=driver, image_cuda=image, gpu_names=gpus, compat_dir=tmp_path)
    assert decision.use is use
    assert reason in decision.reason
    assert "\n" not in decision.reason  # one log line
    assert (decision.library_dir == tmp_path) is use


def test_consumer_gpu_with_an_older_major_driver_is_told_to_upgrade(tmp_path: Path) -> None:
    decision = compat_decision(driver_cuda="12.4", image_cuda="13.1", gpu_names=RTX, compat_dir=tmp_path)
    assert "needs a newer driver" in decision.reason


def test_switched_off_or_missing_libraries_are_not_used(tmp_path: Path) -> None:
    off = compat_decision(driver_cuda="12.2", image_cuda="12.9", gpu_names=H100, compat_dir=tmp_path, disabled=True)
    assert not off.use and "DISABLE_FORWARD_COMPAT=true" in off.reason
    missing = compat_decision(driver_cuda="12.2", image_cuda="12.9", gpu_names=H100, compat_dir=tmp_path / "none")
    assert not missing.use and "cuda-compat libraries missing" in missing.reason
