"""A loopback stand-in for Vast.ai's serverless engine (the routing layer in front of workers),
written from the protocol of the `vastai` package (1.9.1, vastai/serverless/): its worker side
(server/lib/backend.py, metrics.py, data_types.py) and its client side (client/endpoint.py,
client.py). The container tests start it; nothing here is imported by the images.

What a worker does with the engine, and what this answers:

- `GET  /pubkey/`: the engine's RSA public key (PEM). The worker fetches it at start and checks
  every request's `auth_data.signature` with it: RSA PKCS#1 v1.5 over SHA-256 of
  `json.dumps({"url": <the worker's URL>}, indent=4, sort_keys=True)`.
- `POST /worker_status/`: the worker's report, about every second while its numbers move and every
  ten seconds otherwise: `id` (CONTAINER_ID), `mtoken` (MASTER_TOKEN), `url`, `loadtime` (seconds
  until its model served and its benchmark ran), `max_perf` (the benchmark's workload per
  second), `cur_load` (the workload in hand), `new_load` (workload received since the last
  report), `error_msg`, request counts. A report whose mtoken is not the one given to that worker
  is refused (401) and kept apart.
- `POST /delete_requests/`: the requests the worker finished (`request_idx`, success, times).

What a client does:

- `POST /route/` with `{endpoint, api_key, cost, request_idx, replay_timeout}`: the answer names a
  worker, `{url, signature, cost, endpoint, reqnum, request_idx}`, which the client sends to the
  worker as the request's `auth_data` beside its `payload`; with no worker ready the answer has
  no `url` (the client asks again).

How this one routes: among the workers whose last report (at most `stale_after` seconds old)
says they are loaded (`max_perf` > 0) without an error, the one with the least load per unit of
capacity: (`cur_load` reported + the cost routed to it since that report) / `max_perf`.
Everything received is recorded for the tests to assert on.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ENDPOINT = "llama-endpoint"


def signed_message(url: str) -> bytes:
    """What the engine signs for a worker, as the library rebuilds it to verify."""
    return json.dumps({"url": url}, indent=4, sort_keys=True).encode()


class Keys:
    """An RSA key pair made and used with the openssl command (no Python crypto in the tests)."""

    def __init__(self, directory: Path) -> None:
        self.private = directory / "engine-key.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.private)],
            check=True,
            capture_output=True,
        )
        self.public_pem = subprocess.run(
            ["openssl", "pkey", "-in", str(self.private), "-pubout"], check=True, capture_output=True, text=True
        ).stdout

    def sign(self, message: bytes) -> str:
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.private)], input=message, check=True, capture_output=True
        ).stdout
        return base64.b64encode(signature).decode()


@dataclass
class Worker:
    """What the engine knows of one worker: what it was given, and what it reported."""

    id: int
    mtoken: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    reported_at: float = 0.0
    routed_since_report: float = 0.0  # cost routed to it since its last report
    routed: int = 0
    finished: list[dict[str, Any]] = field(default_factory=list)  # from /delete_requests/

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1] if self.reports else {}

    @property
    def url(self) -> str:
        return str(self.last.get("url", ""))

    def ready(self, now: float, stale_after: float) -> bool:
        last = self.last
        return (
            bool(last)
            and now - self.reported_at <= stale_after
            and not last.get("error_msg")
            and float(last.get("max_perf") or 0) > 0
        )

    def load_per_capacity(self) -> float:
        return (float(self.last.get("cur_load") or 0) + self.routed_since_report) / float(self.last["max_perf"])


@dataclass
class Routed:
    """One routing answer: to whom, at what cost."""

    worker_id: int
    url: str
    cost: float


class FakeEngine:
    """Start with `with FakeEngine(host) as engine:`; workers reach it at `engine.url`."""

    def __init__(self, host: str = "127.0.0.1", api_key: str = "endpoint-api-key", stale_after: float = 12.0) -> None:
        self.host = host
        self.api_key = api_key
        self.stale_after = stale_after
        self.workers: dict[int, Worker] = {}
        self.refused_reports: list[dict[str, Any]] = []
        self.routed: list[Routed] = []
        self.pubkey_fetches = 0
        self.reqnum = 0
        self.lock = threading.RLock()  # the tests' checks, run under it by wait(), read through it too
        self.directory = tempfile.TemporaryDirectory(prefix="fake-vast-engine-")
        self.keys = Keys(Path(self.directory.name))
        self.server: ThreadingHTTPServer | None = None

    # ---- the test's side --------------------------------------------------------------------

    def expect(self, worker_id: int, mtoken: str) -> None:
        """A worker the engine starts: its CONTAINER_ID and MASTER_TOKEN."""
        with self.lock:
            self.workers[worker_id] = Worker(worker_id, mtoken)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}"

    def auth_data(self, url: str, cost: float = 100.0) -> dict[str, Any]:
        """What /route/ answers for a request sent to the worker at `url`."""
        with self.lock:
            self.reqnum += 1
            number = self.reqnum
        return {
            "url": url,
            "signature": self.keys.sign(signed_message(url)),
            "cost": cost,
            "endpoint": ENDPOINT,
            "reqnum": number,
            "request_idx": number,
        }

    def worker(self, worker_id: int) -> Worker:
        with self.lock:
            return self.workers[worker_id]

    def wait(self, check: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if check():
                    return
            time.sleep(0.2)
        with self.lock:
            state = {w.id: w.last for w in self.workers.values()}
        raise AssertionError(f"{what} within {seconds} s; the workers' last reports: {json.dumps(state, indent=1)}")

    # ---- routing ----------------------------------------------------------------------------

    def route(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("api_key") != self.api_key or body.get("endpoint") != ENDPOINT:
            return 401, {"error": "unknown endpoint or api_key"}
        cost = float(body.get("cost") or 0)
        now = time.monotonic()
        with self.lock:
            ready = [w for w in self.workers.values() if w.ready(now, self.stale_after)]
            if not ready:
                self.reqnum += 1
                return 200, {"request_idx": self.reqnum, "status": "no worker ready"}
            chosen = min(ready, key=lambda w: (w.load_per_capacity(), w.routed))
            chosen.routed_since_report += cost
            chosen.routed += 1
            self.routed.append(Routed(chosen.id, chosen.url, cost))
            url = chosen.url
        return 200, self.auth_data(url, cost)

    def report(self, body: dict[str, Any]) -> int:
        with self.lock:
            worker = self.workers.get(int(body.get("id", -1)))
            if worker is None or body.get("mtoken") != worker.mtoken:
                self.refused_reports.append(body)
                return 401
            worker.reports.append(body)
            worker.reported_at = time.monotonic()
            worker.routed_since_report = 0.0
        return 200

    def finished(self, body: dict[str, Any]) -> int:
        with self.lock:
            worker = self.workers.get(int(body.get("worker_id", -1)))
            if worker is None or body.get("mtoken") != worker.mtoken:
                return 401
            worker.finished += list(body.get("requests") or [])
        return 200

    # ---- HTTP -------------------------------------------------------------------------------

    def start(self) -> FakeEngine:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/pubkey":
                    with engine.lock:
                        engine.pubkey_fetches += 1
                    self.answer(200, engine.keys.public_pem.encode(), "text/plain")
                else:
                    self.answer(404, b'{"error": "not found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.answer(400, b'{"error": "not JSON"}')
                    return
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/worker_status":
                    self.answer(engine.report(body), b"{}")
                elif path == "/delete_requests":
                    self.answer(engine.finished(body), b"{}")
                elif path == "/route":
                    status, answer = engine.route(body)
                    self.answer(status, json.dumps(answer).encode())
                else:
                    self.answer(404, b'{"error": "not found"}')

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.directory.cleanup()

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- a client, as vastai's (client/client.py `_do_request`) behaves -----------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    worker_url: str
    reroutes: int  # times the chosen worker could not be reached and the engine was asked again

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Any]:
        """A streamed answer's server-sent events' data, JSON-decoded ("[DONE]" kept as text)."""
        found: list[Any] = []
        for line in self.body.decode(errors="replace").splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                found.append(data if data == "[DONE]" else json.loads(data))
        return found


def post_json(url: str, body: Any, timeout: float = 60) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def request(
    engine: FakeEngine, route: str, payload: dict[str, Any], cost: float = 100.0, timeout: float = 90.0
) -> Answer:
    """Ask the engine for a worker, send the request there; a worker that cannot be reached (gone,
    or cut off mid-answer) means asking the engine again, as the library's client does."""
    deadline = time.monotonic() + timeout
    reroutes = 0
    while time.monotonic() < deadline:
        status, body, _ = post_json(
            f"{engine.url}/route/",
            {"endpoint": ENDPOINT, "api_key": engine.api_key, "cost": cost, "request_idx": 0, "replay_timeout": 60},
        )
        auth = json.loads(body) if status == 200 else {}
        if "url" not in auth:
            time.sleep(0.5)
            continue
        try:
            status, body, headers = post_json(auth["url"] + route, {"auth_data": auth, "payload": payload})
        except (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError):
            reroutes += 1
            time.sleep(0.2)
            continue
        return Answer(status, body, headers, auth["url"], reroutes)
    raise AssertionError(f"no worker answered {route} within {timeout} s")


def requests_in_parallel(engine: FakeEngine, jobs: list[tuple[str, dict[str, Any], float]]) -> Iterator[Answer]:
    """Each (route, payload, cost) sent at once, one thread each; the answers in job order."""
    answers: list[Answer | BaseException | None] = [None] * len(jobs)

    def one(index: int, job: tuple[str, dict[str, Any], float]) -> None:
        try:
            answers[index] = request(engine, *job)
        except BaseException as exc:  # handed to the caller
            answers[index] = exc

    threads = [threading.Thread(target=one, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
        assert answer is not None
        yield answer
