"""The launcher's children (llama_serving.child), as aria2 and llama-server are run: their output
copied line by line, a child that stops moving ended with the cause, a stop that ends even a child
ignoring SIGTERM before Supervisor's own kill."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from llama_serving import gpu, service, status
from llama_serving.child import Child, Stall
from llama_serving.config import make_plan

from tests.llama_serving.stand_in import stand_in_server

IGNORES_SIGTERM = "trap '' TERM; echo ready; exec sleep 60"  # the ignored signal outlives exec


def test_a_childs_output_reaches_its_sink_line_by_line_the_unfinished_last_line_too() -> None:
    lines: list[str] = []
    child = Child.start(["sh", "-c", "printf 'one\\ntwo\\n'; printf 'three' >&2"], lines.append)
    assert child.finish() == 0
    assert lines == ["one", "two", "three"]


def test_a_child_that_stops_moving_is_ended_gently_with_the_cause() -> None:
    stall = Stall(0.5)
    child = Child.start(["sleep", "60"], lambda line: None)
    cause = child.supervise(
        threading.Event(),
        lambda: "no progress for 0.5 s" if stall.stalled() else "",
        stop_grace=lambda: 5.0,
        stall_grace=5.0,
    )
    assert cause == "no progress for 0.5 s"
    assert child.finish() == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_once_its_grace_is_over() -> None:
    ready = threading.Event()
    child = Child.start(["sh", "-c", IGNORES_SIGTERM], lambda line: ready.set() if line == "ready" else None)
    assert ready.wait(10)
    child.end(0.5)
    assert child.finish() == -signal.SIGKILL


def test_a_stop_ends_llama_server_before_supervisor_would_kill_it_even_when_it_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`supervisorctl stop llama`: the launcher ends llama-server (SIGTERM, SIGKILL after
    STOP_GRACE_SECONDS) and says "stopped", within llama.conf's stopwaitsecs."""
    found, model = stand_in_server(tmp_path, f"echo started > '{tmp_path}/started'\n{IGNORES_SIGTERM}", monkeypatch)
    monkeypatch.setattr(gpu, "check", lambda env, log: gpu.Check())
    env = {**found, "LLAMA_CACHE": str(tmp_path / "cache")}
    made = make_plan({**env, "LLAMA_MODEL": str(model)}, 18999)
    assert made is not None

    statuses: list[str] = []

    class Recording(service.Runner):
        def status(self, said: str | status.Download) -> None:
            statuses.append(said.line if isinstance(said, status.Download) else said)

    runner = Recording(made, env)
    gave_up: list[str | None] = []
    running = threading.Thread(target=lambda: gave_up.append(runner.run()), daemon=True)
    running.start()
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # past the trap
    assert (tmp_path / "started").exists()
    runner.stop(signal.SIGTERM, None)
    running.join(timeout=service.STOP_GRACE_SECONDS + 1.5)  # llama.conf's stopwaitsecs: 5
    assert not running.is_alive() and gave_up == [None]
    assert statuses[-1] == "stopped"
    assert not (tmp_path / "pid").exists()
