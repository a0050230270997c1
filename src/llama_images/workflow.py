"""The publishing workflow's inputs, read from the environment the workflow sets (pure).

The workflow passes its inputs and secrets through `env:` (never into a command line), and
`invoke plan --workflow` turns them into task options here. For a workflow input, empty means
"the default" (that is how GitHub's form works); on the command line an empty option stays an
error.

| Variable | Meaning |
|---|---|
| GITHUB_EVENT_NAME | `schedule`: newest release, both platforms, skip published tags and missing tarballs |
| LLAMA_CPP_VERSION | release tag; empty: the newest release |
| CUDA_VERSION | CUDA version of the binaries; empty: the matrix's |
| DOCKERHUB_REPO | repository; empty: `llama-cpp` |
| MULTI_ARCH | `true`: linux/amd64 and linux/arm64; otherwise linux/amd64 |
| CUSTOM_IMAGE_TAG | replaces the release part of the tag; empty: none |
| TARGETS | target id globs, comma-separated; empty: `*` |
| DOCKERHUB_NAMESPACE, REGISTRY_USERNAME, REGISTRY_PASSWORD | the Docker Hub secrets: any missing skips the run |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SECRETS = {
    "DOCKERHUB_USERNAME": "REGISTRY_USERNAME",
    "DOCKERHUB_TOKEN": "REGISTRY_PASSWORD",
    "DOCKERHUB_NAMESPACE": "DOCKERHUB_NAMESPACE",
}
BOTH_PLATFORMS = "linux/amd64,linux/arm64"


@dataclass(frozen=True)
class WorkflowRun:
    values: dict[str, Any]  # selection option values
    skip_existing: bool
    skip_unavailable: bool
    missing_secrets: tuple[str, ...] = field(default=())

    @property
    def publish(self) -> bool:
        return not self.missing_secrets


def workflow_run(env: Mapping[str, str]) -> WorkflowRun:
    def get(name: str) -> str:
        return env.get(name, "").strip()

    scheduled = get("GITHUB_EVENT_NAME") == "schedule"
    missing = tuple(secret for secret, variable in SECRETS.items() if not get(variable))
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
    return WorkflowRun(values, skip_existing=scheduled, skip_unavailable=scheduled, missing_secrets=missing)
