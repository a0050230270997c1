"""The Docker engine the builds and container tests run on (I/O edge), and `docker`: every task
runs the docker CLI through it, so a missing CLI or a command that hangs is a typed error."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path

from ..core.errors import EngineError, LlamaImagesError

# Relative to the project root (the checkout the task runs in).
PROVISION_SCRIPT = Path("scripts") / "provision-engine.sh"
LOCAL_REGISTRY = os.environ.get("LLAMA_IMAGES_REGISTRY", "127.0.0.1:5000")


NO_DOCKER = "the docker CLI is not installed"


def docker_failure(args: Sequence[str], exc: OSError | subprocess.TimeoutExpired, timeout: float | None) -> str:
    """What went wrong running `docker ARGS`, naming only its subcommand (never its arguments)."""
    words: list[str] = []
    for word in args:
        if word.startswith("-") or len(words) == 3:
            break
        words.append(word)
    command = " ".join(["docker", *words])
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"`{command}` gave no answer within {timeout:g} seconds"
    if isinstance(exc, FileNotFoundError):
        return f"{NO_DOCKER} (`docker` is not on PATH); run `invoke engine` (as root on Debian) or install Docker"
    return f"cannot run `{command}` ({exc.strerror or type(exc).__name__})"


def docker(
    args: Sequence[str],
    error: type[LlamaImagesError],
    *,
    timeout: float | None,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` with its output captured as text. A CLI that cannot run is an EngineError (no
    usable engine); a timeout raises `error`, the calling module's own type with its exit code. A
    failing command is the caller's to judge."""
    try:
        return subprocess.run(
            ["docker", *args], input=input, check=False, capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
    except OSError as exc:
        raise EngineError(docker_failure(args, exc, timeout)) from None
    except subprocess.TimeoutExpired as exc:
        raise error(docker_failure(args, exc, timeout)) from None


def docker_stream(args: Sequence[str], *, cwd: Path) -> subprocess.Popen[str]:
    """`docker ARGS` started with stdin and stdout (stderr merged) as text pipes, for streaming;
    a CLI that cannot run is an EngineError."""
    try:
        return subprocess.Popen(
            ["docker", *args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )  # fmt: skip
    except OSError as exc:
        raise EngineError(docker_failure(args, exc, None)) from None


def engine_problem() -> str | None:
    """Why builds cannot run here, or None when `docker` reaches an engine with buildx."""
    if shutil.which("docker") is None:
        return NO_DOCKER
    try:
        info = docker(["info", "--format", "{{.ServerVersion}}"], EngineError, timeout=60)
        if info.returncode != 0:
            return "no Docker engine answers `docker info`"
        if docker(["buildx", "version"], EngineError, timeout=60).returncode != 0:
            return "the docker buildx plugin is missing"
    except EngineError as exc:
        return str(exc)
    return None


def provision(root: Path, test_tools: bool = False) -> None:
    """Install and start engine, buildx, loopback registry and arm64 emulation where missing
    (with `test_tools`, also what the tests need besides the engine: a browser).

    The script leaves whatever already works alone, so this is cheap on a ready host.
    """
    run_provision_script(root, *(["--test-tools"] if test_tools else []))


def empty_loopback_registry(root: Path) -> None:
    """Empty the loopback registry `invoke engine` started (test runs push to new namespaces
    there each time); a registry started otherwise is left alone."""
    run_provision_script(root, "--empty-registry")


def run_provision_script(root: Path, *flags: str) -> None:
    script = root / PROVISION_SCRIPT
    if not script.is_file():
        raise EngineError(f"{script} is missing: run the task in a llama-images checkout")
    result = subprocess.run(["bash", str(script), *flags], check=False)
    if result.returncode != 0:
        raise EngineError(f"{PROVISION_SCRIPT} failed (exit {result.returncode}); see its output above")


def require_builder(name: str) -> None:
    """A named buildx builder (remote BuildKit, kubernetes, docker-container) must exist and start."""
    # Starting a builder may pull BuildKit's image first.
    result = docker(["buildx", "inspect", "--bootstrap", name], EngineError, timeout=600)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no answer"]
        raise EngineError(f"buildx builder '{name}' is not usable ({detail[0]}); see `docker buildx ls`")


def require_engine() -> None:
    problem = engine_problem()
    if problem is not None:
        raise EngineError(f"{problem}; run `invoke engine` (as root on Debian) or start Docker with buildx")


# Images a test run or the benchmark builds go to namespaces starting with this (docs/building.md).
PROJECT_NAMESPACE_PREFIX = "llamaimages"


def is_project_image(reference: str, owned: Collection[str], repositories: Collection[tuple[str, str]]) -> bool:
    """Whether an image reference is one this project builds: anything under a `llamaimages*`
    namespace or an `owned` one (a test run's), and the matrix's (namespace, repository) pairs."""
    name = reference.split("@", 1)[0].rsplit(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # the registry host
    if len(parts) != 2:
        return False
    namespace, repository = parts
    if namespace.startswith(PROJECT_NAMESPACE_PREFIX) or namespace in owned:
        return True
    return (namespace, repository) in repositories


def forget_project_images(
    owned: Collection[str], repositories: Collection[tuple[str, str]], stand_in_label: str
) -> list[str]:
    """Remove every image this project built or stood in for (local upstreams, which carry
    `stand_in_label`) and the build cache, so the next build starts as on a fresh machine.
    Returns what was removed."""
    listing = docker(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], EngineError, timeout=120)
    stand_ins = docker(
        ["image", "ls", "--filter", f"label={stand_in_label}", "--format", "{{.Repository}}:{{.Tag}}"],
        EngineError,
        timeout=120,
    )
    if listing.returncode != 0 or stand_ins.returncode != 0:
        raise EngineError(f"cannot list the engine's images: {(listing.stderr + stand_ins.stderr).strip()[-300:]}")
    chosen = sorted(
        {ref for ref in stand_ins.stdout.split() if not ref.endswith(":<none>")}
        | {ref for ref in listing.stdout.split() if is_project_image(ref, owned, repositories)}
    )
    for reference in chosen:
        removed = docker(["image", "rm", "--force", reference], EngineError, timeout=300)
        if removed.returncode != 0 and "no such image" not in removed.stderr.lower():
            raise EngineError(f"cannot remove {reference}: {removed.stderr.strip()[-300:]}")
    pruned = docker(["buildx", "prune", "--all", "--force"], EngineError, timeout=1800)
    if pruned.returncode != 0:
        raise EngineError(f"cannot empty the build cache: {pruned.stderr.strip()[-300:]}")
    return chosen
