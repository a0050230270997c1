"""The login verifier's decisions, and the server Caddy asks over its unix socket."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from llama_runtime import verifier
from llama_runtime.access import new_session, session_key, session_valid
from llama_runtime.verifier import Request, Settings, Verifier

TOKEN = "test-token-0123456789"
PASSWORD = "another password"
COOKIE = "llama_0123456789ab_auth"
KEY = session_key(b"s" * 32, "vastai", [TOKEN, PASSWORD])
NOW = 1_800_000_000.0
HTML = {"accept": "text/html,application/xhtml+xml"}


def settings(limit: int = 4) -> Settings:
    return Settings((TOKEN, PASSWORD), "vastai", COOKIE, KEY, limit)


def request(
    method: str = "GET", uri: str = "/", headers: Mapping[str, str] | None = None, client: str = "203.0.113.7"
) -> Request:
    return Request(method, uri, client, "8000", "http", "127.0.0.1:8000", dict(headers or {}))


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def judge(tmp_path: Path) -> Verifier:
    return Verifier(settings(), tmp_path)


def test_a_browser_with_a_token_gets_a_seven_day_session_and_the_address_without_the_token(judge: Verifier) -> None:
    for token in (TOKEN, PASSWORD):  # OPEN_BUTTON_TOKEN and WEB_PASSWORD both open it
        answer = judge.decide(request(uri=f"/lab?a=1&token={token.replace(' ', '%20')}&b=2", headers=HTML), NOW)
        headers = dict(answer.headers)
        assert answer.status == 302
        assert headers["Location"] == "/lab?a=1&b=2"
        name, _, rest = headers["Set-Cookie"].partition("=")
        value, _, flags = rest.partition(";")
        assert name == COOKIE and TOKEN not in headers["Set-Cookie"]
        assert flags.strip() == "Path=/; Max-Age=604800; HttpOnly; SameSite=Lax"
        assert session_valid(KEY, value, NOW + 7 * 86400 - 1)


def test_the_redirect_keeps_the_rest_of_the_address_as_sent_and_stays_on_this_host() -> None:
    assert verifier.without_token("/a/b?x=1&token=t&y&z=%20&tok%65n=u") == "/a/b?x=1&y&z=%20"
    assert verifier.without_token("//evil.example/x?token=t") == "/x"
    assert verifier.without_token("?token=t") == "/"


def test_a_session_opens_reading_and_same_origin_changes_only(judge: Verifier) -> None:
    cookie = {"cookie": f"other=1; {COOKIE}={new_session(KEY, NOW)}"}
    assert judge.decide(request(headers=cookie), NOW).status == 200
    assert dict(judge.decide(request(headers=cookie), NOW).headers) == {"X-Llama-Auth": "cookie"}
    same = {**cookie, "origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}
    assert judge.decide(request("POST", headers=same), NOW).status == 200
    # A form on another port of the same host: the browser sends the cookie along.
    for cross in ({"origin": "http://127.0.0.1:9999"}, {"sec-fetch-site": "same-site"}):
        answer = judge.decide(request("POST", "/completion", {**cookie, **cross}), NOW)
        assert answer.status == 403, cross
    # Basic auth, which browsers also send on their own, needs the same proof.
    cross_basic = {**basic("vastai", TOKEN), "sec-fetch-site": "cross-site"}
    assert judge.decide(request("POST", headers=cross_basic), NOW).status == 403
    # A Bearer token is never sent by a browser on its own.
    bearer_cross = {"authorization": f"Bearer {TOKEN}", "origin": "http://evil.example"}
    assert judge.decide(request("POST", headers=bearer_cross), NOW).status == 200


def test_an_expired_or_foreign_session_is_refused_but_not_counted_as_guessing(judge: Verifier) -> None:
    old = new_session(KEY, NOW - 8 * 86400)
    foreign = new_session(session_key(b"t" * 32, "vastai", [TOKEN]), NOW)
    for value in (old, foreign, "v1.9999999999.forged") * 3:
        answer = judge.decide(request(headers={"cookie": f"{COOKIE}={value}", **HTML}), NOW)
        assert answer.status == 401 and "<form" in answer.body
    assert judge.limiter.recent("203.0.113.7", NOW) == 0


def test_guessing_is_counted_logged_without_the_guess_and_stopped(
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
    assert (tmp_path / "203.0.113.7").exists()  # Caddy refuses the address from now on
    # The right token does not help during the cooldown; another address is unaffected.
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}), NOW + 2).status == 429
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}, client="198.51.100.1"), NOW).status == 200
    judge.expire(NOW + 62)
    assert not (tmp_path / "203.0.113.7").exists()
    assert judge.decide(request(headers={"authorization": f"Bearer {TOKEN}"}), NOW + 62).status == 200
    log = capsys.readouterr().out
    assert "failed attempt from 203.0.113.7 on port 8000: wrong bearer token (1 in the last minute)" in log
    assert "203.0.113.7: 4 failed attempts within a minute; every protected port refuses it for 60 s" in log
    for guess in ("guess-one", "guess-two", "guess-four", "admin", TOKEN):
        assert guess not in log


def test_a_wrong_token_is_refused_whatever_comes_with_it(judge: Verifier) -> None:
    session = {"cookie": f"{COOKIE}={new_session(KEY, NOW)}"}
    assert judge.decide(request(uri="/?token=wrong", headers=session), NOW).status == 401
    assert judge.decide(request(uri=f"/?token={TOKEN}&token=wrong"), NOW).status == 401
    assert judge.decide(request(headers={"authorization": "Token x"}), NOW).status == 401


def call(socket_path: Path, headers: dict[str, str]) -> http.client.HTTPResponse:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(socket_path))

    connection = UnixConnection("localhost", timeout=5)
    connection.request("GET", "/verify", headers=headers)
    return connection.getresponse()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    settings_file = tmp_path / "settings.json"
    data = {"tokens": [TOKEN], "username": "vastai", "cookie": COOKIE, "key": KEY.hex(), "failure_limit": 10}
    settings_file.write_text(json.dumps(data))
    socket_path = tmp_path / "verifier.sock"
    thread = threading.Thread(
        target=verifier.serve, args=(settings_file, socket_path, tmp_path / "blocked"), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield settings_file, socket_path


def test_the_server_answers_caddy_on_its_own_only_socket_and_rereads_its_settings(
    served: tuple[Path, Path],
) -> None:
    settings_file, socket_path = served
    assert socket_path.stat().st_mode & 0o777 == 0o600
    forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/", "X-Llama-Client": "192.0.2.1"}
    reply = call(socket_path, {**forwarded, "Authorization": f"Bearer {TOKEN}"})
    assert (reply.status, reply.headers["X-Llama-Auth"]) == (200, "bearer")
    data = json.loads(settings_file.read_text())
    data["tokens"] = ["a-new-token-0123456789"]
    replacement = settings_file.with_name("new.json")
    replacement.write_text(json.dumps(data))
    replacement.replace(settings_file)
    assert call(socket_path, {**forwarded, "Authorization": f"Bearer {TOKEN}"}).status == 401
    assert call(socket_path, {**forwarded, "Authorization": "Bearer a-new-token-0123456789"}).status == 200
