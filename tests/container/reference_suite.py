"""The reference image's own in-instance tests, run unmodified in one of our containers.

They come from a clone of vast-ai/base-image (bare is enough; LLAMA_IMAGES_REFERENCE_MIRROR, default
/work/.mirror/vast-ai+base-image/repo): `git archive` extracts ROOT/opt/instance-tools/tests (its
runner, lib.sh and base/*.sh) and its llama.cpp image's llama.d into a temporary directory at test
time, which a container mounts read-only; each script then runs with bash inside the container,
as the suite's README says: exit 0 passes, 77 skips, anything else fails. The clone is a test
input, never part of this repository. Without it the tests skip, saying where to get it; under CI
(CI=true) they fail instead, so they never pass by being skipped.

Shared by every container test that runs the reference's suite (this image's, the serverless one's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MIRROR_VARIABLE = "LLAMA_IMAGES_REFERENCE_MIRROR"
DEFAULT_MIRROR = Path("/work/.mirror/vast-ai+base-image/repo")
SUITE = "ROOT/opt/instance-tools/tests"
LLAMA_SUITE = "derivatives/llama-cpp/ROOT/opt/instance-tools/tests/llama.d"
EXAMPLES = "ROOT/opt/instance-tools/lib/provisioner/examples"
MOUNT = "/opt/reference-tests"  # where a container sees the suite
# The reference's own PORTAL_CONFIG for its llama.cpp image (its boot step 05-llama-env.sh).
PORTAL_CONFIG = (
    "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/:Llama.cpp UI|"
    "localhost:8080:18080:/:Jupyter|localhost:8080:8080:/terminals/1:Jupyter Terminal"
)
PASSED, SKIPPED = 0, 77
TIMED_OUT = 124


def mirror() -> Path:
    return Path(os.environ.get(MIRROR_VARIABLE) or DEFAULT_MIRROR)


def require_mirror() -> Path:
    """The clone, or a skip saying how to get one (a failure under CI)."""
    path = mirror()
    found = subprocess.run(["git", "--git-dir", str(path), "rev-parse", "--verify", "HEAD^{commit}"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if found.returncode == 0:
        return path
    message = (
        f"the reference image's repository is not at {path}: clone it (`git clone --bare "
        f"https://github.com/vast-ai/base-image {path}`) or set {MIRROR_VARIABLE} to a clone"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def read(path: Path, name: str) -> str:
    """One file of the clone's HEAD (an example manifest, say)."""
    return subprocess.run(["git", "--git-dir", str(path), "show", f"HEAD:{name}"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def example(path: Path, name: str) -> str:
    """A provisioner example from the reference (minimal, gated-models, full-reference, ...)."""
    return read(path, f"{EXAMPLES}/{name}.yaml")


def extract(path: Path, target: Path) -> Path:
    """The suite, with llama.d beside base/, in `target` (a directory to mount at MOUNT)."""
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", str(path), "archive", "HEAD", SUITE, LLAMA_SUITE],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    suite = target / SUITE
    shutil.move(str(target / LLAMA_SUITE), str(suite / "llama.d"))
    return suite


def mounted(suite: Path) -> dict[str, dict[str, str]]:
    """docker-py's `volumes` for the suite."""
    return {str(suite): {"bind": MOUNT, "mode": "ro"}}


@dataclass(frozen=True)
class Outcome:
    name: str
    status: int
    output: str

    @property
    def failures(self) -> list[str]:
        """The labels of lib.sh's fail_later checks that failed (`  FAIL: <label>: ...`)."""
        return re.findall(r"^  FAIL: ([^:]+):", self.output, re.M)

    def __str__(self) -> str:
        kind = {PASSED: "passed", SKIPPED: "skipped", TIMED_OUT: "timed out"}.get(self.status, "failed")
        return f"{self.name} {kind} (exit {self.status}):\n{self.output}"


def run(container: Any, name: str, timeout: int = 600, env: dict[str, str] | None = None) -> Outcome:
    """One of the suite's scripts (`base/20-portal`) with bash in the container, as root."""
    command = ["timeout", str(timeout), "bash", f"{MOUNT}/{name}.sh"]
    status, output = container.exec_run(command, environment={"TEST_NAME": name, **(env or {})})
    return Outcome(name, status, output.decode(errors="replace"))
