"""nox sessions: `nox -s lint test` is what CI runs (see README)."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "test"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
IMAGE_DIRS = ("base-image", "derivatives")
PYTHON_PATHS = ("src", "tests", "tasks.py", "noxfile.py", "derivatives/llama-cpp/ROOT/opt/llama-images/lib")


def dockerfiles() -> list[str]:
    return sorted(str(p) for d in IMAGE_DIRS for p in (ROOT / d).rglob("Dockerfile"))


def shell_scripts() -> list[str]:
    """Every *.sh and every file whose first line names a shell, outside virtualenvs."""
    found = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or {".git", ".nox", ".venv", "node_modules"} & set(path.parts):
            continue
        if path.suffix == ".sh":
            found.append(path)
            continue
        if path.suffix == "":
            with path.open("rb") as handle:
                first = handle.readline(80)
            if first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh")):
                found.append(path)
    return sorted(str(p.relative_to(ROOT)) for p in found)


@nox.session
def lint(session: nox.Session) -> None:
    """hadolint, shellcheck, ruff, mypy --strict and actionlint: zero findings."""
    session.install("-e", ".[dev]")
    session.run("hadolint", *dockerfiles())
    session.run("shellcheck", "--external-sources", *shell_scripts())
    session.run("ruff", "check", *PYTHON_PATHS)
    session.run("ruff", "format", "--check", *PYTHON_PATHS)
    session.run("mypy", *PYTHON_PATHS)
    session.run("actionlint", "-shellcheck=", *sorted(str(p) for p in (ROOT / ".github/workflows").glob("*.yml")))


@nox.session
def test(session: nox.Session) -> None:
    """pytest: unit tests and container tests (marked `container`). Pass pytest args after --."""
    session.install("-e", ".[dev]")
    from llama_images.engine import engine_problem

    if engine_problem() is not None and os.geteuid() == 0:
        session.run("invoke", "engine")
    session.run("pytest", *session.posargs)
