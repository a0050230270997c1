"""Where the log files go and how big they get (issue 28): /var/log by default, the workspace
only when LOGS_ON_WORKSPACE asks, boot.log moved aside past its cap at the next boot. (What a
sustained load writes to `docker logs` and the files is tests/container/llama/test_soak.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.container.llama.support import Llama, Models

pytestmark = pytest.mark.container


def files(llama: Llama, folder: str) -> set[str]:
    code, listed = llama.sh(f"cd {folder} 2>/dev/null && find . -type f | sort")
    return {line.removeprefix("./") for line in listed.split()} if code == 0 else set()


def test_logs_stay_off_the_workspace_unless_asked(
    start_llama: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    volumes = {**models.volumes, str(workspace): "/workspace"}
    default = start_llama({"LLAMA_MODEL": models.path("tiny.gguf")}, volumes, read_only=False)
    default.wait_healthy()
    default.wait(lambda: "portal/llama.detail.log" in files(default, "/var/log"), 30, "no detail log")
    assert not (workspace / "logs").exists()
    asked = start_llama(
        {"LLAMA_MODEL": models.path("tiny.gguf"), "LOGS_ON_WORKSPACE": "true"}, volumes, read_only=False
    )
    asked.wait_healthy()
    # Each program's log appears with its first line: wait for them all, not only the first one.
    expected = {"boot.log", "portal/llama.log", "llama.log", "portal/proxy.log", "portal/llama.detail.log"}
    asked.wait(lambda: expected <= files(asked, "/workspace/logs"), 60, f"not all of {sorted(expected)} on the volume")
    assert not {"boot.log", "portal/llama.log", "llama.log"} & files(asked, "/var/log")
    assert "logs in /workspace/logs" in asked.log()


def test_a_boot_log_past_its_cap_is_moved_aside_at_the_next_boot(
    start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama({"LLAMA_MODEL": models.path("tiny.gguf")}, models.volumes)
    llama.wait_healthy()
    code, _ = llama.sh("truncate -s 2M /var/log/boot.log")
    assert code == 0
    llama.container.restart(timeout=10)
    llama.wait_healthy()
    code, sizes = llama.sh("stat -c '%n %s' /var/log/boot.log /var/log/boot.log.1")
    assert code == 0, sizes
    size = dict(line.rsplit(" ", 1) for line in sizes.splitlines())
    assert int(size["/var/log/boot.log.1"]) == 2 * 1024 * 1024
    assert 0 < int(size["/var/log/boot.log"]) < 64 * 1024
