"""Who may pass the proxy, decided without I/O: the tokens, login sessions, the origin proof
that cookie and basic-auth requests need to change anything, and the guessing limit.

A session is a cookie `llama_<instance>_auth=v1.<expiry>.<signature>`: the signature is an
HMAC of the expiry under a key derived from the instance's secret (root-only, kept across
restarts) and every valid token, so it says nothing about the token, a new token or secret ends
every session, and a cookie of one instance is no use to another. The name carries an id
derived from the secret: two instances on one host (cookies are per host, not per port) keep
their own login.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SESSION_SECONDS = 7 * 24 * 3600  # the reference image's Max-Age=604800
COOKIE_PREFIX = "llama_"
COOKIE_SUFFIX = "_auth"
# Every cookie of this scheme, any instance's: none of them is passed on to a service.
ANY_SESSION_COOKIE = r"llama_[0-9a-f]{12}_auth"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

FAILURE_WINDOW_SECONDS = 60.0
DEFAULT_FAILURE_LIMIT = 10  # failed attempts per client address and minute before the cooldown
COOLDOWN_SECONDS = 60

MIN_TOKEN_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 8
MIN_TOKEN_BITS = 64


def cookie_name(secret: bytes) -> str:
    """Per instance: an id derived from the instance's secret (reveals nothing about it)."""
    instance = hashlib.sha256(b"cookie-name\0" + secret).hexdigest()[:12]
    return f"{COOKIE_PREFIX}{instance}{COOKIE_SUFFIX}"


def session_key(secret: bytes, username: str, tokens: Sequence[str]) -> bytes:
    """Sessions are signed with this: a new secret, token or user name ends them all."""
    material = "\0".join([username, *sorted(set(tokens))]).encode()
    return hmac.new(secret, b"session-key\0" + material, hashlib.sha256).digest()


def _signature(key: bytes, expiry: int) -> str:
    digest = hmac.new(key, f"v1.{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session(key: bytes, now: float, lifetime: int = SESSION_SECONDS) -> str:
    expiry = int(now) + lifetime
    return f"v1.{expiry}.{_signature(key, expiry)}"


def session_valid(key: bytes, value: str, now: float) -> bool:
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
        return False
    expiry = int(parts[1])
    return hmac.compare_digest(_signature(key, expiry), parts[2]) and now < expiry


def set_cookie(name: str, value: str, secure: bool, lifetime: int = SESSION_SECONDS) -> str:
    flags = f"; Path=/; Max-Age={lifetime}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return f"{name}={value}{flags}"


def cookie_values(header: str, name: str) -> list[str]:
    """Every value of cookie `name` in a Cookie header (a browser may send a name twice)."""
    found = []
    for part in header.split(";"):
        key, equals, value = part.strip().partition("=")
        if equals and key == name:
            found.append(value.strip())
    return found


def token_matches(candidate: str, tokens: Sequence[str]) -> bool:
    """Compared in constant time against every valid token."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate.encode(), token.encode())
    return matched


def basic_credentials(header: str) -> tuple[str, str] | None:
    """`Basic <base64 user:password>` (scheme in any case) -> (user, password), else None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


def bearer_credential(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def host_and_port(authority: str, scheme: str) -> tuple[str, int] | None:
    """`host[:port]` (brackets for IPv6) -> (lowercase host, port), the scheme's port if none."""
    try:
        parsed = urlsplit(f"//{authority}")
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return parsed.hostname.lower(), port or default_port(scheme)


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Does the Origin header name this very scheme://host:port (the request's own)?"""
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    if parsed.scheme != scheme or parsed.path not in {"", "/"} or parsed.query or parsed.username:
        return False
    return host_and_port(parsed.netloc, scheme) == host_and_port(host, scheme)


def origin_problem(method: str, headers: Mapping[str, str], scheme: str, host: str) -> str | None:
    """Why a browser request authenticated by a cookie or basic auth (both sent by browsers on
    their own) may not do this, or None. Reading (GET, HEAD, OPTIONS) needs no proof; changing
    anything, or opening a websocket, needs the browser's word that the page sending it is this
    origin: Sec-Fetch-Site same-origin (or none: typed by the user), else an Origin equal to the
    request's own scheme://host:port. Other ports of the same host are other origins. A client
    that sends neither header is not a browser, and not a page's tool."""
    websocket = headers.get("upgrade", "").lower() == "websocket"
    if method.upper() in SAFE_METHODS and not websocket:
        return None
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site:
        if fetch_site in {"same-origin", "none"}:
            return None
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is None or same_origin(origin, scheme, host):
        return None
    return "Origin is another site or port"


def token_weakness(token: str) -> str | None:
    """Why a user-chosen token is easy to guess, or None. Generated tokens have 192 bits."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it is shorter than {MIN_TOKEN_LENGTH} characters"
    if len(set(token)) < MIN_DISTINCT_CHARACTERS:
        return f"it has fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    alphabet = sum(
        size
        for present, size in (
            (any(c.islower() for c in token), 26),
            (any(c.isupper() for c in token), 26),
            (any(c.isdigit() for c in token), 10),
            (any(not c.isalnum() for c in token), 33),
        )
        if present
    )
    if len(token) * math.log2(max(alphabet, 2)) < MIN_TOKEN_BITS:
        return f"its characters come from a small alphabet (under {MIN_TOKEN_BITS} bits)"
    return None


@dataclass
class FailureLimiter:
    """Failed attempts per client address in a sliding minute; past `limit` the address is
    refused for `cooldown` seconds, whatever it sends."""

    limit: int = DEFAULT_FAILURE_LIMIT
    cooldown: int = COOLDOWN_SECONDS
    window: float = FAILURE_WINDOW_SECONDS
    failures: dict[str, deque[float]] = field(default_factory=dict)
    blocked: dict[str, float] = field(default_factory=dict)  # address -> end of the cooldown

    def recent(self, address: str, now: float) -> int:
        times = self.failures.get(address)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[address]
            return 0
        return len(times)

    def fail(self, address: str, now: float) -> tuple[int, bool]:
        """Record a failure: (failures in the last minute, whether the address is now blocked)."""
        count = self.recent(address, now) + 1
        self.failures.setdefault(address, deque()).append(now)
        if self.limit > 0 and count >= self.limit:
            self.blocked[address] = now + self.cooldown
            self.failures.pop(address, None)
            return count, True
        return count, False

    def is_blocked(self, address: str, now: float) -> bool:
        return self.blocked.get(address, 0.0) > now

    def expired(self, now: float) -> list[str]:
        """Addresses whose cooldown is over (forgotten as they are returned)."""
        done = [address for address, until in self.blocked.items() if until <= now]
        for address in done:
            del self.blocked[address]
        for address in list(self.failures):
            self.recent(address, now)
        return done
