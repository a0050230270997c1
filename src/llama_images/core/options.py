"""Every task option, declared once in OPTIONS: its name, type, default, check, the field it fills
and the publishing workflow's input it comes from.

Everything else is derived from this table: the invoke tasks' signatures (cli/tasks.py), the
checks of every value (here, and `check_overrides` for overrides made in code), the workflow's
input mapping (workflow.py) and the documentation's options table (`invoke docs`). Values arrive as
invoke passes them: None for an option left out, a string for one given, a list for a repeatable
one, True for `--matrix` given without a file. An empty value is an error, never a fall-back to
the matrix's own value. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import UsageError
from .model import CUDA_VERSION, DOCKER_TAG, LATEST, PATH_COMPONENT, PLATFORM, REGISTRY, RELEASE
from .report import RUN_TITLE

# The matrix a checkout ships, relative to the project root (the checkout the task runs in).
MATRIX_FILE = "matrix.yaml"
BOTH_PLATFORMS = ("linux/amd64", "linux/arm64")
# The publishing workflow's repository setting that names the namespace (workflow.py reads it).
NAMESPACE_SETTING = "DOCKERHUB_NAMESPACE"


class Kind(Enum):
    FLAG = "flag"  # --name, and --no-name for one that is on by default
    TEXT = "text"  # one value
    LIST = "list"  # comma-separated values (a repeatable option may also be given again)
    PATH = "path"  # a file or folder


@dataclass(frozen=True)
class Check:
    """What a valid value looks like, and the message's second half when it is not."""

    pattern: re.Pattern[str]
    expected: str  # e.g. "a CUDA version; use e.g. 12.8"


@dataclass(frozen=True)
class WorkflowSource:
    """Where `invoke plan --workflow` takes an option's value from: a workflow input (an empty
    one stands for `empty`; None: the option is left out), or a repository setting."""

    name: str  # the input or setting, as the workflow passes it in the environment
    help: str = ""  # what the input is, for the docs
    empty: str | None = None
    empty_means: str = ""  # what an empty input does, for the docs; default: from `empty`
    setting: bool = False  # a repository variable or secret, not an input
    convert: Callable[[str], str] | None = None  # input value -> option value

    def value(self, given: str) -> str | None:
        if not given:
            return self.empty
        return self.convert(given) if self.convert else given

    @property
    def meaning(self) -> str:
        """The docs' line: what the input is, and what leaving it empty does."""
        empty = self.empty_means or (f"`{self.empty}`" if self.empty is not None else "none")
        return f"{self.help}; empty: {empty}"


@dataclass(frozen=True)
class Option:
    """One task option: `name` is the Python name, the flag is `--name-with-dashes`."""

    name: str
    help: str
    kind: Kind = Kind.TEXT
    default: Any = None  # FLAG: False or True; others: the value an option left out stands for
    metavar: str = ""  # the value's placeholder in the docs, e.g. FILE
    check: Check | None = None
    fills: str | None = None  # the `Overrides` field a selection option fills
    workflow: WorkflowSource | None = None
    repeatable: bool = False  # LIST: may be given several times
    example: str = ""  # LIST: a valid value, for the message about an empty entry
    value_optional: bool = False  # `--matrix` alone means the default file

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def invoke_default(self) -> Any:
        """What invoke passes for an option left out: flags their default, others None."""
        return self.default if self.kind is Kind.FLAG else None


