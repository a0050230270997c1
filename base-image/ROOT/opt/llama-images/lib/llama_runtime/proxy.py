"""The declared services -> Caddy's JSON config: one server per external port. API clients are
checked inside Caddy by exact matches against precomputed values (no hashing, no extra hop per
request); everything a browser does that needs a signature or a count goes to the login
verifier (llama_runtime/verifier.py) on a root-only unix socket, which Caddy asks first
(forward_auth).

On a protected port, in this order:
  /logout (the portal's port only)                       the verifier: POST ends the session
  a session the verifier admitted for this client address,
  no other credential, within the origin rules            passed (a stat; see verifier.py)
  a client address in its cooldown (too many failures)   a session cookie: the verifier decides
                                                         (only a valid session passes); else
                                                         429 + Retry-After, whatever it sends
  CORS preflight from a CORS_ALLOWED_ORIGINS origin      204 (opt-in)
  Authorization: Bearer <token> (scheme in any case)     passed (the header removed)
  Basic <WEB_USERNAME:token>, GET/HEAD/OPTIONS           passed (the header removed)
  ?token=<token> from a non-browser                      passed (the token removed from the query)
  any other credential (a wrong token, basic auth that
  changes something, a browser's ?token=, a session)     the verifier decides: passed, 302 +
                                                         session cookie, 401, 403 or 429
  no credential                                          401 (a token form for browsers, JSON)
Every session cookie is removed before a request reaches a service, on every port. A service
that checks a token of its own (`token_scheme`, JupyterLab) gets it from the proxy on the requests
the proxy let in; on a port left open, the client must bring it.
A service whose port does not answer: 503 + Retry-After, carrying its status line.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import paths
from .access import ANY_SESSION_COOKIE, COOLDOWN_SECONDS, SAFE_METHODS
from .services import Service, env_flag

RETRY_AFTER_SECONDS = 5
TLS_TAG = "llama-images"
DEFAULT_USERNAME = "vastai"  # the reference image's
# Set by the proxy on protected ports (how the request was let in), removed everywhere else:
# the portal's own origin check trusts it.
AUTH_HEADER = "X-Llama-Images-Auth"
# Where the portal's logout form posts (its own port): the verifier ends the session.
LOGOUT_SERVICE = "portal"
LOGOUT_PATH = "/logout"
CORS_VARIABLES = ("CORS_ALLOWED_ORIGINS", "CADDY_CORS_ALLOWED_ORIGINS")
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)


@dataclass(frozen=True)
class Auth:
    tokens: tuple[str, ...]
    username: str = DEFAULT_USERNAME
    enabled: bool = True
    excluded_ports: frozenset[int] = field(default_factory=frozenset)
    cookie: str = "llama_000000000000_auth"  # this instance's session cookie (access.cookie_name)
    cors_origins: tuple[str, ...] = ()
    verifier_socket: Path = paths.VERIFIER_SOCKET
    blocked_dir: Path = paths.BLOCKED_DIR
    admitted_dir: Path = paths.ADMITTED_DIR
    # Service name -> its own token (services declaring `token_scheme`): sent on what the proxy let in.
    service_tokens: tuple[tuple[str, str], ...] = ()

    def protects(self, port: int) -> bool:
        return self.enabled and port not in self.excluded_ports


@dataclass(frozen=True)
class Tls:
    certificate: Path
    key: Path


def basic_value(username: str, token: str) -> str:
    return base64.b64encode(f"{username}:{token}".encode()).decode()


def regex_literal(text: str) -> str:
    """`text` as a literal in a Go (RE2) regular expression: every ASCII non-alphanumeric escaped."""
    return "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in text)


def placeholder_literal(text: str) -> str:
    """Caddy expands {placeholders} in matcher values; escaped braces stay literal."""
    return text.replace("{", "\\{").replace("}", "\\}")


def token_problem(token: str) -> str | None:
    """Why a token cannot be used, or None. Control characters cannot travel in headers;
    a lone '*' would be a wildcard to Caddy's query matcher."""
    if not token:
        return "is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        return "contains a control character (newline, tab...)"
    if token == "*":
        return "is '*', which the proxy would treat as a wildcard"
    return None


