"""The publishing workflow's inputs, read from the environment the workflow sets (pure).

The workflow passes its inputs, variables and secrets through `env:` (never into a command line),
and `invoke plan --workflow` turns them into task options here. For a workflow input, empty means
"the default" (that is how GitHub's form works); on the command line an empty option stays an
error.

The namespace and the pushing user are repository *variables*, only the access token is a
secret: the plan job's outputs (the strategy matrix, the plan) hold image names, which hold the
namespace, and that is most often the user's own name; GitHub drops a job output that contains
the value of a secret the job uses ("Skip output ... since it may contain secret"). A namespace
or user name stored as a secret (the reference image's setup) is refused with the fix, and the
plan never writes outputs that contain a secret's value (`secrets_in_outputs`).

| Variable | Meaning |
|---|---|
| GITHUB_EVENT_NAME | `schedule`: newest release, both platforms, skip published tags and missing tarballs |
| LLAMA_CPP_VERSION | release tag; empty: the newest release |
| CUDA_VERSION | CUDA version of the binaries; empty: the matrix's |
| DOCKERHUB_REPO | repository; empty: `llama-cpp` |
| MULTI_ARCH | `true`: linux/amd64 and linux/arm64; otherwise linux/amd64 |
| CUSTOM_IMAGE_TAG | replaces the release part of the tag; empty: none |
| TARGETS | target id globs, comma-separated; empty: `*` |
| REGISTRY_PASSWORD | the DOCKERHUB_TOKEN secret: missing skips the run |
| REGISTRY_USERNAME, DOCKERHUB_NAMESPACE | the DOCKERHUB_USERNAME and DOCKERHUB_NAMESPACE variables: skip if missing |
| DOCKERHUB_USERNAME_SECRET, DOCKERHUB_NAMESPACE_SECRET | those stored as secrets (the reference's setup): an error |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

# Repository secret -> the environment variable the workflow passes it in.
SECRETS = {"DOCKERHUB_TOKEN": "REGISTRY_PASSWORD"}
# Repository variable -> the environment variable the workflow passes it in.
VARIABLES = {"DOCKERHUB_USERNAME": "REGISTRY_USERNAME", "DOCKERHUB_NAMESPACE": "DOCKERHUB_NAMESPACE"}
# A variable stored as a secret instead -> the environment variable the plan job passes it in.
MISPLACED_SECRETS = {name: f"{name}_SECRET" for name in VARIABLES}
SETTINGS = "Settings > Secrets and variables > Actions"
BOTH_PLATFORMS = "linux/amd64,linux/arm64"


@dataclass(frozen=True)
class WorkflowRun:
    values: dict[str, Any]  # selection option values
    skip_existing: bool
    skip_unavailable: bool
    missing_secrets: tuple[str, ...] = field(default=())
    missing_variables: tuple[str, ...] = field(default=())

    @property
    def publish(self) -> bool:
        return not self.missing_secrets and not self.missing_variables

    @property
    def missing(self) -> str:
        """What is not set, e.g. "secrets DOCKERHUB_TOKEN and variable DOCKERHUB_NAMESPACE"."""
        parts = []
        for kind, names in (("secret", self.missing_secrets), ("variable", self.missing_variables)):
            if names:
                parts.append(f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}")
        return " and ".join(parts)


def workflow_run(env: Mapping[str, str]) -> WorkflowRun:
    def get(name: str) -> str:
        return env.get(name, "").strip()

    misplaced = [name for name, variable in MISPLACED_SECRETS.items() if get(variable)]
    if misplaced:
        names = " and ".join(misplaced)
        raise UsageError(
            f"{names} {'is a repository secret' if len(misplaced) == 1 else 'are repository secrets'}: the "
            "plan's outputs name the images (namespace included, often the user's name), and GitHub drops job "
            f"outputs that contain a secret's value; under {SETTINGS}, add {names} as repository variables "
            "(Variables tab) and delete the secrets"
        )
    scheduled = get("GITHUB_EVENT_NAME") == "schedule"
    missing = tuple(secret for secret, variable in SECRETS.items() if not get(variable))
    missing_variables = tuple(name for name, variable in VARIABLES.items() if not get(variable))
    values: dict[str, Any] = {
        "filter": [get("TARGETS") or "*"],
        "release": get("LLAMA_CPP_VERSION") or "latest",
        "repository": get("DOCKERHUB_REPO") or "llama-cpp",
        "platform": BOTH_PLATFORMS if scheduled or get("MULTI_ARCH") == "true" else "linux/amd64",
    }
    for option, variable in (("cuda_version", "CUDA_VERSION"), ("tag", "CUSTOM_IMAGE_TAG")):
        if get(variable):
            values[option] = get(variable)
    if get("DOCKERHUB_NAMESPACE"):
        values["namespace"] = get("DOCKERHUB_NAMESPACE")
    # A scheduled run publishes what is new and buildable; a manual run always builds what it
    # names, and a missing tarball fails it with the asset named.
    return WorkflowRun(values, scheduled, scheduled, missing_secrets=missing, missing_variables=missing_variables)


def secrets_in_outputs(outputs: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    """Names of the secrets (never their values) whose value appears in a step output.

    GitHub masks every secret a job uses and silently drops an output that contains one: the
    build jobs would get an empty strategy matrix. Only the token is a secret, so this is a guard.
    """
    found = []
    for secret, variable in SECRETS.items():
        value = env.get(variable, "").strip()
        if value and any(value in text for text in outputs.values()):
            found.append(secret)
    return found
