"""Supervisor's XML-RPC interface over its unix socket (paths.SUPERVISOR_SOCKET), stdlib only."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from typing import Any

from . import paths

SOCKET = str(paths.SUPERVISOR_SOCKET)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.socket_path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return UnixHTTPConnection(self.socket_path, self.timeout)


def connect(path: str = SOCKET, timeout: float = 5.0) -> Any:
    """A proxy whose `.supervisor.*` methods are Supervisor's API (getAllProcessInfo, ...)."""
    return xmlrpc.client.ServerProxy("http://localhost", transport=UnixTransport(path, timeout), allow_none=True)


def states(path: str = SOCKET) -> dict[str, dict[str, Any]]:
    """Program name -> Supervisor's process info (statename, description, pid, ...)."""
    return {info["name"]: info for info in connect(path).supervisor.getAllProcessInfo()}


def states_or_empty(path: str = SOCKET) -> dict[str, dict[str, Any]]:
    """`states()`, or {} while Supervisor does not answer (starting, stopping)."""
    try:
        return states(path)
    except (OSError, xmlrpc.client.Error):
        return {}
