"""Helpers for the llama-server container tests (their fixtures are in conftest.py): the CPU
image started with env vars, Supervisor's view of program `llama`, llama-server inside it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from llama_serving import paths as llama_paths

from tests.container.conftest import CPU_IMAGE, declared_services, exec_text, wait_for
from tests.container.runtime_support import program_states
from tests.support.tiny_gguf import write_tiny_llama_gguf

# llama-server's port as declared (llama.toml), and its status line, where the base runtime keeps them.
INTERNAL_PORT = next(s.internal_port for s in declared_services() if s.name == "llama")
STATUS_FILE = str(llama_paths.STATUS_FILE)
# Left by the launcher when it gives up; its start script removes it.
GAVE_UP = str(llama_paths.GAVE_UP_FILE)
# Short retry timings for tests that wait for FATAL; the production defaults are tested on their own.
FAST_RETRIES = {"LLAMA_RETRY_DELAY": "1"}


@dataclass
class Llama:
    """One running container of the CPU image."""

    container: Any
    started: float = field(default_factory=time.monotonic)

    def log(self) -> str:
        text: str = self.container.logs().decode(errors="replace")
        return text

    def llama_log(self) -> str:
        """Program llama's own log (Supervisor's file of it; `docker logs` gets a copy a little later)."""
        code, text = self.exec("supervisorctl", "tail", "-10000000", "llama")
        return text if code == 0 else ""

    def wait_logged(self, text: str, seconds: float = 30) -> None:
        """Until `docker logs` shows `text` (the base runtime forwards program logs there)."""
        self.wait(lambda: text in self.log(), seconds, f"{text!r} not in docker logs")

    def exec(self, *command: str) -> tuple[int, str]:
        return exec_text(self.container, *command)

    def sh(self, script: str) -> tuple[int, str]:
        return self.exec("bash", "-c", script)

    def state(self) -> str:
        """Supervisor's state of program llama (RUNNING, FATAL, EXITED, ...), "" before it answers."""
        return program_states(self.container).get("llama", "")

    def status_line(self) -> str:
        code, output = self.exec("cat", STATUS_FILE)
        return output.strip() if code == 0 else ""

    def curl(self, path: str, *options: str, port: int = INTERNAL_PORT) -> tuple[int, str]:
        """curl inside the container to llama-server: (HTTP status, or 0 without an answer; body)."""
        url = f"http://127.0.0.1:{port}{path}"
        code, output = self.exec("curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", *options, url)
        body, _, status = output.rpartition("\n")
        return (int(status) if code == 0 and status.isdigit() else 0), body

    def post(self, path: str, payload: Mapping[str, Any], *options: str, port: int = INTERNAL_PORT) -> tuple[int, str]:
        return self.curl(path, "-H", "Content-Type: application/json", "-d", json.dumps(payload), *options, port=port)

    def wait(self, check: Callable[[], bool], seconds: float, what: str) -> None:
        """wait_for, failing with Supervisor's state, the status line and program llama's log."""
        try:
            wait_for(check, seconds, what, self.container)
            return
        except pytest.fail.Exception:
            pass
        state, status = self.state(), self.status_line()
        log = self.llama_log() or self.log()
        pytest.fail(f"{what} within {seconds} s; state {state!r}, status {status!r}; log:\n{log[-4000:]}")

    def wait_healthy(self, seconds: float = 60, port: int = INTERNAL_PORT) -> None:
        healthy = (200, '{"status":"ok"}')
        self.wait(lambda: self.curl("/health", port=port) == healthy, seconds, "llama-server not healthy")

    def wait_state(self, state: str, seconds: float) -> None:
        self.wait(lambda: self.state() == state, seconds, f"program llama not {state}")

    def wait_status(self, line: str, seconds: float = 30) -> None:
        self.wait(lambda: self.status_line() == line, seconds, f"status line not {line!r}")

    def portal_row(self) -> dict[str, Any]:
        """What the Instance Portal's API says about llama (asked on the portal's internal port)."""
        code, body = self.exec("curl", "-fsS", "--max-time", "10", "http://127.0.0.1:11111/api/services")
        if code != 0:
            return {}
        rows = [row for row in json.loads(body)["services"] if row["name"] == "llama"]
        return rows[0] if rows else {}

    def starts(self) -> int:
        """How many times the launcher started llama-server."""
        return self.llama_log().count("[llama] starting llama-server")

    def failed_attempts(self) -> list[str]:
        return re.findall(r"^\[llama\] attempt \d+/\d+ failed: .*", self.llama_log(), re.MULTILINE)

    def llama_server_pid(self) -> int | None:
        code, output = self.exec("cat", str(llama_paths.PID_FILE))
        return int(output) if code == 0 and output.strip().isdigit() else None


def run_image(client: Any, env: Mapping[str, str], volumes: Mapping[str, str] | None = None, rw: bool = False) -> Llama:
    """Start a container of the CPU image (for fixtures that start several at once)."""
    mode = "rw" if rw else "ro"
    binds = {host: {"bind": path, "mode": mode} for host, path in (volumes or {}).items()}
    return Llama(client.containers.run(CPU_IMAGE, detach=True, environment=dict(env), volumes=binds))


@dataclass(frozen=True)
class Models:
    """Test models in one host directory, mounted at /models."""

    dir: Path

    @staticmethod
    def path(name: str) -> str:
        return f"/models/{name}"

    @property
    def volumes(self) -> dict[str, str]:
        return {str(self.dir): "/models"}


def make_models(root: Path) -> Models:
    root.mkdir(parents=True, exist_ok=True)
    tiny = write_tiny_llama_gguf(root / "tiny.gguf")
    write_tiny_llama_gguf(root / "alpha.gguf", seed=1)
    write_tiny_llama_gguf(root / "beta.gguf", seed=2)
    data = tiny.read_bytes()
    (root / "truncated.gguf").write_bytes(data[: len(data) // 3])
    (root / "text.gguf").write_text("this is not a model\n", encoding="utf-8")
    (root / "directory.gguf").mkdir(exist_ok=True)
    return Models(root)


def bridge_gateway(client: Any) -> str:
    """The host's address on Docker's default bridge: containers reach host servers bound to it."""
    network = client.networks.get("bridge")
    gateway: str = network.attrs["IPAM"]["Config"][0]["Gateway"]
    return gateway


def model_ids(body: str) -> list[str]:
    return [entry["id"] for entry in json.loads(body)["data"]]
