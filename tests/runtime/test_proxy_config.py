"""Caddy config rendering (pure). The container tests send real requests through it."""

from __future__ import annotations

import json
from pathlib import Path

from llama_runtime.proxy import (
    Auth,
    Tls,
    auth_from_env,
    caddy_config,
    cookie_value,
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


def servers(config: dict[str, object]) -> dict[str, dict[str, object]]:
    return config["apps"]["http"]["servers"]  # type: ignore[index,no-any-return]


def test_one_server_per_enabled_service_listening_on_its_external_port() -> None:
    config = caddy_config(SERVICES, Auth("s3cret"))
    assert {name: s["listen"] for name, s in servers(config).items()} == {
        "srv-portal": [":1111"],
        "srv-llama": [":8000"],
    }
    upstream = servers(config)["srv-llama"]["routes"][-1]["handle"][0]  # type: ignore[index]
    proxy = {"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:18000"}], "flush_interval": -1}
    fresh_connection = {"protocol": "http", "keep_alive": {"enabled": False}}
    assert upstream["handler"] == "subroute"
    # POSTs (generations, streamed or not) on a fresh connection each; GET and friends reuse them.
    assert upstream["routes"] == [
        {"match": [{"not": [{"method": ["GET", "HEAD", "OPTIONS"]}]}], "handle": [{**proxy, "transport":
         fresh_connection}], "terminal": True},
        {"handle": [proxy]},
    ]  # fmt: skip
    assert config["admin"] == {"disabled": True, "config": {"persist": False}}


def test_auth_off_or_excluded_ports_proxy_directly() -> None:
    excluded = caddy_config(SERVICES, Auth("s3cret", excluded_ports=frozenset({8000})))
    assert len(servers(excluded)["srv-llama"]["routes"]) == 1  # type: ignore[arg-type]
    assert len(servers(excluded)["srv-portal"]["routes"]) > 1  # type: ignore[arg-type]
    off = caddy_config(SERVICES, Auth("s3cret", enabled=False))
    assert all(len(s["routes"]) == 1 for s in servers(off).values())  # type: ignore[arg-type]


def test_the_token_is_matched_literally_whatever_it_contains() -> None:
    token = 'a{b}c*"$x y\\'
    text = json.dumps(caddy_config(SERVICES, Auth(token)))
    assert json.dumps(f"^Bearer {regex_literal(token)}$")[1:-1] in text
    assert regex_literal("a.b*") == "a\\.b\\*"
    assert placeholder_literal("{x}") == "\\{x\\}"
    assert cookie_value(token) in text and len(cookie_value(token)) == 64


def test_tokens_that_cannot_work_are_refused() -> None:
    assert token_problem("good-token") is None
    assert token_problem("with space and ünïcode") is None
    assert token_problem("") == "is empty"
    assert token_problem("a\nb") is not None
    assert token_problem("*") is not None


def test_tls_loads_the_given_certificate_for_every_server() -> None:
    config = caddy_config(SERVICES, Auth("t"), Tls(Path("/c.pem"), Path("/k.pem")))
    assert config["apps"]["tls"]["certificates"]["load_files"][0]["certificate"] == "/c.pem"
    assert all("tls_connection_policies" in s for s in servers(config).values())
    set_cookie = json.dumps(config).split("llama_images_auth=")[1].split('"')[0]
    assert set_cookie.endswith("; Secure")


def test_auth_exclude_parsing_reports_bad_entries() -> None:
    assert parse_ports("8080, 8000,") == (frozenset({8080, 8000}), [])
    assert parse_ports("8080,jupyter")[1] == ["AUTH_EXCLUDE: 'jupyter' is not a port; use e.g. AUTH_EXCLUDE=8080,8000"]


def test_auth_settings_come_from_the_environment() -> None:
    auth, problems = auth_from_env({"AUTH_EXCLUDE": "8080,x", "WEB_USERNAME": "me"}, "t0ken")
    assert (auth.username, auth.enabled, problems) == (
        "me",
        True,
        ["AUTH_EXCLUDE: 'x' is not a port; use e.g. AUTH_EXCLUDE=8080,8000"],
    )
    assert (auth.protects(8000), auth.protects(8080)) == (True, False)
    off, _ = auth_from_env({"ENABLE_AUTH": "Off"}, "t0ken")
    assert (off.username, off.protects(8000)) == ("admin", False)


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
    config = caddy_config([service], Auth("t0ken"), None)
    assert "[::1]:18000" in json.dumps(config)
    assert "127.0.0.1:18000" not in json.dumps(config)
