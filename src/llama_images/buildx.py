"""Running `docker buildx bake` on a rendered bake file (I/O edge)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .engine import REPO_ROOT
from .errors import BuildError

T = TypeVar("T")
FAILED_TARGET = re.compile(r"target ([A-Za-z0-9_-]+)(?:\s*\[[^\]]*\])?:? ")


def bake_command(bake_file: Path, *, load: bool, push: bool, print_only: bool = False) -> list[str]:
    command = ["docker", "buildx", "bake", "--file", str(bake_file)]
    if print_only:
        return [*command, "--print"]
    command += ["--progress", "plain"]
    if push:
        command.append("--push")
    elif load:
        command.append("--load")
    return command


def with_bake_file(bake: Mapping[str, Any], run: Callable[[Path], T]) -> T:
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bake-", delete=False) as handle:
        json.dump(bake, handle)
        path = Path(handle.name)
    try:
        return run(path)
    finally:
        path.unlink(missing_ok=True)


def print_bake(bake: Mapping[str, Any]) -> dict[str, Any]:
    """What buildx itself makes of the file (`bake --print`): proof that it accepts it."""

    def run(path: Path) -> dict[str, Any]:
        result = subprocess.run(
            bake_command(path, load=False, push=False, print_only=True),
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BuildError(f"docker buildx bake --print rejected the bake file:\n{result.stderr.strip()}")
        printed: dict[str, Any] = json.loads(result.stdout)
        return printed

    return with_bake_file(bake, run)


def run_bake(bake: Mapping[str, Any], *, load: bool, push: bool, names: Mapping[str, str]) -> None:
    """Build every target of the bake file, streaming buildx's progress.

    `names` maps bake target names to target ids, so a failure names what the user selected.
    """

    def run(path: Path) -> None:
        command = bake_command(path, load=load, push=push)
        print("+ " + " ".join(command), flush=True)
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        error_lines: list[str] = []
        for line in process.stdout:
            sys.stdout.write(line)
            if "ERROR" in line or "failed to solve" in line:
                error_lines.append(line)
        if process.wait() != 0:
            failed = failed_targets(error_lines, names)
            which = ", ".join(failed) if failed else "one of: " + ", ".join(names.values())
            raise BuildError(f"build failed for {which} (docker buildx bake exit {process.returncode})")

    with_bake_file(bake, run)


def failed_targets(output: Sequence[str], names: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for line in output:
        for name in FAILED_TARGET.findall(line):
            if name in names and names[name] not in found:
                found.append(names[name])
    return found
