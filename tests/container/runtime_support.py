"""Helpers for container tests that talk to the image as a user does: through the proxy on the
external ports, published by Docker on loopback ports it picks."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tests.container.conftest import declared_services, exec_text, wait_for

TOKEN = "test-token-0123456789"
# External port -> the path that answers 200 once its service is ready, as declared: the services
# the proxy publishes (in the usual mode: every one but the serverless worker).
READY_PATHS = {s.external_port: s.health_path or s.path for s in declared_services() if s.serverless != "only"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def host_port(container: Any, port: int) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    container: Any,
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30,
) -> Reply:
    """One request to the container's external `port` (no redirects followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", host_port(container, port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def program_states(container: Any) -> dict[str, str]:
    _, output = exec_text(container, "supervisorctl", "status")
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return states


def wait_running(container: Any, *programs: str, seconds: float = 90) -> None:
    wait_for(
        lambda: all(program_states(container).get(p) == "RUNNING" for p in programs),
        seconds,
        f"programs {programs} not all RUNNING",
        container,
    )


def wait_answering(container: Any, port: int, path: str, seconds: float = 90, token: str = TOKEN) -> None:
    def answers() -> bool:
        try:
            return request(container, port, path, headers=bearer(token), timeout=5).status == 200
        except OSError:
            return False

    wait_for(answers, seconds, f"port {port}{path} did not answer 200 through the proxy", container)


def stream_lines(container: Any, port: int, path: str, headers: Mapping[str, str]) -> Iterator[tuple[float, bytes]]:
    """Lines of a streaming response with the time each arrived."""
    connection = http.client.HTTPConnection("127.0.0.1", host_port(container, port), timeout=30)
    try:
        connection.request("GET", path, headers=dict(headers))
        response = connection.getresponse()
        assert response.status == 200, response.read()
        while True:
            line = response.readline()
            if not line:
                return
            yield time.monotonic(), line
    finally:
        connection.close()
