"""A failed build job's record: which target and platform failed, with the task's exit code and
error line, so the merge's report (its step summary, Slack) says what failed and why instead of
only that a digest is missing.

A job of the publishing workflow leaves it beside its digest records, in `<digests>/failed/`
(uploaded with them also when the job fails); `invoke merge` reads it. Pure: the tasks write and
read the files. Nothing secret enters a record: the credentials of the run are replaced by `***`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .bake import bake_name
from .model import arch
from .publishing import Incomplete, Job
from .targets import base_of

# The records' folder inside the digests folder (`invoke merge` reads digest records only from
# the top of it).
FAILED_FOLDER = "failed"
# A reason longer than this is cut: the record is for a summary line, the log has the rest.
REASON_LIMIT = 1500


@dataclass(frozen=True)
class JobFailure:
    """A build job that failed: its target (run id), platform, exit code and error line."""

    target: str
    platform: str
    exit_code: int
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "platform": self.platform, "exit_code": self.exit_code, "reason": self.reason}

    def line(self) -> str:
        return f"the build job failed (exit {self.exit_code}): {self.reason}"


def job_failure(job: Job, exit_code: int, message: str, secrets: Iterable[str] = ()) -> JobFailure:
    """The record of `job` failing with `message`: one line, credentials masked, cut to a limit."""
    reason = " ".join(part.strip() for part in message.splitlines() if part.strip())
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "***")
    if len(reason) > REASON_LIMIT:
        reason = reason[: REASON_LIMIT - 1] + "…"
    return JobFailure(job.target, job.platform, exit_code, reason or "no message")


def failure_file_name(failure: JobFailure) -> str:
    return f"{bake_name(failure.target)}-{arch(failure.platform)}.json"


def failure_from_json(data: Any) -> JobFailure:
    """A record as `JobFailure.as_json` wrote it; raises ValueError for anything else."""
    if not isinstance(data, Mapping):
        raise ValueError("not a job failure record")
    try:
        failure = JobFailure(str(data["target"]), str(data["platform"]), int(data["exit_code"]), str(data["reason"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a job failure record ({exc})") from None
    if not re.fullmatch(r"[a-z0-9]+/[a-z0-9._-]+", failure.platform):
        raise ValueError(f"'{failure.platform}' is not a platform")
    return failure


def missing_platform_lines(incomplete: Sequence[Incomplete], failures: Sequence[JobFailure]) -> list[str]:
    """One line per tag the merge does not create: each missing platform with the failure of the
    job that was to build it (a base's with the job of an image on it), or, without a record,
    that its job failed before it could leave one or did not run."""
    lines = []
    for item in incomplete:
        known: list[str] = []
        unexplained: list[str] = []
        for platform in item.missing:
            causes = [f for f in failures if f.platform == platform and item.target in (f.target, base_of(f.target))]
            if causes:
                reasons = list(dict.fromkeys(cause.line() for cause in causes))
                known.append(f"{item.name} [{platform}]: " + "; ".join(reasons))
            else:
                unexplained.append(platform)
        lines += known
        if unexplained:
            lines.append(
                f"{item.name}: no digest for {', '.join(unexplained)} (that job failed before it recorded why, "
                "or did not run; see its log)"
            )
    return lines
