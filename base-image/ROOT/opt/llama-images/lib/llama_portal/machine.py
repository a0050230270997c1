"""The machine panel: this container's CPU and memory (its cgroup, v2 or v1, so a container limited
to 8 GB on a 512 GB host shows 8 GB), the /workspace volume, and each GPU (nvidia-smi; other
vendors' /sys/class/drm where it says anything).

Turning raw text (cgroup files, /proc, nvidia-smi's CSV) into figures is pure and tested with
recorded inputs; `read_machine` does the reading and `Sampler` keeps the last minutes of figures
for the page's graphs, sampling only while someone asks (no page open: no cost).

Stdlib only: the portal's environment adds nothing for this.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_runtime.cgroup import cpu_limit_v1, cpu_limit_v2

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
DRM = Path("/sys/class/drm")
WORKSPACE = Path("/workspace")
SAMPLE_SECONDS = 2.0  # how often the page asks; a sample is taken at most every MIN_SAMPLE_GAP
MIN_SAMPLE_GAP = 1.5
HISTORY_SAMPLES = 300  # ten minutes at one sample every 2 s
# A CPU percentage over a longer gap (nobody watched) would be an average, not "now".
STALE_SECONDS = 10.0
NVIDIA_FIELDS = (
    "index", "name", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu", "power.draw", "power.limit",
)  # fmt: skip
NVIDIA_SMI_TIMEOUT = 5.0
MIB = 1024 * 1024
DRM_DEVICE_FILES = ("vendor", "device", "product_name", "gpu_busy_percent", "mem_info_vram_used", "mem_info_vram_total")
# PCI vendor ids /sys/class/drm shows; NVIDIA's cards say nothing there (nvidia-smi does).
VENDORS = {"0x1002": "AMD", "0x8086": "Intel", "0x10de": "NVIDIA"}
NOT_AVAILABLE = re.compile(r"\[?(N/A|Not Supported|Unknown Error|Insufficient Permissions|.*deprecated.*)\]?", re.I)


# ---- pure: raw text -> figures ------------------------------------------------------------------


def first_number(text: str) -> float | None:
    """The number a file or a CSV cell holds ("627.40 W" -> 627.4); None for "[N/A]", "max", ""."""
    match = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match and not NOT_AVAILABLE.fullmatch(text.strip()) else None


def keyed_numbers(text: str) -> dict[str, int]:
    """Files of "key value" lines (memory.stat, cpu.stat) as a dict; other lines are skipped."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = int(parts[1])
    return found


def cpu_seconds_v2(cpu_stat: str) -> float | None:
    """CPU time the cgroup used (cgroup v2 cpu.stat: usage_usec)."""
    usec = keyed_numbers(cpu_stat).get("usage_usec")
    return usec / 1e6 if usec is not None else None


def cpu_seconds_v1(cpuacct_usage: str) -> float | None:
    """CPU time the cgroup used (cgroup v1 cpuacct.usage: nanoseconds)."""
    value = cpuacct_usage.strip()
    return int(value) / 1e9 if value.isdigit() else None


def cpus_allowed(limit: float | None, cpuset_size: int) -> float:
    """Cores this container can use: its quota, at most the CPUs it may run on."""
    return min(limit, float(cpuset_size)) if limit is not None else float(cpuset_size)


def host_memory(meminfo: str) -> tuple[int, int] | None:
    """(total, available) bytes from /proc/meminfo (the host's, even in a container)."""
    kib = {}
    for line in meminfo.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            kib[parts[0].rstrip(":")] = int(parts[1])
    if "MemTotal" not in kib:
        return None
    return kib["MemTotal"] * 1024, kib.get("MemAvailable", 0) * 1024


@dataclass(frozen=True)
class Memory:
    used: int  # bytes, reclaimable page cache left out (as `docker stats` counts)
    total: int  # the cgroup's limit, or the host's memory when there is none
    limited: bool
    source: str


def container_memory(usage: int, limits: list[int | None], inactive_file: int, host_total: int, source: str) -> Memory:
    """The container's memory use against its limit: the smallest real limit, else the host's
    memory (cgroups write "no limit" as "max" or a number near 2**63)."""
    real = [limit for limit in limits if limit is not None and 0 < limit < host_total]
    used = max(0, usage - inactive_file)
    if real:
        return Memory(used, min(real), True, source)
    return Memory(used, host_total, False, source)