OPTIONS = (
    # ---- which targets, from which matrix, with which overrides (the selection) ----
    Option("matrix", "matrix file, relative to the checkout (default: its matrix.yaml; `--matrix` alone means "
           "that one)", Kind.PATH, MATRIX_FILE, "FILE", value_optional=True),
    Option("filter", "target id globs, e.g. 'cpu/*' or 'cuda/cuda-12.8/*', repeated or comma-separated; one "
           "that matches no target is an error, exit 3 (default: the matrix's default_targets)", Kind.LIST,
           metavar="GLOB", repeatable=True, example="'cpu/*,vulkan/*'",
           workflow=WorkflowSource("TARGETS", "Target id globs, comma-separated (`invoke matrix` lists ids)", "*")),
    Option("platform", "platforms to narrow each target to, comma-separated, e.g. linux/amd64 (default: every "
           "platform the matrix declares; for `build` without --push, the builder's own)", Kind.LIST,
           metavar="PLATFORM", check=Check(PLATFORM, "a platform; use e.g. linux/amd64,linux/arm64"),
           fills="platforms", example="linux/amd64,linux/arm64",
           workflow=WorkflowSource("MULTI_ARCH", "With a release tag: `true` builds linux/arm64 as well as "
                                   "linux/amd64 (an empty tag builds both)", BOTH_PLATFORMS[0],
                                   "linux/amd64 only, as `false`",
                                   convert=lambda given: ",".join(BOTH_PLATFORMS[: 2 if given == "true" else 1]))),
    Option("release", "llama.cpp release of the release-tarball flavors: a tag like b9159, or latest (the newest); "
           "a tag with only debian-package targets selected is an error, latest is not", metavar="TAG",
           check=Check(RELEASE, "a release tag; use e.g. b11669 or latest"), fills="release",
           workflow=WorkflowSource("LLAMA_CPP_VERSION", "ai-dock/llama.cpp-cuda release tag, e.g. `b9159`", LATEST,
                                   "the run decides as the weekly run does (below), so the schedule can be tried "
                                   "by hand")),
    Option("cuda_version", "CUDA version of the prebuilt llama.cpp binaries, e.g. 12.8", metavar="X.Y",
           check=Check(CUDA_VERSION, "a CUDA version; use e.g. 12.8"), fills="binary_cuda",
           workflow=WorkflowSource("CUDA_VERSION", "CUDA version of the prebuilt binaries, e.g. `12.8`",
                                   empty_means="matrix.yaml's")),
    Option("repository", "repository name instead of the matrix's, e.g. llama-cpp", metavar="NAME",
           check=Check(PATH_COMPONENT, "a repository name; use e.g. llama-cpp"), fills="repository",
           workflow=WorkflowSource("DOCKERHUB_REPO", "Repository under your namespace", "llama-cpp")),
    Option("tag", "custom tag replacing the release part of each tag: my-build gives my-build-cuda-12.8",
           metavar="CUSTOM", check=Check(DOCKER_TAG, "a valid Docker tag; use letters, digits, '.', '_', '-'"),
           fills="custom_tag", workflow=WorkflowSource("CUSTOM_IMAGE_TAG", "Replaces the release part of the tag: "
                                                       "`my-build` gives `my-build-cuda-12.8`")),
    Option("registry", "registry host instead of the matrix's, e.g. 127.0.0.1:5000", metavar="HOST",
           check=Check(REGISTRY, "a registry host; use e.g. docker.io"), fills="registry"),
    Option("namespace", "namespace instead of the matrix's, e.g. your Docker Hub user", metavar="NAME",
           check=Check(PATH_COMPONENT, "a namespace; use e.g. your Docker Hub user"), fills="namespace",
           workflow=WorkflowSource(NAMESPACE_SETTING, "The repository variable or secret", setting=True)),
    # ---- what changes the rendered bake file for publishing (`bake` and `build` alike) ----
    Option("push", "publish to the registry: registry cache, provenance and SBOM attestations, every release "
           "looked up (its tarballs' sha256 go into the build); logs in with REGISTRY_USERNAME and "
           "REGISTRY_PASSWORD", Kind.FLAG, False),
    Option("by_digest", "with --push: push each target untagged, by digest, for `invoke merge` (a builder with "
           "BuildKit's docker driver pushes a staging tag `<tag>-<arch>-job` instead)", Kind.FLAG, False),
    Option("sbom", "with --push: attach an SBOM; --no-sbom for registries that cannot reach Docker Hub, where "
           "BuildKit's scanner image lives", Kind.FLAG, True),
    # ---- how a publishing run treats targets it cannot or need not build ----
    Option("skip_existing", "leave out targets whose tag the registry already has (scheduled runs); an answer "
           "other than published or absent stops the run, exit 7", Kind.FLAG, False),
    Option("skip_unavailable", "leave out, and report, targets whose release lacks their tarball instead of "
           "failing, exit 6 (scheduled runs)", Kind.FLAG, False),
    # ---- the rest, each used by the tasks that name it ----
    Option("builder", "buildx builder instead of the local engine (remote BuildKit, kubernetes, "
           "docker-container); the local engine is then neither set up nor required", metavar="NAME"),
    Option("output", "write the bake file, or the plan, to this file instead of printing it", Kind.PATH,
           metavar="FILE"),
    Option("print", "print the bake file (the default; with --output, print it as well)", Kind.FLAG, False),
    Option("check", "also have `docker buildx bake --print` accept the bake file (needs an engine or --builder)",
           Kind.FLAG, False),
    Option("digests", "folder of the digest records: `build --by-digest` writes one per target and platform, "
           "`merge` reads them", Kind.PATH, "digests", "DIR"),
    Option("job", "one job of the plan `invoke plan` wrote (JSON): builds its one target and platform, instead "
           "of selection options", metavar="JSON"),
    Option("plan", "the plan `invoke plan` wrote (JSON): a tag missing a planned platform (its job failed) is "
           "not created, exit 4", metavar="JSON"),
    Option("report", "the run's report (JSON): what `build --push` and `merge` published, skipped and failed; "
           "for `plan`, how a run that ends with the plan ended (nothing to build, or the plan failed), else "
           "planned; `notify` posts it (missing: the run failed before publishing)", Kind.PATH, metavar="FILE"),
    Option("workflow", "in the publishing workflow: `plan` reads the selection from its inputs (a selection "
           "option the workflow has no input for may be given too); `plan`, `build --job` and `merge` take the "
           "namespace and the registry login from its variables and secrets (docs/publishing.md)", Kind.FLAG, False),
    Option("title", "the message's title", default=RUN_TITLE),
    Option("test_tools", "also install what the tests need besides the engine (Debian's chromium, "
           "chromium-driver and aria2)", Kind.FLAG, False),
)  # fmt: skip