BROWSER_SETS: list[dict[str, Any]] = [
    {"header_regexp": {"Accept": {"pattern": "text/html"}}},
    {"header": {"Sec-Fetch-Dest": ["document"]}},
]
BROWSER: dict[str, Any] = BROWSER_SETS[0]


def fast_path_matchers(auth: Auth) -> dict[str, list[dict[str, Any]]]:
    """Credentials Caddy checks itself, by kind: exact values, the scheme in any case (RFC 7235)."""
    return {
        "bearer": [
            {"header_regexp": {"Authorization": {"pattern": f"^(?i:bearer) +{regex_literal(t)}$"}}} for t in auth.tokens
        ],
        # Browsers send basic auth on their own: only reading passes here, the rest needs the
        # verifier's origin check (as does opening a websocket).
        "basic": [
            {
                "header_regexp": {
                    "Authorization": {"pattern": f"^(?i:basic) +{regex_literal(basic_value(auth.username, t))}$"}
                },
                "method": sorted(SAFE_METHODS),
                "not": [{"header": {"Upgrade": ["*"]}}],
            }
            for t in auth.tokens
        ],
        "token": [{"query": {"token": [placeholder_literal(t)]}, "not": BROWSER_SETS} for t in auth.tokens],
    }


def has_credential(auth: Auth) -> list[dict[str, Any]]:
    return [{"header": {"Authorization": ["*"]}}, {"query": {"token": ["*"]}}, session_cookie(auth)]


UNAUTHORIZED_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Token required</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>Token required</h1>
<p>This service is protected. Open it with <code>?token=&lt;token&gt;</code>, or enter the token
(<code>OPEN_BUTTON_TOKEN</code> / <code>WEB_PASSWORD</code>):</p>
<form method="get"><input name="token" type="password" autofocus> <button>Open</button></form>
</body></html>
"""
LOGGED_OUT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Logged out</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>Logged out</h1>
<p>This browser's login session is ended: a copy of its cookie no longer opens anything. To log in
again, enter the token:</p>
<form method="get" action="/"><input name="token" type="password" autofocus> <button>Log in</button></form>
</body></html>
"""
JSON_UNAUTHORIZED = '{"error": "unauthorized", "hint": "send Authorization: Bearer <token>"}\n'
BASIC_CHALLENGE = 'Basic realm="llama-images", charset="UTF-8"'
BEARER_CHALLENGE = 'Bearer realm="llama-images"'
COOLDOWN_MESSAGE = (
    f"too many failed attempts from your address: every protected port refuses it for {COOLDOWN_SECONDS} s"
)
COOLDOWN_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Too many attempts</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>Too many failed attempts</h1><p>Wait {COOLDOWN_SECONDS} seconds, then try again with the right token.</p>
</body></html>
"""
JSON_COOLDOWN = f'{{"error": "{COOLDOWN_MESSAGE}"}}\n'
CROSS_SITE_MESSAGE = "refused: this request comes from another site or port (Origin / Sec-Fetch-Site)"


def by_accept(browser: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """One answer for browsers (Accept: text/html), another for API clients."""
    return {"handler": "subroute", "routes": [{"match": [BROWSER], "handle": [browser]}, {"handle": [other]}]}


def unauthorized() -> dict[str, Any]:
    return by_accept(
        response(401, UNAUTHORIZED_PAGE, "text/html; charset=utf-8", {"WWW-Authenticate": [BASIC_CHALLENGE]}),
        response(401, JSON_UNAUTHORIZED, "application/json", {"WWW-Authenticate": [BEARER_CHALLENGE]}),
    )


def cooling_down() -> dict[str, Any]:
    retry = {"Retry-After": [str(COOLDOWN_SECONDS)]}
    return by_accept(
        response(429, COOLDOWN_PAGE, "text/html; charset=utf-8", retry),
        response(429, JSON_COOLDOWN, "application/json", retry),
    )


def strip_credentials() -> list[dict[str, Any]]:
    """The proxy's own credentials are not passed on to the service."""
    return [
        {"handler": "headers", "request": {"delete": ["Authorization"]}},
        {"handler": "rewrite", "query": {"delete": ["token"]}},
    ]


def mark(kind: str) -> dict[str, Any]:
    return {"handler": "headers", "request": {"set": {AUTH_HEADER: [kind]}}}


# What the verifier reads of the client's request; every other header is left out.
VERIFIER_READS = ("Authorization", "Cookie", "Accept", "Origin", "Sec-Fetch-Site", "Sec-Fetch-Dest", "Upgrade")


