"""Bodies of the tasks that set up the engine, show the matrix, and render or build it: `engine`,
`clean`, `matrix`, `bake`, `release` and `build`. Each gets its options checked into one typed
value (arguments.py), then acts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..core.bake import bake_name, bake_names, to_json
from ..core.errors import BuildError, UsageError
from ..core.options import MATRIX_FILE, Request, Selection
from ..core.plan import Plan, builds_for_host, on_host, select_targets, skip_published, table
from ..core.publishing import DigestRecord, digest_records, record_file_name
from ..core.report import Published, Report, release_summary, status_of
from ..core.targets import upstreams_of
from ..edges import actions, buildx, engine, files, gitinfo, registry, upstream_images
from .arguments import BakeArguments, BuildArguments, EngineArguments
from .steps import emit_report, log_in_as_the_workflow, plan_for, print_skips, render

# The namespace a test run builds its images in (tests/container/conftest.py): `invoke clean` removes it.
TEST_NAMESPACE_VARIABLE = "LLAMA_IMAGES_TEST_NAMESPACE"


def provision_engine(root: Path, arguments: EngineArguments) -> None:
    engine.provision(root, test_tools=arguments.test_tools)


def forget_images(root: Path, arguments: None) -> None:
    """Everything this project built, the build cache and what the tests pushed to the loopback
    registry: the next build starts cold."""
    images = files.load_matrix(root / MATRIX_FILE).images
    test_namespace = os.environ.get(TEST_NAMESPACE_VARIABLE, "").strip()
    repositories = {(images.namespace, images.repository), (images.namespace, images.base_repository)}
    engine.require_engine()
    removed = engine.forget_project_images({test_namespace} - {""}, repositories, upstream_images.CREATED_LABEL)
    for reference in removed:
        print(f"removed {reference}")
    print(f"removed {len(removed)} image(s) and the build cache")
    engine.empty_loopback_registry(root)


def show_matrix(root: Path, selection: Selection) -> None:
    _, targets = select_targets(files.load_matrix(selection.matrix_file), selection)
    rows = [("ID", "IMAGE", "UPSTREAM", "PLATFORMS"), *table(targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip())


def write_bake(root: Path, arguments: BakeArguments) -> None:
    request, builder = arguments.request, arguments.builder
    plan = plan_for(request)
    bake = render(plan, request)
    if arguments.check:
        if builder:
            engine.require_builder(builder)
        else:
            engine.require_engine()
        buildx.print_bake(bake, root, builder)
    if arguments.output is not None:
        files.write_file("--output", arguments.output, to_json(bake))
        print(f"wrote {arguments.output}", file=sys.stderr)
    if arguments.print or arguments.output is None:
        sys.stdout.write(to_json(bake))


def show_release(root: Path, request: Request) -> None:
    """The release a build would use, what it carries, and which selected targets it can build."""
    plan = plan_for(request)
    print(f"release source: {plan.matrix.release_source.github_repository}")
    for tag, release in plan.releases.items():
        print(f"release {tag}: {release.carries()}")
    for image in plan.images:
        print(f"  buildable: {image.id} -> {image.image} [{', '.join(image.platforms)}]")
    for skip in plan.skipped:
        print(f"  skipped:   {skip.target} [{', '.join(skip.platforms)}]: {skip.reason}")
    newest = next(iter(plan.releases.values()), None)
    outputs = {"release": newest.tag if newest else "", "carries": newest.carries() if newest else ""}
    actions.write_actions(outputs, release_summary({tag: r.carries() for tag, r in plan.releases.items()}))


def build(root: Path, arguments: BuildArguments) -> None:
    request, builder = arguments.request, arguments.builder
    log_in_as_the_workflow(arguments.workflow)
    plan = plan_for(request)
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
    if builds_for_host(request):
        plan = on_host(plan, buildx.native_platform(builder))
    with registry.logged_in(plan.matrix.images.registry) if request.push else nullcontext():
        if request.skip_existing:
            plan = skip_published(plan, registry.tag_exists)
        print_skips(plan.skipped)
        if not plan.targets:  # images were selected (bases are never built alone) and all skipped
            print("nothing to build: every selected target is published or skipped")
            finish_publishing(request, plan, {}, arguments.report)
            return
        announce(plan, request)
        if not builder:
            upstream_images.ensure_upstreams(upstreams_of(plan.targets, buildx.native_platform(None)))
        staging_tags = request.by_digest and buildx.driver(builder) == "docker"
        metadata = buildx.run_bake(
            render(plan, request, staging_tags), root, load=not request.push,
            push=request.push and not request.by_digest, names=bake_names(plan.targets), builder=builder,
        )  # fmt: skip
    print(f"built {len(plan.targets)} target(s): " + ", ".join(t.image for t in plan.targets))
    if request.by_digest:
        save_digests(plan, metadata, arguments.digests)
    finish_publishing(request, plan, metadata, arguments.report)


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
    emit_report(
        Report(status_of(published, []), tuple(published), plan.skipped, run_url=gitinfo.run_url()), report_file
    )


def announce(plan: Plan, request: Request) -> None:
    where = "push to the registry" if request.push else "load into the local engine"
    if request.by_digest:
        where = "push by digest"
    print(f"building {len(plan.targets)} target(s) from {plan.matrix.file} ({where}):")
    for target_id, image, upstream, platforms in table(plan.targets):
        print(f"  {target_id:<28} {image}  on {upstream}  [{platforms}]")
    if builds_for_host(request):
        print(
            "for this machine's platform (a local build); --platform names others, e.g. "
            "--platform linux/amd64,linux/arm64: another platform builds under emulation, minutes more"
        )
    if plan.releases:
        print("releases looked up: " + ", ".join(f"{tag} ({r.carries()})" for tag, r in plan.releases.items()))
    sys.stdout.flush()
