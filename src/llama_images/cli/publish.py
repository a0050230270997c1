"""Bodies of the publishing tasks: `plan` (the native-runner fan-out), `merge` (the multi-platform
tags from the jobs' digests) and `notify` (Slack). Each gets its options checked into one typed
value (arguments.py), then acts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.errors import BuildError, LlamaImagesError, RegistryError, UsageError
from ..core.job_failures import (
    FAILED_FOLDER,
    JobFailure,
    failure_file_name,
    failure_from_json,
    job_failure,
    missing_platform_lines,
)
from ..core.options import default
from ..core.plan import skip_published
from ..core.publishing import DigestRecord, Merge, PublishingPlan, parse_record, plan_merges, publishing_plan
from ..core.report import (
    FAILURE,
    NOTHING,
    PLANNED,
    Published,
    Report,
    redacted,
    report_from_json,
    report_json,
    slack_payload,
    status_of,
    summary_markdown,
)
from ..core.targets import run_id
from ..core.workflow import NAMESPACE, SETTINGS, TOKEN, USERNAME, WorkflowRun, secrets_in_outputs
from ..edges import actions, files, gitinfo, registry, web
from .arguments import MergeArguments, NotifyArguments, PlanArguments, job_from_text, output_file
from .steps import emit_report, log_in_as_the_workflow, plan_for, print_skips

SLACK_VARIABLE = "SLACK_WEBHOOK_URL"
# Environment variables that hold credentials in a publishing run.
CREDENTIALS = ("REGISTRY_PASSWORD", "GITHUB_TOKEN", TOKEN)
SECRET_IN_OUTPUTS_FIX = {
    TOKEN: f"change {TOKEN}",
    USERNAME: f"store {USERNAME} as a repository variable (Variables tab) instead of a secret",
    NAMESPACE: f"store {NAMESPACE} as a repository variable (Variables tab) instead of a secret",
}


def plan_jobs(root: Path, arguments: PlanArguments) -> None:
    """The native-runner fan-out: which (target, platform) jobs a publishing run has."""
    run, request = arguments.run, arguments.request
    if request is None:
        assert run is not None  # only the workflow's missing settings leave no request
        skip_publishing(run, arguments.report)
        return
    notes = run.notes if run else ()
    if run is not None:
        log_in_as_the_workflow(run.publishing)
        for note in notes:
            print(note, file=sys.stderr)
    plan = plan_for(request)
    if request.skip_existing and plan.images:  # nothing left to ask about: no login
        with registry.logged_in(plan.matrix.images.registry):
            plan = skip_published(plan, registry.tag_exists)
    # In the workflow each job takes the namespace from its own settings (the outputs hold none).
    published = publishing_plan(plan, request, notes, with_namespace=run is None)
    outputs = published.outputs()
    if run is not None:
        refuse_secrets_in(outputs)
    print_skips(plan.skipped, to_stderr=True)
    images = {run_id(target): target.image for target in plan.images}
    for job in published.jobs:
        print(f"job {job.name}: {images[job.target]} on {job.platform}", file=sys.stderr)
    text = json.dumps(published.as_json(), indent=2) + "\n"
    if arguments.output is not None:
        files.write_file("--output", arguments.output, text)
    else:
        sys.stdout.write(text)
    report = Report(PLANNED if published.jobs else NOTHING, (), plan.skipped, run_url=gitinfo.run_url(), notes=notes)
    if arguments.report is not None:
        files.write_file("--report", arguments.report, report_json(report))
    summary = summary_markdown(report, "Publishing plan")
    summary += "".join(f"- job `{job.name}`: `{images[job.target]}` on {job.platform}\n" for job in published.jobs)
    actions.write_actions(outputs, summary)


def skip_publishing(run: WorkflowRun, report_file: Path | None) -> None:
    """A fork without the settings publishes nothing: a notice, and a report saying what to add."""
    notice = f"missing {run.publishing.describe_missing()}: publishing is skipped"
    actions.notice("Publishing skipped", notice)
    how = f"{notice}. Add them under {SETTINGS} (see docs/publishing.md, Setup in your fork)."
    actions.write_actions(PublishingPlan().outputs(), f"## Publishing skipped\n\n{how}\n")
    if report_file is not None:
        files.write_file("--report", report_file, report_json(Report(NOTHING, run_url=gitinfo.run_url(), notes=(how,))))


def refuse_secrets_in(outputs: Mapping[str, str]) -> None:
    """GitHub would drop outputs holding a secret's value silently: the build jobs would get an
    empty matrix. Fail instead, naming the setting (never its value) and the fix."""
    leaked = secrets_in_outputs(outputs, os.environ)
    if leaked:
        raise UsageError(
            f"the value of the secret {' and '.join(leaked)} appears in the plan's outputs (inside a target "
            "id, repository, tag or release), and GitHub drops a job output that holds a secret's value; "
            + "; ".join(SECRET_IN_OUTPUTS_FIX[name] for name in leaked)
        )


def report_plan_failure(raw: Mapping[str, Any], error: LlamaImagesError) -> None:
    """A run that ends with a failed plan still leaves its report: `invoke notify` posts why."""
    report_file = output_file(raw, "report")
    if report_file is not None:
        failed = f"the plan failed (exit {error.exit_code}): {error}"
        report = Report(FAILURE, failed=(failed,), run_url=gitinfo.run_url())
        files.write_file("--report", report_file, report_json(report))


def merge(root: Path, arguments: MergeArguments) -> None:
    """Create each multi-platform tag from the digests the by-digest jobs recorded."""
    log_in_as_the_workflow(arguments.workflow)
    planned = arguments.plan or PublishingPlan()
    expected = dict(planned.targets) if arguments.plan is not None else None
    records = read_records(arguments.digests)
    if not records and not expected:
        raise UsageError(f"no digest records in {arguments.digests}/ and no --plan: nothing to merge")
    merges, incomplete = plan_merges(records, expected)
    failed = missing_platform_lines(incomplete, read_failures(arguments.digests / FAILED_FOLDER))
    published: list[Published] = []
    try:
        with ExitStack() as logins:
            for name in sorted({m.image.split("/", 1)[0] for m in merges}):
                logins.enter_context(registry.logged_in(name))
            create_tags(merges, arguments.builder, published, failed)
    except RegistryError as exc:
        failed.append(str(exc))
    report = Report(status_of(published, failed), tuple(published), planned.skipped, tuple(failed),
                    gitinfo.run_url(), planned.notes)  # fmt: skip
    emit_report(report, arguments.report)
    if incomplete:
        raise BuildError(f"{len(incomplete)} image(s) not published: a platform's job failed (see above)")
    if failed:
        raise RegistryError(f"{len(failed)} tag(s) not created (see above)")


def create_tags(merges: list[Merge], builder: str | None, published: list[Published], failed: list[str]) -> None:
    for item in merges:
        try:
            digest = registry.create_tag(item.image, [r.reference for r in item.sources], builder)
            platforms = registry.index_platforms(registry.inspect_raw(item.image))
        except RegistryError as exc:
            failed.append(str(exc))
            continue
        if sorted(platforms) != sorted(item.platforms):
            failed.append(f"{item.image}: the created index lists {platforms}, expected {list(item.platforms)}")
            continue
        print(f"tagged {item.image} {digest} [{', '.join(item.platforms)}]")
        published.append(Published(item.image, digest, item.platforms))


def read_records(folder: Path) -> list[DigestRecord]:
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(parse_record(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path}: not a digest record ({exc})") from None
    return records


def record_job_failure(raw: Mapping[str, Any], error: LlamaImagesError) -> None:
    """A by-digest job of the publishing plan that fails leaves why beside its digest records
    (the workflow uploads them also then): the merge's report names the target and the cause."""
    job_text = raw.get("job")
    if not isinstance(job_text, str) or not raw.get("by_digest"):
        return
    try:
        job = job_from_text(job_text)
    except UsageError:
        return  # no target to name: the merge says its platform has no digest
    failure = job_failure(job, error.exit_code, str(error), [os.environ.get(name, "") for name in CREDENTIALS])
    folder = Path(raw.get("digests") or default("digests")) / FAILED_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / failure_file_name(failure)).write_text(json.dumps(failure.as_json()) + "\n", encoding="utf-8")
    except OSError as exc:
        actions.warning(f"could not record the job's failure in {folder}/ ({exc.strerror or exc})")
        return
    actions.write_actions({}, f"## build {job.name}: failure\n\n`{job.target}` on {job.platform}: {failure.line()}\n")


