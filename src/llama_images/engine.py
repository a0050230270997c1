"""The Docker engine the builds and container tests run on (I/O edge)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import EngineError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVISION_SCRIPT = REPO_ROOT / "scripts" / "provision-engine.sh"
LOCAL_REGISTRY = os.environ.get("LLAMA_IMAGES_REGISTRY", "127.0.0.1:5000")


def engine_problem() -> str | None:
    """Why builds cannot run here, or None when `docker` reaches an engine with buildx."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, capture_output=True)
    if info.returncode != 0:
        return "no Docker engine answers `docker info`"
    buildx = subprocess.run(["docker", "buildx", "version"], check=False, capture_output=True)
    if buildx.returncode != 0:
        return "the docker buildx plugin is missing"
    return None


def provision() -> None:
    """Install and start engine, buildx, loopback registry and arm64 emulation where missing.

    The script leaves whatever already works alone, so this is cheap on a ready host.
    """
    result = subprocess.run(["bash", str(PROVISION_SCRIPT)], check=False)
    if result.returncode != 0:
        raise EngineError(
            f"{PROVISION_SCRIPT.relative_to(REPO_ROOT)} failed (exit {result.returncode}); see its output above"
        )


def require_engine() -> None:
    problem = engine_problem()
    if problem is not None:
        raise EngineError(f"{problem}; run `invoke engine` (as root on Debian) or start Docker with buildx")
