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
    bearer_route = routes_of(config, "srv-llama")[1]
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


def test_routes_in_order_cooldown_first_then_fast_paths_then_the_verifier_then_401() -> None:
    auth = Auth(("s3cret",), cookie=COOKIE, blocked_dir=Path("/b"), verifier_socket=Path("/v.sock"))
    routes = routes_of(caddy_config(SERVICES, auth), "srv-portal")
    # A client in its cooldown is refused before any credential is looked at.
    assert routes[0]["match"] == [{"file": {"root": "/b", "try_files": ["/{http.request.remote.host}"]}}]
    assert json.dumps(routes[0]).count("429") >= 2
    kinds = [r["handle"][2]["request"]["set"][AUTH_HEADER][0] for r in routes[1:4]]
    assert kinds == ["bearer", "basic", "token"]
    verifier = routes[4]["handle"][0]["routes"][0]["handle"][0]
    assert verifier["upstreams"] == [{"dial": "unix//v.sock"}]
    assert verifier["rewrite"] == {"method": "GET", "uri": "/verify"}
    assert verifier["headers"]["request"]["set"]["X-Llama-Port"] == ["1111"]
    assert "match" not in routes[5] and json.dumps(routes[5]).count("401") == 2


def test_the_scheme_is_matched_in_any_case_and_the_value_exactly() -> None:
    auth = Auth(("s3cret", "other one"), username="vastai", cookie=COOKIE)
    routes = routes_of(caddy_config(SERVICES, auth), "srv-llama")
    bearer = [go_pattern(p) for p in matcher_patterns(routes[1])]
    assert len(bearer) == 2
    for header in ("Bearer s3cret", "bearer s3cret", "BEARER  other one"):
        assert any(p.search(header) for p in bearer), header
    for header in ("Bearer s3cretx", "Bearer S3CRET", "Bearer", "Basic s3cret", "xBearer s3cret"):
        assert not any(p.search(header) for p in bearer), header
    basic = [go_pattern(p) for p in matcher_patterns(routes[2])]
    assert any(p.search("basic " + basic_value("vastai", "other one")) for p in basic)
    assert not any(p.search("Basic " + basic_value("admin", "s3cret")) for p in basic)
    # Basic auth passes on its own only for reading; the rest needs the verifier's origin check.
    assert all(m["method"] == ["GET", "HEAD", "OPTIONS"] for m in routes[2]["match"])


def test_a_browser_with_the_token_in_its_address_goes_to_the_verifier_for_a_session() -> None:
    routes = routes_of(caddy_config(SERVICES, Auth(("s3cret",), cookie=COOKIE)), "srv-llama")
    token_route = routes[3]["match"][0]
    assert token_route["query"] == {"token": ["s3cret"]}
    assert token_route["not"][0] == {"header_regexp": {"Accept": {"pattern": "text/html"}}}
    asks = routes[4]["match"]
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
    preflight = routes[1]
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
