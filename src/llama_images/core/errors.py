"""Typed errors users see. Each carries the exit code the tasks exit with, and no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class LlamaImagesError(Exception):
    """Base of every error caused by input, environment or a failed build."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: where it is, what is wrong and how to fix it."""

    file: str
    line: int
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}\n    fix: {self.fix}"


class MatrixError(LlamaImagesError):
    """matrix.yaml (or a file given in its place) is not valid."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        heading = "1 problem" if count == 1 else f"{count} problems"
        super().__init__(f"{heading} in the matrix:\n" + "\n".join(str(p) for p in self.problems))


class UsageError(LlamaImagesError):
    """A task option has a value that cannot work."""

    exit_code = 2


class NothingSelectedError(LlamaImagesError):
    """A --filter pattern matched no target: never a silent no-op."""

    exit_code = 3


class BuildError(LlamaImagesError):
    """docker buildx bake failed; the message names the failing targets."""

    exit_code = 4


class EngineError(LlamaImagesError):
    """No usable Docker engine, or an upstream image could not be provided."""

    exit_code = 5


class ReleaseLookupError(LlamaImagesError):
    """The releases API could not tell which release to build, or a release lacks a tarball."""

    exit_code = 6


class RegistryError(LlamaImagesError):
    """Login refused, a tag's state unknown, or a multi-platform tag not created."""

    exit_code = 7


# Every exit code a task ends with: docs/building.md's table lists these codes (tests/pipeline/test_errors.py).
EXIT_CODES = {
    0: "success",
    1: "unexpected error (a bug: please report it with the output)",
    MatrixError.exit_code: "bad matrix file or option",
    NothingSelectedError.exit_code: "a --filter pattern selects nothing",
    BuildError.exit_code: "a build failed (the message names the target)",
    EngineError.exit_code: "no usable engine, builder or upstream image",
    ReleaseLookupError.exit_code: "release lookup failed, or a release lacks a needed tarball",
    RegistryError.exit_code: "registry login, lookup or tagging failed",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A close-match hint such as " (did you mean 'platforms'?)", or "" when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
