"""Acceptance for a user coming from the reference image (issue 27): its own in-instance tests
pass unmodified in our CPU image's container, started with its llama.cpp image's PORTAL_CONFIG.
docs/migrating.md lists all 28 and why the others cannot run here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container import reference_suite
from tests.container.conftest import CPU_IMAGE, exec_text, loopback_ports, wait_for
from tests.container.runtime_support import TOKEN, wait_answering
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

ACCEPTED = [
    "base/15-boot-markers",
    "base/20-portal",
    "base/30-networking",
    "base/40-users-permissions",
    "base/55-environment",
    "base/65-conditional-services",
    "base/67-service-functionality",
    "base/70-logging",
    "base/75-cron",
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_suite.extract(reference_suite.require_mirror(), tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def container(main_build: Any, client: Any, suite: Path) -> Iterator[Any]:
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    started = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"PORTAL_CONFIG": reference_suite.PORTAL_CONFIG, "OPEN_BUTTON_TOKEN": TOKEN},
        volumes=reference_suite.mounted(suite),
        ports=loopback_ports(),
    )
    try:
        wait_answering(started, 1111, "/api/health")
        wait_for(
            lambda: exec_text(started, "cat", "/run/llama-images/boot/provisioning")[1].strip() == "not configured",
            60,
            "provisioning did not finish",
            started,
        )
        yield started
    finally:
        started.remove(force=True)


@pytest.mark.parametrize("name", ACCEPTED)
def test_the_reference_s_own_test_passes_unmodified(container: Any, name: str) -> None:
    outcome = reference_suite.run(container, name)
    assert outcome.status == reference_suite.PASSED, str(outcome)


def test_the_reference_s_provisioner_self_test_passes_where_it_tests_the_manifest_format(container: Any) -> None:
    """base/13 runs the `provisioner` command with a scrubbed environment: --help, a dry run that
    plans one download of each class, a real download from a loopback server, a service registered
    with Supervisor that reaches RUNNING. Its one other check asks for the reference's own venv and
    its `hf` CLI (/opt/instance-tools/provisioner/venv/bin/hf): this image downloads otherwise."""
    outcome = reference_suite.run(container, "base/13-provisioner-selftest")
    assert outcome.failures == ["hf-cli-missing"], str(outcome)
    for line in (
        "provisioner --help: ok",
        "--dry-run planned 3 download(s) across hf-file, hf-repo and generic",
        "end-to-end download: 4096 bytes, content verified",
        "registered a real service and it reached RUNNING",
    ):
        assert line in outcome.output, str(outcome)


def test_the_reference_s_llama_cpp_test_passes_with_a_model(
    main_build: Any, client: Any, suite: Path, tmp_path: Path
) -> None:
    """llama.d/10: llama-server healthy on 18000, its model listed, a completion through it."""
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    tmp_path.chmod(0o755)
    started = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={
            "PORTAL_CONFIG": reference_suite.PORTAL_CONFIG,
            "OPEN_BUTTON_TOKEN": TOKEN,
            "LLAMA_MODEL": "/models/tiny.gguf",
        },
        volumes={**reference_suite.mounted(suite), str(tmp_path): {"bind": "/models", "mode": "ro"}},
    )
    try:
        outcome = reference_suite.run(started, "llama.d/10-llama-serving", env={"LLAMA_MODEL": "/models/tiny.gguf"})
        assert outcome.status == reference_suite.PASSED, str(outcome)
    finally:
        started.remove(force=True)
