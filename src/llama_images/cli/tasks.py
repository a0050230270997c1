"""The invoke tasks: each one's name, summary, options (from the table in core/options.py), the
function that checks them into one typed value (arguments.py), and its body.

invoke reads a task's options from its function signature, and has no option groups; so each
task's signature is made here from the options it takes. `tasks.py` in the checkout calls
`collection(its own directory)`: that directory is the project root every task works in, whatever
checkout the package was installed from. Errors end a task with their exit code and one message,
never a traceback.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import Task

from ..core.errors import LlamaImagesError
from ..core.options import OPTION, PUBLISHING, SELECTION, SKIPPING, Option
from . import arguments, build, docs, publish

T = TypeVar("T")


def options(*names: str) -> tuple[Option, ...]:
    return tuple(OPTION[name] for name in names)


@dataclass(frozen=True)
class TaskSpec(Generic[T]):
    name: str
    summary: str
    options: tuple[Option, ...]
    arguments: Callable[[Path, Mapping[str, Any], Mapping[str, str]], T]  # raw values, environment -> checked
    body: Callable[[Path, T], None]
    # Called when the task fails, with its raw values: a run that ends here still leaves a report.
    on_failure: Callable[[Mapping[str, Any], LlamaImagesError], None] | None = None


TASKS: tuple[TaskSpec[Any], ...] = (
    TaskSpec(
        "engine",
        "Install and start a Docker engine with buildx, a loopback registry and arm64 emulation (root, Debian). "
        "Leaves whatever already works alone: a host with an engine is not touched.",
        options("test_tools"), arguments.engine_arguments, build.provision_engine,
    ),
    TaskSpec(
        "clean",
        "Remove from the engine every image this project built or stood in for (local upstreams, llamaimages* "
        "images, the matrix's repositories in its namespace, $LLAMA_IMAGES_TEST_NAMESPACE) and the build cache, "
        "and empty the loopback registry `invoke engine` started: the next build starts cold, as on a fresh machine.",
        (), arguments.no_arguments, build.forget_images,
    ),
    TaskSpec(
        "matrix",
        "List the targets of the matrix: id, image tag, upstream image, platforms (default: every target).",
        SELECTION, arguments.every_target, build.show_matrix,
    ),
    TaskSpec(
        "bake",
        "Render the docker buildx bake file (JSON) for the selected targets: print it, or --output FILE.",
        (*SELECTION, *PUBLISHING, *options("output", "print", "check", "builder")),
        arguments.bake_arguments, build.write_bake,
    ),
    TaskSpec(
        "build",
        "Build the matrix (default targets, or --filter) with one `docker buildx bake`; sets up the engine first.",
        (*SELECTION, *PUBLISHING, *SKIPPING, *options("builder", "digests", "job", "report", "workflow")),
        arguments.build_arguments, build.build, publish.record_job_failure,
    ),
    TaskSpec(
        "release",
        "Show the llama.cpp-cuda release a build uses (newest, or --release TAG): the CUDA versions and "
        "architectures it carries, and which selected targets it can build.",
        SELECTION, arguments.release_request, build.show_release,
    ),
    TaskSpec(
        "plan",
        "Plan a native-runner publishing run: one job per target and platform (a GitHub Actions strategy "
        "matrix), with what is skipped and why.",
        (*SELECTION, *SKIPPING, *options("workflow", "output", "report")),
        arguments.plan_arguments, publish.plan_jobs, publish.report_plan_failure,
    ),
    TaskSpec(
        "merge",
        "Create each multi-platform tag from the digests that `invoke build --by-digest` jobs pushed.",
        options("digests", "plan", "report", "builder", "workflow"), arguments.merge_arguments, publish.merge,
    ),
    TaskSpec(
        "notify",
        "Post a run's report to Slack when SLACK_WEBHOOK_URL is set (a failing webhook only warns).",
        options("report", "title"), arguments.notify_arguments, publish.notify,
    ),
    TaskSpec(
        "docs",
        "Regenerate the generated blocks of docs/ (the options and workflow inputs tables) from the option "
        "declarations.",
        (), arguments.no_arguments, lambda root, _: docs.update(root, TASKS),
    ),
)  # fmt: skip
TASK = {spec.name: spec for spec in TASKS}


class TaskFailed(SystemExit):
    """Raised to leave with the error's exit code after printing it (no traceback)."""


def run(name: str, root: Path, values: Mapping[str, Any]) -> None:
    """Run a task as invoke does: check its options into one value, then its body; an error is
    one line on stderr and the exit code."""
    spec = TASK[name]
    try:
        try:
            spec.body(root, spec.arguments(root, values, os.environ))
        except LlamaImagesError as exc:
            if spec.on_failure is not None:
                spec.on_failure(values, exc)
            raise
    except LlamaImagesError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr)
        raise TaskFailed(exc.exit_code) from None


def make_task(spec: TaskSpec[Any], root: Path) -> Task[Any]:
    def body(c: Context, **values: Any) -> None:
        run(spec.name, root, values)

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.invoke_default)
        for o in spec.options
    ]
    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__name__ = spec.name
    body.__doc__ = spec.summary
    return Task(
        body,
        name=spec.name,
        help={o.flag.removeprefix("--"): o.help for o in spec.options},
        iterable=[o.name for o in spec.options if o.repeatable],
        optional=[o.name for o in spec.options if o.value_optional],
        auto_shortflags=False,
    )


def collection(root: Path) -> Collection:
    """Every task, working in the checkout at `root`."""
    tasks = Collection()
    for spec in TASKS:
        tasks.add_task(make_task(spec, root))
    return tasks
