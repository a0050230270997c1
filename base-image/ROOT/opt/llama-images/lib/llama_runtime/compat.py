"""CUDA forward compatibility: whether the services get NVIDIA's cuda-compat libraries.

The compat libraries run a newer CUDA on an older driver, on data-center GPUs (and professional
RTX cards NVIDIA certifies for servers) with a driver of a long-term or production branch only.
The image keeps them in paths.CUDA_COMPAT_LIBRARIES, out of /usr/local/cuda/compat, where
NVIDIA's Container Toolkit would put them in front by itself whatever the GPU (CUDA error 804 on a
GeForce).

Boot decides here: from the driver's own version (not nvidia-smi's banner, which shows the
compat version once they are in use) and the GPU names, and then probes the choice with a real
cuInit through the chosen libraries before any service starts. The probe decides: the compat
libraries are tried on every GPU that is not GeForce/TITAN, whatever the driver branch; the
branches NVIDIA lists for them (the upstream's NVIDIA_REQUIRE_CUDA where it is set, else a
recorded list) only order the explanation when cuInit fails. `plan` and `outcome` are pure
functions of those facts, unit-tested over recorded driver output.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import paths

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
# The CUDA version the image's programs are built for (the llama.cpp image sets it); NVIDIA's
# own CUDA_VERSION (the upstream's, e.g. 12.8.1) when it is not set.
NEEDED_CUDA_VARIABLES = ("LLAMA_CPP_CUDA_VERSION", "CUDA_VERSION")
# The image that runs on any driver: named in every "update the driver" advice.
OTHER_IMAGE = "or use the vulkan image (tag <release>-vulkan), which needs no CUDA"

Version = tuple[int, ...]

# Minimum Linux driver of each CUDA version (NVIDIA's CUDA toolkit release notes, "CUDA Toolkit
# and Corresponding Driver Versions"): that driver runs the version, and JIT-compiles its PTX,
# natively. Newest first.
MINIMUM_DRIVER: tuple[tuple[tuple[int, int], Version], ...] = (
    ((13, 1), (590, 44, 1)),
    ((13, 0), (580, 65, 6)),
    ((12, 9), (575, 51, 3)),
    ((12, 8), (570, 26)),
    ((12, 6), (560, 28, 3)),
    ((12, 5), (555, 42, 2)),
    ((12, 4), (550, 54, 14)),
    ((12, 3), (545, 23, 6)),
    ((12, 2), (535, 54, 3)),
    ((12, 1), (530, 30, 2)),
    ((12, 0), (525, 60, 13)),
    ((11, 8), (520, 61, 5)),
    ((11, 7), (515, 43, 4)),
    ((11, 6), (510, 39, 1)),
    ((11, 5), (495, 29, 5)),
    ((11, 4), (470, 42, 1)),
)
# Driver branches NVIDIA lists for forward compatibility when the upstream does not say (its
# NVIDIA_REQUIRE_CUDA: nvidia/cuda:12.8.1 lists R470, R535, R550, R560 and R565). A branch not
# listed is still tried: the cuInit probe decides; the list only orders the explanation.
FORWARD_COMPATIBLE_BRANCHES = (470, 525, 535, 550, 560, 565, 570, 575, 580, 590)
# The oldest branch each CUDA major's compat package supports.
OLDEST_BRANCH_FOR_COMPAT = {12: 470, 13: 535}
REQUIRE_VARIABLE = "NVIDIA_REQUIRE_CUDA"
# "brand=tesla,driver>=535,driver<536": one branch the upstream's compat libraries support.
REQUIRED_BRANCH = re.compile(r"driver>=(\d+)")

# GeForce and TITAN cards never run forward compatibility (error 804).
CONSUMER = re.compile(r"\b(GeForce|TITAN)\b", re.IGNORECASE)
# Data-center GPUs as nvidia-smi names them: Tesla T4, A100-SXM4-80GB, A10G, L40S, H100, H200,
# GH200, B200, GB200, ... (letter + up to three digits, so RTX A6000 is not one).
DATA_CENTER = re.compile(r"\b(Tesla|GRID|[ABHL]\d{1,3}[A-Z]?|G[BH]\d{3}|[KMPTV]\d{1,3})\b", re.IGNORECASE)
# Professional cards, some of which NVIDIA certifies for servers (NGC-Ready RTX): the cuInit
# probe decides for them.
PROFESSIONAL = re.compile(r"\b(Quadro|RTX)\b", re.IGNORECASE)
VERSION = re.compile(r"\d+(?:\.\d+)+")
PROC_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)\s")


def parse_version(text: str | None) -> Version | None:
    """'535.183.01' -> (535, 183, 1); '12.8.1' -> (12, 8, 1); None when there is none."""
    found = VERSION.search(text or "")
    return tuple(int(part) for part in found.group(0).split(".")) if found else None


def show(version: Version) -> str:
    """(580, 65, 6) -> '580.65.06': NVIDIA writes a driver's third part with two digits."""
    return ".".join(f"{part:02d}" if index == 2 else str(part) for index, part in enumerate(version))


