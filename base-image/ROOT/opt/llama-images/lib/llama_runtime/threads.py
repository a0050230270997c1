"""The reference image's safety valve for thread pools (OpenMP, OpenBLAS, MKL, numexpr, rayon,
Tokio): on a host whose pids budget is too low for pools sized to the visible CPUs (384 visible,
1024 pids), every pool is capped to the CPU quota through a managed block in /etc/environment,
which every program reads as it starts. A value the user set (in /etc/environment outside the
block, in ${WORKSPACE}/.env, or in the container's environment) is never overwritten; on a
healthy host the block is removed again. Boot recomputes it every time (/etc/boot.d).

Pure: the decision and the file's new text from the cgroup's figures and the files' text.
Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from . import environment

# The reference's variable, so a template written for it tunes this image the same way.
CEILING_VARIABLE = "VAST_CPU_THREAD_CEILING"
DEFAULT_CEILING = 16  # no pool above this, however generous the quota (bounds one pool's pids)
FLOOR = 2  # a sub-2-core quota still gets 2 threads (latency)
# Healthy hosts run 30-120 pids per visible CPU; the host that needed this ran 2.7.
PIDS_PER_CPU_TRIGGER = 16
CAPPED_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",
    "TOKIO_WORKER_THREADS",  # bounds hf_xet's pool (and every Tokio runtime) the same way
)
# The reference's markers: tools written for it find the block by them.
BEGIN = "# VAST_CPU_THREAD_CAPS_BEGIN (managed by the image at every boot: do not edit)"
END = "# VAST_CPU_THREAD_CAPS_END"
BEGIN_MARK = "VAST_CPU_THREAD_CAPS_BEGIN"
END_MARK = "VAST_CPU_THREAD_CAPS_END"


def ceiling(env: Mapping[str, str]) -> int:
    """VAST_CPU_THREAD_CEILING when it is a whole number >= 2, else 16."""
    text = env.get(CEILING_VARIABLE, "").strip()
    return int(text) if text.isdigit() and int(text) >= FLOOR else DEFAULT_CEILING


def thread_cap(
    pids_max: int | None, visible: int | None, quota_cores: int | None, top: int = DEFAULT_CEILING
) -> int | None:
    """The cap for every pool, or None: leave the runtimes' defaults (an unlimited or unknown pids
    budget, or one of at least 16 per visible CPU). The quota in whole cores, clamped to [2, top];
    no quota: `top`."""
    if pids_max is None or not visible or visible <= 0:
        return None
    if pids_max >= visible * PIDS_PER_CPU_TRIGGER:
        return None
    cap = quota_cores if quota_cores is not None and quota_cores > 0 else top
    return max(FLOOR, min(cap, top))


def strip_block(text: str) -> str:
    """`text` without the managed block (every one, should several have been left)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        if BEGIN_MARK in line:
            inside = True
            continue
        if inside:
            if END_MARK in line:
                inside = False
            continue
        kept.append(line)
    return "".join(kept)


def block_variables(text: str) -> list[str]:
    """The variables the managed block in `text` assigns."""
    inside, found = False, []
    for line in text.splitlines():
        if BEGIN_MARK in line:
            inside = True
        elif END_MARK in line:
            inside = False
        elif inside:
            name, equals, _ = line.strip().partition("=")
            if equals and environment.NAME.fullmatch(name):
                found.append(name)
    return found


def rewrite(text: str, cap: int | None, set_elsewhere: Collection[str]) -> str:
    """/etc/environment's new text: without a block when `cap` is None; else with a fresh block
    at the end that sets every capped variable the user did not set (in this file outside the
    block, or `set_elsewhere`: ${WORKSPACE}/.env, the container's environment)."""
    rest = strip_block(text)
    if cap is None:
        return rest
    values, _ = environment.parse(rest, "/etc/environment")
    user_set = set(values) | set(set_elsewhere)
    lines = [BEGIN]
    for name in CAPPED_VARIABLES:
        lines.append(f"# {name}: left at the user's value" if name in user_set else f"{name}={cap}")
    lines.append(END)
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + "\n".join(lines) + "\n"
