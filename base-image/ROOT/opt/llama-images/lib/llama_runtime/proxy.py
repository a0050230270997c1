"""The declared services -> Caddy's JSON config: one server per external port, auth checked
inside Caddy by exact matches against precomputed values (no hashing, no extra hop per request).

Credentials, in the order they are checked:
  ?token=<token>            a browser (Accept: text/html, GET) gets the cookie and a redirect to
                            the same URL without the token; other clients get the cookie and the
                            response. The token is removed from the query before it is proxied.
  Authorization: Bearer <token> / Basic <WEB_USERNAME:token>   (removed before it is proxied)
  Cookie llama_images_auth=<sha256 of the token>   HttpOnly, SameSite=Lax
Anything else: 401 (a short page with a token form for browsers, JSON otherwise).
A service whose port does not answer: 503 + Retry-After, carrying its status line.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .services import STATUS_DIR, Service, env_flag

COOKIE = "llama_images_auth"
RETRY_AFTER_SECONDS = 5
TLS_TAG = "llama-images"


@dataclass(frozen=True)
class Auth:
    token: str
    username: str = "admin"
    enabled: bool = True
    excluded_ports: frozenset[int] = field(default_factory=frozenset)

    def protects(self, port: int) -> bool:
        return self.enabled and port not in self.excluded_ports


@dataclass(frozen=True)
class Tls:
    certificate: Path
    key: Path


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token (cookie-safe, and not the token itself)."""
    return hashlib.sha256(b"llama-images-cookie\0" + token.encode()).hexdigest()


def basic_header(username: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()


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


def credential_sets(auth: Auth) -> dict[str, dict[str, Any]]:
    return {
        "query": {"query": {"token": [placeholder_literal(auth.token)]}},
        "bearer": {"header_regexp": {"Authorization": {"pattern": f"^Bearer {regex_literal(auth.token)}$"}}},
        "basic": {"header": {"Authorization": [basic_header(auth.username, auth.token)]}},
        "cookie": {"header_regexp": {"Cookie": {"pattern": f"(?:^|;\\s*){COOKIE}={cookie_value(auth.token)}(?:;|$)"}}},
    }


BROWSER = {"header_regexp": {"Accept": {"pattern": "text/html"}}}


def set_cookie(auth: Auth, secure: bool) -> str:
    return f"{COOKIE}={cookie_value(auth.token)}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


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

JSON_UNAUTHORIZED = '{"error": "unauthorized", "hint": "send Authorization: Bearer <token>"}\n'


def auth_routes(auth: Auth, secure: bool) -> list[dict[str, Any]]:
    sets = credential_sets(auth)
    cookie = set_cookie(auth, secure)
    strip_token = {"handler": "rewrite", "query": {"delete": ["token"]}}
    return [
        {
            # A browser opening a link with ?token=: cookie, then the same URL without the token.
            "match": [{**sets["query"], **BROWSER, "method": ["GET", "HEAD"]}],
            "handle": [
                strip_token,
                {
                    "handler": "static_response",
                    "status_code": 302,
                    "headers": {
                        "Location": ["{http.request.uri}"],
                        "Set-Cookie": [cookie],
                        "Cache-Control": ["no-store"],
                    },
                },
            ],
            "terminal": True,
        },
        {
            "match": [{"not": list(sets.values())}],
            "handle": [
                {
                    "handler": "subroute",
                    "routes": [
                        {
                            "match": [BROWSER],
                            "handle": [
                                response(
                                    401,
                                    UNAUTHORIZED_PAGE,
                                    "text/html; charset=utf-8",
                                    {"WWW-Authenticate": ['Basic realm="llama-images", charset="UTF-8"']},
                                )
                            ],
                        },
                        {
                            "handle": [
                                response(
                                    401,
                                    JSON_UNAUTHORIZED,
                                    "application/json",
                                    {"WWW-Authenticate": ['Bearer realm="llama-images"']},
                                )
                            ]
                        },
                    ],
                }
            ],
            "terminal": True,
        },
        {
            # An API client with ?token=: the cookie rides along with the real response.
            "match": [sets["query"]],
            "handle": [{"handler": "headers", "response": {"add": {"Set-Cookie": [cookie]}}}, strip_token],
        },
        {
            # The proxy's credential is not passed on to the service.
            "match": [sets["bearer"], sets["basic"]],
            "handle": [{"handler": "headers", "request": {"delete": ["Authorization"]}}],
        },
    ]


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


def upstream_routes(service: Service) -> list[dict[str, Any]]:
    """The service behind the proxy. Requests other than GET, HEAD and OPTIONS (POST: generations,
    often streamed) each go on a fresh connection: llama-server closes a connection after a
    streamed response without saying so, a request sent on it in that instant fails (a 503 to
    the client), and a POST must not be sent twice. GET and friends reuse connections (Go's HTTP
    client, inside Caddy, sends those again when a kept-alive connection turns out closed)."""
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{dial_host(service.host)}:{service.internal_port}"}],
        # Stream every write at once: server-sent events and token streams.
        "flush_interval": -1,
    }
    fresh = {**proxy, "transport": {"protocol": "http", "keep_alive": {"enabled": False}}}
    return [
        {"match": [{"not": [{"method": IDEMPOTENT}]}], "handle": [fresh], "terminal": True},
        {"handle": [proxy]},
    ]


def server(service: Service, auth: Auth, tls: Tls | None, status_dir: Path) -> dict[str, Any]:
    routes = auth_routes(auth, tls is not None) if auth.protects(service.external_port) else []
    routes.append({"handle": [{"handler": "subroute", "routes": upstream_routes(service)}]})
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
    return found


def caddy_config(
    services: Sequence[Service],
    auth: Auth,
    tls: Tls | None = None,
    status_dir: Path = STATUS_DIR,
    storage: Path = Path("/run/llama-images/caddy"),
) -> dict[str, Any]:
    """Caddy's config for every enabled service. Caddy's own admin API is off: the config is
    rendered each time program proxy starts, so restarting it applies a changed declaration."""
    config: dict[str, Any] = {
        "admin": {"disabled": True, "config": {"persist": False}},
        # Caddy's per-request error log would repeat request URIs; boot logs what matters.
        "logging": {"logs": {"default": {"level": "ERROR", "exclude": ["http.log.error"]}}},
        "storage": {"module": "file_system", "root": str(storage)},
        "apps": {
            "http": {
                "grace_period": "1s",
                "servers": {f"srv-{s.name}": server(s, auth, tls, status_dir) for s in services if s.enabled},
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


def auth_from_env(env: Mapping[str, str], token: str) -> tuple[Auth, list[str]]:
    """ENABLE_AUTH, AUTH_EXCLUDE and WEB_USERNAME -> who the proxy asks for the token, and problems."""
    excluded, problems = parse_ports(env.get("AUTH_EXCLUDE", ""))
    enabled = env_flag(env, "ENABLE_AUTH", default=True)
    return Auth(token, env.get("WEB_USERNAME") or "admin", enabled, excluded), problems
