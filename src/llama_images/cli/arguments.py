"""Each task's options, checked into one typed value before its body runs.

invoke hands a task its raw option values (strings, lists, flags); these functions check them
through the options table (core/options.py), with the files they name and, for `--workflow`, the
publishing workflow's environment, and give the task body one value it can trust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..core.model import LATEST
from ..core.options import (
    OPTION,
    PUBLISHING,
    SELECTION,
    SKIPPING,
    Option,
    Request,
    Selection,
    given_names,
    parse_request,
    parse_selection,
    values_of,
)
from ..core.publishing import Job, PublishingPlan, job_from_json, plan_from_json
from ..core.workflow import ALONGSIDE_WORKFLOW, Publishing, WorkflowRun, job_values, publishing, workflow_run
from ..edges.files import writable_file

Raw = Mapping[str, Any]


def values(raw: Raw, *names: str) -> dict[str, Any]:
    """The named options' checked, typed values (each task names the ones it takes)."""
    return values_of([OPTION[name] for name in names], {name: raw.get(name) for name in names})


def output_file(raw: Raw, name: str) -> Path | None:
    """A file an option names for the task to write: its folder must exist and be writable."""
    path: Path | None = values(raw, name)[name]
    return None if path is None else writable_file(OPTION[name].flag, path)


def only(raw: Raw, options: tuple[Option, ...]) -> dict[str, Any]:
    return {o.name: raw[o.name] for o in options if o.name in raw}


def unless_given(raw: Raw, **defaults: Any) -> dict[str, Any]:
    """The raw values with a task's own defaults for options left out (an empty one stays an error)."""
    return {**raw, **{name: value for name, value in defaults.items() if raw.get(name) in (None, [], ())}}


@dataclass(frozen=True)
class EngineArguments:
    test_tools: bool


def engine_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> EngineArguments:
    return EngineArguments(**values(raw, "test_tools"))


def no_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> None:
    return None


def every_target(root: Path, raw: Raw, env: Mapping[str, str]) -> Selection:
    """`invoke matrix`: the selection, every target unless --filter."""
    return parse_selection(root, unless_given(only(raw, SELECTION), filter=["*"]))


def release_request(root: Path, raw: Raw, env: Mapping[str, str]) -> Request:
    """`invoke release`: every target and the newest release unless chosen, looked up as publishing does."""
    selection = parse_selection(root, unless_given(only(raw, SELECTION), filter=["*"], release=LATEST))
    return Request(root, selection, push=True, skip_unavailable=True)


@dataclass(frozen=True)
class BakeArguments:
    request: Request
    output: Path | None
    print: bool
    check: bool
    builder: str | None


def bake_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> BakeArguments:
    request = parse_request(root, only(raw, (*SELECTION, *PUBLISHING)))
    return BakeArguments(request, output_file(raw, "output"), **values(raw, "print", "check", "builder"))


@dataclass(frozen=True)
class BuildArguments:
    request: Request
    builder: str | None
    digests: Path  # where --by-digest records what it pushed
    report: Path | None
    workflow: Publishing | None  # with --workflow: the login from the workflow's settings


def build_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> BuildArguments:
    given = values(raw, "job", "workflow", "digests", "builder")
    job_text, in_workflow = given["job"], given["workflow"]
    if in_workflow and job_text is None:
        raise UsageError("--workflow builds a job of the publishing workflow's plan; give it with --job")
    selection = None
    if job_text is not None:
        chosen = given_names(SELECTION, raw)
        if chosen:
            raise UsageError(f"--job selects its own target; leave out {OPTION[chosen[0]].flag}")
        selection_values = job_from_text(job_text).selection
        if in_workflow:
            selection_values = job_values(selection_values, env)
        selection = parse_selection(root, selection_values)
    request = parse_request(root, only(raw, (*PUBLISHING, *SKIPPING, *SELECTION)), selection)
    if raw.get("digests") is not None and not request.by_digest:
        raise UsageError("--digests names where --by-digest records what it pushed; it needs --by-digest")
    report = output_file(raw, "report")
    if report is not None and not request.push:
        raise UsageError("--report describes what was published; it needs --push")
    settings = publishing(env) if in_workflow else None
    return BuildArguments(request, given["builder"], given["digests"], report, settings)


def job_from_text(text: str) -> Job:
    try:
        return job_from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--job is not JSON ({exc.msg} at offset {exc.pos}); pass a job that `invoke plan` wrote"
        ) from None
    except ValueError as exc:
        raise UsageError(f"--job {exc}; pass a job that `invoke plan` wrote") from None


@dataclass(frozen=True)
class PlanArguments:
    request: Request | None  # None: the workflow's settings are missing, publishing is skipped
    run: WorkflowRun | None  # with --workflow
    output: Path | None
    report: Path | None


def plan_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> PlanArguments:
    report = output_file(raw, "report")
    output = output_file(raw, "output")
    chosen = only(raw, SELECTION)
    flags = values(raw, "workflow", "skip_existing", "skip_unavailable")
    if not flags.pop("workflow"):
        return PlanArguments(parse_request(root, {**chosen, **flags, "push": True}), None, output, report)
    refused = [name for name in given_names(SELECTION, raw) if name not in ALONGSIDE_WORKFLOW]
    if refused:
        raise UsageError(
            f"--workflow reads the selection from the workflow's inputs; leave out {OPTION[refused[0]].flag}"
        )
    run = workflow_run(env)
    if not run.publish:
        return PlanArguments(None, run, output, report)
    flags = {"skip_existing": run.skip_existing, "skip_unavailable": run.skip_unavailable}
    given = {name: value for name, value in chosen.items() if value not in (None, [], ())}
    return PlanArguments(parse_request(root, {**run.values, **given, **flags, "push": True}), run, output, report)


@dataclass(frozen=True)
class MergeArguments:
    digests: Path
    plan: PublishingPlan | None
    report: Path | None
    builder: str | None
    workflow: Publishing | None  # with --workflow: the login from the workflow's settings


def merge_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> MergeArguments:
    given = values(raw, "digests", "plan", "builder", "workflow")
    plan = None
    if given["plan"] is not None:
        try:
            plan = plan_from_json(given["plan"])
        except ValueError:
            raise UsageError("--plan is not a plan that `invoke plan` wrote") from None
    report = output_file(raw, "report")
    settings = publishing(env) if given["workflow"] else None
    return MergeArguments(given["digests"], plan, report, given["builder"], settings)


@dataclass(frozen=True)
class SoakArguments:
    digests: Path
    workflow: Publishing | None  # with --workflow: the login from the workflow's settings


def soak_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> SoakArguments:
    given = values(raw, "digests", "workflow")
    return SoakArguments(given["digests"], publishing(env) if given["workflow"] else None)


@dataclass(frozen=True)
class NotifyArguments:
    report: Path | None
    title: str


def notify_arguments(root: Path, raw: Raw, env: Mapping[str, str]) -> NotifyArguments:
    return NotifyArguments(**values(raw, "report", "title"))