OPTION = {option.name: option for option in OPTIONS}
SELECTION = tuple(o for o in OPTIONS if o.name in {"matrix", "filter"} or o.fills)
PUBLISHING = tuple(OPTION[name] for name in ("push", "by_digest", "sbom"))
SKIPPING = tuple(OPTION[name] for name in ("skip_existing", "skip_unavailable"))
SELECTION_NAMES = tuple(option.name for option in SELECTION)


def default(name: str) -> Any:
    """The value an option left out stands for: the one place each default is written."""
    return OPTION[name].default


@dataclass(frozen=True)
class Overrides:
    """Command-line changes applied to a loaded matrix before expansion (fields: `Option.fills`)."""

    platforms: tuple[str, ...] = ()
    release: str | None = None
    binary_cuda: str | None = None
    repository: str | None = None
    custom_tag: str | None = None
    registry: str | None = None
    namespace: str | None = None


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
        if matrix_file != Path(default("matrix")):
            values["matrix"] = str(matrix_file)
        if self.filters:
            values["filter"] = list(self.filters)
        for option in SELECTION:
            value = getattr(self.overrides, option.fills) if option.fills else None
            if value:
                values[option.name] = ",".join(value) if option.kind is Kind.LIST else value
        return values


@dataclass(frozen=True)
class Request:
    """What a task was asked for, checked: its selection, and how a publishing run treats it."""

    root: Path  # the checkout the task runs in: Dockerfiles, git revision
    selection: Selection
    push: bool = default("push")
    by_digest: bool = default("by_digest")
    sbom: bool = default("sbom")
    skip_existing: bool = default("skip_existing")
    skip_unavailable: bool = default("skip_unavailable")

    def __post_init__(self) -> None:
        if self.by_digest and not self.push:
            raise UsageError("--by-digest pushes each platform by digest; it needs --push")
        if not self.push and not self.sbom:
            raise UsageError("--no-sbom applies to --push (local builds attach no attestations)")
        if (self.skip_existing or self.skip_unavailable) and not self.push:
            which = "--skip-existing" if self.skip_existing else "--skip-unavailable"
            raise UsageError(f"{which} decides what a publishing run leaves out; it needs --push")


