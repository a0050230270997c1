"""Running the docker CLI (engine.docker): a missing CLI or a command that hangs becomes the
calling module's typed error with its exit code, naming the subcommand but never its arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_images.core.errors import EngineError, RegistryError
from llama_images.edges import buildx, engine, registry


@pytest.fixture
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)


@pytest.mark.usefixtures("no_docker")
def test_without_the_cli_every_docker_call_is_an_engine_error() -> None:
    calls = (
        lambda: registry.tag_exists("docker.io/someone/llama-cpp:b1-cpu"),
        lambda: registry.create_tag("docker.io/someone/llama-cpp:b1-cpu", ["docker.io/someone/llama-cpp@sha256:1"]),
        lambda: engine.require_builder("farm"),
        lambda: buildx.driver(None),
        lambda: buildx.print_bake({"target": {}}, Path.cwd()),
        lambda: buildx.run_bake({"target": {}}, Path.cwd(), load=True, push=False, names={}),
    )
    for call in calls:
        with pytest.raises(EngineError, match="the docker CLI is not installed") as caught:
            call()
        assert caught.value.exit_code == 5
    assert engine.engine_problem() == "the docker CLI is not installed"


def test_a_hanging_docker_is_the_callers_error_without_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nsleep 5\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(RegistryError) as caught:
        engine.docker(["login", "--username", "someone", "--password-stdin", "docker.io"], RegistryError,
                      timeout=0.5, input="hunter2")  # fmt: skip
    assert str(caught.value) == "`docker login` gave no answer within 0.5 seconds"
    assert caught.value.exit_code == 7


PREFIX = engine.PROJECT_NAMESPACE_PREFIX


@pytest.mark.parametrize(
    ("reference", "ours"),
    [
        (f"docker.io/{PREFIX}/llama-cpp:b1-cpu", True),  # under the project's prefix, in any registry
        (f"{PREFIX}-bench/base-packages:run", True),
        (f"docker.io/{PREFIX}-fresh/llama-cpp:b1-cpu", True),
        (f"127.0.0.1:5000/{PREFIX}/llama-cpp:b1-cpu", True),
        ("docker.io/ci-run/cuda-stage-test:ok", True),  # the test run's own namespace
        ("docker.io/someone/llama-cpp:b1-cpu", True),  # the matrix's namespace and repository
        ("docker.io/someone/other:1", False),  # that namespace's other images are the owner's
        ("debian:forky-slim", False),  # a stand-in is recognised by its label, a pulled one is kept
        ("nvidia/cuda:12.9.1-runtime-ubuntu24.04", False),
        ("registry:2", False),
    ],
)
def test_clean_removes_only_what_this_project_built(reference: str, ours: bool) -> None:
    assert engine.is_project_image(reference, {"ci-run"}, {("someone", "llama-cpp")}) is ours
