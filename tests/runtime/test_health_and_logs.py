"""The HEALTHCHECK's decision and the portal's log rendering (pure parts)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llama_runtime.health import problems, waiting_for
from llama_runtime.logs import render_progress, tail
from llama_runtime.services import Service

LLAMA = Service("llama", "llama.cpp server", 8000, 18000, program="llama", essential=True)
JUPYTER = Service("jupyter", "Jupyter", 8080, 18080, program="jupyter")


def running(*names: str, **states: str) -> dict[str, dict[str, str]]:
    found = {name: {"statename": "RUNNING"} for name in names}
    found.update({name: {"statename": state} for name, state in states.items()})
    return found


def test_healthy_when_the_proxy_and_essential_services_answer(tmp_path: Path) -> None:
    assert problems((LLAMA, JUPYTER), running("proxy", "llama"), lambda h, p: True, tmp_path) == []


def test_unhealthy_when_the_proxy_is_down(tmp_path: Path) -> None:
    assert problems((LLAMA,), running("llama", proxy="FATAL"), lambda h, p: True, tmp_path) == ["proxy is FATAL"]
    assert problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 8000, tmp_path) == [
        "proxy does not answer on port 8000"
    ]


def test_an_essential_service_fatal_or_silent_is_unhealthy_unless_it_says_it_is_starting(tmp_path: Path) -> None:
    assert problems((LLAMA,), running("proxy", llama="FATAL"), lambda h, p: True, tmp_path) == [
        "llama: program llama is FATAL"
    ]
    silent = problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 18000, tmp_path)
    assert silent == ["llama: RUNNING but port 18000 does not answer"]
    (tmp_path / "llama").write_text("downloading 42%\n")
    assert problems((LLAMA,), running("proxy", "llama"), lambda h, p: p != 18000, tmp_path) == []
    # Stopped on purpose (no model) is not a failure; a non-essential FATAL neither.
    assert (
        problems((LLAMA, JUPYTER), running("proxy", llama="EXITED", jupyter="FATAL"), lambda h, p: True, tmp_path) == []
    )


def test_carriage_return_progress_renders_as_its_last_state(tmp_path: Path) -> None:
    assert render_progress("start\n 10%\r 50%\r100%\ndone") == "start\n100%\ndone"
    log = tmp_path / "x.log"
    log.write_bytes(b"a" * 100 + b"\nline\n 1%\r 2%\r")
    assert tail(log, max_bytes=20) == "line\n 2%"


PORTAL = Service("portal", "Instance Portal", 1111, 11111, program="portal", essential=True)


def test_jupyter_waits_for_essential_services_that_are_still_coming_up() -> None:
    asked: list[bool] = []

    def programs(**states: str) -> Callable[[], dict[str, dict[str, str]]]:
        def read() -> dict[str, dict[str, str]]:
            asked.append(True)
            return running("proxy", "llama", "portal", **states)

        return read

    services = (LLAMA, PORTAL, JUPYTER)
    assert waiting_for(services, lambda h, p: True, programs()) == []
    assert asked == []  # every port answers: Supervisor is not asked
    assert waiting_for(services, lambda h, p: p != 18000, programs()) == [LLAMA]
    assert waiting_for(services, lambda h, p: False, programs()) == [LLAMA, PORTAL]
    # A program that gave up or ended (no model configured) is not waited for; Jupyter never is.
    for state in ("FATAL", "EXITED", "STOPPED"):
        assert waiting_for(services, lambda h, p: p != 18000, programs(llama=state)) == []
    assert waiting_for(services, lambda h, p: p != 18000, programs(llama="BACKOFF")) == [LLAMA]
    # The portal waits for the others, not for itself.
    assert waiting_for(services, lambda h, p: False, programs(), exclude="portal") == [LLAMA]
