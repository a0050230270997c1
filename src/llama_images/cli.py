"""Bodies of the invoke tasks: check every option first, then act; print results; turn errors
into exit codes (one message, no traceback).

Each body takes the project root (the checkout the task runs in, from tasks.py's own location)
and the option values as invoke passes them. In GitHub Actions (GITHUB_ACTIONS=true) the
publishing tasks also write step outputs and a step summary.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import buildx, engine, github, gitinfo, registry, upstream_images, web
from .bake import bake_name, to_json
from .errors import BuildError, LlamaImagesError, RegistryError, UsageError
from .matrix import MATRIX_FILE, SOURCE_RELEASE_TARBALL, load_matrix
from .options import parse_job, parse_selection, selection_values, text_value
from .pipcert import pip_cert
from .plan import Plan, Request, make_plan, render_plan, select_targets, skip_published, table
from .publishing import (
    DigestRecord,
    Job,
    digest_records,
    parse_record,
    plan_merges,
    record_file_name,
    run_id,
    strategy_matrix,
)
from .releases import Release
from .report import (
    FAILURE,
    NOTHING,
    PLANNED,
    Published,
    Report,
    compact_json,
    output_lines,
    plain_text,
    redacted,
    report_from_json,
    slack_payload,
    status_of,
    summary_markdown,
)
from .targets import ImageTarget, Target, upstreams_of
from .workflow import (
    NAMESPACE,
    SETTINGS,
    TOKEN,
    USERNAME,
    job_values,
    publishing,
    secrets_in_outputs,
    workflow_run,
)

SLACK_VARIABLE = "SLACK_WEBHOOK_URL"
# The namespace a test run builds its images in (tests/container/conftest.py): `invoke clean` removes it.
TEST_NAMESPACE_VARIABLE = "LLAMA_IMAGES_TEST_NAMESPACE"
# Environment variables that hold credentials in a publishing run.
CREDENTIALS = ("REGISTRY_PASSWORD", "GITHUB_TOKEN", TOKEN)
Body = Callable[[Path, Mapping[str, Any]], None]


class TaskFailed(SystemExit):
    """Raised to leave with the error's exit code after printing it (no traceback)."""


def reports_errors(function: Body) -> Body:
    @functools.wraps(function)
    def wrapper(root: Path, values: Mapping[str, Any]) -> None:
        try:
            function(root, values)
        except LlamaImagesError as exc:
            sys.stdout.flush()
            print(f"error: {exc}", file=sys.stderr)
            raise TaskFailed(exc.exit_code) from None

    return wrapper


# ---- options -> request -------------------------------------------------------------------


def make_request(root: Path, values: Mapping[str, Any], selection: Mapping[str, Any] | None = None) -> Request:
    """A checked Request from the selection, publishing and skipping options."""
    chosen = parse_selection(root, selection if selection is not None else selection_values(values))
    return Request(
        root=root,
        selection=chosen,
        push=bool(values.get("push", False)),
        by_digest=bool(values.get("by_digest", False)),
        sbom=bool(values.get("sbom", True)),
        skip_existing=bool(values.get("skip_existing", False)),
        skip_unavailable=bool(values.get("skip_unavailable", False)),
    )


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def write_actions(outputs: Mapping[str, str], summary: str | None = None) -> None:
    """Step outputs and summary, in GitHub Actions only."""
    if not in_github_actions():
        return
    output_file = os.environ.get("GITHUB_OUTPUT")
    if output_file and outputs:
        with Path(output_file).open("a", encoding="utf-8") as handle:
            handle.write(output_lines(outputs))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file and summary:
        with Path(summary_file).open("a", encoding="utf-8") as handle:
            handle.write(summary)


def writable_file(option: str, path: str | None) -> Path | None:
    """Checked before anything runs: an --output whose folder is missing fails first."""
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a folder; name a file")
    if not target.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise UsageError(f"{option} {path}: folder {target.parent} is not writable")
    return target


