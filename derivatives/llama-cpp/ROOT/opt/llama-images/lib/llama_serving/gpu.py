"""GPU facts for llama-server: whether the image's backend uses the host's GPU, CUDA errors in
its output, and where CUDA keeps the kernels it compiles.

- The CPU-fallback alarm (every flavor): a host with a GPU that llama-server does not list gets
  a loud warning and a status-line prefix naming the fix: the image to use, or the `docker run`
  flag that is missing. `verdict` decides from device facts (nvidia-smi, /dev nodes, the PCI
  display devices in /sys) and `llama-server --list-devices` output.
- The GPUs' compute capability (nvidia-smi, ggml's own report in --list-devices, else recorded
  facts by GPU name) against the architectures the release's CUDA kernels are built for
  (LLAMA_CPP_CUDA_ARCHITECTURES): a GPU none of them runs on (V100, P100, GTX 10xx under a
  release built for 7.5 and newer) is said plainly before the first start, naming the vulkan
  image (`architecture_verdict`).
- CUDA errors 804, 803, 222, 209, 35, 100 and 999 and ggml's abort for a GPU it has no kernels
  for, in llama-server's output, become a cause that says which driver the image needs, or what
  else to change (`diagnosis`); those no restart can fix are final (no retries).
- The JIT cache: CUDA_CACHE_PATH is on the /workspace volume; where that cannot be written
  (read-only root, --user without a writable volume) it moves to /tmp for this container.

Pure functions over facts, unit-tested; `read_facts` and `check` are the I/O edge.
Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from llama_runtime.compat import cuda_of_driver, driver_from_proc, newer_driver_advice, parse_version, query_nvidia_smi

from . import cuda_architectures
from .cuda_architectures import Capability, show_capability
from .paths import SERVER_DIRECTORY

BACKENDS = ("cuda", "vulkan", "cpu")
# PCI vendor ids of display controllers (class 0x03xxxx) whose GPUs llama.cpp can use.
VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x8086": "Intel"}
# Vulkan devices that run on the CPU (Mesa's lavapipe reports "llvmpipe"): not a GPU.
SOFTWARE_DEVICE = re.compile(r"llvmpipe|lavapipe|SwiftShader", re.IGNORECASE)
DEVICE_LINE = re.compile(r"^\s*((CUDA|Vulkan|ROCm|SYCL|Metal|OpenCL)\d+):\s*(.*)$")
CUDA_INIT_FAILURE = re.compile(r"ggml_cuda_init: failed to initialize CUDA: (.*)")
WARNING_PREFIX = "CPU fallback (GPU not used): "
CPU_CACHE_DIR = "/tmp/nv-compute-cache"  # where CUDA's JIT cache goes when /workspace is not writable
# The images to name in advice (the matrix's tag templates: docs/building.md "matrix.yaml reference").
VULKAN_IMAGE = "the vulkan image (tag <release>-vulkan)"
CUDA_IMAGE = "the CUDA image (tag <release>-cuda-<version>; its driver minimum: docs/serving.md, GPU hosts)"
DRI_FLAG = "--device /dev/dri"
GPUS_FLAG = "--gpus all"


@dataclass(frozen=True)
class Facts:
    """What the container sees of the host's GPUs."""

    backend: str = "cpu"  # LLAMA_CPP_BACKEND: the image's flavor
    pci_vendors: tuple[str, ...] = ()  # GPUs on the host (PCI display controllers), by vendor
    nvidia_smi: tuple[str, ...] = ()  # `nvidia-smi -L` lines: GPUs the container was given
    nvidia_nodes: tuple[str, ...] = ()  # /dev/nvidia0, ...
    render_nodes: tuple[str, ...] = ()  # /dev/dri/renderD128, ...
    render_usable: bool = True  # this user can open the render nodes
    render_group: int | None = None  # their group, for --group-add
    driver: str | None = None  # /proc/driver/nvidia/version: the NVIDIA driver's own version
    needed_cuda: str | None = None  # LLAMA_CPP_CUDA_VERSION: what the CUDA image's kernels need
    capabilities: str = ""  # NVIDIA_DRIVER_CAPABILITIES
    vulkan_devices_asked: str | None = None  # GGML_VK_VISIBLE_DEVICES: lavapipe is used only when named
    architectures: str = ""  # LLAMA_CPP_CUDA_ARCHITECTURES: what the release's CUDA kernels are built for
    # `nvidia-smi --query-gpu=name,compute_cap` rows, ("Tesla V100-SXM2-16GB", "7.0"); the
    # capability is "" where nvidia-smi lacks the field (drivers before R510).
    compute: tuple[tuple[str, str], ...] = ()

    @property
    def nvidia(self) -> bool:
        """An NVIDIA GPU on the host, given to the container or not."""
        return bool(self.nvidia_smi or self.nvidia_nodes or "NVIDIA" in self.pci_vendors or self.driver)

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(sorted({v for v in self.pci_vendors if v != "NVIDIA"}))

    @property
    def has_gpu(self) -> bool:
        return self.nvidia or bool(self.others) or bool(self.render_nodes)

    def describe(self) -> str:
        if self.nvidia_smi:
            more = ", ..." if len(self.nvidia_smi) > 1 else ""
            return f"nvidia-smi sees {len(self.nvidia_smi)} GPU(s) ({self.nvidia_smi[0]}{more})"
        vendors = sorted(set(self.pci_vendors)) or (["NVIDIA"] if self.nvidia else [])
        if vendors:
            return f"the host has {' and '.join(vendors)} GPU(s)"
        return f"{len(self.render_nodes)} GPU render node(s) in /dev/dri"


