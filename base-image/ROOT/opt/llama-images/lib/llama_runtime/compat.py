"""CUDA forward compatibility: whether to put NVIDIA's cuda-compat libraries on the library path.

Forward compatibility lets a newer CUDA (the image's) run on an older driver, and works on data
center GPUs only (NVIDIA's rule); consumer GPUs must have a driver for the image's CUDA version.
The decision is a pure function of what boot reads (nvidia-smi's output) so it is unit-tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Data center products (forward compatibility supported); GeForce/RTX workstation cards are not.
DATACENTER = re.compile(r"\b(Tesla|[ABHL]\d{1,3}[A-Z]?|GH\d{3}|GB\d{3}|T4|V100|P100|P40|P4)\b", re.IGNORECASE)
CONSUMER = re.compile(r"\b(GeForce|TITAN|Quadro|RTX)\b", re.IGNORECASE)
VERSION = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class Decision:
    use: bool
    reason: str
    library_dir: Path | None = None


def parse_version(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    found = VERSION.search(text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def is_datacenter(name: str) -> bool:
    return bool(DATACENTER.search(name)) and not CONSUMER.search(name)


def compat_decision(  # noqa: PLR0911 (one return per row of the decision table)
    *,
    driver_cuda: str | None,
    image_cuda: str | None,
    gpu_names: Sequence[str],
    compat_dir: Path | None,
    disabled: bool = False,
) -> Decision:
    image = parse_version(image_cuda)
    if image is None:
        return Decision(False, "not a CUDA image: forward compatibility not used")
    label = f"image CUDA {image[0]}.{image[1]}"
    if disabled:
        return Decision(False, f"DISABLE_FORWARD_COMPAT=true: forward compatibility not used ({label})")
    if not gpu_names:
        return Decision(False, f"no GPU visible: forward compatibility not used ({label})")
    driver = parse_version(driver_cuda)
    if driver is None:
        return Decision(False, f"driver CUDA version unreadable ({driver_cuda!r}): forward compatibility not used")
    label += f", driver CUDA {driver[0]}.{driver[1]}, GPU {gpu_names[0]}"
    if driver >= image:
        return Decision(False, f"driver supports the image's CUDA natively ({label})")
    if not all(is_datacenter(name) for name in gpu_names):
        advice = "" if driver[0] == image[0] else "; this image needs a newer driver (or an image for your CUDA)"
        return Decision(False, f"consumer GPU: forward compatibility unsupported, not used ({label}){advice}")
    if compat_dir is None or not compat_dir.is_dir():
        return Decision(False, f"cuda-compat libraries missing ({compat_dir}): not used ({label})")
    return Decision(
        True, f"driver older than the image: using forward compatibility from {compat_dir} ({label})", compat_dir
    )


def read_driver_cuda() -> str | None:
    """'CUDA Version: 12.4' from nvidia-smi's banner; None without a driver."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        output = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"CUDA Version:\s*([\d.]+)", output)
    return found.group(1) if found else None


def read_gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []
