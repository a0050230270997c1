"""Login sessions, origin proofs, token strength and the guessing limit (pure)."""

from __future__ import annotations

import base64

from llama_runtime.access import (
    DEFAULT_BINDING,
    SESSION_SECONDS,
    Binding,
    FailureLimiter,
    basic_credentials,
    bearer_credential,
    client_network,
    cookie_name,
    cookie_values,
    new_session,
    origin_problem,
    parse_binding,
    read_session,
    same_origin,
    session_key,
    session_problem,
    set_cookie,
    token_matches,
    token_weakness,
)

NOW = 1_800_000_000.0
CLIENT = "203.0.113.9"
NETWORK = "203.0.113.0/24"


def valid(key: bytes, value: str, now: float, client: str = CLIENT, binding: Binding = DEFAULT_BINDING) -> bool:
    session = read_session(key, value)
    return session is not None and session_problem(key, session, now, client, binding) is None


def test_a_session_is_signed_expires_after_seven_days_and_holds_nothing_of_the_token() -> None:
    key = session_key(b"secret" * 6, "vastai", ["tok-1234567890abcdef"])
    session = new_session(key, NOW, NETWORK)
    assert session.startswith(f"v2.{int(NOW) + SESSION_SECONDS}.")
    assert "tok" not in session and "203.0.113" not in session
    assert valid(key, session, NOW + SESSION_SECONDS - 1)
    assert not valid(key, session, NOW + SESSION_SECONDS)
    # A later expiry, another id or another binding cannot be written in without the key.
    version, expiry, session_id, binding, signature = session.split(".")
    for forged in (
        f"{version}.{int(expiry) + 10**6}.{session_id}.{binding}.{signature}",
        f"{version}.{expiry}.{'A' * 16}.{binding}.{signature}",
        f"{version}.{expiry}.{session_id}.any.{signature}",
    ):
        assert read_session(key, forged) is None, forged
    for junk in ("", "v2", "v1.x.y", "v1." + session[3:], session + "x", session.replace(".", ". ", 1)):
        assert read_session(key, junk) is None, junk


def test_every_login_gets_its_own_session_id() -> None:
    key = session_key(b"a" * 32, "vastai", ["one"])
    ids = {read_session(key, new_session(key, NOW, NETWORK)).id for _ in range(20)}  # type: ignore[union-attr]
    assert len(ids) == 20


def test_odd_values_are_no_session_and_never_an_exception() -> None:
    key = session_key(b"a" * 32, "vastai", ["one"])
    session = new_session(key, NOW, NETWORK)
    expiry, signature = session.split(".")[1], session.rsplit(".", 1)[1]
    for odd in (
        f"v2.{'9' * 5000}.{'A' * 16}.any.{signature}",  # int() of this many digits raises
        session[:-43] + "\u00fc" * 43,  # compare_digest raises on non-ASCII text
        f"v2.{chr(0xFF11) * 3}.{'A' * 16}.any.{signature}",  # digits that are not ASCII
        f"v2.{expiry}.\udcff{'A' * 15}.any.{signature}",  # a lone surrogate (undecodable bytes)
    ):
        assert read_session(key, odd) is None


def test_a_session_works_from_the_network_it_was_made_in_only() -> None:
    key = session_key(b"a" * 32, "vastai", ["one"])
    session = new_session(key, NOW, client_network(CLIENT, DEFAULT_BINDING))
    assert valid(key, session, NOW, "203.0.113.200")  # the same /24 (a new DHCP lease)
    read = read_session(key, session)
    assert read is not None
    assert session_problem(key, read, NOW, "198.51.100.7", DEFAULT_BINDING) == "from another network"
    assert session_problem(key, read, NOW, "2001:db8::1", DEFAULT_BINDING) == "from another network"
    # SESSION_BIND=none turns new sessions' binding off; a bound one stays bound.
    free = new_session(key, NOW, client_network(CLIENT, Binding(None, None)))
    assert ".any." in free
    assert valid(key, free, NOW, "198.51.100.7", Binding(None, None))
    assert not valid(key, session, NOW, "198.51.100.7", Binding(None, None))
    # A binding looser than asked now (the setting was made stricter) is no longer enough.
    assert not valid(key, free, NOW, CLIENT, DEFAULT_BINDING)
    assert not valid(key, session, NOW, CLIENT, Binding(32, 128))
    v6 = new_session(key, NOW, client_network("2001:db8:1:2:3::4", DEFAULT_BINDING))
    assert valid(key, v6, NOW, "2001:db8:1:2:ffff::1")
    assert not valid(key, v6, NOW, "2001:db8:1:3::1")


def test_session_bind_takes_network_address_none_or_two_prefix_lengths() -> None:
    assert parse_binding("") == (Binding(24, 64), None)
    assert parse_binding("network") == (Binding(24, 64), None)
    assert parse_binding("Address") == (Binding(32, 128), None)
    assert parse_binding("none") == (Binding(None, None), None)
    assert parse_binding("16, /48") == (Binding(16, 48), None)
    assert parse_binding("24,none") == (Binding(24, None), None)
    for bad in ("33,64", "24", "0,64", "x", "24,64,1", "\uff12\uff14,64"):
        binding, problem = parse_binding(bad)
        assert binding == Binding(24, 64) and problem and "SESSION_BIND" in problem, bad
    assert client_network("::ffff:203.0.113.9", DEFAULT_BINDING) == NETWORK
    assert client_network("fe80::1%eth0", DEFAULT_BINDING) == "fe80::/64"
    assert client_network("not an address", DEFAULT_BINDING) == "not an address/0"


def test_a_new_token_user_or_secret_ends_every_session() -> None:
    key = session_key(b"a" * 32, "vastai", ["one", "two"])
    session = new_session(key, NOW, NETWORK)
    assert valid(session_key(b"a" * 32, "vastai", ["two", "one"]), session, NOW)
    for other in (
        session_key(b"b" * 32, "vastai", ["one", "two"]),
        session_key(b"a" * 32, "admin", ["one", "two"]),
        session_key(b"a" * 32, "vastai", ["one", "three"]),
    ):
        assert read_session(other, session) is None


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
