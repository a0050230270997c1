"""A sustained HTTP load (I/O edge): a fixed number of requests sent by a few threads over
keep-alive connections, each answer read whole and checked. What is sent and how an answer is
judged comes from the pure core (core/soak.py: `Kind`); this module only moves bytes.

Plain sockets rather than http.client: the load must cost the machine little next to the server
it measures (a few tens of microseconds of Python per request, so a 2-core machine still
measures llama-server, not its client). A streamed answer ends its connection, as the proxy's
upstream requests do (llama-server closes a connection after a stream without saying so); other
answers keep it. A 503 with Retry-After (the proxy while llama-server restarts) is waited out and
the request sent again: that is what a client is told to do, and it is counted apart.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RECEIVE_BYTES = 65536
RETRY_LIMIT_SECONDS = 120.0  # a 503 + Retry-After that lasts longer than this is a failure


@dataclass(frozen=True)
class Target:
    """Where the load goes: a host and port, and the headers every request carries."""

    host: str
    port: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    stream: bool


@dataclass
class Outcome:
    """What one run of the load saw."""

    requests: int = 0
    failures: int = 0
    retried: int = 0  # requests sent again after a 503 + Retry-After
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first few failures, one line each

    def fail(self, why: str) -> None:
        self.failures += 1
        if len(self.examples) < 5:
            self.examples.append(why)


class AnswerError(Exception):
    """An answer that is not a complete HTTP response."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def encode(target: Target, request: Request) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{name}: {value}" for name, value in target.headers]
    if request.body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(request.body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + request.body


class Connection:
    """One keep-alive connection, opened when first needed."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.buffer = b""

    def exchange(self, data: bytes) -> Answer:
        if self.sock is None:
            self.sock = socket.create_connection((self.target.host, self.target.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(data)
        head = self.read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise AnswerError(f"not an HTTP status line: {status_line[:80]!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self.read_chunked()
        elif "content-length" in headers:
            body = self.read_exactly(int(headers["content-length"]))
        else:
            body = self.read_to_end()
        keep = headers.get("connection", "").lower()
        if keep == "close" or (parts[0] == "HTTP/1.0" and keep != "keep-alive"):
            self.close()
        return Answer(int(parts[1]), headers, body)

    def fill(self) -> bool:
        assert self.sock is not None
        chunk = self.sock.recv(RECEIVE_BYTES)
        self.buffer += chunk
        return bool(chunk)

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self.fill():
                raise AnswerError("the connection closed before the answer was complete")
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill():
                raise AnswerError("the connection closed before the answer was complete")
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def read_chunked(self) -> bytes:
        body = b""
        while True:
            size_line = self.read_until(b"\r\n").split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise AnswerError(f"not a chunk size: {size_line[:40]!r}") from None
            if size == 0:
                self.read_until(b"\r\n")  # no trailers expected
                return body
            body += self.read_exactly(size)
            self.read_exactly(2)

    def read_to_end(self) -> bytes:
        while self.fill():
            pass
        body, self.buffer = self.buffer, b""
        self.close()
        return body


def retry_after(answer: Answer) -> float | None:
    """Seconds a 503 asks the client to wait (the proxy during a restart), else None."""
    value = answer.headers.get("retry-after", "")
    if answer.status == 503 and value.isdigit():
        return float(value)
    return None


Check = Callable[[bytes], str | None]  # an answer's body -> why it is not a whole answer, or None


def send_all(
    target: Target, requests: list[Request], concurrency: int, check: Check | None = None, timeout: float = 30.0
) -> Outcome:
    """Send every request (taken in order by `concurrency` threads, each over its own connection)
    and wait for every answer; an answer is good when its status is 200 and `check` finds its
    body whole (a stream ends with its last event)."""
    outcome = Outcome(requests=len(requests))
    lock = threading.Lock()
    position = iter(range(len(requests)))

    def work() -> None:
        connection = Connection(target, timeout)
        try:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                request = requests[index]
                problem, retried = exchange_one(connection, target, request, check)
                with lock:
                    outcome.retried += retried
                    if problem is not None:
                        outcome.fail(f"{request.method} {request.path}: {problem}")
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, concurrency))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.monotonic() - started
    return outcome


def exchange_one(
    connection: Connection, target: Target, request: Request, check: Check | None
) -> tuple[str | None, int]:
    """(why the request failed or None, how many times a 503 + Retry-After was waited out)."""
    data = encode(target, request)
    retried = 0
    deadline = time.monotonic() + RETRY_LIMIT_SECONDS
    while True:
        try:
            answer = connection.exchange(data)
        except (OSError, AnswerError) as exc:
            connection.close()
            return f"no complete answer ({exc})", retried
        finally:
            if request.stream:
                connection.close()
        wait = retry_after(answer)
        if wait is not None and time.monotonic() + wait < deadline:
            retried += 1
            time.sleep(wait)
            continue
        if answer.status != 200:
            return f"status {answer.status}: {answer.body[:200].decode(errors='replace')}", retried
        return (check(answer.body) if check is not None else None), retried
