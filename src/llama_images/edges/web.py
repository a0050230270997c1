"""HTTP with bounded retries (I/O edge): the GitHub releases API and the Slack webhook use it.

Retried: rate limits (403/429 that say so, waiting for their reset when it is near), 5xx answers,
timeouts and refused connections, and JSON that does not parse. Anything else, or the last
failure, becomes the caller's error with a plain reason. URLs are never put in messages by this
module: a webhook URL is a secret.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ATTEMPTS = 4
BACKOFF_SECONDS = 0.5  # doubled after each failed attempt
LONGEST_WAIT_SECONDS = 60.0  # a rate limit that resets later than this fails at once
INVALID_URL = "the URL is not a valid http(s) URL"


@dataclass(frozen=True)
class Failure:
    """Why a request failed in the end: `status` is the last HTTP status (None: no answer)."""

    status: int | None
    reason: str


class RequestFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def rate_limit_wait(error: urllib.error.HTTPError, now: float) -> float | None:
    """Seconds to wait when a 403/429 is a rate limit (None: it is not one)."""
    headers = error.headers
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return BACKOFF_SECONDS
    if headers.get("X-RateLimit-Remaining") == "0":
        try:
            return max(0.0, float(headers.get("X-RateLimit-Reset", "0")) - now)
        except ValueError:
            return BACKOFF_SECONDS
    return BACKOFF_SECONDS if error.code == 429 else None


def request_json(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    timeout: float = 20.0,
    attempts: int = ATTEMPTS,
    expect_json: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The decoded JSON answer (or the text, with expect_json=False); raises RequestFailed."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        raise RequestFailed(Failure(None, INVALID_URL))
    data = None if body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    delay = BACKOFF_SECONDS
    failure = Failure(None, "no attempt made")
    for attempt in range(1, attempts + 1):
        wait = delay
        try:
            request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode("utf-8", errors="replace")
            if not expect_json:
                return text
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                failure = Failure(200, f"the answer is not JSON ({exc.msg} at offset {exc.pos})")
        except urllib.error.HTTPError as exc:
            limited = rate_limit_wait(exc, time.time()) if exc.code in (403, 429) else None
            if limited is not None:
                if limited > LONGEST_WAIT_SECONDS:
                    reset = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + limited))
                    raise RequestFailed(Failure(exc.code, f"rate limited until {reset} (HTTP {exc.code})")) from None
                failure = Failure(exc.code, f"rate limited (HTTP {exc.code}) on every attempt")
                wait = limited
            elif exc.code >= 500:
                failure = Failure(exc.code, f"the server answered HTTP {exc.code} on every attempt")
            else:
                raise RequestFailed(Failure(exc.code, f"HTTP {exc.code}")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            failure = Failure(None, f"no answer ({reason})")
        except (ValueError, http.client.InvalidURL):
            # urllib's own messages quote the URL ("unknown url type", "can't contain control characters").
            raise RequestFailed(Failure(None, INVALID_URL)) from None
        except http.client.HTTPException as exc:  # a malformed answer (bad status line, cut short)
            failure = Failure(None, f"no valid answer ({type(exc).__name__})")
        if attempt < attempts:
            sleep(wait)
            delay *= 2
    raise RequestFailed(replace_reason(failure, attempts))


def replace_reason(failure: Failure, attempts: int) -> Failure:
    return Failure(failure.status, f"{failure.reason} ({attempts} attempts)")