def memory_v2(current: str, maximum: str, stat: str, host_total: int) -> Memory | None:
    if not current.strip().isdigit():
        return None
    limit = int(maximum) if maximum.strip().isdigit() else None
    inactive = keyed_numbers(stat).get("inactive_file", 0)
    return container_memory(int(current), [limit], inactive, host_total, "cgroup v2")


def memory_v1(usage: str, limit: str, stat: str, host_total: int) -> Memory | None:
    if not usage.strip().isdigit():
        return None
    numbers = keyed_numbers(stat)
    # A parent's limit (a pod, a slice) shows only as hierarchical_memory_limit.
    limits = [int(limit) if limit.strip().isdigit() else None, numbers.get("hierarchical_memory_limit")]
    inactive = numbers.get("total_inactive_file", numbers.get("inactive_file", 0))
    return container_memory(int(usage), limits, inactive, host_total, "cgroup v1")


def proc_stat_cpu(stat: str, ticks_per_second: int) -> float | None:
    """Busy CPU seconds of the whole host since boot (/proc/stat's "cpu" line; idle and iowait
    are not busy): what is shown when no cgroup can be read."""
    for line in stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu" and all(p.isdigit() for p in parts[1:]) and len(parts) > 5:
            ticks = [int(p) for p in parts[1:]]
            # guest time is already inside user time
            busy = sum(ticks[:8]) - ticks[3] - ticks[4]
            return busy / ticks_per_second
    return None


def cpu_percent(previous: tuple[float, float], current: tuple[float, float], cores: float) -> float | None:
    """Percent of the cores available, from two (wall time, CPU seconds) readings."""
    elapsed = current[0] - previous[0]
    if elapsed <= 0 or cores <= 0 or current[1] < previous[1]:
        return None
    return round(max(0.0, min(100.0, 100.0 * (current[1] - previous[1]) / elapsed / cores)), 1)


@dataclass(frozen=True)
class Disk:
    path: str
    used: int
    free: int  # what a non-root writer may still use
    total: int
    own_volume: bool  # a mounted volume, not the container's own layer


def disk_figures(path: str, stat: os.statvfs_result, own_volume: bool) -> Disk:
    return Disk(
        path=path,
        used=(stat.f_blocks - stat.f_bfree) * stat.f_frsize,
        free=stat.f_bavail * stat.f_frsize,
        total=stat.f_blocks * stat.f_frsize,
        own_volume=own_volume,
    )


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    utilization: float | None  # percent
    memory_used: int | None  # bytes
    memory_total: int | None
    temperature: float | None  # degrees Celsius
    power: float | None  # watts
    power_limit: float | None
    source: str


