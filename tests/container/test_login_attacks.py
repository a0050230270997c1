"""Issue 23's attacks on the login, and issue 28's session cookie under concurrency, run against
the CPU image as an attacker or a busy owner would: raw bytes through the real proxy.

The attacker speaks from inside the container (127.0.0.1, a client of its own address) while the
owner comes in through Docker's published port (the bridge's gateway address, as the proxy sees
it). Each of these failed on main at 30cdce9, except the chunked variant of the smuggling (the
old verifier read the chunk-size line as a bad request and closed the connection).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.container.conftest import exec_text, loopback_ports, wait_for
from tests.container.runtime_support import (
    BROWSER,
    TOKEN,
    bearer,
    host_port,
    request,
    wait_answering,
    wait_running,
)
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

SESSION = re.compile(r"^(llama_[0-9a-f]{12}_auth)=([^;]+);")
INVENTED = "198.51.100.7"  # TEST-NET-2: never connects
VERIFIER_LOG = "/var/log/portal/auth.log"
JUPYTER_TOKEN_FILE = "/run/llama-images/secrets/jupyter-token"


def gateway(container: Any) -> str:
    """The owner's address as the proxy sees it: Docker's published ports come in from the bridge."""
    container.reload()
    address: str = container.attrs["NetworkSettings"]["Gateway"]
    assert address, container.attrs["NetworkSettings"]
    return address


def login(container: Any, port: int = 1111) -> str:
    """A browser's login (?token=): the session cookie as `name=value`."""
    reply = request(container, port, f"/?token={TOKEN}", headers=BROWSER)
    assert reply.status == 302, reply.body
    found = SESSION.match(reply.headers["Set-Cookie"])
    assert found, reply.headers["Set-Cookie"]
    return f"{found.group(1)}={found.group(2)}"


def auth_log(container: Any) -> str:
    logs: str = container.logs().decode(errors="replace")
    return logs + exec_text(container, "cat", VERIFIER_LOG)[1]


def blocked(container: Any) -> list[str]:
    return exec_text(container, "ls", "/run/llama-images/auth/blocked")[1].split()


def smuggled(victim: str) -> bytes:
    """What the issue's attacker put in a body: requests for the verifier, each a wrong token
    'from' the victim's address."""
    one = (
        f"GET /verify HTTP/1.1\r\nHost: x\r\nX-Llama-Client: {victim}\r\nX-Llama-Port: 8000\r\n"
        "X-Forwarded-Uri: /\r\nAuthorization: Bearer wrong\r\n\r\n"
    )
    return (one * 12).encode()


# Runs inside the container: 8 requests for the verifier (a wrong token takes them there), each
# carrying a body of smuggled requests, sent as argv[1] says; prints each connection's answers.
ATTACK = r"""
import socket, sys
mode, body = sys.argv[1], bytes.fromhex(sys.argv[2])
head = b"GET /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer nope\r\n"
length = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
messages = {"length": [length] * 8, "chunked": [chunked] * 8, "pipelined": [length * 8]}[mode]
for message in messages:
    connection = socket.create_connection(("127.0.0.1", 8000))
    connection.sendall(message)
    connection.settimeout(3)
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except OSError:
        pass
    connection.close()
    print([line.decode() for line in answer.split(b"\r\n") if line.startswith(b"HTTP/")])
"""


@pytest.fixture
def owner_container(run_container: Callable[..., Any]) -> Any:
    container = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN}, ports=loopback_ports((1111, 8000, 8080)))
    wait_answering(container, 1111, "/api/health")
    wait_running(container, "auth")
    return container


@pytest.mark.parametrize("mode", ["length", "chunked", "pipelined"])
def test_requests_smuggled_in_a_body_to_the_verifier_leave_no_trace(owner_container: Any, mode: str) -> None:
    container = owner_container
    owner = gateway(container)
    session = login(container)
    for victim in (owner, INVENTED):
        code, output = exec_text(container, "python3", "-c", ATTACK, mode, smuggled(victim).hex())
        assert code == 0, output
    time.sleep(1)
    # The owner is unaffected: no cooldown for their address (nor the invented one); the attacker's
    # own wrong tokens may have locked out the attacker.
    assert set(blocked(container)) <= {"127.0.0.1"}
    assert request(container, 8000, "/health", headers=bearer()).status in {200, 503}  # 503: no model
    assert request(container, 1111, "/api/health", headers=bearer()).status == 200
    assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 200
    # Nothing the attacker wrote reached the log: no failure counted for another address.
    log = auth_log(container)
    assert INVENTED not in log
    assert f"failed attempt from {owner}" not in log
    assert "failed attempt from 127.0.0.1" in log  # the attacker's own requests count, as they should


