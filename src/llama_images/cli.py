"""Bodies of the invoke tasks: parse nothing, print results, turn errors into exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import ParamSpec, TypeVar

from . import buildx, engine, registry, upstream_images
from .bake import to_json
from .errors import LlamaImagesError, UsageError
from .matrix import DEFAULT_MATRIX
from .plan import Plan, Request, make_plan, render_plan, table
from .targets import BaseTarget, Overrides, upstreams_of

__all__ = ["Request", "build", "make_request", "provision_engine", "show_matrix", "write_bake"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskFailed(SystemExit):
    """Raised to leave with the error's exit code after printing it (no traceback)."""


def reports_errors(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except LlamaImagesError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise TaskFailed(exc.exit_code) from None

    return wrapper


def make_request(
    matrix: str | bool | None = None,
    filters: Iterable[str] | None = None,
    platform: str = "",
    release: str | None = None,
    cuda_version: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
    registry: str | None = None,
    namespace: str | None = None,
    push: bool = False,
    sbom: bool = True,
) -> Request:
    matrix_file = Path(matrix) if isinstance(matrix, str) and matrix else DEFAULT_MATRIX
    """A Request from task options as invoke passes them (comma lists, empty strings for unset)."""
    patterns = tuple(p for f in filters or () for p in f.split(",") if p)
    platforms = tuple(p for p in platform.split(",") if p)
    overrides = Overrides(platforms, release or None, cuda_version or None, repository or None, tag or None,
                          registry or None, namespace or None)  # fmt: skip
    return Request(matrix_file, patterns, overrides, push, sbom)


@reports_errors
def show_matrix(request: Request) -> None:
    plan = make_plan(request)
    rows = [("ID", "IMAGE", "UPSTREAM", "PLATFORMS"), *table(plan.targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row)).rstrip())


@reports_errors
def write_bake(request: Request, output: str | None, check: bool, print_too: bool = False) -> None:
    bake = render_plan(make_plan(request), request)
    if check:
        engine.require_engine()
        buildx.print_bake(bake)
    if output:
        Path(output).write_text(to_json(bake), encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    if print_too or not output:
        sys.stdout.write(to_json(bake))


@reports_errors
def provision_engine() -> None:
    engine.provision()


@reports_errors
def build(request: Request, load: bool, skip_existing: bool = False) -> None:
    if request.push and load:
        raise UsageError("--push and --load exclude each other: push publishes, load keeps images in this engine")
    if request.push:
        request = replace(request, look_up_releases=True)
    plan = make_plan(request)
    if skip_existing:
        engine.require_engine()
        remaining = registry.unpublished(plan.targets)
        skipped = [t.image for t in plan.targets if t not in remaining and not isinstance(t, BaseTarget)]
        if skipped:
            print("already published, skipped: " + ", ".join(skipped))
        if not remaining:
            print("every selected tag is already published; nothing to build")
            return
        plan = replace(plan, targets=remaining)
    announce(plan, request)
    engine.require_engine()
    upstream_images.ensure_upstreams(upstreams_of(plan.targets))
    bake = render_plan(plan, request)
    buildx.run_bake(bake, load=not request.push, push=request.push, names=plan.bake_names)
    print(f"built {len(plan.targets)} target(s): " + ", ".join(t.image for t in plan.targets))


def announce(plan: Plan, request: Request) -> None:
    where = "push to the registry" if request.push else "load into the local engine"
    print(f"building {len(plan.targets)} target(s) from {plan.matrix.file} ({where}):")
    for target_id, image, upstream, platforms in table(plan.targets):
        print(f"  {target_id:<28} {image}  on {upstream}  [{platforms}]")
    if plan.releases:
        print("releases looked up: " + json.dumps({tag: len(r.assets) for tag, r in plan.releases.items()}))
    sys.stdout.flush()