def verifier_request(auth: Auth, service: Service, path: str) -> dict[str, Any]:
    """A request to the verifier of Caddy's own making: GET, no body, only the headers it reads,
    each set here (empty when the client sent none), whatever the client sent. The URI carries a
    fresh id no client request can have: Caddy drops the client's body only when its rewrite
    changes the request (a client's own `GET /verify` with a body would keep it)."""
    forwarded = {name: [f"{{http.request.header.{name}}}"] for name in VERIFIER_READS}
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{auth.verifier_socket}"}],
        "rewrite": {"method": "GET", "uri": f"{path}?request={{http.request.uuid}}"},
        "headers": {
            "request": {
                "delete": ["*"],  # applied before `set`: nothing of the client's but what follows
                "set": {
                    **forwarded,
                    "X-Forwarded-Method": ["{http.request.method}"],
                    "X-Forwarded-Uri": ["{http.request.uri}"],
                    "X-Llama-Client": ["{http.request.remote.host}"],
                    "X-Llama-Scheme": ["{http.request.scheme}"],
                    "X-Llama-Host": ["{http.request.hostport}"],
                    "X-Llama-Port": [str(service.external_port)],
                },
            }
        },
    }


VERIFIER_DOWN = '{"error": "the login check is not answering yet; try again"}\n'


def ask_verifier(auth: Auth, service: Service) -> dict[str, Any]:
    """forward_auth: the verifier answers 2xx (go on; how it let the request in comes back in
    X-Llama-Auth), or the response the client gets (302 + session, 401, 403, 429)."""
    asking = {
        **verifier_request(auth, service, "/verify"),
        "handle_response": [
            {
                "match": {"status_code": [2]},
                "routes": [
                    {"handle": [{"handler": "vars"}]},
                    {"handle": [mark("{http.reverse_proxy.header.X-Llama-Auth}")]},
                ],
            }
        ],
    }
    unreachable = response(503, VERIFIER_DOWN, "application/json")
    return {"handler": "subroute", "routes": [{"handle": [asking]}], "errors": {"routes": [{"handle": [unreachable]}]}}


def logout_route(auth: Auth, service: Service) -> dict[str, Any]:
    """The portal's logout form: the verifier's answer (303, the cookie cleared) goes to the client."""
    unreachable = response(503, VERIFIER_DOWN, "application/json")
    ending = {
        "handler": "subroute",
        "routes": [{"handle": [verifier_request(auth, service, LOGOUT_PATH)]}],
        "errors": {"routes": [{"handle": [unreachable]}]},
    }
    return {"match": [{"path": [LOGOUT_PATH]}], "handle": [ending], "terminal": True}


def session_cookie(auth: Auth) -> dict[str, Any]:
    return {"header_regexp": {"Cookie": {"pattern": f"(?:^|;)\\s*{regex_literal(auth.cookie)}="}}}


def admitted_session(auth: Auth) -> list[dict[str, Any]]:
    """A session the verifier let in from this very address (a file it keeps: one stat), with no
    other credential, and only where the verifier's origin rules need no Origin comparison:
    reading, or the browser's word that the page is this origin, or no browser at all. Anything
    else (and every first request of a pair) goes to the verifier."""
    pair = f"/{{http.request.cookie.{auth.cookie}}}/{{http.request.remote.host}}"
    admitted = {"file": {"root": str(auth.admitted_dir), "try_files": [pair]}}
    other_credential = [{"header": {"Authorization": ["*"]}}, {"query": {"token": ["*"]}}]
    return [
        {**admitted, "method": sorted(SAFE_METHODS), "not": [*other_credential, {"header": {"Upgrade": ["*"]}}]},
        {**admitted, "header": {"Sec-Fetch-Site": ["same-origin", "none"]}, "not": other_credential},
        {
            **admitted,
            "not": [*other_credential, {"header": {"Sec-Fetch-Site": ["*"]}}, {"header": {"Origin": ["*"]}}],
        },
    ]


