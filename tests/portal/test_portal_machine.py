"""The portal's machine panel: cgroup files, /proc and nvidia-smi's CSV turned into figures, from
recorded inputs (tests/runtime/data/README.md says where each comes from)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llama_portal.machine import (
    MIB,
    Cgroup,
    Memory,
    Reading,
    Sampler,
    cpu_percent,
    cpus_allowed,
    disk_figures,
    drm_gpu,
    host_memory,
    nvidia_smi_gpus,
    proc_stat_cpu,
    read_drm,
    read_machine,
)

DATA = Path(__file__).parents[1] / "runtime" / "data"  # beside the runtime's tests, which read the cgroups too
GIB = 1024 * MIB


def cgroup(name: str) -> Cgroup:
    return Cgroup(DATA / name / "sys/fs/cgroup")


def host_total(name: str) -> int:
    found = host_memory((DATA / name / "proc/meminfo").read_text())
    assert found is not None
    return found[0]


def test_a_memory_limited_container_shows_its_limit_not_the_hosts_memory() -> None:
    group = cgroup("cgroup-v1-limited")
    assert not group.v2
    memory = group.memory(host_total("cgroup-v1-limited"))
    # docker run --memory 512m on a 23.5 GiB host; page cache that can be dropped is not "used"
    assert memory == Memory(used=1380352 - 28672, total=512 * MIB, limited=True, source="cgroup v1")
    assert group.cpu_limit() == 1.5
    assert group.cpu_seconds() == pytest.approx(0.031659868)


def test_an_unlimited_container_shows_the_hosts_memory() -> None:
    group = cgroup("cgroup-v1-unlimited")
    total = host_total("cgroup-v1-unlimited")
    assert total == 24683584 * 1024
    assert group.memory(total) == Memory(used=1105920 - 20480, total=total, limited=False, source="cgroup v1")
    assert group.cpu_limit() is None  # cfs_quota_us -1


def test_cgroup_v2_limits_and_usage() -> None:
    group = cgroup("cgroup-v2-limited")
    assert group.v2
    memory = group.memory(512 * GIB)
    assert memory == Memory(used=3 * GIB - 512 * MIB, total=8 * GIB, limited=True, source="cgroup v2")
    assert group.cpu_limit() == 2.0
    assert group.cpu_seconds() == pytest.approx(84.213337)


def test_cgroup_v2_without_limits(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text(str(2 * GIB))
    group = Cgroup(tmp_path)
    assert group.cpu_limit() is None
    assert group.memory(64 * GIB) == Memory(2 * GIB, 64 * GIB, False, "cgroup v2")
    assert group.cpu_seconds() is None  # no cpu.stat: the host's /proc/stat is used instead


def test_a_parents_limit_counts_under_cgroup_v1(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.usage_in_bytes").write_text("1000\n")
    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (memory / "memory.stat").write_text("hierarchical_memory_limit 4294967296\ntotal_inactive_file 0\n")
    assert Cgroup(tmp_path).memory(64 * GIB) == Memory(1000, 4 * GIB, True, "cgroup v1")


def test_cpu_percent_is_of_the_cores_the_container_may_use() -> None:
    # 1.5 CPU seconds in 1 s of wall time, with a quota of 2 cores on a 16-core host
    cores = cpus_allowed(2.0, 16)
    assert cpu_percent((100.0, 10.0), (101.0, 11.5), cores) == 75.0
    assert cpus_allowed(None, 4) == 4.0 and cpus_allowed(8.0, 2) == 2.0  # a cpuset narrower than the quota
    assert cpu_percent((100.0, 10.0), (100.0, 11.0), 2) is None  # no time passed
    assert cpu_percent((100.0, 10.0), (102.0, 9.0), 2) is None  # counter reset (restart)


def test_host_cpu_from_proc_stat() -> None:
    text = (DATA / "cgroup-v1-limited/proc/stat").read_text()
    # user+nice+system+irq+softirq+steal, idle and iowait left out
    assert proc_stat_cpu(text, 100) == pytest.approx((66028 + 0 + 15068 + 0 + 405 + 122) / 100)


def test_gpus_from_recorded_nvidia_smi_output_of_a_busy_h200() -> None:
    (gpu,) = nvidia_smi_gpus((DATA / "nvidia-smi/h200-load.csv").read_text())
    assert gpu.index == 0
    assert gpu.name == "NVIDIA H200"
    assert gpu.utilization == 100
    assert gpu.memory_used == 32362 * MIB
    assert gpu.memory_total == 143771 * MIB
    assert gpu.temperature == 52
    assert gpu.power == pytest.approx(627.40)
    assert gpu.power_limit == 700
    assert gpu.source == "nvidia-smi"


def test_a_mig_gpu_has_no_utilisation_but_its_other_figures() -> None:
    (gpu,) = nvidia_smi_gpus((DATA / "nvidia-smi/h100-mig-idle.csv").read_text())
    assert (gpu.name, gpu.utilization, gpu.memory_used, gpu.memory_total) == (
        "NVIDIA H100 80GB HBM3",
        None,
        59 * MIB,
        81559 * MIB,
    )


def test_a_consumer_gpu_from_recorded_output() -> None:
    (gpu,) = nvidia_smi_gpus((DATA / "nvidia-smi/rtx-2080-super-load.csv").read_text())
    assert (gpu.name, gpu.utilization, gpu.temperature) == ("NVIDIA GeForce RTX 2080 SUPER", 8, 45)


def test_the_portals_own_query_with_several_gpus_and_missing_values() -> None:
    # The portal's field list; the second row as a GPU whose driver reports little.
    text = (
        "index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], temperature.gpu, "
        "power.draw [W], power.limit [W]\n"
        "0, NVIDIA H200, 100 %, 32362 MiB, 143771 MiB, 52, 627.40 W, 700.00 W\n"
        "1, NVIDIA H200, [N/A], [N/A], 143771 MiB, [N/A], [Not Supported], [N/A]\n"
    )
    first, second = nvidia_smi_gpus(text)
    assert first.utilization == 100 and first.power == pytest.approx(627.4)
    assert (second.index, second.utilization, second.memory_used, second.temperature, second.power) == (
        1,
        None,
        None,
        None,
        None,
    )
    assert nvidia_smi_gpus("") == []


def test_an_amd_gpu_from_sys_class_drm(tmp_path: Path) -> None:
    device = tmp_path / "card1" / "device"
    (device / "hwmon/hwmon3").mkdir(parents=True)
    files = {"vendor": "0x1002\n", "device": "0x744c\n", "gpu_busy_percent": "37\n",
             "mem_info_vram_used": str(6 * GIB), "mem_info_vram_total": str(24 * GIB)}  # fmt: skip
    for name, text in files.items():
        (device / name).write_text(text)
    (device / "hwmon/hwmon3/temp1_input").write_text("61000\n")
    (device / "hwmon/hwmon3/power1_average").write_text("212000000\n")
    (tmp_path / "card1-DP-1").mkdir()  # a connector, not a card
    (tmp_path / "card0" / "device").mkdir(parents=True)
    (tmp_path / "card0/device/vendor").write_text("0x10de\n")  # NVIDIA: nothing to say here
    (gpu,) = read_drm(tmp_path)
    assert (gpu.index, gpu.name, gpu.utilization, gpu.memory_used, gpu.memory_total) == (
        1,
        "AMD GPU 0x744c",
        37,
        6 * GIB,
        24 * GIB,
    )
    assert gpu.temperature == 61 and gpu.power == 212 and gpu.source == "drm"
    assert drm_gpu(0, {"vendor": "0x8086"}) is None


def test_disk_figures_from_statvfs(tmp_path: Path) -> None:
    stat = os.statvfs_result((4096, 4096, 1000, 400, 300, 0, 0, 0, 0, 255))
    disk = disk_figures("/workspace", stat, own_volume=True)
    assert (disk.used, disk.free, disk.total) == (600 * 4096, 300 * 4096, 1000 * 4096)


def reading(at: float, cpu: float, used: int = 100) -> Reading:
    return Reading(at, cpu, 2.0, "cgroup v1", Memory(used, 1000, True, "cgroup v1"), None, [], "no GPU found")


def test_the_sampler_samples_only_when_asked_and_at_most_every_gap() -> None:
    moments = iter([(1000.0, 10.0), (1002.0, 11.0), (1030.0, 12.0)])
    reads = []

    def read() -> Reading:
        at, cpu = next(moments)
        reads.append(at)
        return reading(at, cpu)

    sampler = Sampler(read, min_gap=1.5)
    first = sampler.sample(now=1000.0)
    assert first["cpu"]["percent"] is None  # no earlier reading to compare
    assert sampler.sample(now=1001.0) is first  # within the gap: no new reading
    second = sampler.sample(now=1002.0)
    assert second["cpu"]["percent"] == 25.0  # 1 CPU second in 2 s of 2 cores
    # Nobody asked for 28 s: the next percentage would be an average over the gap, not "now".
    assert sampler.sample(now=1030.0)["cpu"]["percent"] is None
    assert reads == [1000.0, 1002.0, 1030.0]
    assert [p["t"] for p in sampler.since(1000.0)] == [1002.0, 1030.0]
    assert sampler.since(0)[1]["cpu"] == 25.0


def test_reading_a_recorded_container(tmp_path: Path) -> None:
    root = DATA / "cgroup-v1-limited"
    reading = read_machine(Cgroup(root / "sys/fs/cgroup"), proc=root / "proc", workspace=tmp_path, drm=tmp_path)
    assert reading.cpu_source == "cgroup v1" and reading.cpu_seconds == pytest.approx(0.031659868)
    assert reading.cores == min(1.5, len(os.sched_getaffinity(0)))
    assert reading.memory is not None and (reading.memory.total, reading.memory.limited) == (512 * MIB, True)
    assert reading.disk is not None and reading.disk.path == str(tmp_path) and reading.disk.total > 0
    assert (reading.gpus, reading.gpu_note) == ([], "no GPU found")  # no nvidia-smi here, no drm cards


def test_outside_a_container_the_hosts_figures_are_read(tmp_path: Path) -> None:
    root = DATA / "cgroup-v1-limited"
    reading = read_machine(Cgroup(tmp_path / "no-cgroup"), proc=root / "proc", workspace=tmp_path, drm=tmp_path)
    assert reading.cpu_source == "host"
    assert reading.cpu_seconds == pytest.approx((66028 + 15068 + 405 + 122) / os.sysconf("SC_CLK_TCK"))
    assert reading.memory is not None and reading.memory.source == "host" and not reading.memory.limited
