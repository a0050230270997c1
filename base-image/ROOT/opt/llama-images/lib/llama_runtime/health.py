"""The container's HEALTHCHECK: unhealthy when the proxy is down (not RUNNING, or an external
port not answering; unless serverless mode stops it) or an essential service is FATAL, or
RUNNING with its port down while it has not said (status line) that it is still starting."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import paths
from .services import Service

PROXY_PROGRAM = "proxy"


def port_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def still_starting(service: Service, status_dir: Path) -> bool:
    try:
        line = (status_dir / service.name).read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return bool(line) and not line.startswith("failed")


def problems(
    services: tuple[Service, ...],
    programs: Mapping[str, Mapping[str, Any]],
    answers: Callable[[str, int], bool] = port_answers,
    status_dir: Path = paths.STATUS_DIR,
    proxy_expected: bool = True,
) -> list[str]:
    """What makes the container unhealthy; empty when healthy. `proxy_expected`: False where
    serverless mode stops the proxy."""
    found = []
    proxy = programs.get(PROXY_PROGRAM, {}).get("statename", "missing")
    if not proxy_expected:
        pass
    elif proxy != "RUNNING":
        found.append(f"proxy is {proxy}")
    else:
        for service in services:
            if service.published and not answers("127.0.0.1", service.external_port):
                found.append(f"proxy does not answer on port {service.external_port}")
    for service in services:
        if not (service.essential and service.enabled and service.program):
            continue
        state = programs.get(service.program, {}).get("statename", "missing")
        if state == "FATAL":
            found.append(f"{service.name}: program {service.program} is FATAL")
        elif (
            state == "RUNNING"
            and not answers(service.host, service.internal_port)
            and not still_starting(service, status_dir)
        ):
            found.append(f"{service.name}: RUNNING but port {service.internal_port} does not answer")
    return found


# Supervisor states of a program that is still trying to come up (or is up).
TRYING = frozenset({"STARTING", "RUNNING", "BACKOFF"})
# How long the portal and the log copier let the essential services start first, at most.
API_FIRST_SECONDS = 3.0


def waiting_for(
    services: tuple[Service, ...],
    answers: Callable[[str, int], bool],
    programs: Callable[[], Mapping[str, Mapping[str, Any]]],
    exclude: str | None = None,
) -> list[Service]:
    """The enabled essential services (but `exclude`) whose internal port does not answer yet
    while their program is still trying (a program that stopped, exited or is FATAL is not
    waited for; Supervisor is asked only when some port is silent)."""
    silent = [
        s for s in services if s.essential and s.enabled and s.name != exclude and not answers(s.host, s.internal_port)
    ]
    if not silent:
        return []
    states = programs()
    return [s for s in silent if states.get(s.program or "", {}).get("statename", "RUNNING") in TRYING]


def wait_for_essential(timeout: float, exclude: str | None = None, poll: float = 0.2) -> None:
    """Block until `waiting_for` is empty, at most `timeout` seconds. The API first: programs
    that are not on its path (the portal, the log copier, JupyterLab) start after llama-server
    answers instead of against it for the CPU (docs/benchmarks.md, boot to healthy)."""
    import os
    import time

    from . import supervisor
    from .services import load_services

    deadline = time.monotonic() + timeout
    services = load_services(environ=os.environ).services

    def answers(host: str, port: int) -> bool:
        return port_answers(host, port, timeout=poll)

    while waiting_for(services, answers, supervisor.states_or_empty, exclude) and time.monotonic() < deadline:
        time.sleep(poll)
