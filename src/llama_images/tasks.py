"""The invoke tasks, built from the option specs in options.py: one declaration per option.

invoke reads a task's options from its function signature, and has no option groups; so each
task's signature is made here from the specs it shares with other tasks. `tasks.py` in the
checkout calls `collection(its own directory)`: that directory is the project root every task
works in, whatever checkout the package was installed from.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import Task

from . import cli
from .options import PUBLISHING, SELECTION, SKIPPING, Option

BUILDER = Option("builder", "buildx builder to use instead of the local engine (remote BuildKit, kubernetes, ...)")
# The publishing workflow's jobs: settings come from the environment the workflow sets.
IN_WORKFLOW = "in the publishing workflow: the namespace and registry login from its variables and secrets"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    summary: str
    body: cli.Body
    options: Sequence[Option] = ()


TASKS = (
    TaskSpec(
        "engine",
        "Install and start a Docker engine with buildx, a loopback registry and arm64 emulation (root, Debian). "
        "Leaves whatever already works alone: a host with an engine is not touched.",
        cli.provision_engine,
        (
            Option(
                "test_tools",
                "also install what the tests need besides the engine (Debian's chromium and chromium-driver)",
                default=False,
            ),
        ),
    ),
    TaskSpec(
        "clean",
        "Remove from the engine every image this project built or stood in for (local upstreams, llamaimages* "
        "images, the matrix's repositories in its namespace, $LLAMA_IMAGES_TEST_NAMESPACE) and the build cache: "
        "the next build starts cold, as on a fresh machine.",
        cli.forget_images,
    ),
    TaskSpec(
        "matrix",
        "List the targets of the matrix: id, image tag, upstream image, platforms (default: every target).",
        cli.show_matrix,
        SELECTION,
    ),
    TaskSpec(
        "bake",
        "Render the docker buildx bake file (JSON) for the selected targets: print it, or --output FILE.",
        cli.write_bake,
        (
            *SELECTION,
            *PUBLISHING,
            Option("output", "write the bake file here instead of printing it"),
            Option("print", "print it to stdout (the default; with --output, print as well)", default=False),
            Option(
                "check",
                "also have `docker buildx bake --print` accept it (needs an engine or --builder)",
                default=False,
            ),
            BUILDER,
        ),
    ),
    TaskSpec(
        "build",
        "Build the matrix (default targets, or --filter) with one `docker buildx bake`; sets up the engine first.",
        cli.build,
        (
            *SELECTION,
            *PUBLISHING,
            *SKIPPING,
            BUILDER,
            Option(
                "digests", "with --by-digest: folder for the digest records `invoke merge` reads (default: digests)"
            ),
            Option("job", "a job (JSON) from `invoke plan`: builds its one target and platform"),
            Option("report", "with --push: write what was published and skipped to this JSON file"),
            Option("workflow", f"with --job, {IN_WORKFLOW} (environment variables, see README)", default=False),
        ),
    ),
    TaskSpec(
        "release",
        "Show the llama.cpp-cuda release a build uses (newest, or --release TAG): the CUDA versions and "
        "architectures it carries, and which selected targets it can build.",
        cli.show_release,
        SELECTION,
    ),
    TaskSpec(
        "plan",
        "Plan a native-runner publishing run: one job per target and platform (a GitHub Actions strategy "
        "matrix), with what is skipped and why.",
        cli.plan_jobs,
        (
            *SELECTION,
            *SKIPPING,
            Option(
                "workflow",
                "read the selection from the publishing workflow's inputs, variables and secrets "
                "(environment variables, see README); --matrix and --registry may be given too",
                default=False,
            ),
            Option("output", "write the plan (JSON) here instead of printing it"),
            Option(
                "report",
                "write the run's report here when the run ends with the plan (nothing to build, or the plan "
                "failed: its reason), else a 'planned' report; `invoke notify` posts the former",
            ),
        ),
    ),
    TaskSpec(
        "merge",
        "Create each multi-platform tag from the digests that `invoke build --by-digest` jobs pushed.",
        cli.merge,
        (
            Option("digests", "folder of digest records (default: digests)"),
            Option("plan", "the plan (JSON) `invoke plan` wrote: a tag missing a planned platform is not created"),
            Option("report", "write what was published, skipped and failed to this JSON file"),
            BUILDER,
            Option("workflow", f"{IN_WORKFLOW} (environment variables, see README)", default=False),
        ),
    ),
    TaskSpec(
        "notify",
        "Post a run's report to Slack when SLACK_WEBHOOK_URL is set (a failing webhook only warns).",
        cli.notify,
        (
            Option(
                "report",
                "the report `invoke build`, `invoke merge` or `invoke plan` wrote (--report); "
                "missing: the run failed before publishing",
            ),
            Option("title", "the message's title (default: Build llama.cpp images)"),
        ),
    ),
)


def make_task(spec: TaskSpec, root: Path) -> Task[Any]:
    def body(c: Context, **values: Any) -> None:
        spec.body(root, values)

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default) for o in spec.options
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
