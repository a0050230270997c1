"""Fixtures shared by the container tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from llama_images.engine import LOCAL_REGISTRY
from tests.conftest import REPO_ROOT

# Several checkouts may share one engine (e.g. worktrees): each can build and test its images
# under a namespace of its own, so one checkout's build never replaces another's image.
TEST_NAMESPACE = os.environ.get("LLAMA_IMAGES_TEST_NAMESPACE", "")
NAMESPACE = TEST_NAMESPACE or "llamaimages"


def image_ref(repository: str, tag: str) -> str:
    """The reference `invoke build` gives an image in this test run's namespace."""
    return f"docker.io/{NAMESPACE}/{repository}:{tag}"


def namespace_args() -> tuple[str, ...]:
    return ("--namespace", TEST_NAMESPACE) if TEST_NAMESPACE else ()


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
    return invoke("build", "--matrix", *namespace_args())


@pytest.fixture(scope="session")
def local_registry() -> str:
    """The loopback registry `invoke engine` starts with its engine; required under CI."""
    try:
        with urllib.request.urlopen(f"http://{LOCAL_REGISTRY}/v2/", timeout=3):
            pass
    except OSError as exc:
        message = f"no registry at {LOCAL_REGISTRY} ({exc}); `invoke engine` starts one with its own engine"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return LOCAL_REGISTRY


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    api = docker.from_env()
    yield api
    api.close()


def exec_text(container: Any, *command: str) -> tuple[int, str]:
    code, output = container.exec_run(list(command))
    return code, output.decode(errors="replace")


def wait_for(check: Callable[[], bool], seconds: float, what: str, container: Any) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")[-3000:]
    pytest.fail(f"{what} within {seconds} s; container log:\n{logs}")
