"""Caddy config rendering (pure). The container tests send real requests through it; the
matchers' regular expressions are Go's (RE2), which these patterns read the same in Python's re."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llama_runtime.access import ANY_SESSION_COOKIE, cookie_name
from llama_runtime.proxy import (
    AUTH_HEADER,
    CORS_HEADERS,
    Auth,
    Tls,
    auth_from_env,
    basic_value,
    caddy_config,
    parse_origins,
    parse_ports,
    placeholder_literal,
    regex_literal,
    token_problem,
)
from llama_runtime.services import Service, env_flag

SERVICES = (
    Service("portal", "Instance Portal", 1111, 11111, program="portal"),
    Service("llama", "llama.cpp server", 8000, 18000, program="llama"),
    Service("jupyter", "Jupyter", 8080, 18080, program="jupyter", enabled=False),
)
COOKIE = cookie_name(b"secret")


def servers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["apps"]["http"]["servers"]  # type: ignore[no-any-return]


def routes_of(config: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return servers(config)[name]["routes"]  # type: ignore[no-any-return]


def go_pattern(pattern: str) -> re.Pattern[str]:
    """RE2's inline flag group (?i:...) and everything used here read the same in Python."""
    return re.compile(pattern)


def kind_of(route: dict[str, Any]) -> str | None:
    """How a route lets a request in: the value it sets in the auth marker, if it sets one."""
    for handler in route.get("handle", []):
        value = handler.get("request", {}).get("set", {}).get(AUTH_HEADER)
        if handler.get("handler") == "headers" and value:
            return str(value[0])
    return None


def by_kind(routes: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(r for r in routes if kind_of(r) == kind)


def asks_verifier(route: dict[str, Any]) -> dict[str, Any] | None:
    """The request to the verifier a route makes (forward_auth or the logout), if any."""
    text = json.dumps(route)
    if "unix/" not in text:
        return None
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("handler") == "reverse_proxy" and "unix/" in json.dumps(node.get("upstreams")):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(route)
    return found[0]


def matcher_patterns(route: dict[str, Any]) -> list[str]:
    return [m["header_regexp"]["Authorization"]["pattern"] for m in route["match"] if "header_regexp" in m]


def test_one_server_per_published_service_listening_on_its_external_port() -> None:
    link = Service("terminal", "Jupyter Terminal", 8080, 8080, "/terminals/1", link_only=True)
    config = caddy_config((*SERVICES, link), Auth(("s3cret",), cookie=COOKIE))
    assert {name: s["listen"] for name, s in servers(config).items()} == {
        "srv-portal": [":1111"],
        "srv-llama": [":8000"],
    }
    assert config["admin"] == {"disabled": True, "config": {"persist": False}}


def test_the_upstream_takes_posts_on_fresh_connections_and_loses_its_own_cors_headers() -> None:
    config = caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE))
    bearer_route = by_kind(routes_of(config, "srv-llama"), "bearer")
    upstream = bearer_route["handle"][-1]
    assert upstream["handler"] == "subroute"
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": "127.0.0.1:18000"}],
        "flush_interval": -1,
        "headers": {"response": {"delete": list(CORS_HEADERS)}},
    }
    fresh_connection = {"protocol": "http", "keep_alive": {"enabled": False}}
    # POSTs (generations, streamed or not) on a fresh connection each; GET and friends reuse them.
    assert upstream["routes"] == [
        {"match": [{"not": [{"method": ["GET", "HEAD", "OPTIONS"]}]}], "handle": [{**proxy, "transport":
         fresh_connection}], "terminal": True},
        {"handle": [proxy]},
    ]  # fmt: skip


