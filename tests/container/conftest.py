"""Fixtures shared by the container tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.conftest import REPO_ROOT


def invoke(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """An invoke task run as a user runs it: a separate process, in the repository."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def main_build() -> subprocess.CompletedProcess[str]:
    """The README's quick-start command, run once per test session."""
    return invoke("build", "--matrix")


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    api = docker.from_env()
    yield api
    api.close()
