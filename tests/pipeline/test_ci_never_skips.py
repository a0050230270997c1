"""Under CI a missing engine fails the run: container tests are never skipped into a pass."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_container_tests_without_engine(ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": ci, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/container", "-k", "bake_file"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_without_engine_ci_fails_and_a_developer_sees_why_it_skipped() -> None:
    in_ci = run_container_tests_without_engine("true")
    assert in_ci.returncode != 0
    assert "container tests selected but no Docker engine answers" in in_ci.stdout + in_ci.stderr
    local = run_container_tests_without_engine("")
    assert local.returncode == 0
    assert "1 skipped" in local.stdout


def test_a_plain_pytest_collects_every_test_file() -> None:
    """`nox -s test` runs plain `pytest`: a test folder pytest does not walk into (its default
    norecursedirs leave out `build`, `dist`, `venv`, ...) would never run, and never fail."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
    files = {line.split("::", 1)[0] for line in collected.stdout.splitlines() if "::" in line}
    written = {str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests").rglob("test_*.py")}
    assert written - files == set()
