"""The login verifier: Supervisor program "auth", on a root-only unix socket that only Caddy
dials (forward_auth). Caddy asks it about every request whose credentials it cannot check
itself: a session cookie (an HMAC Caddy cannot compute), a browser's ?token= (which gets a
session and a redirect), basic auth that would change something (which needs an origin proof),
and every wrong token (which is counted: past the limit, the client address is refused on every
port for a cooldown, by a file Caddy checks before anything else; a valid session still passes).

Caddy asks with a request of its own making (proxy.ask_verifier): GET, no body, only the headers
the decision reads, each set by Caddy. The verifier answers exactly one request per request: one
that carries a body (Content-Length other than 0, any Transfer-Encoding), or bytes beyond its
head, is refused and its connection closed, so nothing a client sends can be read as a request.

A session it lets in from an address is "admitted": a file `ADMITTED_DIR/<value>/<address>`
that Caddy checks itself (a stat) for that pair's next requests, within the same origin rules;
the verifier removes it when the session ends (logout, expiry, new settings) or after
ADMIT_SECONDS. Sessions are bound to the network they were made in (SESSION_BIND; access.py).

It reads its settings from the file `render-proxy` writes (re-read when the proxy renders
anew). Its log names client addresses, ports and counts, never a tried value or a session.
Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

from . import access, paths, proxy
from .files import write_private

ADMIT_SECONDS = 600  # an admitted (session, address) pair is asked about again after this
LOCKOUTS_KEPT = 20
MAX_HEAD_BYTES = 64 * 1024
REFUSAL_LOG_SECONDS = 600  # a session refused from another network: logged once per address in this time
LISTEN_BACKLOG = 4096  # Caddy opens a connection per concurrent request it asks about
HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Settings:
    tokens: tuple[str, ...]
    username: str
    cookie: str
    key: bytes
    failure_limit: int
    binding: access.Binding = access.DEFAULT_BINDING

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settings:
        bind = data.get("bind", [access.DEFAULT_BINDING.ipv4, access.DEFAULT_BINDING.ipv6])
        return cls(
            tuple(data["tokens"]),
            str(data["username"]),
            str(data["cookie"]),
            bytes.fromhex(data["key"]),
            int(data["failure_limit"]),
            access.Binding(*(None if p is None else int(p) for p in bind)),
        )


@dataclass(frozen=True)
class Places:
    """Where the verifier keeps its state."""

    blocked_dir: Path = paths.BLOCKED_DIR
    admitted_dir: Path = paths.ADMITTED_DIR
    lockouts_file: Path = paths.LOCKOUTS_FILE
    revoked_files: tuple[Path, ...] = (paths.REVOKED_SESSIONS_FILE, paths.RUN_REVOKED_SESSIONS_FILE)

    @classmethod
    def under(cls, directory: Path) -> Places:
        """Every place inside one directory (tests)."""
        return cls(directory / "blocked", directory / "sessions", directory / "lockouts.json",
                   (directory / "revoked.json",))  # fmt: skip


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
    headers: Mapping[str, str]  # lowercase names; a header set empty by the proxy is absent

    @property
    def browser(self) -> bool:
        return "text/html" in self.headers.get("accept", "") or self.headers.get("sec-fetch-dest") == "document"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Request:
        return cls(
            method=headers.get("x-forwarded-method", "GET").upper(),
            uri=headers.get("x-forwarded-uri", "/"),
            client=headers.get("x-llama-client", ""),
            port=headers.get("x-llama-port", "?"),
            scheme=headers.get("x-llama-scheme", "http"),
            host=headers.get("x-llama-host", ""),
            headers=headers,
        )


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


def unauthorized(request: Request) -> Answer:
    return refusal(401, request, "unauthorized", proxy.UNAUTHORIZED_PAGE, challenge=True)


def cooling_down(request: Request) -> Answer:
    return refusal(429, request, proxy.COOLDOWN_MESSAGE, proxy.COOLDOWN_PAGE)


def without_token(uri: str) -> str:
    """The same address without its token parameters (the rest of the query as sent), and
    never another host's (`//host/...` would be one)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "/"
    query = "&".join(p for p in parts.query.split("&") if p and unquote_plus(p.partition("=")[0]) != "token")
    return urlunsplit(("", "", "/" + parts.path.lstrip("/"), query, ""))


def tried_tokens(uri: str) -> list[str]:
    try:
        query = urlsplit(uri).query
    except ValueError:
        query = uri.partition("?")[2]
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]