def test_requests_smuggled_over_http2_leave_no_trace(run_container: Callable[..., Any]) -> None:
    container = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN, "ENABLE_HTTPS": "true"},
                              ports=loopback_ports((1111, 8000)))  # fmt: skip
    wait_running(container, "proxy", "auth")
    owner = gateway(container)
    port = host_port(container, 1111)

    def owner_status() -> str:
        return subprocess.run(
            ["curl", "-ks", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {TOKEN}",
             f"https://127.0.0.1:{port}/api/health"], capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip

    wait_for(lambda: owner_status() == "200", 60, "no HTTPS answer on 1111", container)
    for victim in (owner, INVENTED):
        exec_text(
            container, "python3", "-c", f"open('/tmp/body', 'wb').write(bytes.fromhex('{smuggled(victim).hex()}'))"
        )
        for _ in range(4):
            _, output = exec_text(
                container, "curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}\n",
                "-X", "GET", "--data-binary", "@/tmp/body", "-H", "Authorization: Bearer nope",
                "https://127.0.0.1:8000/verify",
            )  # fmt: skip
            assert output.startswith("2 "), output  # HTTP/2 it was
    time.sleep(1)
    assert blocked(container) == []
    assert owner_status() == "200"
    log = auth_log(container)
    assert INVENTED not in log and f"failed attempt from {owner}" not in log


def test_a_lock_out_by_a_neighbour_on_the_same_address_leaves_the_owner_s_session_working(
    owner_container: Any,
) -> None:
    container = owner_container
    wait_answering(container, 8080, "/api")
    owner = gateway(container)
    session = login(container)
    # A neighbour behind the same address (a NAT, a tunnel) guesses: the address is locked out.
    statuses = [request(container, 8000, "/health", headers=bearer(f"guess-{n}")).status for n in range(10)]
    assert statuses == [401] * 9 + [429]
    for _ in range(3):
        assert request(container, 8000, "/health", headers=bearer()).status == 429  # even the right token
        assert request(container, 1111, f"/api/health?token={TOKEN}").status == 429
        assert request(container, 1111, "/api/health", headers={"Cookie": session, **bearer("guess")}).status == 429
        forged = session.rsplit(".", 1)[0] + ".AAAA"
        assert request(container, 1111, "/api/health", headers={"Cookie": forged}).status == 429
        # The owner's session still passes, on every port: it cannot be guessed, so it tells nobody anything.
        assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 200
        assert request(container, 8080, "/api", headers={"Cookie": session}).status == 200
    # Logged once, with the address and the count; the portal lists it.
    wait_for(lambda: f"{owner}: 10 failed attempts" in auth_log(container), 10, "no lock-out line", container)
    # docker logs gets the program logs' lines by a copier, a moment after the file.
    line = f"{owner}: 10 failed attempts"
    wait_for(lambda: line in container.logs().decode(), 10, "no lock-out line in docker logs", container)
    assert container.logs().decode().count(line) == 1
    lockouts = request(container, 1111, "/api/lockouts", headers={"Cookie": session})
    assert lockouts.status == 200, lockouts.body
    assert [(e["address"], e["failures"], e["port"]) for e in lockouts.json()["lockouts"]] == [(owner, 10, 8000)]


def test_a_session_is_bound_to_the_network_it_was_made_in_and_logged_when_used_elsewhere(
    run_container: Callable[..., Any],
) -> None:
    bound = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN}, ports=loopback_ports((1111,)))
    free = run_container(
        environment={"OPEN_BUTTON_TOKEN": TOKEN, "SESSION_BIND": "none"}, ports=loopback_ports((1111,))
    )
    for container in (bound, free):
        wait_answering(container, 1111, "/api/health")
    # Stolen by a neighbour (the browser sends it to every port of the host) and used from
    # another network: here the container's own loopback, which is not the owner's network.
    use = "import sys, urllib.request as u\ntry:\n    print(u.urlopen(u.Request('http://127.0.0.1:1111/api/health', headers={'Cookie': sys.argv[1]})).status)\nexcept u.HTTPError as e:\n    print(e.code)"  # noqa: E501
    stolen = login(bound)
    assert request(bound, 1111, "/api/health", headers={"Cookie": stolen}).status == 200
    assert exec_text(bound, "python3", "-c", use, stolen)[1].strip() == "401"
    wait_for(lambda: "from another network" in auth_log(bound), 10, "the refusal was not logged", bound)
    line = next(line for line in auth_log(bound).splitlines() if "from another network" in line)
    assert "127.0.0.1" in line and stolen.split("=", 1)[1] not in line
    assert request(bound, 1111, "/api/health", headers={"Cookie": stolen}).status == 200  # still the owner's
    # SESSION_BIND=none: a session works from anywhere.
    anywhere = login(free)
    assert exec_text(free, "python3", "-c", use, anywhere)[1].strip() == "200"


