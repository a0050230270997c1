"""Who may pass the proxy, decided without I/O: the tokens, login sessions, the origin proof
that cookie and basic-auth requests need to change anything, and the guessing limit.

A session is a cookie `llama_<instance>_auth=v2.<expiry>.<id>.<binding>.<signature>`:
- `<id>`: random, per login; a logout puts it on the revoked list (the verifier keeps it there
  until the expiry), which ends that session and no other.
- `<binding>`: `<prefix>-<tag>`, the network the browser logged in from (by default its IPv4 /24
  or IPv6 /64; SESSION_BIND): the prefix length and a keyed tag of that network, so the cookie
  does not show it. A session used from another network is refused. `any`: not bound
  (SESSION_BIND=none).
- `<signature>`: an HMAC of all of the above under a key derived from the instance's secret
  (root-only, kept across restarts) and every valid token, so it says nothing about the token, a
  new token or secret ends every session, and a cookie of one instance is no use to another.
The name carries an id derived from the secret: two instances on one host (cookies are per host,
not per port) keep their own login.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
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

# The whole value, ASCII only: anything else is not a session (never an exception).
SESSION_VALUE = re.compile(
    r"v2\.(?P<expiry>[1-9][0-9]{0,11})\.(?P<id>[A-Za-z0-9_-]{16})"
    r"\.(?P<binding>any|(?P<prefix>[0-9]{1,3})-(?P<tag>[A-Za-z0-9_-]{11}))\.(?P<signature>[A-Za-z0-9_-]{43})",
    re.ASCII,
)
UNBOUND = "any"


@dataclass(frozen=True)
class Binding:
    """How closely a session is tied to where it was made: a prefix length per address family,
    None for not at all (SESSION_BIND=none)."""

    ipv4: int | None = 24
    ipv6: int | None = 64

    def prefix(self, version: int) -> int | None:
        return self.ipv4 if version == 4 else self.ipv6

    def describe(self) -> str:
        if self.ipv4 is None and self.ipv6 is None:
            return "none"
        return f"{self.ipv4 if self.ipv4 is not None else 'none'},{self.ipv6 if self.ipv6 is not None else 'none'}"


DEFAULT_BINDING = Binding()
SESSION_BIND_HELP = (
    "use network (IPv4 /24, IPv6 /64: the default), address (/32, /128), none, or two prefix lengths "
    "IPV4,IPV6 such as 16,48"
)


def parse_binding(value: str) -> tuple[Binding, str | None]:
    """SESSION_BIND -> (binding, problem). A bad value keeps the default and says why."""
    text = value.strip().lower()
    named = {"": DEFAULT_BINDING, "network": DEFAULT_BINDING, "address": Binding(32, 128), "none": Binding(None, None)}
    if text in named:
        return named[text], None
    parts = [p.strip().lstrip("/") for p in text.split(",")]
    if len(parts) == 2:
        limits = (32, 128)
        prefixes: list[int | None] = []
        for part, limit in zip(parts, limits, strict=True):
            if part == "none":
                prefixes.append(None)
            elif part.isascii() and part.isdigit() and 0 < int(part) <= limit:
                prefixes.append(int(part))
            else:
                break
        else:
            return Binding(prefixes[0], prefixes[1]), None
    return DEFAULT_BINDING, f"SESSION_BIND={value.strip()!r} is not understood; {SESSION_BIND_HELP}"


def client_network(address: str, prefix_for: Binding | int | None) -> str | None:
    """The network `address` belongs to, as text (`203.0.113.0/24`), at the binding's prefix for
    its address family (or the prefix given); None where that is "not bound". An address that is
    not an IP (never one from the proxy) stands for itself, as a network of its own."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return f"{address}/0"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = prefix_for.prefix(ip.version) if isinstance(prefix_for, Binding) else prefix_for
    if prefix is None:
        return None
    return str(ipaddress.ip_network((ip, min(prefix, ip.max_prefixlen)), strict=False))


