"""Running `docker buildx bake` on a rendered bake file (I/O edge). The file goes in on stdin."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .engine import REPO_ROOT
from .errors import BuildError

# buildx names a failing target as "target <name>: failed to solve" (or "... [platform]:").
FAILED_TARGET = re.compile(r"target ([A-Za-z0-9_-]+)(?:\s*\[[^\]]*\])?:? ")


def bake_command(*, load: bool, push: bool, print_only: bool = False, reads: Sequence[str] = ()) -> list[str]:
    command = ["docker", "buildx", "bake", "--file", "-"]
    if print_only:
        return [*command, "--print"]
    # Files the bake file names as secret sources: buildx asks for the read to be allowed.
    command += [f"--allow=fs.read={path}" for path in reads]
    command += ["--progress", "plain"]
    if push:
        command.append("--push")
    elif load:
        command.append("--load")
    return command


def print_bake(bake: Mapping[str, Any]) -> dict[str, Any]:
    """What buildx itself makes of the file (`bake --print`): proof that it accepts it."""
    result = subprocess.run(
        bake_command(load=False, push=False, print_only=True),
        input=json.dumps(bake),
        check=False,
        cwd=REPO_ROOT,  # context paths in the file are relative to the repository
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"docker buildx bake --print rejected the bake file:\n{result.stderr.strip()}")
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


def run_bake(bake: Mapping[str, Any], *, load: bool, push: bool, names: Mapping[str, str]) -> None:
    """Build every target of the bake file, streaming buildx's progress.

    `names` maps bake target names to target ids, so a failure names what the user selected.
    """
    command = bake_command(load=load, push=push, reads=secret_files(bake))
    print("+ " + " ".join(command), flush=True)
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
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
        raise BuildError(f"build failed for {which} (docker buildx bake exit {process.returncode})")


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