@dataclass(frozen=True)
class Device:
    name: str  # CUDA0, Vulkan0
    backend: str  # CUDA, Vulkan
    description: str

    @property
    def software(self) -> bool:
        return bool(SOFTWARE_DEVICE.search(self.description))

    def __str__(self) -> str:
        return f"{self.name}: {self.description}"


@dataclass(frozen=True)
class Verdict:
    """What the launcher logs before llama-server starts, and the status lines' prefix."""

    lines: tuple[str, ...] = ()  # log lines (the warning block, or one note)
    warning: str = ""  # WARNING_PREFIX when a GPU goes unused


def parse_devices(output: str) -> list[Device]:
    """Devices from `llama-server --list-devices`: '  CUDA0: NVIDIA GeForce RTX 3080 Ti (11909 MiB, ...)'."""
    found = []
    for line in output.splitlines():
        match = DEVICE_LINE.match(line)
        if match:
            found.append(Device(match.group(1), match.group(2), match.group(3).strip()))
    return found


def needs_listing(facts: Facts) -> bool:
    """Whether `llama-server --list-devices` can tell anything (it costs a second at boot)."""
    return facts.has_gpu or (facts.backend == "vulkan" and facts.vulkan_devices_asked is not None)


def verdict(facts: Facts, listed: str) -> Verdict:
    """The CPU-fallback decision: a GPU the backend does not use is a loud warning with the fix."""
    devices = parse_devices(listed)
    hardware = [d for d in devices if not d.software]
    if hardware:
        return Verdict((f"GPU: {'; '.join(str(d) for d in hardware)}",))
    software = [d for d in devices if d.software]
    if not facts.has_gpu:
        if software:
            return Verdict(
                (
                    f"no GPU: llama-server uses {software[0]}, Mesa's Vulkan device on the CPU, as "
                    "GGML_VK_VISIBLE_DEVICES asks (slower than the CPU backend; unset it to use that)",
                )
            )
        if facts.backend == "vulkan":
            return Verdict(
                (
                    "no GPU found: llama-server runs on the CPU backend. Mesa's lavapipe (a Vulkan device on "
                    "the CPU) is present but slower; GGML_VK_VISIBLE_DEVICES=0 uses it anyway",
                )
            )
        if facts.backend == "cuda":
            return Verdict((f"no GPU visible: llama-server runs on the CPU (docker run {GPUS_FLAG} gives it one)",))
        return Verdict()
    shown = "; ".join(line.strip() for line in listed.splitlines() if line.strip()) or "nothing"
    banner = "!" * 78
    return Verdict(
        (
            banner,
            f"WARNING: CPU FALLBACK. {facts.describe()},",
            "WARNING: but llama-server lists no GPU device: it will run on the CPU, slowly.",
            f"WARNING: llama-server --list-devices says: {shown}",
            f"WARNING: {fix(facts, listed)}",
            banner,
        ),
        WARNING_PREFIX,
    )