def cookie_name(secret: bytes) -> str:
    """Per instance: an id derived from the instance's secret (reveals nothing about it)."""
    instance = hashlib.sha256(b"cookie-name\0" + secret).hexdigest()[:12]
    return f"{COOKIE_PREFIX}{instance}{COOKIE_SUFFIX}"


def session_key(secret: bytes, username: str, tokens: Sequence[str]) -> bytes:
    """Sessions are signed with this: a new secret, token or user name ends them all."""
    material = "\0".join([username, *sorted(set(tokens))]).encode()
    return hmac.new(secret, b"session-key\0" + material, hashlib.sha256).digest()


def _mac(key: bytes, purpose: bytes, text: str, length: int = 32) -> str:
    digest = hmac.new(key, purpose + b"\0" + text.encode(), hashlib.sha256).digest()[:length]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def network_tag(key: bytes, network: str) -> str:
    return _mac(key, b"network", network, 8)


@dataclass(frozen=True)
class Session:
    """A session value whose signature is this instance's (not yet checked: expiry, network)."""

    value: str
    expiry: int
    id: str
    prefix: int | None  # the binding's prefix length, None: not bound
    tag: str


def new_session(key: bytes, now: float, network: str | None, lifetime: int = SESSION_SECONDS) -> str:
    """A fresh session bound to `network` (`203.0.113.0/24`, None: not bound)."""
    expiry = int(now) + lifetime
    session_id = secrets.token_urlsafe(12)
    binding = UNBOUND if network is None else f"{network.rpartition('/')[2]}-{network_tag(key, network)}"
    payload = f"v2.{expiry}.{session_id}.{binding}"
    return f"{payload}.{_mac(key, b'session', payload)}"


def read_session(key: bytes, value: str) -> Session | None:
    """The session `value` holds when it is well formed and signed with `key`, else None."""
    found = SESSION_VALUE.fullmatch(value)
    if found is None:
        return None
    payload = value.rpartition(".")[0]
    if not hmac.compare_digest(_mac(key, b"session", payload), found["signature"]):
        return None
    prefix = int(found["prefix"]) if found["prefix"] is not None else None
    return Session(value, int(found["expiry"]), found["id"], prefix, found["tag"] or "")


def session_problem(key: bytes, session: Session, now: float, client: str, binding: Binding) -> str | None:
    """Why a signed session may not be used by `client` now, or None."""
    if now >= session.expiry:
        return "expired"
    network = client_network(client, session.prefix) if session.prefix is not None else None
    wanted = client_network(client, binding)
    if wanted is not None and session.prefix is None:
        return "made while sessions were not bound (SESSION_BIND)"
    if network is not None and not hmac.compare_digest(network_tag(key, network), session.tag):
        return "from another network"
    # Made under a looser SESSION_BIND than today's: no longer enough.
    if wanted is not None and network is not None and int(wanted.rpartition("/")[2]) > int(network.rpartition("/")[2]):
        return "bound more loosely than SESSION_BIND asks now"
    return None


def set_cookie(name: str, value: str, secure: bool, lifetime: int = SESSION_SECONDS) -> str:
    flags = f"; Path=/; Max-Age={lifetime}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return f"{name}={value}{flags}"


def clear_cookie(name: str, secure: bool) -> str:
    return f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def cookie_values(header: str, name: str) -> list[str]:
    """Every value of cookie `name` in a Cookie header (a browser may send a name twice; a proxy
    may have joined two headers with a comma, which no cookie value holds)."""
    found = []
    for part in header.replace(",", ";").split(";"):
        key, equals, value = part.strip().partition("=")
        if equals and key == name:
            found.append(value.strip())
    return found


def token_matches(candidate: str, tokens: Sequence[str]) -> bool:
    """Compared in constant time against every valid token."""
    given = candidate.encode("utf-8", "surrogateescape")  # header bytes as they came (verifier.decode)
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
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
