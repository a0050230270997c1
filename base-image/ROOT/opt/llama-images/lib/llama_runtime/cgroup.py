"""This container's CPU budget as its cgroup states it (v2, else v1): the CPU quota in cores, the
pids budget (processes and threads together), and the CPUs it may run on. Rented containers often
see far more CPUs than their quota (384 visible, 46 allowed), which is what the thread caps
(threads.py) and llama-server's --threads (llama_serving/threads.py) correct for.

The parsers are pure and tested with recorded cgroup files (tests/runtime/data); `read_budget`
reads them. Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 mounts cpu and cpuacct apart or joined, under either name.
V1_CPU_CONTROLLERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def cpu_limit_v2(cpu_max: str) -> float | None:
    """Cores the cgroup may use (cpu.max "quota period"; "max ..." is no limit)."""
    parts = cpu_max.split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
        return int(parts[0]) / int(parts[1])
    return None


def cpu_limit_v1(quota: str, period: str) -> float | None:
    """Cores the cgroup may use (cpu.cfs_quota_us / cpu.cfs_period_us; a quota of -1 is no limit)."""
    if quota.strip().isdigit() and period.strip().isdigit() and int(period) > 0 and int(quota) > 0:
        return int(quota) / int(period)
    return None


def pids_limit(pids_max: str) -> int | None:
    """The pids budget (pids.max, v1 and v2 alike): None for "max", an unreadable or absent file."""
    value = pids_max.strip()
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class CpuBudget:
    visible: int  # CPUs this process may run on (its affinity: what nproc says)
    quota: float | None  # cores the CPU quota allows; None: no quota
    pids_max: int | None  # processes and threads allowed; None: no limit

    @property
    def quota_cores(self) -> int | None:
        """The quota in whole cores, rounded (1.5 -> 2), at least 1; None without a quota."""
        return None if self.quota is None else max(1, int(self.quota + 0.5))

    @property
    def usable_cores(self) -> int:
        """Cores a thread pool can keep busy: the quota (rounded) within the visible CPUs."""
        quota = self.quota_cores
        return self.visible if quota is None else max(1, min(quota, self.visible))

    @property
    def quota_limits(self) -> bool:
        """The quota allows fewer cores than the CPUs visible: pools sized to what they see oversubscribe."""
        return self.quota_cores is not None and self.quota_cores < self.visible


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def v1_file(root: Path, controllers: tuple[str, ...], name: str) -> Path:
    for controller in controllers:
        if (root / controller / name).is_file():
            return root / controller / name
    return root / controllers[0] / name


def is_v2(root: Path) -> bool:
    return (root / "cgroup.controllers").is_file()


def read_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    if is_v2(root):
        return cpu_limit_v2(read_text(root / "cpu.max"))
    return cpu_limit_v1(
        read_text(v1_file(root, V1_CPU_CONTROLLERS, "cpu.cfs_quota_us")),
        read_text(v1_file(root, V1_CPU_CONTROLLERS, "cpu.cfs_period_us")),
    )


def read_pids_max(root: Path = CGROUP_ROOT) -> int | None:
    return pids_limit(read_text(root / "pids.max" if is_v2(root) else root / "pids" / "pids.max"))


def visible_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def read_budget(root: Path = CGROUP_ROOT, visible: int | None = None) -> CpuBudget:
    return CpuBudget(visible if visible is not None else visible_cpus(), read_cpu_limit(root), read_pids_max(root))
