"""Shared fixtures. Container tests need a Docker engine: here they skip without one, but under
CI (CI=true) a missing engine fails the run, so they never pass by being skipped."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_images.edges.engine import engine_problem

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("container") for item in items):
        return
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"container tests selected but {problem}; CI must run them (`invoke engine`)")
    skip = pytest.mark.skip(reason=f"no Docker engine here ({problem}); run `invoke engine` as root")
    for item in items:
        if item.get_closest_marker("container"):
            item.add_marker(skip)


def require_host_tools(tools: tuple[str, ...], packages: str) -> None:
    """A host program a test drives (the browser, aria2c): missing, the test skips with one line
    saying what to install, and under CI it fails (`nox -s test` installs them as root)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install {packages} (as root, nox -s test does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


@pytest.fixture
def write_matrix(tmp_path: Path) -> Callable[[str], Path]:
    """Write a matrix file from dedented YAML text and return its path."""

    def write(text: str, name: str = "matrix.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