def nvidia_smi_gpus(csv_text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=... --format=csv`: columns are found by their header
    ("memory.used [MiB]"), values lose their units, "[N/A]" (a MIG GPU's utilisation) is None."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [re.sub(r"\s*\[.*\]$", "", cell.strip()) for cell in lines[0].split(",")]
    gpus = []
    for position, line in enumerate(lines[1:]):
        cells = dict(zip(header, (cell.strip() for cell in line.split(",")), strict=False))

        def number(key: str, cells: Mapping[str, str] = cells) -> float | None:
            return first_number(cells.get(key, ""))

        def mib(key: str) -> int | None:
            value = number(key)
            return int(value * MIB) if value is not None else None

        index = number("index")
        gpus.append(
            Gpu(
                index=int(index) if index is not None else position,
                name=cells.get("name", "") or "NVIDIA GPU",
                utilization=number("utilization.gpu"),
                memory_used=mib("memory.used"),
                memory_total=mib("memory.total"),
                temperature=number("temperature.gpu"),
                power=number("power.draw"),
                power_limit=number("power.limit"),
                source="nvidia-smi",
            )
        )
    return gpus


def drm_gpu(index: int, files: Mapping[str, str]) -> Gpu | None:
    """A GPU from its /sys/class/drm/cardN files (device/vendor, gpu_busy_percent,
    mem_info_vram_used/total, hwmon temp1_input in m°C, power1_average in µW), or None when they
    say nothing beyond its existence (NVIDIA's driver, most Intel GPUs)."""

    def number(name: str) -> float | None:
        return first_number(files.get(name, ""))

    utilization = number("gpu_busy_percent")
    used, total = number("mem_info_vram_used"), number("mem_info_vram_total")
    temperature = number("temp1_input")
    power, power_cap = number("power1_average"), number("power1_cap")
    if utilization is None and total is None and temperature is None:
        return None
    vendor = VENDORS.get(files.get("vendor", "").strip(), "GPU")
    name = files.get("product_name", "").strip() or f"{vendor} GPU {files.get('device', '').strip()}".strip()
    return Gpu(
        index=index,
        name=name,
        utilization=utilization,
        memory_used=int(used) if used is not None else None,
        memory_total=int(total) if total is not None else None,
        temperature=temperature / 1000 if temperature is not None else None,
        power=power / 1e6 if power is not None else None,
        power_limit=power_cap / 1e6 if power_cap is not None else None,
        source="drm",
    )


# ---- I/O: reading the machine -------------------------------------------------------------------


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class Reading:
    """One look at the machine."""

    time: float
    cpu_seconds: float | None
    cores: float
    cpu_source: str
    memory: Memory | None
    disk: Disk | None
    gpus: list[Gpu] = field(default_factory=list)
    gpu_note: str = ""


class Cgroup:
    """This container's cgroup: v2 when the root holds cgroup.controllers, else v1's controllers
    (cpuacct and cpu apart or joined as cpu,cpuacct)."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.v2 = (root / "cgroup.controllers").is_file()

    def v1_file(self, controllers: tuple[str, ...], name: str) -> Path:
        for controller in controllers:
            if (self.root / controller / name).is_file():
                return self.root / controller / name
        return self.root / controllers[0] / name

    def cpu_seconds(self) -> float | None:
        if self.v2:
            return cpu_seconds_v2(read_text(self.root / "cpu.stat"))
        return cpu_seconds_v1(read_text(self.v1_file(("cpuacct", "cpu,cpuacct", "cpuacct,cpu"), "cpuacct.usage")))

    def cpu_limit(self) -> float | None:
        if self.v2:
            return cpu_limit_v2(read_text(self.root / "cpu.max"))
        controllers = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
        return cpu_limit_v1(
            read_text(self.v1_file(controllers, "cpu.cfs_quota_us")),
            read_text(self.v1_file(controllers, "cpu.cfs_period_us")),
        )

    def memory(self, host_total: int) -> Memory | None:
        if self.v2:
            return memory_v2(
                read_text(self.root / "memory.current"),
                read_text(self.root / "memory.max"),
                read_text(self.root / "memory.stat"),
                host_total,
            )
        memory = self.root / "memory"
        return memory_v1(
            read_text(memory / "memory.usage_in_bytes"),
            read_text(memory / "memory.limit_in_bytes"),
            read_text(memory / "memory.stat"),
            host_total,
        )


def read_nvidia() -> tuple[list[Gpu], str]:
    """GPUs nvidia-smi lists, and a note when it is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], ""
    try:
        answer = subprocess.run(
            [smi, f"--query-gpu={','.join(NVIDIA_FIELDS)}", "--format=csv"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi did not answer: {exc}"
    if answer.returncode != 0:
        said = (answer.stdout + answer.stderr).strip().splitlines()[-1:] or [f"exit status {answer.returncode}"]
        return [], f"nvidia-smi: {said[0]}"
    return nvidia_smi_gpus(answer.stdout), ""


def read_drm(root: Path = DRM) -> list[Gpu]:
    gpus = []
    cards = sorted((p for p in root.glob("card*") if re.fullmatch(r"card\d+", p.name)), key=lambda p: int(p.name[4:]))
    for card in cards:
        device = card / "device"
        files = {name: read_text(device / name) for name in DRM_DEVICE_FILES}
        for hwmon in sorted(device.glob("hwmon/hwmon*"))[:1]:
            for name in ("temp1_input", "power1_average", "power1_cap"):
                files[name] = read_text(hwmon / name)
        found = drm_gpu(int(card.name[4:]), files)
        if found is not None:
            gpus.append(found)
    return gpus


def read_disk(path: Path = WORKSPACE) -> Disk | None:
    try:
        stat = os.statvfs(path)
        own_volume = path.stat().st_dev != Path("/").stat().st_dev
    except OSError:
        return None
    return disk_figures(str(path), stat, own_volume)


def read_machine(
    cgroup: Cgroup | None = None, proc: Path = PROC, workspace: Path = WORKSPACE, drm: Path = DRM
) -> Reading:
    group = cgroup or Cgroup()
    now = time.time()
    host = host_memory(read_text(proc / "meminfo"))
    try:
        cpuset = len(os.sched_getaffinity(0))
    except OSError:
        cpuset = os.cpu_count() or 1
    seconds, source = group.cpu_seconds(), "cgroup v2" if group.v2 else "cgroup v1"
    cores = cpus_allowed(group.cpu_limit(), cpuset)
    if seconds is None:  # not in a container, or its cgroup is not visible
        seconds, source, cores = proc_stat_cpu(read_text(proc / "stat"), os.sysconf("SC_CLK_TCK")), "host", cpuset
    memory = group.memory(host[0]) if host else None
    if memory is None and host:
        memory = Memory(host[0] - host[1], host[0], False, "host")
    gpus, note = read_nvidia()
    nvidia_seen = bool(gpus)
    gpus += [gpu for gpu in read_drm(drm) if not (nvidia_seen and gpu.name.startswith("NVIDIA"))]
    if not gpus and not note:
        note = "no GPU found"
    return Reading(now, seconds, cores, source, memory, read_disk(workspace), gpus, note)


# ---- history ------------------------------------------------------------------------------------


def history_point(previous: Reading | None, reading: Reading) -> dict[str, Any]:
    """One point of the graphs: CPU %, memory and disk bytes used, each GPU's utilisation and memory."""
    cpu = None
    if (
        previous is not None
        and previous.cpu_seconds is not None
        and reading.cpu_seconds is not None
        and reading.time - previous.time <= STALE_SECONDS
    ):
        cpu = cpu_percent((previous.time, previous.cpu_seconds), (reading.time, reading.cpu_seconds), reading.cores)
    return {
        "t": round(reading.time, 2),
        "cpu": cpu,
        "memory": reading.memory.used if reading.memory else None,
        "disk": reading.disk.used if reading.disk else None,
        "gpus": [[gpu.utilization, gpu.memory_used] for gpu in reading.gpus],
    }


def figures(reading: Reading, point: dict[str, Any]) -> dict[str, Any]:
    """The latest figures, as GET /api/machine shows them (history added by the caller)."""
    return {
        "time": point["t"],
        "interval": SAMPLE_SECONDS,
        "cpu": {"percent": point["cpu"], "cores": round(reading.cores, 2), "source": reading.cpu_source},
        "memory": asdict(reading.memory) if reading.memory else None,
        "disk": asdict(reading.disk) if reading.disk else None,
        "gpus": [asdict(gpu) for gpu in reading.gpus],
        "gpu_note": reading.gpu_note,
    }


class Sampler:
    """Samples the machine when asked, at most every `min_gap` seconds, and keeps the history."""

    def __init__(
        self,
        read: Callable[[], Reading] = read_machine,
        min_gap: float = MIN_SAMPLE_GAP,
        keep: int = HISTORY_SAMPLES,
    ) -> None:
        self.read = read
        self.min_gap = min_gap
        self.lock = threading.Lock()
        self.last: Reading | None = None
        self.latest: dict[str, Any] | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=keep)

    def sample(self, now: float | None = None) -> dict[str, Any]:
        with self.lock:
            moment = time.time() if now is None else now
            if self.last is None or self.latest is None or moment - self.last.time >= self.min_gap:
                reading = self.read()
                point = history_point(self.last, reading)
                self.last, self.latest = reading, figures(reading, point)
                self.history.append(point)
            return self.latest

    def since(self, after: float) -> list[dict[str, Any]]:
        with self.lock:
            return [point for point in self.history if point["t"] > after]

    def snapshot(self, after: float = 0.0) -> dict[str, Any]:
        """GET /api/machine: the latest figures and the history points newer than `after`."""
        latest = self.sample()
        return {**latest, "history": self.since(after)}
