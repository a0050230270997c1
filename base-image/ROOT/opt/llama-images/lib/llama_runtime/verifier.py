"""The login verifier: Supervisor program "auth", on a root-only unix socket that only Caddy
dials (forward_auth). Caddy asks it about every request whose credentials it cannot check
itself: a session cookie (an HMAC Caddy cannot compute), a browser's ?token= (which gets a
session and a redirect), basic auth that would change something (which needs an origin proof),
and every wrong token (which is counted: past the limit, the client address is refused on every
port for a cooldown, by a file Caddy checks before anything else).

It reads its settings from the file `render-proxy` writes (re-read when the proxy renders
anew). Its log names client addresses, ports and counts, never a tried value.
Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

from . import access, paths, proxy


@dataclass(frozen=True)
class Settings:
    tokens: tuple[str, ...]
    username: str
    cookie: str
    key: bytes
    failure_limit: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settings:
        return cls(
            tuple(data["tokens"]),
            str(data["username"]),
            str(data["cookie"]),
            bytes.fromhex(data["key"]),
            int(data["failure_limit"]),
        )


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    content_type: str = "application/json"


@dataclass(frozen=True)
class Request:
    method: str  # the client's (X-Forwarded-Method)
    uri: str  # the client's (X-Forwarded-Uri)
    client: str  # address
    port: str  # external port
    scheme: str
    host: str  # Host header as sent (host:port)
    headers: Mapping[str, str]  # lowercase names

    @property
    def browser(self) -> bool:
        return "text/html" in self.headers.get("accept", "") or self.headers.get("sec-fetch-dest") == "document"


def log(message: str) -> None:
    print(f"[auth] {message}", flush=True)


def refusal(status: int, request: Request, message: str, page: str, challenge: bool = False) -> Answer:
    headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
    if status == 429:
        headers.append(("Retry-After", str(access.COOLDOWN_SECONDS)))
    if challenge:
        headers.append(("WWW-Authenticate", proxy.BASIC_CHALLENGE if request.browser else proxy.BEARER_CHALLENGE))
    if request.browser:
        return Answer(status, tuple(headers), page, "text/html; charset=utf-8")
    return Answer(status, tuple(headers), json.dumps({"error": message}) + "\n")


def without_token(uri: str) -> str:
    """The same address without its token parameters (the rest of the query as sent), and
    never another host's (`//host/...` would be one)."""
    parts = urlsplit(uri)
    query = "&".join(p for p in parts.query.split("&") if p and unquote_plus(p.partition("=")[0]) != "token")
    return urlunsplit(("", "", "/" + parts.path.lstrip("/"), query, ""))


class Verifier:
    """The decisions, with the clock passed in (tests drive it without a server)."""

    def __init__(self, settings: Settings, blocked_dir: Path) -> None:
        self.settings = settings
        self.blocked_dir = blocked_dir
        self.limiter = access.FailureLimiter(limit=settings.failure_limit)
        self.lock = threading.Lock()

    def decide(self, request: Request, now: float) -> Answer:
        settings = self.settings
        with self.lock:
            if self.limiter.is_blocked(request.client, now):
                self.block_file(request.client, create=True)
                return refusal(429, request, proxy.COOLDOWN_MESSAGE, proxy.COOLDOWN_PAGE)
        kind, wrong = self.credential(request, settings, now)
        if wrong:
            return self.failed(request, wrong, now)
        if kind is None:
            return refusal(401, request, "unauthorized", proxy.UNAUTHORIZED_PAGE, challenge=True)
        if kind in {"cookie", "basic"}:
            problem = access.origin_problem(request.method, request.headers, request.scheme, request.host)
            if problem:
                log(f"refused a {request.method} from {request.client} on port {request.port}: {problem}")
                return refusal(403, request, proxy.CROSS_SITE_MESSAGE, f"<p>{proxy.CROSS_SITE_MESSAGE}</p>\n")
        if kind == "token" and request.browser and request.method in {"GET", "HEAD"}:
            session = access.new_session(settings.key, now)
            cookie = access.set_cookie(settings.cookie, session, secure=request.scheme == "https")
            headers = (("Location", without_token(request.uri)), ("Set-Cookie", cookie), ("Cache-Control", "no-store"))
            return Answer(302, headers)
        return Answer(200, (("X-Llama-Auth", kind),))

    def credential(self, request: Request, settings: Settings, now: float) -> tuple[str | None, str]:
        """How the request proves itself ('bearer', 'basic', 'token', 'cookie' or None), or what
        was wrong with the token it sent (a wrong token is refused whatever else comes with it)."""
        authorization = request.headers.get("authorization")
        kind: str | None = None
        if authorization is not None:
            bearer = access.bearer_credential(authorization)
            basic = access.basic_credentials(authorization)
            if bearer is not None:
                if not access.token_matches(bearer, settings.tokens):
                    return None, "wrong bearer token"
                kind = "bearer"
            elif basic is not None:
                user, password = basic
                user_ok = access.token_matches(user, (settings.username,))
                if not (access.token_matches(password, settings.tokens) and user_ok):
                    return None, "wrong basic auth user or password"
                kind = "basic"
            else:
                return None, "an Authorization header that is neither Bearer nor Basic"
        tried = [v for k, v in parse_qsl(urlsplit(request.uri).query, keep_blank_values=True) if k == "token"]
        if tried:
            if not all(access.token_matches(t, settings.tokens) for t in tried):
                return None, "wrong ?token="
            kind = kind or "token"
        if kind is None:
            sessions = access.cookie_values(request.headers.get("cookie", ""), settings.cookie)
            if any(access.session_valid(settings.key, value, now) for value in sessions):
                kind = "cookie"
        return kind, ""

    def failed(self, request: Request, what: str, now: float) -> Answer:
        with self.lock:
            count, blocked = self.limiter.fail(request.client, now)
            if blocked:
                self.block_file(request.client, create=True)
        log(f"failed attempt from {request.client} on port {request.port}: {what} ({count} in the last minute)")
        if blocked:
            log(
                f"{request.client}: {count} failed attempts within a minute; every protected port refuses it for "
                f"{access.COOLDOWN_SECONDS} s"
            )
            return refusal(429, request, proxy.COOLDOWN_MESSAGE, proxy.COOLDOWN_PAGE)
        return refusal(401, request, "unauthorized", proxy.UNAUTHORIZED_PAGE, challenge=True)

    def block_file(self, address: str, create: bool) -> None:
        path = self.blocked_dir / address
        if "/" in address or address in {"", ".", ".."}:
            return
        with contextlib.suppress(OSError):
            if create:
                path.touch()
            else:
                path.unlink(missing_ok=True)

    def expire(self, now: float) -> None:
        with self.lock:
            for address in self.limiter.expired(now):
                self.block_file(address, create=False)
                log(f"{address}: cooldown over")


