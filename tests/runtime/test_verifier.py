"""The login verifier's decisions, its files, and the server Caddy asks over its unix socket."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_runtime import access, verifier
from llama_runtime.access import Binding, new_session, read_session, session_key
from llama_runtime.verifier import Places, Request, Settings, Verifier

TOKEN = "test-token-0123456789"
PASSWORD = "another password"
COOKIE = "llama_0123456789ab_auth"
KEY = session_key(b"s" * 32, "vastai", [TOKEN, PASSWORD])
NOW = 1_800_000_000.0
HTML = {"accept": "text/html,application/xhtml+xml"}
CLIENT = "203.0.113.7"
NETWORK = "203.0.113.0/24"


def settings_for(limit: int = 4, binding: Binding = access.DEFAULT_BINDING) -> Settings:
    return Settings((TOKEN, PASSWORD), "vastai", COOKIE, KEY, limit, binding)


def request(
    method: str = "GET", uri: str = "/", headers: Mapping[str, str] | None = None, client: str = CLIENT
) -> Request:
    return Request(method, uri, client, "8000", "http", "127.0.0.1:8000", dict(headers or {}))


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def cookie(value: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={value}"}


@pytest.fixture
def judge(tmp_path: Path) -> Verifier:
    places = Places.under(tmp_path)
    verifier.prepare(places)
    return Verifier(settings_for(), places)


def logged_in(judge: Verifier, client: str = CLIENT, now: float = NOW) -> str:
    answer = judge.decide(request(uri=f"/?token={TOKEN}", headers=HTML, client=client), now)
    assert answer.status == 302
    return dict(answer.headers)["Set-Cookie"].split(";")[0].split("=", 1)[1]


def test_a_browser_with_a_token_gets_a_seven_day_session_bound_to_its_network(
    judge: Verifier, capsys: pytest.CaptureFixture[str]
) -> None:
    for token in (TOKEN, PASSWORD):  # OPEN_BUTTON_TOKEN and WEB_PASSWORD both open it
        answer = judge.decide(request(uri=f"/lab?a=1&token={token.replace(' ', '%20')}&b=2", headers=HTML), NOW)
        headers = dict(answer.headers)
        assert answer.status == 302
        assert headers["Location"] == "/lab?a=1&b=2"
        name, _, rest = headers["Set-Cookie"].partition("=")
        value, _, flags = rest.partition(";")
        assert name == COOKIE and TOKEN not in headers["Set-Cookie"]
        assert flags.strip() == "Path=/; Max-Age=604800; HttpOnly; SameSite=Lax"
        session = read_session(KEY, value)
        assert session is not None and session.expiry == int(NOW) + 7 * 86400 and session.prefix == 24
        assert access.session_problem(KEY, session, NOW, "203.0.113.99", access.DEFAULT_BINDING) is None
    assert f"login from {CLIENT} on port 8000: a session for 7 days, bound to {NETWORK}" in capsys.readouterr().out


def test_the_redirect_keeps_the_rest_of_the_address_as_sent_and_stays_on_this_host() -> None:
    assert verifier.without_token("/a/b?x=1&token=t&y&z=%20&tok%65n=u") == "/a/b?x=1&y&z=%20"
    assert verifier.without_token("//evil.example/x?token=t") == "/x"
    assert verifier.without_token("?token=t") == "/"
    assert verifier.without_token("http://[::1/x?token=t") == "/"


def test_a_session_opens_reading_and_same_origin_changes_only_and_is_admitted_for_its_address(
    judge: Verifier, tmp_path: Path
) -> None:
    value = logged_in(judge)
    session = {"cookie": f"other=1; {COOKIE}={value}"}
    assert not (tmp_path / "sessions" / value).exists()
    answer = judge.decide(request(headers=session), NOW)
    assert (answer.status, dict(answer.headers)) == (200, {"X-Llama-Auth": "cookie"})
    # Caddy lets this pair's next requests in itself: the file it checks.
    assert (tmp_path / "sessions" / value / CLIENT).is_file()
    same = {**session, "origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}
    assert judge.decide(request("POST", headers=same), NOW).status == 200
    # A form on another port of the same host: the browser sends the cookie along.
    for cross in ({"origin": "http://127.0.0.1:9999"}, {"sec-fetch-site": "same-site"}):
        answer = judge.decide(request("POST", "/completion", {**session, **cross}), NOW)
        assert answer.status == 403, cross
    # Basic auth, which browsers also send on their own, needs the same proof.
    cross_basic = {**basic("vastai", TOKEN), "sec-fetch-site": "cross-site"}
    assert judge.decide(request("POST", headers=cross_basic), NOW).status == 403
    # A Bearer token is never sent by a browser on its own.
    bearer_cross = {"authorization": f"Bearer {TOKEN}", "origin": "http://evil.example"}
    assert judge.decide(request("POST", headers=bearer_cross), NOW).status == 200


def test_an_expired_forged_or_foreign_session_is_refused_but_not_counted_as_guessing(judge: Verifier) -> None:
    old = new_session(KEY, NOW - 8 * 86400, NETWORK)
    foreign = new_session(session_key(b"t" * 32, "vastai", [TOKEN]), NOW, NETWORK)
    v1 = "v1.9999999999.WO4UhLnIcJLfT26FAzxaF44fHqwxvo2rSRi3DeVWNfk"  # the old format: log in again
    for value in (old, foreign, v1, "v2.9999999999.forged") * 3:
        answer = judge.decide(request(headers={**cookie(value), **HTML}), NOW)
        assert answer.status == 401 and "<form" in answer.body
    assert judge.limiter.recent(CLIENT, NOW) == 0


def test_a_session_used_from_another_network_is_refused_and_logged_once_without_its_value(
    judge: Verifier, capsys: pytest.CaptureFixture[str]
) -> None:
    value = logged_in(judge)
    for n in range(5):
        assert judge.decide(request(headers=cookie(value), client="198.51.100.7"), NOW + n).status == 401
    assert judge.decide(request(headers=cookie(value)), NOW).status == 200  # still the owner's
    assert judge.limiter.recent("198.51.100.7", NOW) == 0  # a copy, not a guess
    log = capsys.readouterr().out
    refusals = [line for line in log.splitlines() if "from another network" in line]
    assert refusals == [
        "[auth] refused a login session from 198.51.100.7 on port 8000: from another network (SESSION_BIND=24,64)"
    ]
    assert value not in log


def test_session_bind_none_lets_a_session_work_from_anywhere(tmp_path: Path) -> None:
    places = Places.under(tmp_path)
    verifier.prepare(places)
    judge = Verifier(settings_for(binding=Binding(None, None)), places)
    value = logged_in(judge)
    assert judge.decide(request(headers=cookie(value), client="198.51.100.7"), NOW).status == 200
    # Bound again later: the unbound session no longer passes.
    judge.use_settings(settings_for())
    assert judge.decide(request(headers=cookie(value)), NOW).status == 401


def test_guessing_is_counted_logged_without_the_guess_and_stopped_and_the_lock_out_recorded(
    judge: Verifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guesses = [
        {"authorization": "Bearer guess-one"},
        basic("vastai", "guess-two"),
        basic("admin", TOKEN),
    ]
    for headers in guesses:
        assert judge.decide(request(headers=headers), NOW).status == 401
    last = judge.decide(request(uri="/?token=guess-four"), NOW + 1)
    assert last.status == 429 and dict(last.headers)["Retry-After"] == "60"
    assert (tmp_path / "blocked" / CLIENT).exists()  # Caddy refuses the address from now on
    # The right token does not help during the cooldown; another address is unaffected.
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}), NOW + 2).status == 429
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}, client="198.51.100.1"), NOW).status == 200
    judge.expire(NOW + 62)
    assert not (tmp_path / "blocked" / CLIENT).exists()
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}), NOW + 62).status == 200
    log = capsys.readouterr().out
    assert f"failed attempt from {CLIENT} on port 8000: wrong bearer token (1 in the last minute)" in log
    assert log.count(f"{CLIENT}: 4 failed attempts within a minute; every protected port refuses it for 60 s") == 1
    for guess in ("guess-one", "guess-two", "guess-four", "admin", TOKEN):
        assert guess not in log
    recorded = json.loads((tmp_path / "lockouts.json").read_text())["lockouts"]
    assert recorded == [{"address": CLIENT, "port": 8000, "failures": 4, "started": NOW + 1, "until": NOW + 61}]
    assert (tmp_path / "lockouts.json").stat().st_mode & 0o777 == 0o600


def test_during_a_cooldown_a_valid_session_passes_and_nothing_else(judge: Verifier) -> None:
    value = logged_in(judge)
    for n in range(4):
        judge.decide(request(headers={"authorization": f"Bearer guess-{n}"}), NOW)
    assert judge.limiter.is_blocked(CLIENT, NOW + 1)
    assert judge.decide(request(headers=cookie(value)), NOW + 1).status == 200
    same = {**cookie(value), "sec-fetch-site": "same-origin"}
    assert judge.decide(request("POST", headers=same), NOW + 1).status == 200
    cross = {**cookie(value), "sec-fetch-site": "cross-site"}
    assert judge.decide(request("POST", headers=cross), NOW + 1).status == 403
    refused = [
        {"authorization": f"Bearer {TOKEN}"},
        {**cookie(value), "authorization": f"Bearer {TOKEN}"},
        {**cookie(value), "authorization": "Bearer guess"},
        cookie(value[:-4] + "AAAA"),
        cookie(new_session(KEY, NOW - 8 * 86400, NETWORK)),
    ]
    for headers in refused:
        assert judge.decide(request(headers=headers), NOW + 1).status == 429, headers
    assert judge.decide(request(uri=f"/?token={TOKEN}", headers={**cookie(value), **HTML}), NOW + 1).status == 429
    assert judge.limiter.recent(CLIENT, NOW + 1) == 0  # nothing counted during the cooldown


def logout(judge: Verifier, value: str, headers: Mapping[str, str] | None = None, method: str = "POST") -> int:
    same = {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}
    answer = judge.logout(request(method, "/logout", {**cookie(value), **(same if headers is None else headers)}), NOW)
    if answer.status == 303:
        assert dict(answer.headers)["Set-Cookie"] == f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        assert dict(answer.headers)["Location"] == "/logout"
    if answer.status == 200:
        assert "Set-Cookie" not in dict(answer.headers) and "Logged out" in answer.body
    return answer.status


def test_logout_revokes_that_session_only_here_in_caddy_s_list_and_after_a_restart(
    judge: Verifier, tmp_path: Path
) -> None:
    value, other = logged_in(judge), logged_in(judge)
    for session in (value, other):
        assert judge.decide(request(headers=cookie(session)), NOW).status == 200
    assert logout(judge, value, {"origin": "http://127.0.0.1:9999"}) == 403  # another port's page
    assert logout(judge, value, {"sec-fetch-site": "cross-site"}) == 403
    assert logout(judge, value, {}) == 403  # no proof at all
    assert logout(judge, value, method="GET") == 200  # a link or an image only gets the page
    assert logout(judge, value, method="PUT") == 405
    assert judge.decide(request(headers=cookie(value)), NOW).status == 200
    assert logout(judge, value) == 303
    assert not (tmp_path / "sessions" / value).exists()
    assert (tmp_path / "sessions" / other / CLIENT).exists()
    assert judge.decide(request(headers=cookie(value)), NOW).status == 401
    assert judge.decide(request(headers=cookie(other)), NOW).status == 200
    restarted = Verifier(settings_for(), judge.places)
    assert restarted.decide(request(headers=cookie(value)), NOW).status == 401
    assert (tmp_path / "revoked.json").stat().st_mode & 0o777 == 0o600
    assert value not in (tmp_path / "revoked.json").read_text()  # the id only, never the value


def test_admitted_pairs_leave_with_new_settings_expiry_and_age(judge: Verifier, tmp_path: Path) -> None:
    short = new_session(KEY, NOW - 7 * 86400 + 5, NETWORK)
    value = logged_in(judge)
    for session in (short, value):
        assert judge.decide(request(headers=cookie(session)), NOW).status == 200
    judge.sweep_admitted(NOW + 10)
    assert not (tmp_path / "sessions" / short).exists()  # expired
    pair = tmp_path / "sessions" / value / CLIENT
    assert pair.exists()
    judge.sweep_admitted(NOW + verifier.ADMIT_SECONDS + 1)  # asked about again after a while
    assert not (tmp_path / "sessions" / value).exists()
    judge.decide(request(headers=cookie(value)), NOW)
    assert pair.exists()
    judge.use_settings(settings_for(limit=5))
    assert list((tmp_path / "sessions").iterdir()) == []


def test_a_wrong_token_is_refused_whatever_comes_with_it(judge: Verifier) -> None:
    session = cookie(logged_in(judge))
    assert judge.decide(request(uri="/?token=wrong", headers=session), NOW).status == 401
    assert judge.decide(request(uri=f"/?token={TOKEN}&token=wrong"), NOW).status == 401
    assert judge.decide(request(headers={"authorization": "Token x"}), NOW).status == 401


# ---- the wire ------------------------------------------------------------------------------------

FORWARDED = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/", "X-Llama-Client": "192.0.2.1", "X-Llama-Port": "8000"}


def head(headers: Mapping[str, str], start: str = "GET /verify?request=1 HTTP/1.1") -> bytes:
    return "\r\n".join([start, "Host: verifier", *(f"{k}: {v}" for k, v in headers.items())]).encode()


@pytest.fixture
def service(tmp_path: Path) -> verifier.Service:
    places = Places.under(tmp_path)
    verifier.prepare(places)
    settings_file = tmp_path / "settings.json"
    data = {"tokens": [TOKEN], "username": "vastai", "cookie": COOKIE, "key": KEY.hex(), "failure_limit": 0}
    settings_file.write_text(json.dumps(data))
    return verifier.Service(Verifier(verifier.load_settings(settings_file), places), settings_file)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_request_with_a_body_or_not_a_get_is_refused_and_its_connection_closed(service: verifier.Service) -> None:
    ok, close = service.respond(head({**FORWARDED, "Authorization": f"Bearer {TOKEN}"}), NOW)
    assert status_of(ok) == 200 and not close
    for bad in (
        head({**FORWARDED, "Content-Length": "12"}),
        head({**FORWARDED, "Transfer-Encoding": "chunked"}),
        head({**FORWARDED, "Transfer-Encoding": "identity"}),
        head(FORWARDED, "POST /verify HTTP/1.1"),
        head(FORWARDED, "GET /verify"),
        head(FORWARDED) + b"\r\n continued",
        head(FORWARDED) + b"\r\nno colon",
    ):
        answer, close = service.respond(bad, NOW)
        assert status_of(answer) == 400 and close, bad
    answer, close = service.respond(head({**FORWARDED, "Content-Length": "0", "Connection": "close"}), NOW)
    assert status_of(answer) == 401 and close


# Printable and not: every byte but CR and LF, which end a header line.
HEADER_BYTES = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["Cookie", "Authorization", "X-Forwarded-Uri", "Origin", "Accept", "X-Llama-Client"]),
    value=HEADER_BYTES,
    prefix=st.sampled_from([b"", f"{COOKIE}=".encode(), f"{COOKIE}=v2.".encode(), b"Basic ", b"Bearer ", b"/?token="]),
)
def test_any_header_value_is_refused_with_401_never_an_exception(
    service: verifier.Service, capsys: pytest.CaptureFixture[str], name: str, value: bytes, prefix: bytes
) -> None:
    forwarded = {k: v for k, v in FORWARDED.items() if k != name}
    raw = head(forwarded) + f"\r\n{name}: ".encode() + prefix + value
    answer, close = service.respond(raw, NOW)
    assert status_of(answer) == 401 and not close
    assert "ERROR" not in capsys.readouterr().out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    settings_file = tmp_path / "settings.json"
    data = {"tokens": [TOKEN], "username": "vastai", "cookie": COOKIE, "key": KEY.hex(), "failure_limit": 10}
    settings_file.write_text(json.dumps(data))
    socket_path = tmp_path / "verifier.sock"
    places = Places.under(tmp_path)
    thread = threading.Thread(target=verifier.serve, args=(settings_file, socket_path, places), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield settings_file, socket_path


def exchange(socket_path: Path, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes on a fresh connection; everything the verifier answers until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        connection.sendall(data)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def request_bytes(headers: Mapping[str, str], close: bool = True) -> bytes:
    return head({**headers, **({"Connection": "close"} if close else {})}) + b"\r\n\r\n"


def test_the_server_answers_caddy_on_its_own_only_socket_and_rereads_its_settings(
    served: tuple[Path, Path],
) -> None:
    settings_file, socket_path = served
    assert socket_path.stat().st_mode & 0o777 == 0o600
    answer = exchange(socket_path, request_bytes({**FORWARDED, "Authorization": f"Bearer {TOKEN}"}))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Llama-Auth: bearer\r\n" in answer
    data = json.loads(settings_file.read_text())
    data["tokens"] = ["a-new-token-0123456789"]
    replacement = settings_file.with_name("new.json")
    replacement.write_text(json.dumps(data))
    replacement.replace(settings_file)
    assert status_of(exchange(socket_path, request_bytes({**FORWARDED, "Authorization": f"Bearer {TOKEN}"}))) == 401
    new = {**FORWARDED, "Authorization": "Bearer a-new-token-0123456789"}
    assert status_of(exchange(socket_path, request_bytes(new))) == 200


def test_requests_smuggled_in_a_body_or_pipelined_are_never_answered(
    served: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, socket_path = served
    smuggled = request_bytes({**FORWARDED, "X-Llama-Client": "198.51.100.7", "Authorization": "Bearer x"}, False)
    outer = request_bytes({**FORWARDED, "Authorization": f"Bearer {TOKEN}"}, close=False)
    with_body = outer[:-4] + f"\r\nContent-Length: {len(smuggled) * 3}\r\n\r\n".encode() + smuggled * 3
    chunked = (
        outer[:-4] + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"
    )
    for attempt in (with_body, chunked, outer + smuggled * 3):
        answer = exchange(socket_path, attempt)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
    time.sleep(0.2)
    assert "198.51.100.7" not in capsys.readouterr().out
    # A keep-alive connection answers one request after another, each in its turn.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(socket_path))
        for _ in range(3):
            connection.sendall(outer)
            assert connection.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_hundreds_of_connections_at_once_are_all_answered(served: tuple[Path, Path]) -> None:
    """Caddy opens a connection per concurrent request it asks about (issue 28: a listen queue of
    5 answered 503 at 64 concurrent session requests)."""
    _, socket_path = served
    barrier = threading.Barrier(300)
    value = new_session(KEY, time.time(), "192.0.2.0/24")

    def one(_: int) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            barrier.wait()
            connection.connect(str(socket_path))
            connection.sendall(request_bytes({**FORWARDED, "Cookie": f"{COOKIE}={value}"}))
            return status_of(connection.recv(65536))

    with ThreadPoolExecutor(300) as pool:
        statuses = list(pool.map(one, range(300)))
    assert statuses == [200] * 300