def ip_literal(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class Verifier:
    """The decisions, with the clock passed in (tests drive it without a server). Its files:
    the cooldown marks Caddy checks, the admitted sessions, the revoked sessions, the lock-outs."""

    def __init__(self, settings: Settings, places: Places) -> None:
        self.settings = settings
        self.places = places
        self.limiter = access.FailureLimiter(limit=settings.failure_limit)
        self.revoked: dict[str, int] = read_revoked(places.revoked_files)  # session id -> its expiry
        self.lockouts: list[dict[str, Any]] = read_lockouts(places.lockouts_file)
        self.refusals_logged: dict[tuple[str, str], float] = {}

    # ---- decisions ---------------------------------------------------------------------------

    def decide(self, request: Request, now: float) -> Answer:
        settings = self.settings
        if self.limiter.is_blocked(request.client, now):
            return self.during_cooldown(request, now)
        kind, wrong, session = self.credential(request, settings, now)
        if wrong:
            return self.failed(request, wrong, now)
        if kind is None:
            return unauthorized(request)
        if kind in {"cookie", "basic"}:
            problem = access.origin_problem(request.method, request.headers, request.scheme, request.host)
            if problem:
                log(f"refused a {request.method} from {request.client} on port {request.port}: {problem}")
                return refusal(403, request, proxy.CROSS_SITE_MESSAGE, f"<p>{proxy.CROSS_SITE_MESSAGE}</p>\n")
        if kind == "cookie" and session is not None:
            self.admit(session, request.client, now)
        if kind == "token" and request.browser and request.method in {"GET", "HEAD"}:
            return self.login(request, now)
        return Answer(200, (("X-Llama-Auth", kind),))

    def during_cooldown(self, request: Request, now: float) -> Answer:
        """Only a valid session passes (with the same origin rules): it cannot be guessed, so
        letting it through tells a guesser nothing, and the owner behind a shared address keeps
        working. Anything else is refused, the right token too (it could be a lucky guess),
        and not counted again."""
        self.block_file(request.client, create=True)
        if "authorization" in request.headers or tried_tokens(request.uri):
            return cooling_down(request)
        session = self.valid_session(request, now)
        if session is None:
            return cooling_down(request)
        problem = access.origin_problem(request.method, request.headers, request.scheme, request.host)
        if problem:
            return refusal(403, request, proxy.CROSS_SITE_MESSAGE, f"<p>{proxy.CROSS_SITE_MESSAGE}</p>\n")
        self.admit(session, request.client, now)
        return Answer(200, (("X-Llama-Auth", "cookie"),))

    def credential(
        self, request: Request, settings: Settings, now: float
    ) -> tuple[str | None, str, access.Session | None]:
        """How the request proves itself ('bearer', 'basic', 'token', 'cookie' or None), what
        was wrong with the token it sent (a wrong token is refused whatever else comes with it),
        and the session when that is how."""
        authorization = request.headers.get("authorization")
        kind: str | None = None
        if authorization is not None:
            bearer = access.bearer_credential(authorization)
            basic = access.basic_credentials(authorization)
            if bearer is not None:
                if not access.token_matches(bearer, settings.tokens):
                    return None, "wrong bearer token", None
                kind = "bearer"
            elif basic is not None:
                user, password = basic
                user_ok = access.token_matches(user, (settings.username,))
                if not (access.token_matches(password, settings.tokens) and user_ok):
                    return None, "wrong basic auth user or password", None
                kind = "basic"
            else:
                return None, "an Authorization header that is neither Bearer nor Basic", None
        tried = tried_tokens(request.uri)
        if tried:
            if not all(access.token_matches(t, settings.tokens) for t in tried):
                return None, "wrong ?token=", None
            kind = kind or "token"
        if kind is None:
            session = self.valid_session(request, now)
            if session is not None:
                return "cookie", "", session
        return kind, "", None

    def valid_session(self, request: Request, now: float) -> access.Session | None:
        """The first of the request's session cookies that may be used here and now. A signed
        one refused for where it is used from is logged (once per address in a while): someone
        else holds a copy. Forged, expired and foreign values are not: browsers keep old ones."""
        settings = self.settings
        for value in access.cookie_values(request.headers.get("cookie", ""), settings.cookie):
            session = access.read_session(settings.key, value)
            if session is None or session.id in self.revoked:
                continue
            problem = access.session_problem(settings.key, session, now, request.client, settings.binding)
            if problem is None:
                return session
            if problem != "expired":
                self.log_refused_session(session, request, problem, now)
        return None

    def log_refused_session(self, session: access.Session, request: Request, problem: str, now: float) -> None:
        key = (session.id, request.client)
        if now - self.refusals_logged.get(key, -REFUSAL_LOG_SECONDS) < REFUSAL_LOG_SECONDS:
            return
        self.refusals_logged[key] = now
        log(f"refused a login session from {request.client} on port {request.port}: {problem} "
            f"(SESSION_BIND={self.settings.binding.describe()})")  # fmt: skip

    def login(self, request: Request, now: float) -> Answer:
        network = access.client_network(request.client, self.settings.binding)
        value = access.new_session(self.settings.key, now, network)
        cookie = access.set_cookie(self.settings.cookie, value, secure=request.secure)
        where = f"bound to {network}" if network is not None else "not bound to a network (SESSION_BIND=none)"
        log(f"login from {request.client} on port {request.port}: a session for 7 days, {where}")
        headers = (("Location", without_token(request.uri)), ("Set-Cookie", cookie), ("Cache-Control", "no-store"))
        return Answer(302, headers)

    def logout(self, request: Request, now: float) -> Answer:
        """The portal's logout form (POST): every session of this instance the request carries
        is revoked (its id kept until it expires, here and in Caddy's admitted pairs), the browser
        told to forget the cookie and sent to GET /logout, which only says so (a link to it changes
        nothing). The POST needs the same-origin proof: another site cannot log the owner out.
        Nothing here is counted or depends on the cooldown."""
        if request.method in {"GET", "HEAD"}:
            return Answer(200, (("Cache-Control", "no-store"),), proxy.LOGGED_OUT_PAGE, "text/html; charset=utf-8")
        if request.method != "POST":
            return Answer(
                405, (("Allow", "GET, POST"), ("Cache-Control", "no-store")), '{"error": "POST to log out"}\n'
            )
        if request.headers.get("sec-fetch-site", "").lower() not in {"same-origin", "none"} and not (
            "origin" in request.headers and access.same_origin(request.headers["origin"], request.scheme, request.host)
        ):
            return refusal(403, request, proxy.CROSS_SITE_MESSAGE, f"<p>{proxy.CROSS_SITE_MESSAGE}</p>\n")
        ended = 0
        for value in access.cookie_values(request.headers.get("cookie", ""), self.settings.cookie):
            session = access.read_session(self.settings.key, value)
            if session is not None and session.id not in self.revoked:
                self.revoke(session, now)
                ended += 1
        if ended:
            log(f"logout from {request.client} on port {request.port}: the session is ended")
        headers = (
            ("Location", proxy.LOGOUT_PATH),
            ("Set-Cookie", access.clear_cookie(self.settings.cookie, secure=request.secure)),
            ("Cache-Control", "no-store"),
        )
        return Answer(303, headers)

    def failed(self, request: Request, what: str, now: float) -> Answer:
        count, blocked = self.limiter.fail(request.client, now)
        log(f"failed attempt from {request.client} on port {request.port}: {what} ({count} in the last minute)")
        if blocked:
            self.block_file(request.client, create=True)
            log(
                f"{request.client}: {count} failed attempts within a minute; every protected port refuses it for "
                f"{access.COOLDOWN_SECONDS} s"
            )
            self.record_lockout(request, count, now)
            return cooling_down(request)
        return unauthorized(request)

    # ---- state -------------------------------------------------------------------------------

    def record_lockout(self, request: Request, count: int, now: float) -> None:
        entry = {
            "address": request.client,
            "port": int(request.port) if request.port.isascii() and request.port.isdigit() else None,
            "failures": count,
            "started": round(now, 3),
            "until": round(now + access.COOLDOWN_SECONDS, 3),
        }
        self.lockouts = [entry, *self.lockouts][:LOCKOUTS_KEPT]
        with contextlib.suppress(OSError):
            write_private(self.places.lockouts_file, json.dumps({"lockouts": self.lockouts}))

    def block_file(self, address: str, create: bool) -> None:
        if not ip_literal(address):
            return
        path = self.places.blocked_dir / address
        with contextlib.suppress(OSError):
            if create:
                path.touch()
            else:
                path.unlink(missing_ok=True)

    def admit(self, session: access.Session, address: str, now: float) -> None:
        """Caddy lets this session in from this address itself from now on (access.SESSION_VALUE
        and an IP literal: both safe as file names). The file's time is when: sweep_admitted."""
        if not ip_literal(address):
            return
        directory = self.places.admitted_dir / session.value
        with contextlib.suppress(OSError):
            directory.mkdir(mode=0o700, exist_ok=True)
            pair = directory / address
            pair.touch()
            os.utime(pair, (now, now))

    def revoke(self, session: access.Session, now: float) -> None:
        self.revoked[session.id] = session.expiry
        self.forget_admitted(lambda name: f".{session.id}." in name)
        self.save_revoked(now)

    def save_revoked(self, now: float) -> None:
        self.revoked = {sid: expiry for sid, expiry in self.revoked.items() if expiry > now}
        text = json.dumps(self.revoked)
        for path in self.places.revoked_files:
            try:
                write_private(path, text)
                return
            except OSError:
                continue
        log("ERROR: the revoked sessions could not be written; they stay revoked until the verifier restarts")

    def forget_admitted(self, which: Any = None) -> None:
        """Remove admitted pairs: every one, or the sessions `which(name)` picks."""
        with contextlib.suppress(OSError):
            for directory in self.places.admitted_dir.iterdir():
                if which is None or which(directory.name):
                    shutil.rmtree(directory, ignore_errors=True)

    def sweep_admitted(self, now: float) -> None:
        """Expired sessions and pairs older than ADMIT_SECONDS leave Caddy's list."""
        with contextlib.suppress(OSError):
            for directory in self.places.admitted_dir.iterdir():
                found = access.SESSION_VALUE.fullmatch(directory.name)
                if found is None or int(found["expiry"]) <= now or found["id"] in self.revoked:
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                for pair in directory.iterdir():
                    with contextlib.suppress(OSError):
                        if pair.stat().st_mtime < now - ADMIT_SECONDS:
                            pair.unlink()
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty

    def use_settings(self, settings: Settings) -> None:
        """New settings (a new token, key or binding): what was admitted under the old ones goes."""
        self.settings = settings
        self.limiter.limit = settings.failure_limit
        self.forget_admitted()

    def expire(self, now: float) -> None:
        for address in self.limiter.expired(now):
            self.block_file(address, create=False)
            log(f"{address}: cooldown over")
        self.refusals_logged = {k: t for k, t in self.refusals_logged.items() if now - t < REFUSAL_LOG_SECONDS}


def read_revoked(files: tuple[Path, ...]) -> dict[str, int]:
    revoked: dict[str, int] = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            revoked.update({str(k): int(v) for k, v in data.items() if isinstance(v, int)})
    return revoked


def read_lockouts(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = data.get("lockouts") if isinstance(data, dict) else None
    return [e for e in found if isinstance(e, dict)][:LOCKOUTS_KEPT] if isinstance(found, list) else []


def load_settings(path: Path) -> Settings:
    return Settings.from_json(json.loads(path.read_text(encoding="utf-8")))


# ---- the wire: one request per request, no bodies -------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    method: str
    path: str
    headers: dict[str, str]
    close: bool


class BadRequest(ValueError):
    pass


def decode(value: bytes) -> str:
    """Header bytes as text without losing any (access.token_matches encodes them back)."""
    return value.decode("utf-8", "surrogateescape")


def parse_head(head: bytes) -> Parsed:
    """A request head (without its blank line) -> method, path, headers (lowercase names, empty
    values left out), or BadRequest. A body of any kind is refused: Caddy's requests have none."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in {b"HTTP/1.1", b"HTTP/1.0"}:
        raise BadRequest("not an HTTP/1.1 request line")
    headers: dict[str, str] = {}
    close = parts[2] == b"HTTP/1.0"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not HEADER_NAME.fullmatch(name):
            raise BadRequest("a malformed header line")
        key = name.decode("ascii").lower()
        if key in {"transfer-encoding"} or (key == "content-length" and value.strip() != b"0"):
            raise BadRequest("a request with a body")
        if key == "connection" and b"close" in value.lower():
            close = True
        text = decode(value.strip(b" \t"))
        if text:
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Parsed(decode(parts[0]), decode(parts[1]).partition("?")[0], headers, close)


def response_bytes(answer: Answer, close: bool) -> bytes:
    body = answer.body.encode()
    lines = [f"HTTP/1.1 {answer.status} {STATUS_TEXT.get(answer.status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in answer.headers]
    if body:
        lines.append(f"Content-Type: {answer.content_type}")
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


STATUS_TEXT = {200: "OK", 302: "Found", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
               403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
               431: "Request Header Fields Too Large"}  # fmt: skip
REFUSED = Answer(
    400, (("Cache-Control", "no-store"),), '{"error": "the login check takes GET requests without a body"}\n'
)


class Service:
    """What one request head gets: the verifier's answer, with the settings file re-read when
    the proxy rendered it anew."""

    def __init__(self, verifier: Verifier, settings_file: Path) -> None:
        self.verifier = verifier
        self.settings_file = settings_file
        self.settings_stamp = self.stamp()

    def stamp(self) -> tuple[int, int]:
        try:
            stat = self.settings_file.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_ino)

    def reload_settings(self) -> None:
        stamp = self.stamp()
        if stamp in (self.settings_stamp, (0, 0)):
            return
        try:
            settings = load_settings(self.settings_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"ERROR: cannot read {self.settings_file} ({type(exc).__name__}); keeping the settings read before")
            return
        self.settings_stamp = stamp
        self.verifier.use_settings(settings)

    def respond(self, head: bytes, now: float) -> tuple[bytes, bool]:
        """(response bytes, whether to close the connection)."""
        try:
            parsed = parse_head(head)
        except BadRequest:
            return response_bytes(REFUSED, close=True), True
        if parsed.method != "GET":
            return response_bytes(REFUSED, close=True), True
        self.reload_settings()
        request = Request.from_headers(parsed.headers)
        try:
            if parsed.path == "/logout":
                answer = self.verifier.logout(request, now)
            else:
                answer = self.verifier.decide(request, now)
        except Exception as exc:  # a bug: refuse (never let in), say so, keep serving
            log(f"ERROR: the check failed ({type(exc).__name__}); the request is refused")
            answer = unauthorized(request)
        return response_bytes(answer, parsed.close), parsed.close


class Connection(asyncio.Protocol):
    """One of Caddy's connections: a request head, its answer, then the next (keep-alive).
    Bytes after a head, before its answer went out, are a request smuggled or a body: refused."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self.finish(response_bytes(REFUSED, close=True))
            return
        head, rest = self.buffer[:end], self.buffer[end + 4 :]
        self.buffer = b""
        if rest or len(head) > MAX_HEAD_BYTES:
            self.finish(response_bytes(REFUSED, close=True))
            return
        answer, close = self.service.respond(head, time.time())
        if close:
            self.finish(answer)
        else:
            self.transport.write(answer)

    def finish(self, answer: bytes) -> None:
        if self.transport is not None:
            self.transport.write(answer)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def prepare(places: Places) -> None:
    """The verifier's directories, root-only, without an earlier run's cooldowns and admitted
    sessions (they end with it; revoked sessions stay revoked)."""
    for directory in (places.blocked_dir, places.admitted_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in places.blocked_dir.iterdir():
        stale.unlink(missing_ok=True)
    for stale in places.admitted_dir.iterdir():
        shutil.rmtree(stale, ignore_errors=True)


async def run_server(service: Service, socket_path: Path, ready: asyncio.Event | None = None) -> None:
    socket_path.unlink(missing_ok=True)
    old_mask = os.umask(0o177)  # the socket: its owner only (Caddy runs as the same user)
    try:
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: Connection(service), str(socket_path), backlog=LISTEN_BACKLOG
        )
    finally:
        os.umask(old_mask)
    verifier = service.verifier

    async def every_second() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(1)
            now = time.time()
            verifier.expire(now)
            ticks += 1
            if ticks % 10 == 0:
                verifier.sweep_admitted(now)

    housekeeping = asyncio.create_task(every_second())
    binding = verifier.settings.binding.describe()
    log(f"login verifier ready on {socket_path} (sessions last {access.SESSION_SECONDS // 86400} days, "
        f"bound to the network they are made in: SESSION_BIND={binding})")  # fmt: skip
    if ready is not None:
        ready.set()
    try:
        async with server:
            await server.serve_forever()
    finally:
        housekeeping.cancel()


def serve(
    settings_file: Path = paths.VERIFIER_SETTINGS_FILE,
    socket_path: Path = paths.VERIFIER_SOCKET,
    places: Places | None = None,
) -> int:
    places = places or Places()
    deadline = time.monotonic() + 30
    while not settings_file.is_file():
        # The proxy's first render writes them, a moment after this program starts.
        if time.monotonic() > deadline:
            log(f"ERROR: {settings_file} did not appear (program proxy renders it); exiting")
            return 1
        time.sleep(0.1)
    prepare(places)
    service = Service(Verifier(load_settings(settings_file), places), settings_file)
    asyncio.run(run_server(service, socket_path))
    return 0