def strip_session_cookies() -> dict[str, Any]:
    """Every instance's session cookie out of the Cookie header (the browser sends them to every
    port of the host; no service, here or a neighbour's, should see one)."""
    return {
        "handler": "headers",
        "request": {
            "replace": {
                "Cookie": [
                    # Those after another cookie with their "; ", then a first one with its own.
                    {"search_regexp": f";\\s*{ANY_SESSION_COOKIE}=[^;]*", "replace": ""},
                    {"search_regexp": f"^\\s*{ANY_SESSION_COOKIE}=[^;]*(?:;\\s*)?", "replace": ""},
                ]
            }
        },
    }


def cors_routes(auth: Auth) -> list[dict[str, Any]]:
    """Preflights from the allowed origins (CORS_ALLOWED_ORIGINS), answered before auth: a
    browser sends no credential with them. Never with credentials: only an explicit
    Authorization header (Bearer) is invited, not cookies."""
    if not auth.cors_origins:
        return []
    anyone = "*" in auth.cors_origins
    allowed = {"header": {"Origin": ["*"] if anyone else list(auth.cors_origins)}}
    preflight = {"header": {**allowed["header"], "Access-Control-Request-Method": ["*"]}, "method": ["OPTIONS"]}
    headers = {
        "Access-Control-Allow-Origin": ["*" if anyone else "{http.request.header.Origin}"],
        "Access-Control-Allow-Methods": ["GET, POST, PUT, PATCH, DELETE, OPTIONS"],
        "Access-Control-Allow-Headers": ["{http.request.header.Access-Control-Request-Headers}"],
        "Access-Control-Max-Age": ["600"],
        "Vary": ["Origin"],
    }
    return [
        {
            "match": [preflight],
            "handle": [{"handler": "static_response", "status_code": 204, "headers": headers}],
            "terminal": True,
        }
    ]


def upstream_handlers(service: Service, auth: Auth, protected: bool) -> list[dict[str, Any]]:
    handlers: list[dict[str, Any]] = [strip_session_cookies()]
    if not protected:
        handlers.append({"handler": "headers", "request": {"delete": [AUTH_HEADER]}})
        return [*handlers, {"handler": "subroute", "routes": upstream_routes(service)}]
    # On a protected port the proxy decides CORS: a service's own (llama-server echoes any
    # Origin, with credentials) would let another port's page read what a session may read.
    if auth.cors_origins:
        anyone = "*" in auth.cors_origins
        allowed = {"header": {"Origin": ["*"] if anyone else list(auth.cors_origins)}}
        origin = "*" if anyone else "{http.request.header.Origin}"
        handlers.append(
            {
                "handler": "subroute",
                "routes": [
                    {
                        "match": [allowed],
                        "handle": [
                            {
                                "handler": "headers",
                                "response": {"set": {"Access-Control-Allow-Origin": [origin], "Vary": ["Origin"]}},
                            }
                        ],
                    }
                ],
            }
        )
    own_token = dict(auth.service_tokens).get(service.name)
    if service.token_scheme and own_token:
        # Let in by the proxy: the service's own token, which the client never sees.
        value = placeholder_literal(f"{service.token_scheme} {own_token}")
        handlers.append({"handler": "headers", "request": {"set": {"Authorization": [value]}}})
    return [*handlers, {"handler": "subroute", "routes": upstream_routes(service, strip_cors=True)}]


def own_token_ignored(service: Service, auth: Auth) -> list[dict[str, Any]]:
    """A service with a token of its own puts it in its pages (JupyterLab's page config), and its
    scripts send it back (`Authorization: token ...`, `?token=` on websockets). On its protected
    port that is no credential of the proxy's: removed before the login is looked at (the
    session those requests also carry decides), and the proxy sets it again on what it lets in."""
    own_token = dict(auth.service_tokens).get(service.name)
    if not service.token_scheme or not own_token:
        return []
    header = f"^(?i:{regex_literal(service.token_scheme)}) +{regex_literal(own_token)}$"
    return [
        {
            "match": [{"header_regexp": {"Authorization": {"pattern": header}}}],
            "handle": [{"handler": "headers", "request": {"delete": ["Authorization"]}}],
        },
        {
            "match": [{"query": {"token": [placeholder_literal(own_token)]}}],
            "handle": [{"handler": "rewrite", "query": {"delete": ["token"]}}],
        },
    ]


