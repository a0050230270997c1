"""Registries (I/O edge): logging in with credentials from the environment, asking whether a tag
is published, and creating multi-platform tags from pushed digests.

Credentials: `REGISTRY_USERNAME` and `REGISTRY_PASSWORD`. The password goes to `docker login` on
stdin only, never into arguments, output or error messages.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..core.errors import LlamaImagesError, RegistryError
from ..core.tag_state import Lookup, TagState, classify, unreachable_after
from .engine import docker

USERNAME_VARIABLE = "REGISTRY_USERNAME"
PASSWORD_VARIABLE = "REGISTRY_PASSWORD"


def credentials() -> tuple[str, str] | None:
    username = os.environ.get(USERNAME_VARIABLE, "")
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if bool(username) != bool(password):
        missing = PASSWORD_VARIABLE if username else USERNAME_VARIABLE
        raise RegistryError(f"{missing} is not set; set both {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, or neither")
    return (username, password) if username else None


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


@contextmanager
def logged_in(registry: str) -> Iterator[None]:
    """Log in to `registry` for the duration (when credentials are set), and out afterwards.

    A wrong password fails here, before anything is built.
    """
    found = credentials()
    if found is None:
        yield
        return
    username, password = found
    result = docker(["login", "--username", username, "--password-stdin", registry], RegistryError,
                    timeout=120, input=password)  # fmt: skip
    if result.returncode != 0:
        detail = redact((result.stderr or result.stdout).strip(), password).splitlines()[-1:] or ["no answer"]
        raise RegistryError(f"login to {registry} as {username} failed: {detail[0]}; check {PASSWORD_VARIABLE}")
    print(f"logged in to {registry} as {username}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        try:
            docker(["logout", registry], RegistryError, timeout=60)
        except LlamaImagesError as exc:  # never hides the error that ended the block
            print(f"warning: logout from {registry}: {exc}", file=sys.stderr)


LOOKUP_TIMEOUT = 60.0  # seconds; a registry that accepts connections and never answers is unreachable


def lookup_tag(image: str, timeout: float = LOOKUP_TIMEOUT) -> Lookup:
    """What the registry says about `image`'s tag: published, absent, unreachable or refused."""
    try:
        result = docker(["buildx", "imagetools", "inspect", image], RegistryError, timeout=timeout)
    except RegistryError:  # the call timed out (a missing CLI stays an EngineError)
        return unreachable_after(timeout)
    return classify(result.returncode, result.stderr)


def tag_exists(image: str, lookup: Callable[[str], Lookup] = lookup_tag) -> bool:
    """True when the registry has the tag; False when it says it has not. Any other answer (no
    answer, refused credentials) is an error: guessing either way could rebuild or skip wrongly."""
    found = lookup(image)
    if found.state is TagState.PUBLISHED:
        return True
    if found.state is TagState.ABSENT:
        return False
    why = {
        TagState.UNREACHABLE: "the registry cannot be reached",
        TagState.REFUSED: f"the registry refused the lookup; check {USERNAME_VARIABLE}/{PASSWORD_VARIABLE}",
        TagState.UNKNOWN: "docker's answer is not understood",
    }[found.state]
    raise RegistryError(f"cannot tell whether {image} is published ({why}): {found.detail}")


def imagetools_inspect(image: str, *options: str, failure: str) -> Any:
    """`docker buildx imagetools inspect` of `image` with `options`, its JSON output parsed."""
    result = docker(["buildx", "imagetools", "inspect", *options, image], RegistryError, timeout=120)
    if result.returncode != 0:
        raise RegistryError(f"{failure}: {result.stderr.strip()[-500:]}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RegistryError(f"{failure}: docker buildx imagetools inspect printed no JSON") from None


def inspect_raw(image: str) -> dict[str, Any]:
    manifest: dict[str, Any] = imagetools_inspect(image, "--raw", failure=f"cannot inspect {image}")
    return manifest


def index_platforms(index: dict[str, Any]) -> list[str]:
    """Platforms of the images in an index, attestation manifests left out."""
    found = []
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = entry.get("platform", {})
        found.append(f"{platform.get('os')}/{platform.get('architecture')}")
    return found


def create_tag(image: str, sources: Sequence[str], builder: str | None = None) -> str:
    """Create (or replace) the multi-platform tag `image` from pushed digests; returns its digest.

    The sources are indexes (image + attestation manifest each); imagetools merges them, so the
    attestations travel with the new index.
    """
    command = ["buildx", "imagetools", "create"]
    if builder:
        command += ["--builder", builder]
    command += ["--tag", image, *sources]
    result = docker(command, RegistryError, timeout=600)
    if result.returncode != 0:
        raise RegistryError(f"could not create {image}: {result.stderr.strip()[-1000:]}")
    manifest = imagetools_inspect(
        image, "--format", "{{json .Manifest}}", failure=f"created {image} but cannot read it back"
    )
    return str(manifest["digest"])
