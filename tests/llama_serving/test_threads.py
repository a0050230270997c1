"""llama-server's threads follow the container's CPU quota when LLAMA_ARGS leave them unset
(llama_serving/threads.py, the command line in config.py): a container that sees 384 CPUs with a
quota of 46 starts llama-server with 46 threads, not 384."""

from __future__ import annotations

import pytest
from llama_runtime.cgroup import CpuBudget
from llama_serving.config import make_plan
from llama_serving.threads import described, thread_options

RENTED = CpuBudget(visible=384, quota=46.0, pids_max=1024)
DOCKER_CPUS_1 = CpuBudget(visible=2, quota=1.0, pids_max=None)


def command(budget: CpuBudget | None, **env: str) -> list[str]:
    plan = make_plan({"LLAMA_MODEL": "/models/m.gguf", **env}, 18000, cpu=budget)
    assert plan is not None
    return plan.command()


def after(words: list[str], option: str) -> str | None:
    return words[words.index(option) + 1] if option in words else None


def test_a_rented_container_runs_as_many_threads_as_its_quota_allows() -> None:
    words = command(RENTED)
    assert (after(words, "--threads"), after(words, "--threads-batch")) == ("46", "46")
    assert (after(command(DOCKER_CPUS_1), "--threads")) == "1"


@pytest.mark.parametrize(
    "budget",
    [None, CpuBudget(16, None, None), CpuBudget(4, 8.0, None), CpuBudget(4, 4.0, 64)],
    ids=["unknown", "no quota", "quota above the CPUs", "quota equal to the CPUs"],
)
def test_without_a_quota_below_the_cpus_seen_llama_server_decides(budget: CpuBudget | None) -> None:
    words = command(budget)
    assert "--threads" not in words and "--threads-batch" not in words


@pytest.mark.parametrize(
    ("env", "added"),
    [
        ({"LLAMA_ARGS": "-t 8"}, ()),
        ({"LLAMA_ARGS": "--threads 8 -c 512"}, ()),
        ({"LLAMA_ARGS": "--threads=8"}, ()),
        ({"LLAMA_ARG_THREADS": "8"}, ()),
        ({"LLAMA_ARGS": "-tb 12"}, ("--threads", "46")),
        ({"LLAMA_ARG_THREADS_BATCH": "12"}, ("--threads", "46")),
        ({"LLAMA_ARGS": "-c 512"}, ("--threads", "46", "--threads-batch", "46")),
    ],
)
def test_threads_set_by_the_user_are_left_alone(env: dict[str, str], added: tuple[str, ...]) -> None:
    plan = make_plan({"LLAMA_MODEL": "/models/m.gguf", **env}, 18000, cpu=RENTED)
    assert plan is not None and plan.threads == added
    words = plan.command()
    if "LLAMA_ARGS" in env and "-t" in env["LLAMA_ARGS"].split():
        assert words.count("-t") == 1 and "--threads" not in words


def test_the_user_s_options_come_after_the_quota_s() -> None:
    """llama-server lets the last occurrence win: LLAMA_ARGS after ours, as for every option."""
    plan = make_plan({"LLAMA_MODEL": "/models/m.gguf", "LLAMA_ARGS": "-tb 12"}, 18000, cpu=RENTED)
    assert plan is not None
    words = plan.command()
    assert words.index("--threads") < words.index("-tb")


def test_the_log_line_says_what_was_decided_and_how_to_choose() -> None:
    line = described(RENTED, thread_options([], {}, RENTED))
    assert line == "CPU quota 46 CPUs of 384 visible: --threads 46 --threads-batch 46 (set -t in LLAMA_ARGS to choose)"
    assert described(CpuBudget(8, None, None), ()) == ""
