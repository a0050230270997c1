"""Running `docker buildx bake` on a rendered bake file (I/O edge). The file goes in on stdin;
context paths in it are relative to the project root, where buildx runs."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import BuildError, EngineError
from .engine import docker, docker_stream

# buildx names a failing target as "target <name>: failed to solve" (or "... [platform]:").
FAILED_TARGET = re.compile(r"target ([A-Za-z0-9_-]+)(?:\s*\[[^\]]*\])?:? ")


def bake_command(
    *,
    load: bool,
    push: bool,
    print_only: bool = False,
    builder: str | None = None,
    metadata: Path | None = None,
    reads: Sequence[str] = (),
) -> list[str]:
    command = ["docker", "buildx", "bake", "--file", "-"]
    if builder:
        command += ["--builder", builder]
    if print_only:
        return [*command, "--print"]
    # Files the bake file names as secret sources: buildx asks for the read to be allowed.
    command += [f"--allow=fs.read={path}" for path in reads]
    command += ["--progress", "plain"]
    if metadata is not None:
        command += ["--metadata-file", str(metadata)]
    if push:
        command.append("--push")
    elif load:
        command.append("--load")
    return command


def driver(builder: str | None) -> str:
    """The buildx driver of a builder (`docker`, `docker-container`, `remote`, `kubernetes`)."""
    result = docker(["buildx", "inspect", *([builder] if builder else [])], EngineError, timeout=120)
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Driver":
            return value.strip()
    return "unknown"


def native_platform(builder: str | None) -> str:
    """The platform the builder (default: the local engine's own) runs natively: the first one
    `docker buildx inspect` lists."""
    result = docker(["buildx", "inspect", *([builder] if builder else [])], EngineError, timeout=120)
    platform = first_platform(result.stdout)
    if result.returncode != 0 or platform is None:
        which = f"buildx builder '{builder}'" if builder else "the engine's builder"
        raise EngineError(
            f"{which} names no platform in `docker buildx inspect`; pass --platform, e.g. --platform linux/amd64"
        )
    return platform


def first_platform(inspect_output: str) -> str | None:
    """The first platform of `docker buildx inspect`'s "Platforms:" line (buildx lists the
    native ones first; a `*` marks one the user configured)."""
    for line in inspect_output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Platforms":
            first = value.split(",")[0].strip().rstrip("*")
            return first or None
    return None


def print_bake(bake: Mapping[str, Any], root: Path, builder: str | None = None) -> dict[str, Any]:
    """What buildx itself makes of the file (`bake --print`): proof that it accepts it."""
    command = bake_command(load=False, push=False, print_only=True, builder=builder)
    result = docker(command[1:], EngineError, timeout=300, input=json.dumps(bake), cwd=root)
    if result.returncode != 0:
        raise BuildError(f"docker buildx bake --print rejected the bake file:\n{result.stderr.strip()}")
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


def run_bake(
    bake: Mapping[str, Any],
    root: Path,
    *,
    load: bool,
    push: bool,
    names: Mapping[str, str],
    builder: str | None = None,
) -> dict[str, Any]:
    """Build every target of the bake file in `root`, streaming buildx's progress; returns
    buildx's metadata (bake name -> containerimage.digest, ...).

    `names` maps bake target names to target ids, so a failure names what the user selected.
    Outputs written in the file itself (push by digest) need neither `load` nor `push`.
    """
    with tempfile.TemporaryDirectory(prefix="llama-images-bake-") as work:
        metadata = Path(work) / "metadata.json"
        command = bake_command(load=load, push=push, builder=builder, metadata=metadata, reads=secret_files(bake))
        print("+ " + " ".join(command), flush=True)
        process = docker_stream(command[1:], cwd=root)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(bake))
        process.stdin.close()
        error_lines: list[str] = []
        for line in process.stdout:
            sys.stdout.write(line)
            if "ERROR" in line or "failed to solve" in line:
                error_lines.append(line)
        if process.wait() != 0:
            failed = failed_targets(error_lines, names)
            which = ", ".join(failed) if failed else "one of: " + ", ".join(names.values())
            cause = failure_cause(error_lines)
            raise BuildError(
                f"build failed for {which} (docker buildx bake exit {process.returncode})"
                + (f": {cause}" if cause else "")
            )
        try:
            found: dict[str, Any] = json.loads(metadata.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            found = {}
        return found


# A cause longer than this is cut (a RUN step's whole script can be in it); the log has it all.
CAUSE_LIMIT = 400


def failure_cause(error_lines: Sequence[str]) -> str:
    """buildx's own reason for a failed build, from its last error line (`ERROR: target x:
    failed to solve: process "..." did not complete successfully: exit code: 100`)."""
    for line in reversed(error_lines):
        text = line.strip()
        if text.startswith("ERROR:"):
            text = text.removeprefix("ERROR:").strip()
            return text if len(text) <= CAUSE_LIMIT else text[: CAUSE_LIMIT - 1] + "…"
    return ""


def secret_files(bake: Mapping[str, Any]) -> list[str]:
    """The `src=` files of every target's secrets, once each."""
    found: list[str] = []
    for target in bake.get("target", {}).values():
        for secret in target.get("secret", []):
            fields = dict(part.split("=", 1) for part in secret.split(",") if "=" in part)
            if "src" in fields and fields["src"] not in found:
                found.append(fields["src"])
    return found


def failed_targets(output: Sequence[str], names: Mapping[str, str]) -> list[str]:
    """Target ids named in buildx's error lines, in order, once each."""
    found: list[str] = []
    for line in output:
        for name in FAILED_TARGET.findall(line):
            if name in names and names[name] not in found:
                found.append(names[name])
    return found
