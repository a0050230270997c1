"""The Docker engine the builds and container tests run on (I/O edge)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import EngineError

# Relative to the project root (the checkout the task runs in).
PROVISION_SCRIPT = Path("scripts") / "provision-engine.sh"
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


def provision(root: Path) -> None:
    """Install and start engine, buildx, loopback registry and arm64 emulation where missing.

    The script leaves whatever already works alone, so this is cheap on a ready host.
    """
    script = root / PROVISION_SCRIPT
    if not script.is_file():
        raise EngineError(f"{script} is missing: run the task in a llama-images checkout")
    result = subprocess.run(["bash", str(script)], check=False)
    if result.returncode != 0:
        raise EngineError(f"{PROVISION_SCRIPT} failed (exit {result.returncode}); see its output above")


def require_builder(name: str) -> None:
    """A named buildx builder (remote BuildKit, kubernetes, docker-container) must exist and start."""
    result = subprocess.run(
        ["docker", "buildx", "inspect", "--bootstrap", name], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no answer"]
        raise EngineError(f"buildx builder '{name}' is not usable ({detail[0]}); see `docker buildx ls`")


def require_engine() -> None:
    problem = engine_problem()
    if problem is not None:
        raise EngineError(f"{problem}; run `invoke engine` (as root on Debian) or start Docker with buildx")