def read_failures(folder: Path) -> list[JobFailure]:
    """The failure records the build jobs left; one that cannot be read is a warning, not a
    failed merge (its platform is then reported without a cause)."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(failure_from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            actions.warning(f"{path}: not a job failure record ({exc})")
    return found


def notify(root: Path, arguments: NotifyArguments) -> None:
    """Post a run's report to Slack. Never fails the run: a failing webhook is a warning."""
    webhook = os.environ.get(SLACK_VARIABLE, "").strip()
    report = load_report(arguments.report)
    if report.status == PLANNED:
        print("the plan has build jobs: the merge job posts this run's result")
        return
    if not webhook:
        print(f"{SLACK_VARIABLE} is not set: no Slack notification")
        return
    # Slack masks nothing: a credential quoted by a message (none should be) goes as ***.
    report = redacted(report, [os.environ.get(name, "") for name in (SLACK_VARIABLE, *CREDENTIALS)])
    try:
        web.request_json("POST", webhook, body=slack_payload(report, arguments.title), expect_json=False, attempts=3)
    except web.RequestFailed as exc:
        # The URL is the secret: name the variable, never the address.
        actions.warning(f"the Slack notification failed ({exc.failure.reason}); the run's result stands")
        return
    print(f"posted the run's result ({report.status}) to Slack")


def load_report(path: Path | None) -> Report:
    """The report a task wrote; without one the run failed before publishing anything. A report
    that cannot be read is posted as a failure that says so (the run's log has the rest)."""
    failed = "the run failed before it published anything; see its log"
    if path is not None and path.exists():
        try:
            return report_from_json(json.loads(path.read_text(encoding="utf-8")))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except json.JSONDecodeError as exc:
            why = f"not JSON: {exc.msg} at offset {exc.pos}"
        except KeyError as exc:
            why = f"not a report that a task wrote: an entry lacks {exc}"
        except (ValueError, TypeError) as exc:
            why = f"not a report that a task wrote: {exc}"
        failed = f"the run's report {path} is unreadable ({why}); see the run's log"
        actions.warning(failed)
    return replace(Report(FAILURE, failed=(failed,)), run_url=gitinfo.run_url())
