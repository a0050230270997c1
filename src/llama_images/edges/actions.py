"""GitHub Actions (I/O edge): step outputs, the step summary, and `::warning::`/`::notice::` lines.

In GitHub Actions (GITHUB_ACTIONS=true) the tasks write step outputs to $GITHUB_OUTPUT and a step
summary to $GITHUB_STEP_SUMMARY; elsewhere only plain text, and warnings as `warning: ...`.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def write_actions(outputs: Mapping[str, str], summary: str | None = None) -> None:
    """Step outputs and summary, in GitHub Actions only."""
    if not in_github_actions():
        return
    output_file = os.environ.get("GITHUB_OUTPUT")
    if output_file and outputs:
        with Path(output_file).open("a", encoding="utf-8") as handle:
            handle.write(output_lines(outputs))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file and summary:
        with Path(summary_file).open("a", encoding="utf-8") as handle:
            handle.write(summary)


def output_lines(outputs: Mapping[str, str]) -> str:
    """`$GITHUB_OUTPUT` lines; every value uses a random heredoc delimiter, so a value can never
    end the block early or set another output."""
    lines = []
    for name, value in outputs.items():
        delimiter = f"EOF_{secrets.token_hex(16)}"
        lines += [f"{name}<<{delimiter}", value, delimiter]
    return "\n".join(lines) + "\n"


def warning(text: str) -> None:
    """A warning on stderr: an annotation in GitHub Actions."""
    print(f"::warning::{text}" if in_github_actions() else f"warning: {text}", file=sys.stderr)


def notice(title: str, text: str) -> None:
    """A notice on stdout: an annotation with its title in GitHub Actions, the text alone elsewhere."""
    print(f"::notice title={title}::{text}" if in_github_actions() else text)