def fix(facts: Facts, listed: str) -> str:  # noqa: PLR0911 (one return per case)
    """What the user changes so the backend uses the GPU: the image, or a docker run flag."""
    if facts.backend == "cpu":
        if facts.nvidia:
            return f"this is the CPU image: use {CUDA_IMAGE}, or {VULKAN_IMAGE}, with {GPUS_FLAG}"
        return f"this is the CPU image: use {VULKAN_IMAGE} with {DRI_FLAG}"
    if facts.backend == "cuda":
        if not facts.nvidia:
            return f"the CUDA image needs an NVIDIA GPU: use {VULKAN_IMAGE} with {DRI_FLAG}"
        if not (facts.nvidia_nodes or facts.nvidia_smi):
            return f"the GPU is not given to the container: docker run {GPUS_FLAG} (NVIDIA Container Toolkit)"
        failure = CUDA_INIT_FAILURE.search(listed)
        found = diagnose([failure.group(0)], facts) if failure else None
        return found or f"CUDA did not start (see the line above); {driver_advice(facts)}"
    # vulkan
    if facts.nvidia:
        if not (facts.nvidia_nodes or facts.nvidia_smi):
            return f"the GPU is not given to the container: docker run {GPUS_FLAG} (NVIDIA Container Toolkit)"
        capabilities = {c.strip() for c in facts.capabilities.split(",")}
        if not capabilities & {"graphics", "all"}:
            return (
                f"NVIDIA's Vulkan driver is mounted only with the graphics capability: NVIDIA_DRIVER_CAPABILITIES is "
                f"'{facts.capabilities}'; leave the image's (all) or add graphics"
            )
        return "NVIDIA's Vulkan driver did not load (see the line above); the host driver's Vulkan files may be missing"
    if not facts.render_nodes:
        return f"the GPU is not given to the container: docker run {DRI_FLAG}"
    if not facts.render_usable:
        group = f" {facts.render_group}" if facts.render_group is not None else " <the render group's id>"
        return f"this user cannot open /dev/dri's render nodes: docker run --group-add{group}"
    return "Mesa's Vulkan drivers found no usable device on /dev/dri (see the line above)"


def driver_advice(facts: Facts) -> str:
    needed = parse_version(facts.needed_cuda)
    if needed is None or len(needed) < 2:
        return "check the host's driver"
    return newer_driver_advice((needed[0], needed[1]))


def driver_label(facts: Facts) -> str:
    driver = parse_version(facts.driver)
    cuda = cuda_of_driver(driver) if driver else None
    if driver is None:
        return "the host's driver"
    return f"driver {facts.driver}" + (f" (CUDA {cuda[0]}.{cuda[1]})" if cuda else "")


# CUDA errors in llama-server's output, by cuGetErrorString's text (ggml prints it) or by number
# (older builds: "CUDA error 222 at ggml-cuda.cu:420: ..."), and ggml's own abort for a GPU it
# has no kernels for ("common.cuh:112: ggml was not compiled with any CUDA arch <= 700").
CUDA_ERRORS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("804", re.compile(r"forward compatibility was attempted on non supported HW", re.IGNORECASE)),
    ("803", re.compile(r"system has unsupported display driver / cuda driver combination", re.IGNORECASE)),
    ("222", re.compile(r"provided PTX was compiled with an unsupported toolchain", re.IGNORECASE)),
    ("209", re.compile(r"no kernel image is available for execution on the device", re.IGNORECASE)),
    ("35", re.compile(r"CUDA driver version is insufficient for CUDA runtime version", re.IGNORECASE)),
    ("100", re.compile(r"no CUDA-capable device is detected", re.IGNORECASE)),
    ("999", re.compile(r"failed to initialize CUDA: unknown error", re.IGNORECASE)),
)
CUDA_ERROR_NUMBER = re.compile(r"CUDA error (\d+)\b")
NO_KERNELS = "no kernels"  # ggml's abort, compiled for no architecture this GPU runs
NO_KERNELS_LINE = re.compile(r"ggml was not compiled with any CUDA arch <= (\d+)")
# Causes no restart can change: the driver, the GPU or the libraries loaded stay what they are.
FINAL_CAUSES = frozenset({"804", "803", "222", "209", "35", NO_KERNELS})
# ggml's report of each device (ggml_cuda_init, also in --list-devices):
# "  Device 0: Tesla V100-SXM2-16GB, compute capability 7.0, VMM: yes".
GGML_DEVICE = re.compile(r"Device (\d+): (.+?), compute capability (\d+)\.(\d+)")


