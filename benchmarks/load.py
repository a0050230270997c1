"""The bounded load: what is sent (hey, Debian's HTTP load generator), and what its per-request
CSV says. Pure: command lines and parsing; running it is in measure.py."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

from .stats import LoadSample

CONCURRENCY = (1, 8, 64, 256)
# The ways a request is sent: through the proxy with the token (Bearer, checked inside Caddy) or
# with a browser's login session cookie (issue 28: the verifier's path), and to llama-server itself.
PATHS = ("proxy", "session", "direct")
# A completion small enough that the proxy's share of the time shows: 8 tokens of a tiny model.
PROMPT = "Once upon a time"
MAX_TOKENS = 8


@dataclass(frozen=True)
class LoadKind:
    """One kind of request, sent the same way through the proxy and directly."""

    name: str
    method: str
    path: str
    body: str | None
    requests_per_worker: int  # the fixed request count is this times the concurrency (at least MIN_REQUESTS)
    # One connection per request (hey -disable-keepalive), on every path alike: llama-server closes
    # a connection after a streamed reply although its headers say keep-alive, and hey's next
    # request on it fails with EOF (errors of the direct path alone, measuring nothing).
    streamed: bool = False


MIN_REQUESTS = 400

KINDS = (
    LoadKind("health", "GET", "/health", None, 40),
    LoadKind(
        "completion",
        "POST",
        "/v1/completions",
        json.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": False}),
        10,
    ),
    LoadKind(
        "stream",
        "POST",
        "/v1/completions",
        json.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}),
        10,
        streamed=True,
    ),
)


def request_count(kind: LoadKind, concurrency: int) -> int:
    """A fixed count, a multiple of the concurrency (hey gives each worker count/concurrency)."""
    wanted = max(MIN_REQUESTS, kind.requests_per_worker * concurrency)
    return -(-wanted // concurrency) * concurrency


def hey_command(
    url: str, kind: LoadKind, concurrency: int, headers: Mapping[str, str], count: int | None = None
) -> list[str]:
    """hey's command line; `count` requests (default `request_count`)."""
    command = [
        "hey",
        *(["-disable-keepalive"] if kind.streamed else []),
        "-n",
        str(count if count is not None else request_count(kind, concurrency)),
        "-c",
        str(concurrency),
        "-t",
        "30",
        "-m",
        kind.method,
        "-o",
        "csv",
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if kind.body is not None:
        command += ["-T", "application/json", "-d", kind.body]
    return [*command, url]


def parse_hey_csv(text: str, requested: int) -> LoadSample:
    """hey -o csv: one row per answered request (response-time and offset in seconds, status
    code); requests that got no answer are left out, so they count as errors, as does any
    status other than 2xx."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"response-time", "status-code", "offset"} <= set(rows[0]):
        raise ValueError(f"not hey's CSV output: columns {sorted(rows[0])}")
    latencies: list[float] = []
    failed = 0
    end = 0.0
    for row in rows:
        latency = float(row["response-time"])
        end = max(end, float(row["offset"]) + latency)
        if 200 <= int(row["status-code"]) < 300:
            latencies.append(latency)
        else:
            failed += 1
    unanswered = max(0, requested - len(rows))
    return LoadSample(latencies=tuple(latencies), errors=failed + unanswered, seconds=end)