def auth_routes(service: Service, auth: Auth) -> list[dict[str, Any]]:
    fast = fast_path_matchers(auth)
    upstream = upstream_handlers(service, auth, protected=True)
    blocked = {"file": {"root": str(auth.blocked_dir), "try_files": ["/{http.request.remote.host}"]}}
    routes: list[dict[str, Any]] = own_token_ignored(service, auth)
    if service.name == LOGOUT_SERVICE:
        routes.append(logout_route(auth, service))
    routes += [
        {
            "match": admitted_session(auth),
            "handle": [*strip_credentials(), mark("cookie"), *upstream],
            "terminal": True,
        },
        # In a cooldown only a valid session passes, which the verifier checks.
        {
            "match": [{**blocked, **session_cookie(auth)}],
            "handle": [ask_verifier(auth, service), *strip_credentials(), *upstream],
            "terminal": True,
        },
        {"match": [blocked], "handle": [cooling_down()], "terminal": True},
    ]
    routes += cors_routes(auth)
    for kind in ("bearer", "basic", "token"):
        routes.append({"match": fast[kind], "handle": [*strip_credentials(), mark(kind), *upstream], "terminal": True})
    routes.append(
        {
            "match": has_credential(auth),
            "handle": [ask_verifier(auth, service), *strip_credentials(), *upstream],
            "terminal": True,
        }
    )
    routes.append({"handle": [unauthorized()], "terminal": True})
    return routes


def response(status: int, body: str, content_type: str, headers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "handler": "static_response",
        "status_code": status,
        "headers": {"Content-Type": [content_type], "Cache-Control": ["no-store"], **(headers or {})},
        "body": body,
    }


def unavailable_routes(service: Service, status_dir: Path) -> list[dict[str, Any]]:
    """503 while the service's port does not answer (Caddy's 502 on a failed dial), with the
    service's status line read at that moment (templates: only on this error path)."""
    name = service.name
    label = html.escape(service.label).replace("{", "&#123;").replace("}", "&#125;")
    line = f'{{{{ if fileExists "{name}" }}}}{{{{ readFile "{name}" | trim'
    json_body = (
        f'{{"error": "service unavailable", "service": "{name}", "status": '
        f'{line} | toJson }}}}{{{{ else }}}}"not answering yet"{{{{ end }}}}}}\n'
    )
    html_body = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{RETRY_AFTER_SECONDS}">'
        f"<title>{label}: starting</title></head>"
        '<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">'
        f"<h1>{label} is not available yet</h1>"
        f"<p>Status: <b>{line} | html }}}}{{{{ else }}}}not answering yet{{{{ end }}}}</b></p>"
        f"<p>This page reloads every {RETRY_AFTER_SECONDS} seconds.</p></body></html>\n"
    )
    templates = {"handler": "templates", "file_root": str(status_dir), "mime_types": ["application/json", "text/html"]}
    retry = {"Retry-After": [str(RETRY_AFTER_SECONDS)]}
    dial_failed = {"vars": {"{http.error.status_code}": ["502"]}}
    return [
        {
            "match": [{**dial_failed, **BROWSER}],
            "handle": [templates, response(503, html_body, "text/html; charset=utf-8", retry)],
            "terminal": True,
        },
        {
            "match": [dial_failed],
            "handle": [templates, response(503, json_body, "application/json", retry)],
            "terminal": True,
        },
    ]


# Methods that may be sent again on another connection when a kept-alive one turns out closed.
IDEMPOTENT = ["GET", "HEAD", "OPTIONS"]


def upstream_routes(service: Service, strip_cors: bool = False) -> list[dict[str, Any]]:
    """The service behind the proxy. Requests other than GET, HEAD and OPTIONS (POST: generations,
    often streamed) each go on a fresh connection: llama-server closes a connection after a
    streamed response without saying so, a request sent on it in that instant fails (a 503 to
    the client), and a POST must not be sent twice. GET and friends reuse connections (Go's HTTP
    client, inside Caddy, sends those again when a kept-alive connection turns out closed)."""
    proxy: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{dial_host(service.host)}:{service.internal_port}"}],
        # Stream every write at once: server-sent events and token streams.
        "flush_interval": -1,
    }
    if strip_cors:
        proxy["headers"] = {"response": {"delete": list(CORS_HEADERS)}}
    fresh = {**proxy, "transport": {"protocol": "http", "keep_alive": {"enabled": False}}}
    return [
        {"match": [{"not": [{"method": IDEMPOTENT}]}], "handle": [fresh], "terminal": True},
        {"handle": [proxy]},
    ]