def write_file(option: str, path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write it ({exc.strerror})") from None


def render(plan: Plan, request: Request, staging_tags: bool = False) -> dict[str, Any]:
    root = request.root
    revision, source = gitinfo.git_revision(root), gitinfo.source_url(root)
    return render_plan(plan, request, revision, gitinfo.now(), source, staging_tags, pip_cert())


# ---- tasks ---------------------------------------------------------------------------------


@reports_errors
def provision_engine(root: Path, values: Mapping[str, Any]) -> None:
    engine.provision(root, test_tools=bool(values.get("test_tools")))


@reports_errors
def forget_images(root: Path, values: Mapping[str, Any]) -> None:
    """Everything this project built, and the build cache: the next build starts cold."""
    images = load_matrix(root / MATRIX_FILE).images
    test_namespace = os.environ.get(TEST_NAMESPACE_VARIABLE, "").strip()
    repositories = {(images.namespace, images.repository), (images.namespace, images.base_repository)}
    engine.require_engine()
    removed = engine.forget_project_images({test_namespace} - {""}, repositories, upstream_images.CREATED_LABEL)
    for reference in removed:
        print(f"removed {reference}")
    print(f"removed {len(removed)} image(s) and the build cache")


@reports_errors
def show_matrix(root: Path, values: Mapping[str, Any]) -> None:
    chosen = selection_values(values)
    chosen.setdefault("filter", ["*"])
    _, targets = select_targets(parse_selection(root, chosen))
    rows = [("ID", "IMAGE", "UPSTREAM", "PLATFORMS"), *table(targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip())


@reports_errors
def write_bake(root: Path, values: Mapping[str, Any]) -> None:
    request = make_request(root, values)
    output = writable_file("--output", text_value(values, "output"))
    builder = text_value(values, "builder")
    plan = make_plan(request, github.fetch_release)
    bake = render(plan, request)
    if values.get("check"):
        if builder:
            engine.require_builder(builder)
        else:
            engine.require_engine()
        buildx.print_bake(bake, root, builder)
    if output is not None:
        write_file("--output", output, to_json(bake))
        print(f"wrote {output}", file=sys.stderr)
    if values.get("print") or output is None:
        sys.stdout.write(to_json(bake))


@reports_errors
def show_release(root: Path, values: Mapping[str, Any]) -> None:
    """The release a build would use, what it carries, and which selected targets it can build."""
    chosen = selection_values(values)
    chosen.setdefault("filter", ["*"])
    chosen.setdefault("release", "latest")
    request = make_request(root, {"push": True, "skip_unavailable": True}, chosen)
    plan = make_plan(request, github.fetch_release)
    print(f"release source: {plan.matrix.release_source.github_repository}")
    for tag, release in plan.releases.items():
        print(f"release {tag}: {release.carries()}")
    for image in plan.images:
        print(f"  buildable: {image.id} -> {image.image} [{', '.join(image.platforms)}]")
    for skip in plan.skipped:
        print(f"  skipped:   {skip.target} [{', '.join(skip.platforms)}]: {skip.reason}")
    newest = next(iter(plan.releases.values()), None)
    outputs = {"release": newest.tag if newest else "", "carries": newest.carries() if newest else ""}
    write_actions(outputs, release_summary(plan.releases))


def release_summary(releases: Mapping[str, Release]) -> str:
    lines = ["## llama.cpp-cuda release", ""]
    lines += [f"- `{tag}`: {release.carries()}" for tag, release in releases.items()]
    return "\n".join(lines) + "\n"


@reports_errors
def build(root: Path, values: Mapping[str, Any]) -> None:
    job_text = text_value(values, "job")
    selection = None
    if values.get("workflow") and job_text is None:
        raise UsageError("--workflow builds a job of the publishing workflow's plan; give it with --job")
    if job_text is not None:
        given = sorted(selection_values(values))
        if given:
            raise UsageError(f"--job selects its own target; leave out --{given[0].replace('_', '-')}")
        selection = parse_job(job_text)["selection"]
        if values.get("workflow"):
            selection = job_values(selection, os.environ)
            os.environ.update(publishing(os.environ).registry_env())
    request = make_request(root, values, selection)
    builder = text_value(values, "builder")
    digests_dir = text_value(values, "digests")
    if digests_dir is not None and not request.by_digest:
        raise UsageError("--digests names where --by-digest records what it pushed; it needs --by-digest")
    report_file = writable_file("--report", text_value(values, "report"))
    if report_file is not None and not request.push:
        raise UsageError("--report describes what was published; it needs --push")
    plan = make_plan(request, github.fetch_release)
    if request.by_digest:
        for target in plan.targets:
            if len(target.platforms) != 1:
                raise UsageError(
                    f"--by-digest builds one platform per job; {target.id} has {len(target.platforms)} "
                    f"({', '.join(target.platforms)}): pass one --platform, or a --job from `invoke plan`"
                )
    # Options, matrix and releases are checked: from here on things change.
    if builder:
        engine.require_builder(builder)
    else:
        engine.provision(root)
        engine.require_engine()
    with registry.logged_in(plan.matrix.images.registry) if request.push else nullcontext():
        if request.skip_existing:
            plan = skip_published(plan, registry.tag_exists)
        for skip in plan.skipped:
            print(f"skipped {skip.target} [{', '.join(skip.platforms)}]: {skip.reason}")
        if not plan.targets:  # images were selected (bases are never built alone) and all skipped
            print("nothing to build: every selected target is published or skipped")
            finish_publishing(request, plan, {}, report_file)
            return
        announce(plan, request)
        if not builder:
            upstream_images.ensure_upstreams(upstreams_of(plan.targets))
        staging_tags = request.by_digest and buildx.driver(builder) == "docker"
        bake = render(plan, request, staging_tags)
        metadata = buildx.run_bake(
            bake, root, load=not request.push, push=request.push and not request.by_digest,
            names=plan.bake_names, builder=builder,
        )  # fmt: skip
    print(f"built {len(plan.targets)} target(s): " + ", ".join(t.image for t in plan.targets))
    if request.by_digest:
        save_digests(plan, metadata, Path(digests_dir or "digests"))
    finish_publishing(request, plan, metadata, report_file)


def save_digests(plan: Plan, metadata: Mapping[str, Any], folder: Path) -> None:
    """One record per target and platform: what `invoke merge` turns into tags."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {t.id: t.image for t in plan.targets}  # one platform each: checked before the build
    try:
        records: list[DigestRecord] = []
        for target in plan.targets:
            records += digest_records(metadata, {bake_name(target.id): target.id}, images, target.platforms[0])
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    for record in records:
        (folder / record_file_name(record)).write_text(json.dumps(record.as_json()) + "\n", encoding="utf-8")
        print(f"pushed {record.reference} for {record.image} [{record.platform}]")


def finish_publishing(request: Request, plan: Plan, metadata: Mapping[str, Any], report_file: Path | None) -> None:
    """After a tagged push: the report (file, summary, outputs)."""
    if not request.push or request.by_digest:
        return
    published = []
    for target in plan.targets:
        digest = (metadata.get(bake_name(target.id)) or {}).get("containerimage.digest", "")
        published.append(Published(target.image, str(digest), target.platforms))
    report = Report(status_of(published, []), tuple(published), plan.skipped, run_url=gitinfo.run_url())
    emit_report(report, report_file, "Build llama.cpp images")


def emit_report(report: Report, report_file: Path | None, title: str) -> None:
    if report_file is not None:
        write_file("--report", report_file, report_json(report))
    sys.stdout.write(plain_text(report))
    write_actions(
        {
            "status": report.status,
            "published": compact_json([p.image for p in report.published]),
            "skipped": compact_json([s.target for s in report.skipped]),
        },
        summary_markdown(report, title),
    )


def announce(plan: Plan, request: Request) -> None:
    where = "push to the registry" if request.push else "load into the local engine"
    if request.by_digest:
        where = "push by digest"
    print(f"building {len(plan.targets)} target(s) from {plan.matrix.file} ({where}):")
    for target_id, image, upstream, platforms in table(plan.targets):
        print(f"  {target_id:<28} {image}  on {upstream}  [{platforms}]")
    if plan.releases:
        print("releases looked up: " + ", ".join(f"{tag} ({r.carries()})" for tag, r in plan.releases.items()))
    sys.stdout.flush()


@reports_errors
def plan_jobs(root: Path, values: Mapping[str, Any]) -> None:
    """The native-runner fan-out: which (target, platform) jobs a publishing run has. With
    --report, a run that ends here (nothing to build, or this task failed) leaves its report."""
    report_file = writable_file("--report", text_value(values, "report"))
    try:
        plan_publishing(root, values, report_file)
    except LlamaImagesError as exc:
        if report_file is not None:
            failed = f"the plan failed (exit {exc.exit_code}): {exc}"
            report = Report(FAILURE, failed=(failed,), run_url=gitinfo.run_url())
            write_file("--report", report_file, report_json(report))
        raise


def plan_publishing(root: Path, values: Mapping[str, Any], report_file: Path | None) -> None:
    skip_existing = bool(values.get("skip_existing"))
    skip_unavailable = bool(values.get("skip_unavailable"))
    output = writable_file("--output", text_value(values, "output"))
    chosen = selection_values(values)
    notes: tuple[str, ...] = ()
    in_workflow = bool(values.get("workflow"))
    if in_workflow:
        given = sorted(set(chosen) - WORKFLOW_SELECTION_OPTIONS)
        if given:
            raise UsageError(
                f"--workflow reads the selection from the workflow's inputs; leave out --{given[0].replace('_', '-')}"
            )
        run = workflow_run(os.environ)
        if not run.publish:
            notice = f"missing {run.publishing.describe_missing()}: publishing is skipped"
            print(f"::notice title=Publishing skipped::{notice}" if in_github_actions() else notice)
            how = f"{notice}. Add them under {SETTINGS} (see README, Building with GitHub Actions)."
            write_actions({"publish": "false", "matrix": compact_json({"include": []}), "plan": "{}"},
                          f"## Publishing skipped\n\n{how}\n")  # fmt: skip
            if report_file is not None:
                skipped_run = Report(NOTHING, run_url=gitinfo.run_url(), notes=(how,))
                write_file("--report", report_file, report_json(skipped_run))
            return
        chosen, notes = {**run.values, **chosen}, run.notes
        skip_existing, skip_unavailable = run.skip_existing, run.skip_unavailable
        os.environ.update(run.publishing.registry_env())
        for note in notes:
            print(note, file=sys.stderr)
    request = make_request(
        root, {"push": True, "skip_existing": skip_existing, "skip_unavailable": skip_unavailable}, chosen
    )
    plan = make_plan(request, github.fetch_release)
    if skip_existing and plan.images:  # nothing left to ask about: no login
        with registry.logged_in(plan.matrix.images.registry):
            plan = skip_published(plan, registry.tag_exists)
    base_values = request.selection.as_values(root)
    if in_workflow:
        base_values.pop("namespace", None)  # each job takes it from its own environment
    jobs = [
        Job(run_id(target), target.image, platform, job_selection(base_values, target, platform))
        for target in plan.images
        for platform in target.platforms
    ]
    document = {
        "jobs": [job.as_json() for job in jobs],
        "targets": {run_id(target): list(target.platforms) for target in plan.targets},
        "skipped": [{k: v for k, v in skip.as_json().items() if k != "image"} for skip in plan.skipped],
        "releases": {tag: r.carries() for tag, r in plan.releases.items()},
        "notes": list(notes),
    }
    outputs = {
        "publish": "true" if jobs else "false",
        "matrix": compact_json(strategy_matrix(jobs)),
        "plan": compact_json(document),
    }
    if in_workflow:
        # GitHub would drop these outputs silently: the build jobs would get an empty matrix.
        leaked = secrets_in_outputs(outputs, os.environ)
        if leaked:
            raise UsageError(
                f"the value of the secret {' and '.join(leaked)} appears in the plan's outputs (inside a target "
                "id, repository, tag or release), and GitHub drops a job output that holds a secret's value; "
                + "; ".join(SECRET_IN_OUTPUTS_FIX[name] for name in leaked)
            )
    for skip in plan.skipped:
        print(f"skipped {skip.target} [{', '.join(skip.platforms)}]: {skip.reason}", file=sys.stderr)
    for job in jobs:
        print(f"job {job.name}: {job.image} on {job.platform}", file=sys.stderr)
    text = json.dumps(document, indent=2) + "\n"
    if output is not None:
        write_file("--output", output, text)
    else:
        sys.stdout.write(text)
    report = Report(PLANNED if jobs else NOTHING, (), plan.skipped, run_url=gitinfo.run_url(), notes=notes)
    if report_file is not None:
        write_file("--report", report_file, report_json(report))
    summary = summary_markdown(report, "Publishing plan")
    summary += "".join(f"- job `{job.name}`: `{job.image}` on {job.platform}\n" for job in jobs)
    write_actions(outputs, summary)


# Selection options `plan --workflow` takes besides the workflow's inputs (it has none for them).
WORKFLOW_SELECTION_OPTIONS = {"matrix", "registry"}
SECRET_IN_OUTPUTS_FIX = {
    TOKEN: f"change {TOKEN}",
    USERNAME: f"store {USERNAME} as a repository variable (Variables tab) instead of a secret",
    NAMESPACE: f"store {NAMESPACE} as a repository variable (Variables tab) instead of a secret",
}


def report_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2) + "\n"


def job_selection(base: Mapping[str, Any], target: Target, platform: str) -> dict[str, Any]:
    """The selection that builds exactly this target on this platform, with a resolved release
    ('latest' becomes the tag it resolved to, so every job builds the same release)."""
    values = dict(base)
    values["platform"] = platform
    if isinstance(target, ImageTarget) and target.flavor.source != SOURCE_RELEASE_TARBALL:
        # The run's release and CUDA version choose tarballs; a job of a Debian-package target
        # given them would be refused ("--release applies to release-tarball flavors").
        values.pop("release", None)
        values.pop("cuda_version", None)
    elif isinstance(target, ImageTarget) and run_id(target) != target.id:
        values["release"] = target.release
    values["filter"] = [run_id(target)]
    return values


@reports_errors
def merge(root: Path, values: Mapping[str, Any]) -> None:
    """Create each multi-platform tag from the digests the by-digest jobs recorded."""
    folder = Path(text_value(values, "digests") or "digests")
    plan_text = text_value(values, "plan")
    builder = text_value(values, "builder")
    report_file = writable_file("--report", text_value(values, "report"))
    if values.get("workflow"):
        os.environ.update(publishing(os.environ).registry_env())
    expected: dict[str, list[str]] | None = None
    planned = Report(NOTHING)
    if plan_text is not None:
        try:
            document = json.loads(plan_text)
            expected = {str(k): [str(p) for p in v] for k, v in document["targets"].items()}
            planned = report_from_json({"skipped": document.get("skipped", []), "notes": document.get("notes", [])})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError("--plan is not a plan that `invoke plan` wrote") from None
    records = read_records(folder)
    if not records and not expected:
        raise UsageError(f"no digest records in {folder}/ and no --plan: nothing to merge")
    merges, incomplete = plan_merges(records, expected)
    failed = [f"{i.name}: no digest for {', '.join(i.missing)} (that job failed or did not run)" for i in incomplete]
    published: list[Published] = []
    registries = sorted({m.image.split("/", 1)[0] for m in merges})
    try:
        with ExitStack() as logins:
            for name in registries:
                logins.enter_context(registry.logged_in(name))
            create_tags(merges, builder, published, failed)
    except RegistryError as exc:
        failed.append(str(exc))
    report = Report(status_of(published, failed), tuple(published), planned.skipped, tuple(failed),
                    gitinfo.run_url(), planned.notes)  # fmt: skip
    emit_report(report, report_file, "Build llama.cpp images")
    if incomplete:
        raise BuildError(f"{len(incomplete)} image(s) not published: a platform's job failed (see above)")
    if failed:
        raise RegistryError(f"{len(failed)} tag(s) not created (see above)")


def create_tags(merges: list[Any], builder: str | None, published: list[Published], failed: list[str]) -> None:
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


@reports_errors
def notify(root: Path, values: Mapping[str, Any]) -> None:
    """Post a run's report to Slack. Never fails the run: a failing webhook is a warning."""
    report_path = text_value(values, "report")
    title = text_value(values, "title") or "Build llama.cpp images"
    webhook = os.environ.get(SLACK_VARIABLE, "").strip()
    report = load_report(Path(report_path) if report_path else None)
    if report.status == PLANNED:
        print("the plan has build jobs: the merge job posts this run's result")
        return
    if not webhook:
        print(f"{SLACK_VARIABLE} is not set: no Slack notification")
        return
    # Slack masks nothing: a credential quoted by a message (none should be) goes as ***.
    report = redacted(report, [os.environ.get(name, "") for name in (SLACK_VARIABLE, *CREDENTIALS)])
    try:
        web.request_json("POST", webhook, body=slack_payload(report, title), expect_json=False, attempts=3)
    except web.RequestFailed as exc:
        # The URL is the secret: name the variable, never the address.
        warning = f"the Slack notification failed ({exc.failure.reason}); the run's result stands"
        print(f"::warning::{warning}" if in_github_actions() else f"warning: {warning}", file=sys.stderr)
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
        print(f"::warning::{failed}" if in_github_actions() else f"warning: {failed}", file=sys.stderr)
    return replace(Report(FAILURE, failed=(failed,)), run_url=gitinfo.run_url())
