"""Fixtures of the llama-server container tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import pytest

from tests.container.conftest import CPU_IMAGE
from tests.container.llama.support import Llama, Models, bridge_gateway, make_models
from tests.support.fake_hf_hub import FakeHub


@pytest.fixture
def start_llama(main_build: Any, client: Any) -> Iterator[Callable[..., Llama]]:
    """start_llama(env={...}, volumes={host_dir: container_dir}, read_only=True, **docker_run_kwargs),
    on the image the README's build made (a test run alone builds it too)."""
    assert main_build.returncode == 0, main_build.stdout[-3000:]
    started: list[Any] = []

    def start(
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, str] | None = None,
        read_only: bool = True,
        **kwargs: Any,
    ) -> Llama:
        mode = "ro" if read_only else "rw"
        container = client.containers.run(
            CPU_IMAGE,
            detach=True,
            environment=dict(env or {}),
            volumes={host: {"bind": path, "mode": mode} for host, path in (volumes or {}).items()},
            **kwargs,
        )
        started.append(container)
        return Llama(container)

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def hub(client: Any) -> Iterator[FakeHub]:
    """A fake Hugging Face hub the containers reach at hub.url (HF_ENDPOINT); add repos to it."""
    with FakeHub(bridge_gateway(client)) as fake:
        yield fake