def load_settings(path: Path) -> Settings:
    return Settings.from_json(json.loads(path.read_text(encoding="utf-8")))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with Caddy
    server_version = "llama-images-auth"
    sys_version = ""
    timeout = 60
    verifier: Verifier
    settings_file: Path
    settings_stamp: tuple[int, int] = (0, 0)

    def do_GET(self) -> None:
        self.reload_settings()
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(
            method=headers.get("x-forwarded-method", "GET").upper(),
            uri=headers.get("x-forwarded-uri", "/"),
            client=headers.get("x-llama-client", ""),
            port=headers.get("x-llama-port", "?"),
            scheme=headers.get("x-llama-scheme", "http"),
            host=headers.get("x-llama-host", headers.get("host", "")),
            headers=headers,
        )
        answer = self.verifier.decide(request, time.time())
        body = answer.body.encode()
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reload_settings(self) -> None:
        """The proxy renders new settings when it starts: use them from the next request on."""
        cls = type(self)
        try:
            stat = cls.settings_file.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
            if stamp != cls.settings_stamp:
                settings = load_settings(cls.settings_file)
                cls.settings_stamp = stamp
                with cls.verifier.lock:
                    cls.verifier.settings = settings
                    cls.verifier.limiter.limit = settings.failure_limit
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"ERROR: cannot read {cls.settings_file} ({exc}); keeping the settings read before")

    def address_string(self) -> str:
        return "caddy"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines would repeat URIs, which may hold a (wrong) token


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # Caddy closed a connection (a client went away): nothing to report
        super().handle_error(request, client_address)


def serve(
    settings_file: Path = paths.VERIFIER_SETTINGS_FILE,
    socket_path: Path = paths.VERIFIER_SOCKET,
    blocked_dir: Path = paths.BLOCKED_DIR,
) -> int:
    deadline = time.monotonic() + 30
    while not settings_file.is_file():
        # The proxy's first render writes them, a moment after this program starts.
        if time.monotonic() > deadline:
            log(f"ERROR: {settings_file} did not appear (program proxy renders it); exiting")
            return 1
        time.sleep(0.1)
    settings = load_settings(settings_file)
    blocked_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in blocked_dir.iterdir():  # an earlier run's cooldowns end with it
        stale.unlink(missing_ok=True)
    verifier = Verifier(settings, blocked_dir)
    Handler.verifier = verifier
    Handler.settings_file = settings_file
    stat = settings_file.stat()
    Handler.settings_stamp = (stat.st_mtime_ns, stat.st_ino)
    socket_path.unlink(missing_ok=True)
    old_mask = os.umask(0o177)  # the socket: its owner only (Caddy runs as the same user)
    try:
        server = Server(str(socket_path), Handler)
    finally:
        os.umask(old_mask)

    def expire() -> None:
        while True:
            time.sleep(1)
            verifier.expire(time.time())

    threading.Thread(target=expire, daemon=True).start()
    log(f"login verifier ready on {socket_path} (sessions last {access.SESSION_SECONDS // 86400} days)")
    server.serve_forever()
    return 0