def cuda_of_driver(driver: Version) -> tuple[int, int] | None:
    """The newest CUDA version a driver runs natively; None for drivers older than the table."""
    for cuda, minimum in MINIMUM_DRIVER:
        if driver >= minimum:
            return cuda
    return None


def minimum_driver(cuda: tuple[int, int]) -> Version | None:
    """The oldest driver that runs `cuda` natively (a minor version not in the table: the next)."""
    found = None
    for version, minimum in MINIMUM_DRIVER:
        if version >= cuda:
            found = minimum
    return found


def newer_driver_advice(cuda: tuple[int, int]) -> str:
    """What to do when the driver is too old for the image's CUDA (the launcher says it too)."""
    minimum = minimum_driver(cuda)
    needs = f"driver {show(minimum)} or newer" if minimum else "a newer driver"
    return f"this image's CUDA {cuda[0]}.{cuda[1]} needs {needs}: update the host's driver, {OTHER_IMAGE}"


def driver_from_proc(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version's first line, proprietary or open module:
    'NVRM version: NVIDIA UNIX x86_64 Kernel Module  525.60.13  Wed Nov 30 ...',
    'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  565.57.01  Release Build ...'."""
    found = PROC_VERSION.search(text.splitlines()[0] + " " if text.strip() else "")
    return found.group(1) if found else None


def listed_branches(require: str | None) -> tuple[int, ...] | None:
    """The driver branches an upstream's NVIDIA_REQUIRE_CUDA lists ('cuda>=12.8 brand=unknown,
    driver>=470,driver<471 ...' -> (470, ...)); None where it is not set."""
    if not require or not require.strip():
        return None
    return tuple(sorted({int(found) for found in REQUIRED_BRANCH.findall(require)}))


def gpu_class(name: str) -> str:
    """'consumer' (never forward compatible), 'data-center' (always), or 'other' (the probe decides)."""
    if CONSUMER.search(name):
        return "consumer"
    if DATA_CENTER.search(name) and not PROFESSIONAL.search(name):
        return "data-center"
    return "other"


def compat_driver(file_names: Iterable[str]) -> str | None:
    """The driver version of the compat libraries, from libcuda.so.<version> (as the toolkit reads it)."""
    versions = sorted(
        (parse_version(name.removeprefix("libcuda.so.")) or (), name.removeprefix("libcuda.so."))
        for name in file_names
        if re.fullmatch(r"libcuda\.so\.\d+\.\d+(\.\d+)?", name)
    )
    return versions[-1][1] if versions else None


@dataclass(frozen=True)
class Facts:
    """What boot reads about the host and the image."""

    needed_cuda: str | None  # CUDA version the image's programs are built for; None: not a CUDA image
    driver: str | None  # the driver's own version, e.g. 535.183.01
    gpus: tuple[str, ...]  # nvidia-smi's names
    compat_driver: str | None  # the compat libraries' driver version, e.g. 570.124.06
    disabled: bool = False  # DISABLE_FORWARD_COMPAT
    # The branches the upstream's NVIDIA_REQUIRE_CUDA lists; None: not set (the recorded list).
    listed_branches: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Plan:
    """What to probe: nothing, the driver as it is ('native'), or through the compat libraries."""

    action: str  # "none", "native" or "compat"
    reason: str
    # Said whatever the probe finds: the image's CUDA kernels cannot run on this driver.
    warning: str = ""
    # Said first when the compat libraries fail: the driver's branch is not one NVIDIA lists.
    branch_note: str = ""


@dataclass(frozen=True)
class Probe:
    """What a cuInit through a library path gave."""

    code: int | None  # cuInit's result; None when libcuda could not be loaded
    message: str = ""
    cuda: int | None = None  # cuDriverGetVersion: 12080 for 12.8


@dataclass(frozen=True)
class Outcome:
    line: str  # the one [cuda-compat] log line
    library_dir: Path | None = None  # put first on LD_LIBRARY_PATH


def plan(facts: Facts) -> Plan:  # noqa: PLR0911 (one return per row of the decision table)
    needed = parse_version(facts.needed_cuda)
    if needed is None or len(needed) < 2:
        return Plan("none", "not a CUDA image: forward compatibility not needed")
    needed_cuda = (needed[0], needed[1])
    image = f"CUDA {needed_cuda[0]}.{needed_cuda[1]}"
    if facts.driver is None and not facts.gpus:
        return Plan("none", f"no NVIDIA GPU visible (docker run --gpus all gives it one): the image's {image} unused")
    gpu = facts.gpus[0] if facts.gpus else "GPU name unknown"
    driver = parse_version(facts.driver)
    if driver is None:
        return Plan("native", f"driver version unreadable ({facts.driver!r}) on {gpu}: forward compatibility not tried")
    native = cuda_of_driver(driver)
    runs = f"CUDA {native[0]}.{native[1]}" if native else "no CUDA 11.4+"
    label = f"driver {facts.driver} ({runs}), {gpu}, image {image}"
    if native is not None and native >= needed_cuda:
        return Plan("native", f"not needed: the driver runs the image's CUDA natively ({label})")
    warning = newer_driver_advice(needed_cuda)
    if facts.disabled:
        return Plan("native", f"DISABLE_FORWARD_COMPAT=true: not used ({label})", warning)
    classes = {gpu_class(name) for name in facts.gpus}
    if "consumer" in classes:
        return Plan(
            "native", f"not used: NVIDIA supports it on data-center GPUs only, not GeForce/TITAN ({label})", warning
        )
    compat = parse_version(facts.compat_driver)
    compat_cuda = cuda_of_driver(compat) if compat else None
    if compat is None or compat_cuda is None or compat_cuda < needed_cuda:
        return Plan("native", f"not used: the image has no compat libraries for {image} ({label})", warning)
    branch = driver[0]
    compat_label = f"CUDA {compat_cuda[0]}.{compat_cuda[1]}"
    reason = f"compat libraries of driver {facts.compat_driver} ({compat_label}), {label}"
    listed, source = branches_for(facts, compat_cuda[0])
    if branch in listed:
        return Plan("compat", reason, warning)
    shown = ", ".join(f"R{b}" for b in listed)
    note = (
        f"driver branch R{branch} is not among those {source} lists for forward compatibility ({shown}), "
        "where cuInit through them often fails with CUDA error 803"
    )
    return Plan("compat", reason, warning, note)


def branches_for(facts: Facts, compat_major: int) -> tuple[tuple[int, ...], str]:
    """The branches that explain a failure: the upstream's NVIDIA_REQUIRE_CUDA, else NVIDIA's
    recorded list (from the oldest branch the compat package supports)."""
    if facts.listed_branches:
        return facts.listed_branches, f"the image's {REQUIRE_VARIABLE}"
    oldest = OLDEST_BRANCH_FOR_COMPAT.get(compat_major, 0)
    return tuple(b for b in FORWARD_COMPATIBLE_BRANCHES if b >= oldest), "NVIDIA"


def describe(probe: Probe) -> str:
    if probe.code is None:
        return f"libcuda.so.1 not loaded ({probe.message or 'no driver library mounted'})"
    if probe.code == 0:
        found = f", CUDA {probe.cuda // 1000}.{probe.cuda % 1000 // 10}" if probe.cuda else ""
        return f"cuInit OK{found}"
    return f"cuInit failed: error {probe.code}" + (f" ({probe.message})" if probe.message else "")


def outcome(chosen: Plan, probe: Probe | None, compat_dir: Path) -> Outcome:
    """The decision after the probe: compat libraries only when cuInit through them succeeded."""
    warning = f"; {chosen.warning}" if chosen.warning else ""
    if chosen.action == "none" or probe is None:
        return Outcome(chosen.reason + warning)
    if chosen.action == "compat":
        if probe.code == 0:
            unlisted = f"; {chosen.branch_note}, but cuInit through them succeeded" if chosen.branch_note else ""
            line = f"using forward compatibility from {compat_dir}: {describe(probe)} ({chosen.reason}{unlisted})"
            return Outcome(line, compat_dir)
        # An unlisted branch is the likely cause: said first.
        first = f"{chosen.branch_note}, and " if chosen.branch_note else ""
        return Outcome(
            f"not used: {first}{describe(probe)} through the compat libraries ({chosen.reason}); "
            f"DISABLE_FORWARD_COMPAT=true skips the attempt{warning}"
        )
    return Outcome(f"{chosen.reason}; {describe(probe)}{warning}")


PROBE = r"""
import ctypes, json, sys
try:
    lib = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    print(json.dumps({"code": None, "message": str(exc)}))
    sys.exit(0)
code = lib.cuInit(0)
found = {"code": code}
if code:
    text = ctypes.c_char_p()
    if lib.cuGetErrorString(code, ctypes.byref(text)) == 0 and text.value:
        found["message"] = text.value.decode(errors="replace")
version = ctypes.c_int()
if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
    found["cuda"] = version.value
print(json.dumps(found))
"""


def run_probe(library_dir: Path | None, env: Mapping[str, str], timeout: float = 60.0) -> Probe:
    """cuInit in a child process (a failed init cannot be undone in this one), with `library_dir`
    first on the library path when given."""
    child = dict(env)
    if library_dir is not None:
        child["LD_LIBRARY_PATH"] = ":".join(p for p in (str(library_dir), env.get("LD_LIBRARY_PATH", "")) if p)
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=timeout, env=child, check=False
        )
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return Probe(-1, f"no answer within {timeout:g} s")
    except (OSError, ValueError, IndexError):
        return Probe(-1, "the probe crashed")
    code = found.get("code")
    return Probe(
        code if isinstance(code, int) else None,
        str(found.get("message", "")),
        found["cuda"] if isinstance(found.get("cuda"), int) else None,
    )


