"""A user of the reference image (Vast.ai's llama.cpp image) keeps their habits (issue 13): the
log files its docs and checks read, and the program names its docs use with supervisorctl.
(Its provisioning scripts' environment and tools: test_provisioning.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import exec_text, wait_for
from tests.container.runtime_support import TOKEN, bearer, program_states, request, wait_answering, wait_running
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

PROGRAMS_WITH_LOGS = ("proxy", "portal", "jupyter", "llama")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_llama_gguf(directory / "tiny.gguf")
    return directory


def exists(container: Any, path: str, test: str = "-f") -> Callable[[], bool]:
    return lambda: exec_text(container, "test", test, path)[0] == 0


def size(container: Any, path: str) -> int:
    code, text = exec_text(container, "stat", "-c", "%s", path)
    assert code == 0, f"{path}: {text}"
    return int(text)


def test_var_log_llama_log_grows_while_llama_server_runs(run_container: Callable[..., Any], models: Path) -> None:
    """What a user met: only /var/log/supervisor/<program>.log. The reference's places: the raw log
    in /var/log/portal/<program>.log, a clean copy (no progress-bar redraws, no colours) in
    /var/log/<program>.log; `docker logs` and the portal's tail go on working."""
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
    )
    wait_answering(container, 8000, "/health")
    wait_running(container, *PROGRAMS_WITH_LOGS)
    for program in PROGRAMS_WITH_LOGS:  # the portal logs only warnings: its files may be empty
        wait_for(exists(container, f"/var/log/{program}.log"), 30, f"no /var/log/{program}.log", container)
        assert exists(container, f"/var/log/portal/{program}.log")(), program
    for program in ("proxy", "llama", "jupyter"):
        wait_for(exists(container, f"/var/log/{program}.log", "-s"), 30, f"/var/log/{program}.log is empty", container)
    before = size(container, "/var/log/llama.log")
    body = b'{"prompt": "Hello", "n_predict": 4}'
    for _ in range(3):
        assert request(container, 8000, "/completion", method="POST", headers=bearer(), body=body).status == 200
    wait_for(lambda: size(container, "/var/log/llama.log") > before, 10, "/var/log/llama.log did not grow", container)
    clean = exec_text(container, "cat", "/var/log/llama.log")[1]
    assert "[llama] starting llama-server" in clean
    assert "\r" not in clean and "\x1b" not in clean
    assert "llama | [llama] starting llama-server" in container.logs().decode()
    tail = request(container, 1111, "/api/services/llama/log", headers=bearer()).json()["text"]
    assert "[llama] starting llama-server" in tail


def test_under_a_read_only_root_the_logs_live_in_run(run_container: Callable[..., Any], tmp_path: Path) -> None:
    container = run_container(
        read_only=True,
        tmpfs={"/run": "", "/tmp": ""},
        volumes={str(tmp_path): {"bind": "/workspace", "mode": "rw"}},
        environment={"OPEN_BUTTON_TOKEN": TOKEN},
    )
    wait_answering(container, 1111, "/api/health")
    base = "/run/llama-images/log"
    assert exists(container, f"{base}/portal/proxy.log")()
    wait_for(exists(container, f"{base}/proxy.log", "-s"), 30, "no clean copy of the proxy's log", container)
    assert exists(container, f"{base}/portal.log")()
    assert "proxy | [proxy]" in container.logs().decode()
    assert "cannot write the clean copy" not in container.logs().decode()


def pid(container: Any, program: str) -> str:
    return exec_text(container, "supervisorctl", "pid", program)[1].strip()


def test_supervisorctl_takes_the_reference_program_names(run_container: Callable[..., Any]) -> None:
    """What a user met: `supervisorctl restart caddy` and `... instance_portal` answered "no such
    process". Both names work; ours (proxy, portal) too."""
    container = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN})
    wait_answering(container, 1111, "/api/health")
    wait_running(container, "proxy", "portal")
    for reference, ours in (("caddy", "proxy"), ("instance_portal", "portal")):
        code, text = exec_text(container, "supervisorctl", "status", reference)
        assert code == 0 and text.split()[:2] == [ours, "RUNNING"], text
        for name in (reference, ours):
            before = pid(container, ours)
            code, text = exec_text(container, "supervisorctl", "restart", name)
            assert code == 0 and f"{ours}: started" in text, text
            assert pid(container, ours) != before
            wait_running(container, ours)
            wait_answering(container, 1111, "/api/health")
        assert exec_text(container, "supervisorctl", "tail", reference)[0] == 0
    assert exec_text(container, "supervisorctl", "restart", "caddy:*")[0] == 0
    wait_running(container, "proxy")
    code, text = exec_text(container, "supervisorctl", "restart", "no_such_program")
    assert code != 0 and "no such process" in text.lower()
    time.sleep(1)
    assert program_states(container)["proxy"] == "RUNNING"
    assert exec_text(container, "/opt/llama-images/bin/llama-runtime", "healthcheck") == (0, "healthy\n")