@dataclass(frozen=True)
class Diagnosis:
    """A failure llama-server printed that the launcher recognises."""

    code: str  # "222", ..., or NO_KERNELS
    cause: str  # what happened and what to do, for the log and the status line
    final: bool  # starting llama-server again cannot help

    @property
    def final_reason(self) -> str:
        return "the GPU or its driver cannot run this image's CUDA" if self.final else ""


def cuda_error(lines: Iterable[str]) -> tuple[str, re.Match[str] | None] | None:
    """The first failure llama-server printed that has a known cause (its code, and for the
    architecture abort the match holding the GPU's capability)."""
    known = {code for code, _ in CUDA_ERRORS}
    for line in lines:
        found = NO_KERNELS_LINE.search(line)
        if found:
            return NO_KERNELS, found
        for code, pattern in CUDA_ERRORS:
            if pattern.search(line):
                return code, None
        number = CUDA_ERROR_NUMBER.search(line)
        if number and number.group(1) in known:
            return number.group(1), None
    return None


def diagnosis(lines: Iterable[str], facts: Facts) -> Diagnosis | None:
    """A recognised failure as a cause that says what to do; None for anything else."""
    found = cuda_error(lines)
    if found is None:
        return None
    code, match = found
    driver = driver_label(facts)
    advice = driver_advice(facts)
    # The fix comes before the details: the status line keeps 300 characters.
    built_for, listed = release_architectures(facts)
    if code == NO_KERNELS:
        number = int(match.group(1)) if match else 0
        capability = (number // 100, number % 100 // 10)
        cause = (
            f"the GPU's compute capability {show_capability(capability)} is older than every architecture this "
            f"image's CUDA kernels are built for{built_for}: use {VULKAN_IMAGE}, which runs on this GPU (ggml: not "
            f"compiled with any CUDA arch <= {number}{listed})"
        )
        return Diagnosis(code, cause, final=True)
    gpus = ", ".join(f"{g.name} ({show_capability(g.capability)})" for g in facts_gpus(facts) if g.capability)
    causes = {
        "804": f"CUDA error 804: forward-compatibility libraries were loaded on a GPU that does not support them "
        f"(GeForce/TITAN; the image's boot never does this: check LD_LIBRARY_PATH and /etc/ld.so.conf.d); {driver}: "
        f"{advice}",
        "803": f"CUDA error 803: the driver's kernel module and its CUDA library do not match ({driver}; a driver "
        "updated without a reboot, or forward compatibility on a driver branch that does not support it): reboot "
        "the host, or set DISABLE_FORWARD_COMPAT=true",
        "222": f"CUDA error 222: {driver} cannot compile this image's CUDA kernels (the release carries PTX only, "
        f"which the driver compiles on first use): {advice}",
        "209": f"CUDA error 209: this image's CUDA kernels have no code for this GPU{f' ({gpus})' if gpus else ''}; "
        f"they are built for{built_for or ' other GPUs'}: use {VULKAN_IMAGE}, which runs on it{listed}",
        "35": f"CUDA error 35: {driver} is older than this image's CUDA runtime: {advice}",
        "100": "CUDA error 100: no CUDA-capable device is visible in the container: docker run "
        f"{GPUS_FLAG} (or NVIDIA_VISIBLE_DEVICES naming a GPU)",
        "999": "CUDA error 999 (unknown error) at initialisation: the host's nvidia_uvm module is often missing or "
        "stale after a driver update (`sudo modprobe nvidia_uvm`, or reboot the host)",
    }
    return Diagnosis(code, causes[code], final=code in FINAL_CAUSES)


def diagnose(lines: Iterable[str], facts: Facts) -> str | None:
    """A recognised CUDA error as a cause that says what to do; None for anything else."""
    found = diagnosis(lines, facts)
    return found.cause if found else None


def release_architectures(facts: Facts) -> tuple[str, str]:
    """(' compute capability 7.5 and newer', '; the release: 75-virtual, ...'), or empty when
    the image does not say."""
    try:
        architectures = cuda_architectures.parse(facts.architectures)
    except ValueError:
        return "", ""
    if not architectures:
        return "", ""
    names = ", ".join(str(a) for a in architectures)
    return f" {cuda_architectures.describe(architectures, listed=False)}", f"; the release: {names}"


@dataclass(frozen=True)
class Gpu:
    """A GPU the container was given, with its compute capability when known."""

    index: int
    name: str
    capability: Capability | None
    source: str  # where the capability comes from: nvidia-smi, ggml, recorded facts


# Compute capability by GPU name (NVIDIA's CUDA GPUs list), for drivers whose nvidia-smi lacks the
# compute_cap field (before R510: 'Field "compute_cap" is not a valid field to query.') and no
# ggml report: mostly the older GPUs a release may not cover. First match wins.
RECORDED_CAPABILITIES: tuple[tuple[re.Pattern[str], Capability], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), capability)
    for pattern, capability in (
        (r"\bK80\b", (3, 7)),
        (r"\bK(20|40)[a-z]*\b", (3, 5)),
        (r"\bM10\b", (5, 0)),
        (r"\bM(4|6|40|60)\b|GTX 9[5-8]0", (5, 2)),
        (r"\bP100\b|Quadro GP100", (6, 0)),
        (r"\bP(4|6|10|40)\b|\bP10[246]-\d+|GTX 10[5-8]0|TITAN Xp|Quadro P\d{3,4}", (6, 1)),
        (r"\bV100\b|TITAN V\b|Quadro GV100", (7, 0)),
        (r"\bT4\b|GTX 16[56]0|RTX 20[5-8]0|Quadro RTX|TITAN RTX|\bT(400|600|1000|1200)\b", (7, 5)),
        (r"\bA(30|100|800)\b|A100-|A800-", (8, 0)),
        (r"\bA(2|10|10G|16|40)\b|RTX A\d{4}|RTX 30[5-9]0", (8, 6)),
        (r"\bL(4|20|40|40S)\b|RTX 40[6-9]0|RTX \d{4} Ada", (8, 9)),
        (r"\b(GH200|H100|H200|H800|H20)\b|H100 ", (9, 0)),
        (r"\b(GB200|B200|B100)\b", (10, 0)),
        (r"\b(GB300|B300)\b", (10, 3)),
        (r"RTX 50[6-9]0|RTX PRO \d{4} Blackwell", (12, 0)),
    )
)


