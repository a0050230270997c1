"""The first run on a machine that cannot reach the upstream's registry: `invoke build --matrix`
makes the Debian upstream itself and builds on it (issue 12: it used to stop at "cannot tell
whether debian:forky-slim is published").

The upstream's name is moved to a registry that cannot resolve (`.invalid`), and that image is
removed from the engine first, so the run meets exactly what a fresh machine meets, without
touching the `debian:forky-slim` every other test builds on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_images.edges.upstream_images import CREATED_LABEL
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE, invoke

pytestmark = pytest.mark.container

FRESH_NAMESPACE = f"{NAMESPACE}-fresh"
CPU = shipped.target("cpu", namespace=FRESH_NAMESPACE)
# The CPU image's Debian upstream (`debian:forky-slim`), under a registry that cannot be reached.
UPSTREAM = CPU.base.upstream.image
UNREACHABLE_UPSTREAM = f"llama-images-unreachable.invalid/library/{UPSTREAM}"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def unreachable_matrix(tmp_path: Path) -> Iterator[Path]:
    text = (REPO_ROOT / "matrix.yaml").read_text(encoding="utf-8")
    assert UPSTREAM.startswith("debian:"), f"the CPU image no longer builds on Debian ({UPSTREAM})"
    path = tmp_path / "matrix.yaml"
    path.write_text(text.replace(f"image: {UPSTREAM}", f"image: {UNREACHABLE_UPSTREAM}"), encoding="utf-8")
    docker("image", "rm", "--force", UNREACHABLE_UPSTREAM)
    yield path
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    built = [ref for ref in listed if f"/{FRESH_NAMESPACE}/" in ref]
    docker("image", "rm", "--force", UNREACHABLE_UPSTREAM, *built)


def test_the_first_build_makes_an_unreachable_debian_upstream_and_builds_on_it(unreachable_matrix: Path) -> None:
    assert docker("image", "inspect", UNREACHABLE_UPSTREAM).returncode != 0
    result = invoke(
        "build", "--matrix", str(unreachable_matrix), "--platform", "linux/amd64", "--namespace", FRESH_NAMESPACE
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert (
        f"upstream {UNREACHABLE_UPSTREAM}: its registry cannot be reached (ERROR: failed to do request: Head "
        f'"https://llama-images-unreachable.invalid/v2/library/{UPSTREAM.replace(":", "/manifests/")}": dial tcp: '
        "lookup llama-images-unreachable.invalid" in output
    )
    assert f"upstream {UNREACHABLE_UPSTREAM}: created locally for linux/amd64\n" in output
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", UNREACHABLE_UPSTREAM).stdout)
    assert labels[CREATED_LABEL] == "linux/amd64"
    version = docker("run", "--rm", "--entrypoint", "llama-server", CPU.image, "--version")
    assert f"build {CPU.release.removeprefix('b')}" in version.stdout + version.stderr, version.stderr