def query_nvidia_smi(fields: str) -> list[list[str]]:
    """`nvidia-smi --query-gpu=<fields>` rows; none without nvidia-smi or a GPU."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [[cell.strip() for cell in line.split(",")] for line in result.stdout.splitlines() if line.strip()]


def read_driver() -> tuple[str | None, tuple[str, ...]]:
    """The driver's own version (/proc, else nvidia-smi) and the GPU names."""
    rows = query_nvidia_smi("name,driver_version")
    names = tuple(row[0] for row in rows if row and row[0])
    try:
        version = driver_from_proc(DRIVER_VERSION_FILE.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        version = None
    if version is None:
        version = next((row[-1] for row in rows if len(row) > 1 and parse_version(row[-1])), None)
    return version, names


def needed_cuda(env: Mapping[str, str]) -> str | None:
    return next((env[name] for name in NEEDED_CUDA_VARIABLES if env.get(name)), None)


def decide(env: Mapping[str, str], disabled: bool, compat_dir: Path = paths.CUDA_COMPAT_LIBRARIES) -> Outcome:
    needed = needed_cuda(env)
    if parse_version(needed) is None:
        return outcome(plan(Facts(None, None, (), None)), None, compat_dir)
    driver, gpus = read_driver()
    try:
        names = [path.name for path in compat_dir.iterdir()]
    except OSError:
        names = []
    branches = listed_branches(env.get(REQUIRE_VARIABLE))
    chosen = plan(Facts(needed, driver, gpus, compat_driver(names), disabled, branches))
    if chosen.action == "none":
        return outcome(chosen, None, compat_dir)
    probe = run_probe(compat_dir if chosen.action == "compat" else None, env)
    return outcome(chosen, probe, compat_dir)
