"""Task options, declared once: every task that takes them builds its signature from these specs.

A new selection option is one entry in SELECTION (and the code that reads its value here). Values
arrive as invoke passes them: None for an option left out, a string for one given, True for
`--matrix` given without a file. Everything is checked before any task does anything: an empty
value is an error, never a fall-back to the matrix's own value. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .matrix import MATRIX_FILE
from .targets import Overrides, check_override_values


@dataclass(frozen=True)
class Option:
    """One task option: `name` is the Python name, the flag is `--name-with-dashes`."""

    name: str
    help: str
    default: Any = None  # None: a value option, absent unless given; False/True: a flag
    repeatable: bool = False  # may be given several times (a list)
    value_optional: bool = False  # `--matrix` alone means the default file

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SELECTION = (
    Option("matrix", "matrix file (default: matrix.yaml of this checkout); `--matrix` alone means that one",
           value_optional=True),
    Option("filter", "target id glob, e.g. 'cpu/*' or 'cuda/cuda-12.8/*'; repeat or comma-separate "
           "(default: default_targets)", repeatable=True),
    Option("platform", "comma-separated platforms to narrow to, e.g. linux/amd64"),
    Option("release", "llama.cpp release (a tag like b9159, or 'latest') for release-tarball flavors"),
    Option("cuda_version", "CUDA version of the prebuilt llama.cpp binaries, e.g. 12.8"),
    Option("repository", "repository name instead of the matrix's (e.g. llama-cpp)"),
    Option("tag", "custom tag replacing the release part of each tag, e.g. my-build -> my-build-cuda-12.8"),
    Option("registry", "registry host instead of the matrix's, e.g. 127.0.0.1:5000"),
    Option("namespace", "namespace instead of the matrix's, e.g. your Docker Hub user"),
)  # fmt: skip

# What changes the rendered bake file for publishing: `bake` and `build` share these, so both
# render the same file for the same options.
PUBLISHING = (
    Option("push", "publish to the registry (registry cache, provenance and SBOM attestations)", default=False),
    Option("by_digest", "with --push: push each platform by digest, untagged (native-runner jobs; "
           "`invoke merge` tags them)", default=False),
    Option("sbom", "with --push: attach an SBOM (--no-sbom where BuildKit's scanner image can't be pulled)",
           default=True),
)  # fmt: skip

# How a publishing run treats targets it cannot or need not build.
SKIPPING = (
    Option("skip_existing", "leave out targets whose tag the registry already has (scheduled runs)", default=False),
    Option("skip_unavailable", "leave out (and report) targets whose release lacks their tarball, instead of "
           "failing (scheduled runs)", default=False),
)  # fmt: skip

SELECTION_NAMES = tuple(option.name for option in SELECTION)


@dataclass(frozen=True)
class Selection:
    """Which targets, from which matrix file, with which overrides."""

    matrix_file: Path
    filters: tuple[str, ...]  # empty: the matrix's default_targets
    overrides: Overrides

    def as_values(self, root: Path) -> dict[str, Any]:
        """Option values that select the same again (what a fan-out job is handed)."""
        values: dict[str, Any] = {}
        matrix_file = self.matrix_file
        if matrix_file.is_absolute() and matrix_file.is_relative_to(root):
            matrix_file = matrix_file.relative_to(root)
        if matrix_file != Path(MATRIX_FILE):
            values["matrix"] = str(matrix_file)
        if self.filters:
            values["filter"] = list(self.filters)
        o = self.overrides
        for name, value in (
            ("platform", ",".join(o.platforms) if o.platforms else None),
            ("release", o.release),
            ("cuda_version", o.binary_cuda),
            ("repository", o.repository),
            ("tag", o.custom_tag),
            ("registry", o.registry),
            ("namespace", o.namespace),
        ):
            if value is not None:
                values[name] = value
        return values


def text_value(values: Mapping[str, Any], name: str) -> str | None:
    """A value option: None when left out; an empty or blank value is a usage error."""
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"--{name.replace('_', '-')} takes a value")
    if not value.strip():
        raise UsageError(
            f"--{name.replace('_', '-')} is empty; leave the option out to use the matrix's value, or give one"
        )
    return value.strip()


def parse_selection(root: Path, values: Mapping[str, Any]) -> Selection:
    """Check and convert the selection options; raises UsageError naming the option."""
    unknown = set(values) - set(SELECTION_NAMES)
    if unknown:
        raise UsageError("unknown selection option(s): " + ", ".join(sorted(unknown)))
    matrix = values.get("matrix")
    if matrix is None or matrix is True:
        matrix_file = root / MATRIX_FILE
    else:
        given = text_value(values, "matrix")
        assert given is not None
        matrix_file = Path(given) if Path(given).is_absolute() else root / given
    raw_filters = values.get("filter") or []
    if isinstance(raw_filters, str):
        raw_filters = [raw_filters]
    filters: list[str] = []
    for raw in raw_filters:
        parts = [part.strip() for part in str(raw).split(",")]
        if not all(parts):
            raise UsageError(f"--filter '{raw}' has an empty pattern; give target id globs such as 'cpu/*'")
        filters.extend(parts)
    platform = text_value(values, "platform")
    platforms: tuple[str, ...] = ()
    if platform is not None:
        platforms = tuple(p.strip() for p in platform.split(","))
        if not all(platforms):
            raise UsageError(f"--platform '{platform}' has an empty entry; e.g. linux/amd64,linux/arm64")
    overrides = Overrides(
        platforms=platforms,
        release=text_value(values, "release"),
        binary_cuda=text_value(values, "cuda_version"),
        repository=text_value(values, "repository"),
        custom_tag=text_value(values, "tag"),
        registry=text_value(values, "registry"),
        namespace=text_value(values, "namespace"),
    )
    check_override_values(overrides)
    return Selection(matrix_file, tuple(filters), overrides)


def selection_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in SELECTION_NAMES if values.get(name) not in (None, [], ())}


def parse_job(text: str) -> dict[str, Any]:
    """A fan-out job as `invoke plan` writes it: {"target", "platform", "selection": {...}}."""
    try:
        job = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--job is not JSON ({exc.msg} at offset {exc.pos}); pass a job that `invoke plan` wrote"
        ) from None
    if not isinstance(job, dict) or not isinstance(job.get("selection"), dict):
        raise UsageError("--job has no 'selection' object; pass a job that `invoke plan` wrote")
    unknown = set(job["selection"]) - set(SELECTION_NAMES)
    if unknown:
        raise UsageError("--job selects with unknown option(s): " + ", ".join(sorted(unknown)))
    return job