# ---- raw values -> checked, typed values ----------------------------------------------------


def text(option: Option, raw: Any) -> str | None:
    """A value as given: None when left out; an empty or blank value is a usage error."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise UsageError(f"{option.flag} takes a value")
    if not raw.strip():
        instead = "use the matrix's value" if option.fills else "use its default"
        raise UsageError(f"{option.flag} is empty; leave the option out to {instead}, or give one")
    return raw.strip()


def check(option: Option, value: str) -> str:
    if option.check is not None and not option.check.pattern.fullmatch(value):
        raise UsageError(f"{option.flag}: '{value}' is not {option.check.expected}")
    return value


def entries(option: Option, raw: Any) -> tuple[str, ...]:
    """A LIST option's values, each checked: comma-separated, and for a repeatable one repeated."""
    given = [] if raw is None else [raw] if isinstance(raw, str) else list(raw)
    found: list[str] = []
    for item in given:
        value = text(option, item)
        assert value is not None
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):
            raise UsageError(f"{option.flag} '{value}' has an empty entry; e.g. {option.example}")
        found += [check(option, part) for part in parts]
    return tuple(found)


def value_of(option: Option, raw: Any) -> Any:
    """One option's checked, typed value: bool, str or None, tuple of str, or Path or None."""
    if option.kind is Kind.FLAG:
        return option.default if raw is None else bool(raw)
    if option.kind is Kind.LIST:
        return entries(option, raw)
    if option.value_optional and raw is True:
        raw = None
    value = text(option, raw)
    if value is None:
        value = option.default
        return Path(value) if option.kind is Kind.PATH and value is not None else value
    return Path(value) if option.kind is Kind.PATH else check(option, value)


def values_of(options: Iterable[Option], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Option name -> checked, typed value, for each of `options` (raw values of others are refused)."""
    wanted = {option.name: option for option in options}
    unknown = set(raw) - set(wanted)
    if unknown:
        raise UsageError(
            "unknown option(s): " + ", ".join(sorted(OPTION[n].flag if n in OPTION else n for n in unknown))
        )
    return {name: value_of(option, raw.get(name)) for name, option in wanted.items()}


def given_names(options: Iterable[Option], raw: Mapping[str, Any]) -> list[str]:
    """The options of `options` that were given (not left out), in table order."""
    return [o.name for o in options if raw.get(o.name) not in (None, [], ()) and o.kind is not Kind.FLAG]


def parse_selection(root: Path, raw: Mapping[str, Any]) -> Selection:
    """Check and convert the selection options; raises UsageError naming the option."""
    values = values_of(SELECTION, raw)
    matrix_file: Path = values["matrix"]
    overrides = Overrides(**{o.fills: values[o.name] for o in SELECTION if o.fills})
    return Selection(matrix_file if matrix_file.is_absolute() else root / matrix_file, values["filter"], overrides)


def parse_request(root: Path, raw: Mapping[str, Any], selection: Selection | None = None) -> Request:
    """A checked Request from the selection, publishing and skipping options (all optional);
    `selection`, when given, instead of the selection options."""
    flags = values_of((*PUBLISHING, *SKIPPING), {k: v for k, v in raw.items() if k not in SELECTION_NAMES})
    if selection is None:
        selection = parse_selection(root, {k: v for k, v in raw.items() if k in SELECTION_NAMES})
    return Request(root, selection, **flags)


def check_overrides(overrides: Overrides) -> None:
    """Overrides made in code are checked as the options that fill them would be."""
    for option in SELECTION:
        value = getattr(overrides, option.fills) if option.fills else None
        for item in value if isinstance(value, tuple) else [value] if value is not None else []:
            check(option, item)