def test_routes_in_order_logout_admitted_sessions_cooldown_fast_paths_the_verifier_then_401() -> None:
    auth = Auth(("s3cret",), cookie=COOKIE, blocked_dir=Path("/b"), verifier_socket=Path("/v.sock"),
                admitted_dir=Path("/s"))  # fmt: skip
    routes = routes_of(caddy_config(SERVICES, auth), "srv-portal")
    # The portal's logout form: the verifier answers the client itself.
    assert routes[0]["match"] == [{"path": ["/logout"]}]
    logout = asks_verifier(routes[0])
    assert logout is not None and logout["rewrite"]["uri"].startswith("/logout?")
    assert "handle_response" not in logout
    # A session the verifier admitted for this address passes on a stat.
    assert kind_of(routes[1]) == "cookie"
    assert {json.dumps(m["file"]) for m in routes[1]["match"]} == {
        json.dumps({"root": "/s", "try_files": [f"/{{http.request.cookie.{COOKIE}}}/{{http.request.remote.host}}"]})
    }
    # A client in its cooldown: with a session cookie the verifier decides, anything else is refused.
    blocked = {"file": {"root": "/b", "try_files": ["/{http.request.remote.host}"]}}
    assert routes[2]["match"][0]["file"] == blocked["file"] and "header_regexp" in routes[2]["match"][0]
    assert asks_verifier(routes[2]) is not None
    assert routes[3]["match"] == [blocked]
    assert json.dumps(routes[3]).count("429") >= 2 and asks_verifier(routes[3]) is None
    assert [kind_of(r) for r in routes[4:7]] == ["bearer", "basic", "token"]
    verifier = asks_verifier(routes[7])
    assert verifier is not None and verifier["upstreams"] == [{"dial": "unix//v.sock"}]
    assert verifier["headers"]["request"]["set"]["X-Llama-Port"] == ["1111"]
    assert "match" not in routes[8] and json.dumps(routes[8]).count("401") == 2
    # Only the portal's port has the logout.
    assert asks_verifier(routes_of(caddy_config(SERVICES, auth), "srv-llama")[0]) is None


def test_the_verifier_gets_a_request_of_the_proxy_s_making_without_the_client_s_body_or_headers() -> None:
    routes = routes_of(caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE)), "srv-llama")
    for route in routes:
        asked = asks_verifier(route)
        if asked is None:
            continue
        # A URI no client request has: Caddy then drops the body (it keeps it when its rewrite
        # changes nothing, as for a client's own `GET /verify` with a body: issue 23).
        assert asked["rewrite"] == {"method": "GET", "uri": "/verify?request={http.request.uuid}"}
        ops = asked["headers"]["request"]
        assert ops["delete"] == ["*"]  # Caddy clears every header before it sets these
        assert set(ops["set"]) == {
            "Authorization", "Cookie", "Accept", "Origin", "Sec-Fetch-Site", "Sec-Fetch-Dest", "Upgrade",
            "X-Forwarded-Method", "X-Forwarded-Uri", "X-Llama-Client", "X-Llama-Scheme", "X-Llama-Host",
            "X-Llama-Port",
        }  # fmt: skip
        assert ops["set"]["X-Llama-Client"] == ["{http.request.remote.host}"]
        assert ops["set"]["Cookie"] == ["{http.request.header.Cookie}"]


def test_an_admitted_session_passes_in_caddy_only_without_other_credentials_and_within_the_origin_rules() -> None:
    routes = routes_of(caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE)), "srv-llama")
    admitted = by_kind(routes, "cookie")["match"]
    credentials = [{"header": {"Authorization": ["*"]}}, {"query": {"token": ["*"]}}]
    for matcher in admitted:
        assert all(c in matcher["not"] for c in credentials)
    reading, same_origin, no_browser = admitted
    assert reading["method"] == ["GET", "HEAD", "OPTIONS"] and {"header": {"Upgrade": ["*"]}} in reading["not"]
    assert same_origin["header"] == {"Sec-Fetch-Site": ["same-origin", "none"]}
    assert {"header": {"Sec-Fetch-Site": ["*"]}} in no_browser["not"]
    assert {"header": {"Origin": ["*"]}} in no_browser["not"]


def test_a_service_with_a_token_of_its_own_gets_it_from_the_proxy_on_a_protected_port_only() -> None:
    jupyter = Service("jupyter", "Jupyter", 8080, 18080, program="jupyter", token_scheme="token")
    tokens = (("jupyter", "own-token-123"),)
    protected = caddy_config((*SERVICES[:2], jupyter), Auth(("s3cret",), cookie=COOKIE, service_tokens=tokens))
    text = json.dumps(routes_of(protected, "srv-jupyter"))
    given = {"handler": "headers", "request": {"set": {"Authorization": ["token own-token-123"]}}}
    assert json.dumps(given) in text
    # Set after the proxy's own credentials are removed, on every way in (Bearer, session, ...).
    bearer = by_kind(routes_of(protected, "srv-jupyter"), "bearer")["handle"]
    assert bearer.index(given) > next(i for i, h in enumerate(bearer) if h.get("request", {}).get("delete"))
    # Its pages send it back: on the protected port it is no credential, removed before the login
    # is looked at (not counted as a wrong token, not a way in by itself).
    first, second = routes_of(protected, "srv-jupyter")[:2]
    assert "terminal" not in first and "terminal" not in second
    pattern = go_pattern(first["match"][0]["header_regexp"]["Authorization"]["pattern"])
    assert pattern.search("token own-token-123") and pattern.search("Token  own-token-123")
    assert not pattern.search("token own-token-1234") and not pattern.search("Bearer own-token-123")
    assert first["handle"] == [{"handler": "headers", "request": {"delete": ["Authorization"]}}]
    assert second["match"] == [{"query": {"token": ["own-token-123"]}}]
    assert second["handle"] == [{"handler": "rewrite", "query": {"delete": ["token"]}}]
    opened = Auth(("s3cret",), cookie=COOKIE, service_tokens=tokens, excluded_ports=frozenset({8080}))
    assert "own-token-123" not in json.dumps(routes_of(caddy_config((*SERVICES[:2], jupyter), opened), "srv-jupyter"))