def recorded_capability(name: str) -> Capability | None:
    return next((capability for pattern, capability in RECORDED_CAPABILITIES if pattern.search(name)), None)


def nvidia_smi_name(line: str) -> str:
    """'GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-...)' -> 'Tesla V100-SXM2-16GB'."""
    return re.sub(r"^GPU \d+:\s*|\s*\(UUID: [^)]*\)\s*$", "", line.strip())


def facts_gpus(facts: Facts, listed: str = "") -> tuple[Gpu, ...]:
    """The container's GPUs with their compute capability: nvidia-smi's, else ggml's report of
    the same GPU (by name), else the recorded one."""
    reported = {m.group(2).strip(): (int(m.group(3)), int(m.group(4))) for m in GGML_DEVICE.finditer(listed)}
    rows = facts.compute or tuple((nvidia_smi_name(line), "") for line in facts.nvidia_smi)
    if not rows:
        rows = tuple((name, "") for name in reported)
    gpus = []
    for index, (name, smi) in enumerate(rows):
        parsed = re.fullmatch(r"(\d+)\.(\d+)", smi.strip())
        if parsed:
            gpus.append(Gpu(index, name, (int(parsed.group(1)), int(parsed.group(2))), "nvidia-smi"))
        elif name in reported:
            gpus.append(Gpu(index, name, reported[name], "ggml"))
        else:
            recorded = recorded_capability(name)
            gpus.append(Gpu(index, name, recorded, "recorded facts" if recorded else "unknown"))
    return tuple(gpus)


