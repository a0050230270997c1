"""Login sessions, origin proofs, token strength and the guessing limit (pure)."""

from __future__ import annotations

import base64

from llama_runtime.access import (
    SESSION_SECONDS,
    FailureLimiter,
    basic_credentials,
    bearer_credential,
    cookie_name,
    cookie_values,
    new_session,
    origin_problem,
    same_origin,
    session_key,
    session_valid,
    set_cookie,
    token_matches,
    token_weakness,
)

NOW = 1_800_000_000.0


def test_a_session_is_signed_expires_after_seven_days_and_holds_nothing_of_the_token() -> None:
    key = session_key(b"secret" * 6, "vastai", ["tok-1234567890abcdef"])
    session = new_session(key, NOW)
    assert session.startswith(f"v1.{int(NOW) + SESSION_SECONDS}.")
    assert "tok" not in session
    assert session_valid(key, session, NOW + SESSION_SECONDS - 1)
    assert not session_valid(key, session, NOW + SESSION_SECONDS)
    # A later expiry cannot be written in without the key.
    version, expiry, signature = session.split(".")
    assert not session_valid(key, f"{version}.{int(expiry) + 10**6}.{signature}", NOW)
    for junk in ("", "v1", "v1.x.y", "v2." + session[3:], session + "x"):
        assert not session_valid(key, junk, NOW), junk


def test_a_new_token_user_or_secret_ends_every_session() -> None:
    key = session_key(b"a" * 32, "vastai", ["one", "two"])
    session = new_session(key, NOW)
    assert session_valid(session_key(b"a" * 32, "vastai", ["two", "one"]), session, NOW)
    for other in (
        session_key(b"b" * 32, "vastai", ["one", "two"]),
        session_key(b"a" * 32, "admin", ["one", "two"]),
        session_key(b"a" * 32, "vastai", ["one", "three"]),
    ):
        assert not session_valid(other, session, NOW)


def test_each_instance_has_its_own_cookie_name_and_its_cookie_lasts_seven_days() -> None:
    first, second = cookie_name(b"a" * 32), cookie_name(b"b" * 32)
    assert first != second and first.startswith("llama_") and first.endswith("_auth")
    cookie = set_cookie(first, "v1.1.x", secure=False)
    assert cookie == f"{first}=v1.1.x; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax"
    assert set_cookie(first, "v", secure=True).endswith("; Secure")
    assert cookie_values(f"a=1; {first}=one;{second}=x; {first}=two", first) == ["one", "two"]


def test_credentials_are_read_with_the_scheme_in_any_case() -> None:
    encoded = base64.b64encode(b"vastai:pa:ss").decode()
    assert basic_credentials(f"basic {encoded}") == ("vastai", "pa:ss")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials(f"Bearer {encoded}") is None
    assert bearer_credential("BEARER tok") == "tok"
    assert token_matches("b", ["a", "b"]) and not token_matches("c", ["a", "b"])


def test_origins_compare_scheme_host_and_port_with_default_ports() -> None:
    assert same_origin("http://127.0.0.1:8000", "http", "127.0.0.1:8000")
    assert same_origin("https://Host.example", "https", "host.example:443")
    assert same_origin("http://[::1]:80", "http", "[::1]")
    assert not same_origin("http://127.0.0.1:9000", "http", "127.0.0.1:8000")  # a neighbour's port
    assert not same_origin("https://127.0.0.1:8000", "http", "127.0.0.1:8000")
    assert not same_origin("null", "http", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8000/x", "http", "127.0.0.1:8000")


def test_changes_need_an_origin_proof_reading_does_not() -> None:
    own = "127.0.0.1:8000"
    assert origin_problem("GET", {"origin": "http://evil.example"}, "http", own) is None
    assert origin_problem("POST", {}, "http", own) is None  # no browser: curl, scripts
    assert origin_problem("POST", {"sec-fetch-site": "same-origin"}, "http", own) is None
    assert origin_problem("POST", {"origin": "http://127.0.0.1:8000"}, "http", own) is None
    assert origin_problem("POST", {"sec-fetch-site": "same-site"}, "http", own) == "Sec-Fetch-Site: same-site"
    assert origin_problem("DELETE", {"sec-fetch-site": "cross-site"}, "http", own) == "Sec-Fetch-Site: cross-site"
    assert origin_problem("POST", {"origin": "http://127.0.0.1:9000"}, "http", own) == "Origin is another site or port"
    assert origin_problem("POST", {"origin": "null"}, "http", own) is not None
    # Opening a websocket is a change too.
    upgrade = {"upgrade": "websocket", "origin": "http://127.0.0.1:9000"}
    assert origin_problem("GET", upgrade, "http", own) is not None


def test_weak_tokens_are_named_generated_ones_pass() -> None:
    assert token_weakness("a") == "it is shorter than 16 characters"
    assert token_weakness("aaaaaaaaaaaaaaaaaaaa") == "it has fewer than 8 different characters"
    assert token_weakness("1234567890123456") == "its characters come from a small alphabet (under 64 bits)"
    assert token_weakness("correct-horse-battery") is None
    assert token_weakness("0123456789abcdef0123456789abcdef") is None


def test_failures_past_the_limit_start_a_cooldown_for_that_address_only() -> None:
    limiter = FailureLimiter(limit=3, cooldown=60)
    assert limiter.fail("10.0.0.1", NOW) == (1, False)
    assert limiter.fail("10.0.0.1", NOW + 1) == (2, False)
    assert limiter.fail("10.0.0.2", NOW + 1) == (1, False)
    assert limiter.fail("10.0.0.1", NOW + 2) == (3, True)
    assert limiter.is_blocked("10.0.0.1", NOW + 30) and not limiter.is_blocked("10.0.0.2", NOW + 30)
    assert limiter.expired(NOW + 30) == []
    assert limiter.expired(NOW + 62) == ["10.0.0.1"]
    assert not limiter.is_blocked("10.0.0.1", NOW + 62)
    # Failures older than a minute no longer count.
    slow = FailureLimiter(limit=3)
    for minute in range(5):
        assert slow.fail("10.0.0.3", NOW + 61 * minute) == (1, False)
    assert FailureLimiter(limit=0).fail("x", NOW) == (1, False)  # 0: no limit
