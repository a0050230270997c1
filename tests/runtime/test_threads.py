"""The container's CPU budget (llama_runtime/cgroup.py, from recorded cgroup files) and the thread
pools' safety valve (llama_runtime/threads.py), decided from synthetic cgroup figures: the
reference image's own cases (its tests/base/56-cpu-thread-limits.sh) as input."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_runtime.cgroup import CpuBudget, read_budget
from llama_runtime.threads import BEGIN_MARK, CAPPED_VARIABLES, block_variables, ceiling, rewrite, thread_cap

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("tree", "quota", "pids"),
    [
        ("cgroup-v1-limited", 1.5, None),  # docker run --cpus 1.5 (no pids limit: "max" absent)
        ("cgroup-v1-unlimited", None, None),  # quota -1, pids.max "max"
        ("cgroup-v1-pids-limited", 1.0, 30),  # docker run --cpus 1 --pids-limit 30
        ("cgroup-v2-limited", 2.0, 1024),  # cpu.max "200000 100000", pids.max 1024
    ],
)
def test_the_cpu_budget_is_read_from_cgroup_v1_and_v2(tree: str, quota: float | None, pids: int | None) -> None:
    budget = read_budget(DATA / tree / "sys/fs/cgroup", visible=16)
    assert (budget.quota, budget.pids_max) == (quota, pids)


@pytest.mark.parametrize(
    ("quota", "visible", "cores", "limits"),
    [(1.5, 16, 2, True), (0.4, 2, 1, True), (46.2, 384, 46, True), (None, 8, 8, False), (4.0, 2, 2, False)],
)
def test_the_quota_in_whole_cores_is_rounded_and_bounded_by_the_visible_cpus(
    quota: float | None, visible: int, cores: int, limits: bool
) -> None:
    budget = CpuBudget(visible, quota, None)
    assert (budget.usable_cores, budget.quota_limits) == (cores, limits)


# (pids.max, CPUs visible, quota in cores) -> the cap; the reference's cases, in its order.
REFERENCE_CASES = [
    ("pathological caps to ceiling", 1024, 384, 46, 16),
    ("healthy 384/46/11776 no-op", 11776, 384, 46, None),
    ("healthy 128/61/15616 no-op", 15616, 128, 61, None),
    ("healthy 128/41/10240 no-op", 10240, 128, 41, None),
    ("pids=max no-op", None, 384, 46, None),
    ("low pids, no quota -> ceiling", 1024, 384, None, 16),
    ("sub-2 quota clamps to floor", 500, 384, 1, 2),
    ("small quota honoured", 800, 384, 6, 6),
    ("at-threshold is ample", 384 * 16, 384, 46, None),
]


@pytest.mark.parametrize(
    ("case", "pids", "visible", "quota", "cap"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_the_reference_cases_decide_the_same_cap(
    case: str, pids: int | None, visible: int, quota: int | None, cap: int | None
) -> None:
    assert thread_cap(pids, visible, quota) == cap


def test_the_ceiling_is_the_references_variable() -> None:
    assert ceiling({"VAST_CPU_THREAD_CEILING": "8"}) == 8
    assert thread_cap(1024, 384, 46, ceiling({"VAST_CPU_THREAD_CEILING": "8"})) == 8
    assert ceiling({"VAST_CPU_THREAD_CEILING": "1"}) == ceiling({"VAST_CPU_THREAD_CEILING": "x"}) == 16


def assignments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_block_caps_every_pool_and_keeps_a_value_the_user_set() -> None:
    written = rewrite("OMP_NUM_THREADS=99\n", 16, set())
    assert assignments(written).count("OMP_NUM_THREADS=99") == 1
    assert "OMP_NUM_THREADS=16" not in written
    for name in CAPPED_VARIABLES[1:]:
        assert f"{name}={16}" in assignments(written)
    assert "TOKIO_WORKER_THREADS=16" in written and "HF_HUB_DISABLE_XET" not in written
    again = rewrite(written, 8, set())  # a restart on another host: recomputed, never stacked
    assert again.count(BEGIN_MARK) == 1
    assert "MKL_NUM_THREADS=8" in assignments(again) and "OMP_NUM_THREADS=99" in assignments(again)


def test_a_value_set_in_the_workspace_env_or_by_docker_run_is_not_capped() -> None:
    written = rewrite("", 16, {"OMP_NUM_THREADS", "RAYON_NUM_THREADS"})
    assert "OMP_NUM_THREADS=16" not in written and "RAYON_NUM_THREADS=16" not in written
    assert "MKL_NUM_THREADS=16" in written
    assert set(block_variables(written)) == set(CAPPED_VARIABLES) - {"OMP_NUM_THREADS", "RAYON_NUM_THREADS"}


def test_a_block_from_an_older_image_is_replaced_whole() -> None:
    """The reference's migration case: a variable an older block set (HF_HUB_DISABLE_XET) is gone
    from the file once the block is rewritten; a program reads the file as it starts, so it is
    gone from the next program's environment too."""
    old = (
        "PATH=/x\n# VAST_CPU_THREAD_CAPS_BEGIN\nMKL_NUM_THREADS=16\nHF_HUB_DISABLE_XET=1\n# VAST_CPU_THREAD_CAPS_END\n"
    )
    written = rewrite(old, 16, set())
    assert "HF_HUB_DISABLE_XET" not in written and "TOKIO_WORKER_THREADS=16" in written
    assert written.startswith("PATH=/x\n")


def test_a_healthy_host_removes_the_block_and_keeps_the_users_values() -> None:
    stale = (
        "OMP_NUM_THREADS=99\n# VAST_CPU_THREAD_CAPS_BEGIN (managed)\nMKL_NUM_THREADS=16\nRAYON_NUM_THREADS=16\n"
        "# VAST_CPU_THREAD_CAPS_END\nLLAMA_MODEL=org/repo\n"
    )
    assert rewrite(stale, None, set()) == "OMP_NUM_THREADS=99\nLLAMA_MODEL=org/repo\n"
    assert rewrite("LLAMA_MODEL=x\n", None, set()) == "LLAMA_MODEL=x\n"  # a clean file stays as it is