def test_the_scheme_is_matched_in_any_case_and_the_value_exactly() -> None:
    auth = Auth(("s3cret", "other one"), username="vastai", cookie=COOKIE)
    routes = routes_of(caddy_config(SERVICES, auth), "srv-llama")
    bearer = [go_pattern(p) for p in matcher_patterns(by_kind(routes, "bearer"))]
    assert len(bearer) == 2
    for header in ("Bearer s3cret", "bearer s3cret", "BEARER  other one"):
        assert any(p.search(header) for p in bearer), header
    for header in ("Bearer s3cretx", "Bearer S3CRET", "Bearer", "Basic s3cret", "xBearer s3cret"):
        assert not any(p.search(header) for p in bearer), header
    basic = [go_pattern(p) for p in matcher_patterns(by_kind(routes, "basic"))]
    assert any(p.search("basic " + basic_value("vastai", "other one")) for p in basic)
    assert not any(p.search("Basic " + basic_value("admin", "s3cret")) for p in basic)
    # Basic auth passes on its own only for reading; the rest needs the verifier's origin check.
    assert all(m["method"] == ["GET", "HEAD", "OPTIONS"] for m in by_kind(routes, "basic")["match"])


def test_a_browser_with_the_token_in_its_address_goes_to_the_verifier_for_a_session() -> None:
    routes = routes_of(caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE)), "srv-llama")
    token_route = by_kind(routes, "token")["match"][0]
    assert token_route["query"] == {"token": ["s3cret"]}
    assert token_route["not"][0] == {"header_regexp": {"Accept": {"pattern": "text/html"}}}
    asks = next(r for r in routes if "match" in r and asks_verifier(r) and len(r["match"]) == 3)["match"]
    cookie = go_pattern(asks[2]["header_regexp"]["Cookie"]["pattern"])
    assert cookie.search(f"a=1; {COOKIE}=v1.2.x") and not cookie.search(f"x{COOKIE}=1")


def test_every_session_cookie_is_removed_before_a_service_sees_the_request() -> None:
    config = caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE, excluded_ports=frozenset({8000})))
    for name in ("srv-portal", "srv-llama"):
        text = json.dumps(routes_of(config, name))
        assert ANY_SESSION_COOKIE in text, name
    strip = next(
        h for h in routes_of(config, "srv-llama")[0]["handle"] if h.get("request", {}).get("replace", {}).get("Cookie")
    )
    rules = strip["request"]["replace"]["Cookie"]

    def stripped(header: str) -> str:
        for rule in rules:
            header = re.sub(rule["search_regexp"], rule["replace"], header)
        return header

    other = "llama_0123456789ab_auth=other"
    assert stripped(f"a=1; {COOKIE}=v1.2.x; b=2; {other}") == "a=1; b=2"
    assert stripped(f"{COOKIE}=v1.2.x; c=3") == "c=3"
    assert stripped(f"{COOKIE}=v; {other}; c=3") == "c=3"
    assert stripped(f"{COOKIE}=v; {other}") == ""
    assert stripped("x_llama_0123456789ab_auth=1; keep=2") == "x_llama_0123456789ab_auth=1; keep=2"


def test_auth_off_or_excluded_ports_proxy_directly_without_the_auth_marker() -> None:
    excluded = caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE, excluded_ports=frozenset({8000})))
    assert len(routes_of(excluded, "srv-llama")) == 1
    assert {"handler": "headers", "request": {"delete": [AUTH_HEADER]}} in routes_of(excluded, "srv-llama")[0]["handle"]
    assert len(routes_of(excluded, "srv-portal")) > 1
    off = caddy_config(SERVICES, Auth(("s3cret",), enabled=False, cookie=COOKIE))
    assert all(len(s["routes"]) == 1 for s in servers(off).values())


