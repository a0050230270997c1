"""Two checkouts, one virtualenv: each `invoke build` builds its own checkout's files and labels
its own revision (the package installed from the first checkout decides nothing about paths)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE

pytestmark = pytest.mark.container


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_a_second_checkout_builds_its_own_files_and_revision(main_build: Any, client: Any, tmp_path: Path) -> None:
    assert main_build.returncode == 0, main_build.stdout[-3000:]
    second = tmp_path / "second"
    git("clone", "--quiet", "--no-checkout", str(REPO_ROOT), str(second), cwd=tmp_path)
    git("checkout", "--quiet", git("rev-parse", "HEAD", cwd=REPO_ROOT), cwd=second)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "--quiet", "--allow-empty", "-m", "second",
        cwd=second)  # fmt: skip
    (second / "notes.txt").write_text("uncommitted\n", encoding="utf-8")
    namespace = f"{NAMESPACE}-second"

    def build() -> subprocess.CompletedProcess[str]:
        # The same interpreter (one virtualenv, the package installed from the first checkout).
        return subprocess.run(
            [sys.executable, "-m", "invoke", "build", "--filter", "cpu/*", "--platform", "linux/amd64",
             "--namespace", namespace],
            cwd=second, capture_output=True, text=True, check=False, timeout=1800,
        )  # fmt: skip

    built = build()
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    cpu = shipped.target("cpu", namespace=namespace)
    image = cpu.image
    try:
        labels = client.images.get(image).attrs["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == git("rev-parse", "HEAD", cwd=second) + "-dirty"
    finally:
        client.images.remove(image, force=True)
        client.images.remove(cpu.base.image, force=True)
    dockerfile = second / "base-image" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text(encoding="utf-8") + "RUN false\n", encoding="utf-8")
    broken = build()
    assert broken.returncode == 4, broken.stdout[-3000:] + broken.stderr[-3000:]
    assert "build failed for" in broken.stderr
    assert "RUN false" in broken.stdout  # the second checkout's own Dockerfile was built