def test_logout_ends_the_session_on_the_server_and_another_site_cannot_log_the_owner_out(
    owner_container: Any,
) -> None:
    container = owner_container
    session = login(container)
    port = host_port(container, 1111)
    cross = {"Cookie": session, "Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    assert request(container, 1111, "/logout", method="POST", headers=cross).status == 403
    assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 200
    same = {"Cookie": session, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert request(container, 1111, "/logout", headers={"Cookie": session, **BROWSER}).status == 200  # a link
    assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 200
    ended = request(container, 1111, "/logout", method="POST", headers=same)
    assert ended.status == 303 and ended.headers["Location"] == "/logout"
    assert re.match(r"llama_[0-9a-f]{12}_auth=; Path=/; Max-Age=0", ended.headers["Set-Cookie"])
    assert b"Logged out" in request(container, 1111, "/logout", headers=BROWSER).body
    # The value a copy of the cookie holds is refused everywhere from now on, also after a restart.
    for other_port, path in ((1111, "/api/health"), (8000, "/health"), (8080, "/api")):
        assert request(container, other_port, path, headers={"Cookie": session}).status == 401, other_port
    exec_text(container, "supervisorctl", "restart", "auth", "proxy")
    wait_answering(container, 1111, "/api/health")
    assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 401
    assert request(container, 1111, "/api/health", headers={"Cookie": login(container)}).status == 200


def raw_status(container: Any, port: int, head: bytes) -> int:
    """One request written as raw bytes (header values a client library would refuse to send)."""
    with socket.create_connection(("127.0.0.1", host_port(container, port)), timeout=30) as connection:
        connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_odd_cookie_and_header_values_are_refused_with_401_never_a_crash(owner_container: Any) -> None:
    container = owner_container
    name, value = login(container).split("=", 1)
    parts = value.split(".")
    expiry, signature = parts[1], parts[-1]
    fullwidth = chr(0xFF11) * 3  # digits that are not ASCII
    odd = [
        # The issue's: an expiry of thousands of digits, a non-ASCII signature (the old v1 format)...
        f"{name}=v1.{'9' * 5000}.{signature}".encode(),
        f"{name}=v1.{expiry}.".encode() + "ü".encode() * 43,
        f"{name}=v1.{fullwidth}.{signature}".encode(),
        # ...and the same in the current one.
        f"{name}=v2.{'9' * 5000}.{'.'.join(parts[2:])}".encode(),
        f"{name}={'.'.join(parts[:-1])}.".encode() + "ü".encode() * 43,
        f"{name}=v2.{fullwidth}.{'.'.join(parts[2:])}".encode(),
        f"{name}=".encode() + bytes(range(0x80, 0x100)),
        f"{name}={value}".encode() + "é".encode(),
    ]
    for cookie in odd:
        assert raw_status(container, 1111, b"Cookie: " + cookie + b"\r\n") == 401, cookie[:80]
    headers = [
        b"Authorization: Bearer \xc3\xbc\xff\r\n",
        b"Authorization: Basic \xff\xfe\r\n",
        b"Authorization: Basic " + base64.b64encode(b"vastai:\xff\xfe") + b"\r\n",
        b"Authorization: \r\n",
    ]
    for header in headers:
        assert raw_status(container, 1111, header) == 401, header
    assert raw_status(container, 1111, b"Cookie: " + f"{name}={value}".encode() + b"\r\n") == 200
    assert "Traceback" not in auth_log(container)


# Inside the container: a browser's login from 127.0.0.1, then 256 clients at once, each sending
# its requests with the session cookie; prints each kind's statuses.
CONCURRENT = r"""
import http.client, json, sys, threading, collections
TOKEN, CLIENTS, EACH = sys.argv[1], 256, 4
login = http.client.HTTPConnection("127.0.0.1", 8000)
login.request("GET", f"/health?token={TOKEN}", headers={"Accept": "text/html"})
cookie = login.getresponse().getheader("Set-Cookie").split(";")[0]
body = {"prompt": "Once upon a time", "max_tokens": 4}
kinds = {
    "health": ("GET", "/health", None),
    "completion": ("POST", "/v1/completions", json.dumps({**body, "stream": False})),
    "stream": ("POST", "/v1/completions", json.dumps({**body, "stream": True})),
}
results = {}
for kind, (method, path, payload) in kinds.items():
    statuses = collections.Counter()
    start = threading.Barrier(CLIENTS)
    def client():
        start.wait()
        connection = http.client.HTTPConnection("127.0.0.1", 8000, timeout=120)
        for _ in range(EACH):
            try:
                headers = {"Cookie": cookie, "Content-Type": "application/json"}
                connection.request(method, path, body=payload, headers=headers)
                reply = connection.getresponse()
                reply.read()
                statuses[reply.status] += 1
            except Exception as error:
                statuses[type(error).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", 8000, timeout=120)
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results[kind] = dict(statuses)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_llama_gguf(directory / "tiny.gguf")
    return directory


def test_256_concurrent_requests_with_the_session_cookie_get_no_errors(
    run_container: Callable[..., Any], models: Path
) -> None:
    container = run_container(
        environment={"OPEN_BUTTON_TOKEN": TOKEN, "LLAMA_MODEL": "/models/tiny.gguf"},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
        ports=loopback_ports((1111, 8000)),
    )
    wait_answering(container, 8000, "/health")
    code, output = exec_text(container, "python3", "-c", CONCURRENT, TOKEN)
    assert code == 0, output
    results = json.loads(output.strip().splitlines()[-1])
    assert results == {kind: {"200": 256 * 4} for kind in ("health", "completion", "stream")}, results


def test_the_portal_allows_no_inline_script(owner_container: Any) -> None:
    page = request(owner_container, 1111, "/", headers=bearer())
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"


def test_the_portal_s_logout_link_ends_the_session_and_the_portal_shows_recent_lock_outs(
    owner_container: Any, browser: webdriver.Chrome
) -> None:
    container = owner_container
    port = host_port(container, 1111)
    wait = WebDriverWait(browser, 30, poll_frequency=0.3, ignored_exceptions=[StaleElementReferenceException])
    browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
    session = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    wait.until(lambda d: d.find_element(By.ID, "logout").is_displayed())
    browser.find_element(By.ID, "logout").click()
    wait.until(lambda d: "Logged out" in d.page_source)
    assert not browser.get_cookies()
    assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 401
    # Logged in again; a neighbour behind the same address guesses: the lock-out is listed, and
    # the page keeps working with the session meanwhile.
    browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
    for n in range(10):
        request(container, 8000, "/health", headers=bearer(f"guess-{n}"))
    browser.get(f"http://127.0.0.1:{port}/")
    wait.until(lambda d: gateway(container) in d.find_element(By.ID, "lockouts").text)
    assert "10 failed attempts" in browser.find_element(By.ID, "lockouts").text
    # The page's scripts ran under a policy without 'unsafe-inline': no violation was reported.
    console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    assert not [e for e in console if "Content Security Policy" in e["message"]]


@pytest.fixture(params=[{"AUTH_EXCLUDE": "8080", "OPEN_BUTTON_TOKEN": TOKEN}, {"ENABLE_AUTH": "false"}],
                ids=["auth-exclude", "auth-off"])  # fmt: skip
def open_jupyter(request: pytest.FixtureRequest, run_container: Callable[..., Any]) -> Iterator[Any]:
    container = run_container(environment=request.param, ports=loopback_ports((1111, 8080)))
    wait_for(lambda: status(container, 8080, "/api") == 200, 120, "Jupyter did not answer", container)
    yield container


def status(container: Any, port: int, path: str, **kwargs: Any) -> int:
    try:
        return request(container, port, path, timeout=10, **kwargs).status
    except OSError:
        return 0


def test_jupyter_on_a_port_the_proxy_leaves_open_keeps_its_own_token_and_xsrf_check(open_jupyter: Any) -> None:
    container = open_jupyter
    # A page of another site reaches the opened port by DNS rebinding (its own name resolves to
    # this address: Host and Origin are both the attacker's, which Jupyter's origin check alone
    # lets pass) and posts: a root terminal, a new file. Refused.
    rebound = f"rebound.example:{host_port(container, 8080)}"
    evil = {"Host": rebound, "Origin": f"http://{rebound}", "Content-Type": "text/plain"}
    assert request(container, 8080, "/api/terminals", method="POST", headers=evil, body=b"{}").status == 403
    assert (
        request(container, 8080, "/api/contents", method="POST", headers=evil, body=b'{"type": "file"}').status == 403
    )
    assert request(container, 8080, "/api/contents").status == 403
    code, token = exec_text(container, "cat", JUPYTER_TOKEN_FILE)
    assert code == 0 and len(token) >= 32
    # The owner's way in: Jupyter's own token (read with docker exec, or from the portal's link).
    listed = request(container, 8080, f"/api/terminals?token={token}")
    assert listed.status == 200 and listed.json() == []  # the stranger's posts made nothing
    assert exec_text(container, "ls", "/workspace")[1].split() == []
    created = request(container, 8080, "/api/terminals", method="POST", body=b"{}",
                      headers={"Authorization": f"token {token}", "Content-Type": "application/json"})  # fmt: skip
    assert created.status == 200, created.body
    # A browser logged in to Jupyter still needs Jupyter's XSRF proof for a change (a request
    # without an Origin, as a form of another site may come).
    opened = request(container, 8080, f"/lab?token={token}", headers=BROWSER)
    cookies = "; ".join(c.split(";")[0] for c in opened.headers.get_all("Set-Cookie") or [])
    assert "username-" in cookies, opened.headers
    forged = {"Cookie": cookies, "Content-Type": "text/plain"}
    assert request(container, 8080, "/api/contents", method="POST", headers=forged, body=b"{}").status == 403
    # The token is in no log and no process's arguments.
    assert token not in container.logs().decode(errors="replace")
    assert exec_text(container, "grep", "-rl", token, "/var/log")[0] == 1
    _, arguments = exec_text(container, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert token not in arguments
    # The portal's link to the opened port carries Jupyter's token when the portal itself is behind
    # the login (an open portal shows it to no one).
    rows = {r["name"]: r for r in request(container, 1111, "/api/services", headers=bearer()).json()["services"]}
    if rows["portal"]["protected"]:
        assert rows["jupyter"]["link_query"] == f"token={token}"
        assert request(container, 8080, f"/api/contents?{rows['jupyter']['link_query']}").status == 200
    else:
        assert rows["jupyter"]["link_query"] == ""


def test_jupyter_behind_the_proxy_needs_no_token_of_its_own(owner_container: Any) -> None:
    container = owner_container
    wait_answering(container, 8080, "/api")
    same = {**bearer(), "Content-Type": "application/json"}
    assert request(container, 8080, "/api/terminals", method="POST", headers=same, body=b"{}").status == 200
    rows = {r["name"]: r for r in request(container, 1111, "/api/services", headers=bearer()).json()["services"]}
    assert rows["jupyter"]["link_query"] == ""
