"""nox sessions: `nox -s lint test` is what CI runs (see docs/building.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["lint", "test"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
IMAGE_DIRS = ("base-image", "derivatives")
# The runtime's own Python (stdlib; the portal adds its pinned environment) ships in the image overlay.
RUNTIME_PYTHON = "base-image/ROOT/opt/llama-images/lib"
# The llama-cpp image's launcher (stdlib) ships in its overlay.
LLAMA_PYTHON = "derivatives/llama-cpp/ROOT/opt/llama-images/lib"
PYTHON_PATHS = ("src", "tests", "benchmarks", "tasks.py", "noxfile.py", RUNTIME_PYTHON, LLAMA_PYTHON)
# Hash-pinned requirements of the image's Python environments (base-image/python/*.in -> *.txt).
LOCKED_ENVIRONMENTS = ("build-tools", "caddy", "portal", "jupyter", "vastai")
UV = "uv==0.13.9"


def dockerfiles() -> list[str]:
    return sorted(str(p) for d in IMAGE_DIRS for p in (ROOT / d).rglob("Dockerfile"))


def shell_scripts() -> list[str]:
    """Every *.sh and every file whose first line names a shell, among the checkout's files
    (tracked, or new and not ignored: build outputs such as the benchmark's copies stay out)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = []
    for path in (ROOT / name for name in listed.split("\0") if name):
        if not path.is_file():
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
    """hadolint, shellcheck, ruff, mypy --strict, actionlint (with shellcheck) and zizmor: zero findings."""
    session.install("-e", ".[dev]")
    session.run("hadolint", *dockerfiles())
    session.run("shellcheck", "--external-sources", *shell_scripts())
    session.run("ruff", "check", *PYTHON_PATHS)
    session.run("ruff", "format", "--check", *PYTHON_PATHS)
    session.run("mypy", "src", "tests", "benchmarks", "tasks.py", "noxfile.py")
    session.run("mypy", RUNTIME_PYTHON)
    session.run("mypy", LLAMA_PYTHON)
    workflows = sorted(str(p) for p in (ROOT / ".github/workflows").glob("*.yml"))
    shellcheck = shutil.which("shellcheck", path=session.bin)
    if shellcheck is None:
        session.error("shellcheck is not installed in the session (dev extras)")
    session.run("actionlint", f"-shellcheck={shellcheck}", *workflows)
    # --offline: judges pins and permissions from the files alone (no GitHub API here or in CI).
    session.run("zizmor", "--offline", "--min-severity", "low", *workflows)


def install_with_engine(session: nox.Session, *, test_tools: bool = False) -> None:
    """The package, and as root the engine `invoke engine` sets up (it leaves what works alone),
    with `test_tools` also the browser the portal's test drives."""
    session.install("-e", ".[dev]")
    if os.geteuid() == 0:
        session.run("invoke", "engine", *(["--test-tools"] if test_tools else []))


@nox.session
def test(session: nox.Session) -> None:
    """pytest: unit tests and container tests (marked `container`). Pass pytest args after --."""
    install_with_engine(session, test_tools=True)
    session.run("pytest", *session.posargs)


@nox.session
def lock(session: nox.Session) -> None:
    """Re-resolve the image's Python environments (base-image/python/*.in) into hash-pinned
    *.txt files for every platform and Python >= 3.12 the upstreams carry."""
    session.install(UV)
    # From the files' folder: the *.txt files name their source as `-r <name>.in`, wherever this runs.
    with session.chdir(ROOT / "base-image" / "python"):
        for name in LOCKED_ENVIRONMENTS:
            session.run(
                "uv", "pip", "compile", "--quiet", "--universal", "--python-version", "3.12", "--generate-hashes",
                "--custom-compile-command", "nox -s lock", f"{name}.in", "-o", f"{name}.txt",
            )  # fmt: skip


@nox.session(python=False)
def generate(session: nox.Session) -> None:
    """Rewrite the generated files from their declarations: each image package's `paths.sh` from
    its `paths.py` (the shell scripts source it; a unit test checks it is current)."""
    modules = [
        f"{path.parent.name}.paths"
        for lib in (RUNTIME_PYTHON, LLAMA_PYTHON)
        for path in (ROOT / lib).glob("*/paths.py")
    ]
    python_path = os.pathsep.join(str(ROOT / lib) for lib in (RUNTIME_PYTHON, LLAMA_PYTHON))
    session.run("python3", "-m", "llama_runtime.paths", *sorted(modules), env={"PYTHONPATH": python_path})


@nox.session
def bench(session: nox.Session) -> None:
    """Issue 8's benchmarks of the CPU image (docs/benchmarks.md): update pull delta, matrix build,
    boot to healthy, proxy under load, image size. Prints a table, writes build/bench/results.json.
    Not part of `lint test`. Options after --, e.g. `nox -s bench -- --only boot,load`."""
    install_with_engine(session)
    session.run("python", "-m", "benchmarks", *session.posargs)