UNSUPPORTED_PREFIX = "GPU too old for this image (use the vulkan image): "


def architecture_verdict(facts: Facts, listed: str = "") -> Verdict:
    """Before the first start: whether the GPUs can run the release's CUDA kernels. A GPU none of
    the architectures runs on fails at its first kernel (ggml's abort, or error 209)."""
    try:
        architectures = cuda_architectures.parse(facts.architectures)
    except ValueError as exc:
        return Verdict((f"LLAMA_CPP_CUDA_ARCHITECTURES: {exc}: the GPUs' compute capability is not checked",))
    gpus = facts_gpus(facts, listed)
    if facts.backend != "cuda" or not architectures or not gpus:
        return Verdict()
    built_for = cuda_architectures.describe(architectures)
    cannot = [g for g in gpus if g.capability and not cuda_architectures.runs_on(architectures, g.capability)]

    def shown(gpu: Gpu) -> str:
        capability = show_capability(gpu.capability) if gpu.capability else "unknown"
        return f"GPU {gpu.index}: {gpu.name}, compute capability {capability} ({gpu.source})"

    if not cannot:
        return Verdict((f"{'; '.join(shown(g) for g in gpus)}; this image's CUDA kernels: {built_for}",))
    banner = "!" * 78
    lines = [banner]
    if len(cannot) == len(gpus):
        lines += [
            "WARNING: NO GPU HERE CAN RUN THIS IMAGE'S CUDA KERNELS.",
            *(f"WARNING: {shown(g)}" for g in cannot),
            f"WARNING: the release's kernels are built for {built_for}:",
            "WARNING: llama-server fails at its first kernel (ggml: not compiled with any CUDA arch; or error 209).",
            f"WARNING: use {VULKAN_IMAGE} with {GPUS_FLAG}: it runs on this GPU.",
        ]
    else:
        able = ",".join(str(g.index) for g in gpus if g not in cannot)
        lines += [
            "WARNING: SOME GPUS HERE CANNOT RUN THIS IMAGE'S CUDA KERNELS.",
            *(f"WARNING: {shown(g)}" for g in cannot),
            f"WARNING: the release's kernels are built for {built_for}; llama-server fails when it uses one of them.",
            f"WARNING: give the container only the others: docker run --gpus '\"device={able}\"' (or "
            f"CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES={able}), or use {VULKAN_IMAGE}.",
        ]
    lines.append(banner)
    return Verdict(tuple(lines), UNSUPPORTED_PREFIX)


def cuda_cache_environment(env: Mapping[str, str], writable: Callable[[Path], bool]) -> tuple[dict[str, str], str]:
    """CUDA_CACHE_PATH for llama-server, and a log line: the volume's path when it can be
    written, else CPU_CACHE_DIR (kernels are then compiled again in every new container)."""
    wanted = env.get("CUDA_CACHE_PATH", "")
    if env.get("LLAMA_CPP_BACKEND") != "cuda" or not wanted:
        return {}, ""
    if writable(Path(wanted)):
        return {}, ""
    return (
        {"CUDA_CACHE_PATH": CPU_CACHE_DIR},
        f"CUDA's kernel cache cannot be written at {wanted} (mount a writable /workspace volume): it is kept in "
        f"{CPU_CACHE_DIR} for this container only, so the next one compiles the kernels again",
    )