def test_the_token_is_matched_literally_whatever_it_contains() -> None:
    token = 'a{b}c*"$x y\\'
    text = json.dumps(caddy_config(SERVICES, Auth((token,), cookie=COOKIE)))
    assert json.dumps(f"^(?i:bearer) +{regex_literal(token)}$")[1:-1] in text
    assert regex_literal("a.b*") == "a\\.b\\*"
    assert placeholder_literal("{x}") == "\\{x\\}"


def test_tokens_that_cannot_work_are_refused() -> None:
    assert token_problem("good-token") is None
    assert token_problem("with space and ünïcode") is None
    assert token_problem("") == "is empty"
    assert token_problem("a\nb") is not None
    assert token_problem("*") is not None


def test_tls_serves_the_certificate_and_redirects_plain_http() -> None:
    config = caddy_config(SERVICES, Auth(("t",), cookie=COOKIE), Tls(Path("/etc/instance.crt"), Path("/k")))
    assert config["apps"]["tls"]["certificates"]["load_files"][0]["certificate"] == "/etc/instance.crt"
    for server in servers(config).values():
        assert "tls_connection_policies" in server
        assert server["listener_wrappers"] == [{"wrapper": "http_redirect"}, {"wrapper": "tls"}]


def test_cors_is_opt_in_never_with_credentials() -> None:
    assert 'Access-Control-Allow-Origin": [' not in json.dumps(caddy_config(SERVICES, Auth(("t",), cookie=COOKIE)))
    auth = Auth(("t",), cookie=COOKIE, cors_origins=("https://app.example",))
    routes = routes_of(caddy_config(SERVICES, auth), "srv-llama")
    preflight = next(r for r in routes if "204" in json.dumps(r))
    assert routes.index(preflight) == 3  # after the admitted sessions and the cooldown, before any token
    assert preflight["match"] == [
        {"header": {"Origin": ["https://app.example"], "Access-Control-Request-Method": ["*"]}, "method": ["OPTIONS"]}
    ]
    headers = preflight["handle"][0]["headers"]
    assert headers["Access-Control-Allow-Origin"] == ["{http.request.header.Origin}"]
    assert "Access-Control-Allow-Credentials" not in json.dumps(preflight)
    assert parse_origins("https://a.example:3000/, *") == (("https://a.example:3000", "*"), [])
    assert parse_origins("a.example")[1] == [
        "CORS_ALLOWED_ORIGINS: 'a.example' is not an origin; use e.g. https://app.example:3000"
    ]


def test_auth_exclude_parsing_reports_bad_entries() -> None:
    assert parse_ports("8080, 8000,") == (frozenset({8080, 8000}), [])
    assert parse_ports("8080,jupyter")[1] == ["AUTH_EXCLUDE: 'jupyter' is not a port; use e.g. AUTH_EXCLUDE=8080,8000"]


def test_auth_settings_come_from_the_environment() -> None:
    env = {"AUTH_EXCLUDE": "8080,x", "WEB_USERNAME": "me", "CADDY_CORS_ALLOWED_ORIGINS": "https://a.example"}
    auth, problems = auth_from_env(env, ["t0ken", "other"], COOKIE)
    assert (auth.username, auth.enabled, auth.tokens, auth.cors_origins, problems) == (
        "me",
        True,
        ("t0ken", "other"),
        ("https://a.example",),
        ["AUTH_EXCLUDE: 'x' is not a port; use e.g. AUTH_EXCLUDE=8080,8000"],
    )
    assert (auth.protects(8000), auth.protects(8080)) == (True, False)
    off, _ = auth_from_env({"ENABLE_AUTH": "Off"}, ["t0ken"], COOKIE)
    # The reference image's default user name.
    assert (off.username, off.protects(8000)) == ("vastai", False)


def test_switches_read_yes_and_no_words_in_any_case() -> None:
    for word in ("false", "0", "NO", " off "):
        assert env_flag({"X": word}, "X", default=True) is False
    for word in ("true", "1", "Yes", "ON"):
        assert env_flag({"X": word}, "X", default=False) is True
    # Anything else, or unset, is the default.
    assert env_flag({"X": "maybe"}, "X", default=True) is True
    assert env_flag({}, "X", default=False) is False


def test_an_ipv6_upstream_is_dialled_in_brackets() -> None:
    service = Service("llama", "llama.cpp server", 8000, 18000, host="::1", program="llama")
    config = caddy_config([service], Auth(("t0ken",), cookie=COOKIE), None)
    assert "[::1]:18000" in json.dumps(config)
    assert "127.0.0.1:18000" not in json.dumps(config)
