"""The publishing workflow's inputs, variables and secrets, read from the environment the workflow
sets (pure).

The workflow passes them through `env:` (never into a command line), and `plan --workflow` turns
them into task options here: which input fills which option, and what an empty input means, is
declared with the option (options.py, `Option.workflow`; the docs' tables are generated from
it). For a workflow input, empty means "the default" (that is how GitHub's form works); on the
command line an empty option stays an error.

`DOCKERHUB_USERNAME` and `DOCKERHUB_NAMESPACE` may be repository variables or, as the reference
image's README sets a fork up, secrets; `DOCKERHUB_TOKEN` is a secret. GitHub drops a job output
that contains the value of a secret the job uses, and image names hold the namespace (most often
the user's own name): so no output of the plan names an image. The plan hands each job its target,
platform and selection; every job derives the namespace (and so the image names) from its own
environment (`job_values`), and `secrets_in_outputs` guards the outputs. `GITHUB_EVENT_NAME`
`schedule` is the weekly run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .options import BOTH_PLATFORMS, NAMESPACE_SETTING, OPTIONS, SELECTION

SETTINGS = "Settings > Secrets and variables > Actions"
TOKEN, USERNAME, NAMESPACE = "DOCKERHUB_TOKEN", "DOCKERHUB_USERNAME", NAMESPACE_SETTING


@dataclass(frozen=True)
class Setting:
    """A repository setting and the environment variables the workflow passes it in."""

    name: str
    variable_env: str | None  # carries vars.<name>; None: it must be a secret
    secret_env: str  # carries secrets.<name>


REPOSITORY_SETTINGS = (
    Setting(TOKEN, None, TOKEN),
    Setting(USERNAME, USERNAME, f"{USERNAME}_SECRET"),
    Setting(NAMESPACE, NAMESPACE, f"{NAMESPACE}_SECRET"),
)
# What the registry module reads for `docker login`.
REGISTRY_ENV = {USERNAME: "REGISTRY_USERNAME", TOKEN: "REGISTRY_PASSWORD"}


@dataclass(frozen=True)
class Publishing:
    """Where and as whom a workflow run publishes."""

    values: dict[str, str]  # setting name -> value, the missing ones left out
    secret_values: dict[str, str]  # setting name -> value, for those stored as secrets

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(s.name for s in REPOSITORY_SETTINGS if s.name not in self.values)

    @property
    def namespace(self) -> str | None:
        return self.values.get(NAMESPACE)

    def describe_missing(self) -> str:
        """e.g. "secret DOCKERHUB_TOKEN and DOCKERHUB_NAMESPACE (a repository variable or secret)"."""
        parts = []
        secrets = [s.name for s in REPOSITORY_SETTINGS if s.name in self.missing and s.variable_env is None]
        either = [s.name for s in REPOSITORY_SETTINGS if s.name in self.missing and s.variable_env is not None]
        if secrets:
            parts.append(f"secret {', '.join(secrets)}")
        if either:
            parts.append(f"{', '.join(either)} ({'each ' if len(either) > 1 else ''}a repository variable or secret)")
        return " and ".join(parts)

    def registry_env(self) -> dict[str, str]:
        """REGISTRY_USERNAME and REGISTRY_PASSWORD for the registry login."""
        return {env: self.values[name] for name, env in REGISTRY_ENV.items() if name in self.values}


def publishing(env: Mapping[str, str]) -> Publishing:
    """The settings from either place; one stored both ways with two values is an error."""
    values, secret_values = {}, {}
    for setting in REPOSITORY_SETTINGS:
        variable = env.get(setting.variable_env, "").strip() if setting.variable_env else ""
        secret = env.get(setting.secret_env, "").strip()
        if variable and secret and variable != secret:
            raise UsageError(
                f"{setting.name} is both a repository variable and a repository secret, with different "
                f"values; under {SETTINGS}, delete the one you do not mean"
            )
        if variable or secret:
            values[setting.name] = variable or secret
        if secret:
            secret_values[setting.name] = secret
    return Publishing(values, secret_values)


# What the weekly run publishes, as its reports say.
WEEKLY = (
    "the newest release on linux/amd64 and linux/arm64, leaving out tags the registry already has and "
    "targets whose tarball the release lacks"
)


@dataclass(frozen=True)
class WorkflowRun:
    values: dict[str, Any]  # selection option values, namespace included when set
    skip_existing: bool
    skip_unavailable: bool
    publishing: Publishing
    notes: tuple[str, ...] = field(default=())  # how the run decided, for its reports

    @property
    def publish(self) -> bool:
        return not self.publishing.missing


# The workflow's inputs, in the order of the options they fill.
INPUTS = tuple(o.workflow.name for o in OPTIONS if o.workflow is not None and not o.workflow.setting)
# Selection options `plan --workflow` takes besides the workflow's inputs (it has none for them).
ALONGSIDE_WORKFLOW = tuple(o.name for o in SELECTION if o.workflow is None)


def workflow_run(env: Mapping[str, str]) -> WorkflowRun:
    def get(name: str) -> str:
        return env.get(name, "").strip()

    settings = publishing(env)
    # The weekly run, and a manual run without a release tag (the reference's "leave empty to
    # simulate a scheduled build"), decide alike: a failed week is retried, an old release is not
    # rebuilt, and a tag is never published for one platform only (the next week would leave it
    # so). A manual run with a tag builds what it names; a missing tarball fails it, naming it.
    notes: tuple[str, ...] = ()
    if get("GITHUB_EVENT_NAME") == "schedule":
        notes = (f"weekly run: {WEEKLY}",)
    elif not get("LLAMA_CPP_VERSION"):
        notes = (f"LLAMA_CPP_VERSION is empty: decided as the weekly run does: {WEEKLY}",)
    as_scheduled = bool(notes)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        source = option.workflow
        if source is None:
            continue
        value = settings.values.get(source.name) if source.setting else source.value(get(source.name))
        if value is not None:
            values[option.name] = value
    if as_scheduled:
        values["platform"] = ",".join(BOTH_PLATFORMS)
    return WorkflowRun(values, as_scheduled, as_scheduled, settings, notes)


def job_values(selection: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """A planned job's selection with the namespace from this job's own environment (the plan's
    outputs never hold it)."""
    if "namespace" in selection:
        raise UsageError("--workflow takes the namespace from DOCKERHUB_NAMESPACE; the job must not name one")
    namespace = publishing(env).namespace
    if namespace is None:
        raise UsageError(f"{NAMESPACE} is not set (a repository variable or secret, under {SETTINGS})")
    return {**selection, "namespace": namespace}


def secrets_in_outputs(outputs: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    """Names of the settings stored as secrets (never their values) whose value appears in a
    step output: GitHub would drop that output silently, and the build jobs get no matrix."""
    found = []
    for name, value in publishing(env).secret_values.items():
        if any(value in text for text in outputs.values()):
            found.append(name)
    return found