def server(service: Service, auth: Auth, tls: Tls | None, status_dir: Path) -> dict[str, Any]:
    if auth.protects(service.external_port):
        routes = auth_routes(service, auth)
    else:
        routes = [{"handle": upstream_handlers(service, auth, protected=False)}]
    found: dict[str, Any] = {
        "listen": [f":{service.external_port}"],
        "routes": routes,
        "errors": {"routes": unavailable_routes(service, status_dir)},
        "automatic_https": {"disable": True},
        # TCP only: no HTTP/3 listener on UDP ports nobody published.
        "protocols": ["h1", "h2"],
    }
    if tls is not None:
        found["tls_connection_policies"] = [{"certificate_selection": {"any_tag": [TLS_TAG]}}]
        # Plain http:// sent to a TLS port gets a redirect to https:// instead of an error.
        found["listener_wrappers"] = [{"wrapper": "http_redirect"}, {"wrapper": "tls"}]
    return found


def caddy_config(
    services: Sequence[Service],
    auth: Auth,
    tls: Tls | None = None,
    status_dir: Path = paths.STATUS_DIR,
    storage: Path = paths.CADDY_STORAGE_DIR,
) -> dict[str, Any]:
    """Caddy's config for every published service (enabled, not a link only). Caddy's own admin
    API is off: the config is rendered each time program proxy starts, so restarting it applies
    a changed declaration or setting."""
    config: dict[str, Any] = {
        "admin": {"disabled": True, "config": {"persist": False}},
        # Caddy's per-request error log would repeat request URIs; boot logs what matters.
        "logging": {"logs": {"default": {"level": "ERROR", "exclude": ["http.log.error"]}}},
        "storage": {"module": "file_system", "root": str(storage)},
        "apps": {
            "http": {
                "grace_period": "1s",
                "servers": {f"srv-{s.name}": server(s, auth, tls, status_dir) for s in services if s.published},
            }
        },
    }
    if tls is not None:
        config["apps"]["tls"] = {
            "certificates": {
                "load_files": [{"certificate": str(tls.certificate), "key": str(tls.key), "tags": [TLS_TAG]}]
            }
        }
    return config


def dial_host(host: str) -> str:
    """An IPv6 address in brackets (`[::1]`), as an address:port pair needs it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_ports(value: str) -> tuple[frozenset[int], list[str]]:
    """AUTH_EXCLUDE "8080, 8000" -> ports, and problems for entries that are not ports."""
    ports: set[int] = set()
    problems = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        if item.isdigit() and 1 <= int(item) <= 65535:
            ports.add(int(item))
        else:
            problems.append(f"AUTH_EXCLUDE: {item!r} is not a port; use e.g. AUTH_EXCLUDE=8080,8000")
    return frozenset(ports), problems


def parse_origins(value: str) -> tuple[tuple[str, ...], list[str]]:
    """CORS_ALLOWED_ORIGINS "https://a.example, http://b:3000" (or "*") -> origins, and problems."""
    origins: list[str] = []
    problems = []
    for item in (i.strip().rstrip("/") for i in value.split(",")):
        if not item:
            continue
        parsed = urlsplit(item)
        if item == "*" or (parsed.scheme in {"http", "https"} and parsed.netloc and not parsed.path):
            origins.append(item)
        else:
            problems.append(f"CORS_ALLOWED_ORIGINS: {item!r} is not an origin; use e.g. https://app.example:3000")
    return tuple(origins), problems


def auth_from_env(env: Mapping[str, str], tokens: Sequence[str], cookie: str) -> tuple[Auth, list[str]]:
    """ENABLE_AUTH, AUTH_EXCLUDE, WEB_USERNAME and CORS_ALLOWED_ORIGINS -> who the proxy lets in,
    and problems."""
    excluded, problems = parse_ports(env.get("AUTH_EXCLUDE", ""))
    cors = next((env[name] for name in CORS_VARIABLES if env.get(name, "").strip()), "")
    origins, cors_problems = parse_origins(cors)
    enabled = env_flag(env, "ENABLE_AUTH", default=True)
    username = env.get("WEB_USERNAME") or DEFAULT_USERNAME
    auth = Auth(tuple(tokens), username, enabled, excluded, cookie, origins)
    return auth, problems + cors_problems