def can_write_directory(path: Path) -> bool:
    """Whether `path` exists (or can be made) and this user can write in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def pci_vendors(sys_root: Path) -> tuple[str, ...]:
    """Vendors of the host's PCI display controllers (sysfs shows the host's devices in a container)."""
    found = []
    for device in sorted((sys_root / "bus/pci/devices").glob("*")):
        try:
            klass = (device / "class").read_text(encoding="ascii").strip()
            vendor = (device / "vendor").read_text(encoding="ascii").strip()
        except OSError:
            continue
        if klass.startswith("0x03") and vendor in VENDORS:
            found.append(VENDORS[vendor])
    return tuple(found)


def read_facts(env: Mapping[str, str], sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> Facts:
    render = tuple(sorted(str(p) for p in (dev_root / "dri").glob("renderD*")))
    render_group = None
    if render:
        try:
            render_group = Path(render[0]).stat().st_gid
        except OSError:
            render_group = None
    try:
        driver = driver_from_proc(Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        driver = None
    return Facts(
        backend=env.get("LLAMA_CPP_BACKEND", "cpu") if env.get("LLAMA_CPP_BACKEND") in BACKENDS else "cpu",
        pci_vendors=pci_vendors(sys_root),
        nvidia_smi=nvidia_smi_gpus(),
        nvidia_nodes=tuple(sorted(str(p) for p in dev_root.glob("nvidia[0-9]*"))),
        render_nodes=render,
        render_usable=all(os.access(node, os.R_OK | os.W_OK) for node in render),
        render_group=render_group,
        driver=driver,
        needed_cuda=env.get("LLAMA_CPP_CUDA_VERSION") or None,
        capabilities=env.get("NVIDIA_DRIVER_CAPABILITIES", ""),
        vulkan_devices_asked=env.get("GGML_VK_VISIBLE_DEVICES"),
        architectures=env.get("LLAMA_CPP_CUDA_ARCHITECTURES", ""),
    )


def nvidia_smi_gpus() -> tuple[str, ...]:
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if smi.returncode != 0:
        return ()
    return tuple(line.strip() for line in smi.stdout.splitlines() if line.startswith("GPU "))


def list_devices(env: Mapping[str, str]) -> str:
    try:
        listed = subprocess.run(
            ["llama-server", "--list-devices"], capture_output=True, text=True, timeout=120, check=False, env=dict(env),
            cwd=SERVER_DIRECTORY,  # it loads the backends too: not from /workspace
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(llama-server --list-devices failed: {exc})"
    return listed.stdout + listed.stderr


@dataclass(frozen=True)
class Check:
    """What the launcher keeps from the checks before the first start."""

    facts: Facts = field(default_factory=Facts)
    warning: str = ""  # the status lines' prefix
    environment: Mapping[str, str] = field(default_factory=dict)  # for llama-server


def compute_capabilities() -> tuple[tuple[str, str], ...]:
    """nvidia-smi's names and compute capabilities; names alone where the field is unknown."""
    rows = query_nvidia_smi("name,compute_cap") or [[*row, ""] for row in query_nvidia_smi("name")]
    return tuple((row[0], row[1]) for row in rows if len(row) >= 2 and row[0])


def check(env: Mapping[str, str], log: Callable[[str], None]) -> Check:
    """Before the first start: the CPU-fallback verdict, whether the GPUs can run the release's
    CUDA kernels, and the JIT cache, logged."""
    facts = read_facts(env)
    if facts.backend == "cuda" and facts.nvidia_smi:
        facts = replace(facts, compute=compute_capabilities())
    listed = list_devices(env) if needs_listing(facts) else ""
    decided = verdict(facts, listed)
    if not decided.warning and facts.backend == "cuda":
        architectures = architecture_verdict(facts, listed)
        decided = Verdict((*decided.lines, *architectures.lines), architectures.warning)
    for line in decided.lines:
        log(line)
    environment, note = cuda_cache_environment(env, can_write_directory)
    if note:
        log(note)
    return Check(facts, decided.warning, environment)


def failure(lines: Sequence[str], facts: Facts) -> Diagnosis | None:
    """The cause of a failed (or ended) start when it is a CUDA failure the launcher recognises."""
    return diagnosis(lines, facts) if facts.backend == "cuda" else None


def failure_cause(lines: Sequence[str], facts: Facts) -> str | None:
    found = failure(lines, facts)
    return found.cause if found else None
