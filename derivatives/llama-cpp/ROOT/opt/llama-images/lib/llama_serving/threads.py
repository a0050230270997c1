"""llama-server's thread counts from the container's CPU quota. llama-server sizes --threads from
the CPUs it sees; a rented container often sees far more than its quota allows (384 visible, 46
allowed; or 16 visible under `docker run --cpus 4`), and threads beyond the quota only wait for
CPU time the cgroup will not give. When LLAMA_ARGS (and llama-server's own LLAMA_ARG_THREADS,
LLAMA_ARG_THREADS_BATCH) leave them unset and the quota is below the CPUs visible, both are set
to the quota in whole cores (rounded, at least 1).

Pure. Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llama_runtime.cgroup import CpuBudget

THREADS = ("-t", "--threads")
THREADS_BATCH = ("-tb", "--threads-batch")
THREADS_VARIABLE = "LLAMA_ARG_THREADS"
THREADS_BATCH_VARIABLE = "LLAMA_ARG_THREADS_BATCH"


def thread_options(args: Sequence[str], env: Mapping[str, str], budget: CpuBudget | None) -> tuple[str, ...]:
    """The options to add: --threads and --threads-batch at the quota where the user set neither
    (one set: the other follows it, as llama-server's own default does, or is the quota)."""
    if budget is None or not budget.quota_limits:
        return ()
    cores = str(budget.usable_cores)
    threads_set = any(word in THREADS for word in args) or bool(env.get(THREADS_VARIABLE, "").strip())
    batch_set = any(word in THREADS_BATCH for word in args) or bool(env.get(THREADS_BATCH_VARIABLE, "").strip())
    if threads_set:
        return ()  # llama-server's --threads-batch defaults to --threads
    return ("--threads", cores) if batch_set else ("--threads", cores, "--threads-batch", cores)


def described(budget: CpuBudget | None, options: Sequence[str]) -> str:
    """One log line: what the quota is and what was decided."""
    if budget is None:
        return ""
    quota = f"{budget.quota:g} CPUs" if budget.quota is not None else "no CPU quota"
    if options:
        return f"CPU quota {quota} of {budget.visible} visible: {' '.join(options)} (set -t in LLAMA_ARGS to choose)"
    return ""
