"""The Instance Portal in a real browser (Debian's chromium + chromium-driver, via Selenium) and
JupyterLab's kernel over REST and a websocket, both through the proxy with the token.

The browser also plays the attacker of issue 14: a page on another port of the same host (or on
another site) that submits forms to the portal and llama-server with the user's login, and
frames the portal; a second instance on the same host that would overwrite the first's login.

The portal screenshot is saved as a test artifact: build/test-artifacts/portal.png.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.container.conftest import ARTIFACTS, CPU_IMAGE, click, exec_text, loopback_ports, wait_for
from tests.container.runtime_support import (
    TOKEN,
    bearer,
    host_port,
    program_states,
    request,
    wait_answering,
)
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def portal_container(main_build: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    models = tmp_path_factory.mktemp("models")
    write_tiny_llama_gguf(models / "tiny.gguf")
    container = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
        ports=loopback_ports(),
    )
    try:
        wait_answering(container, 1111, "/api/health")
        wait_answering(container, 8000, "/health")
        wait_answering(container, 8080, "/api")
        yield container
    finally:
        container.remove(force=True)


def state_of(driver: webdriver.Chrome, service: str) -> str:
    """The state cell's value; the page redraws its table every 2 s, so an element can go stale."""
    try:
        cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-service="{service}"] td[data-state]')
        return cells[0].get_attribute("data-state") or "" if cells else ""
    except StaleElementReferenceException:
        return ""


def test_the_portal_in_a_browser_lists_services_and_restarts_one(
    portal_container: Any, browser: webdriver.Chrome
) -> None:
    port = host_port(portal_container, 1111)
    browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
    # The token left the address bar: the proxy set a cookie and redirected.
    assert browser.current_url == f"http://127.0.0.1:{port}/"
    wait = WebDriverWait(browser, 30, poll_frequency=0.3, ignored_exceptions=[StaleElementReferenceException])
    wait.until(lambda d: all(state_of(d, s) == "RUNNING" for s in ("portal", "llama", "jupyter")))
    # Read the table in one script call: the page may redraw between separate element reads.
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#services tbody tr')].map("
        "r => [r.dataset.service, r.querySelector('a') && r.querySelector('a').href])"
    )
    # No token in the links (nor anywhere in the page's data): the login reaches every port.
    assert rows == [
        ["portal", "http://127.0.0.1:1111/"],
        ["pyworker", None],  # the serverless worker, off outside serverless mode: no link
        ["llama", "http://127.0.0.1:8000/"],
        ["jupyter", "http://127.0.0.1:8080/"],
    ]
    assert TOKEN not in browser.page_source
    # The portal and the proxy cannot be stopped from the page.
    assert not browser.find_elements(By.CSS_SELECTOR, 'button[data-service="portal"]')

    click(wait, 'button[data-service="jupyter"][data-action="stop"]')
    wait.until(lambda d: state_of(d, "jupyter") == "STOPPED")
    assert request(portal_container, 8080, "/api", headers=bearer()).status == 503
    click(wait, 'button[data-service="jupyter"][data-action="start"]')
    wait.until(lambda d: state_of(d, "jupyter") == "RUNNING")

    click(wait, 'tr[data-service="llama"] button:last-child')  # "log"
    wait.until(lambda d: "llama-server" in d.find_element(By.ID, "log").text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "portal.png"))
    assert (ARTIFACTS / "portal.png").stat().st_size > 10_000


def test_the_portal_api_restarts_a_service_and_refuses_to_stop_itself(portal_container: Any) -> None:
    def call(path: str, method: str = "GET") -> Any:
        return request(portal_container, 1111, path, method=method, headers=bearer())

    before = {s["name"]: s for s in call("/api/services").json()["services"]}
    assert before["llama"]["state"] == "RUNNING"
    reply = call("/api/services/llama/restart", "POST")
    assert reply.status == 200, reply.body

    def llama_pid() -> str | None:
        """Supervisor's pid of llama while RUNNING ("pid 123, uptime 0:00:05"), else None."""
        row = {s["name"]: s for s in call("/api/services").json()["services"]}["llama"]
        found = re.search(r"pid (\d+)", row["description"])
        return found.group(1) if found and row["state"] == "RUNNING" else None

    first = re.search(r"pid (\d+)", before["llama"]["description"])
    assert first, before["llama"]
    wait_for(lambda: llama_pid() not in {None, first.group(1)}, 60, "llama did not come back with a new pid",
             portal_container)  # fmt: skip
    assert call("/api/services/portal/stop", "POST").status == 403
    assert call("/api/services/nope/stop", "POST").status == 404
    wait_answering(portal_container, 8000, "/health")


def test_a_jupyter_kernel_runs_code_over_its_websocket_through_the_proxy(portal_container: Any) -> None:
    wait_answering(portal_container, 8080, "/api")  # an earlier test may have restarted it
    assert request(portal_container, 8080, "/api/kernels", method="POST", body=b"{}").status == 401
    created = request(
        portal_container, 8080, "/api/kernels", method="POST", body=json.dumps({"name": "python3"}).encode(),
        headers={**bearer(), "Content-Type": "application/json"},
    )  # fmt: skip
    assert created.status == 201, created.body
    kernel = created.json()["id"]
    url = f"ws://127.0.0.1:{host_port(portal_container, 8080)}/api/kernels/{kernel}/channels"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=10)
    assert refused.value.status_code == 401
    socket = websocket.create_connection(url, header=[f"Authorization: Bearer {TOKEN}"], timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        socket.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": "1+1",
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        result = None
        while result is None:
            message = json.loads(socket.recv())
            if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "execute_result":
                result = message["content"]["data"]["text/plain"]
        assert result == "2"
    finally:
        socket.close()
        request(portal_container, 8080, f"/api/kernels/{kernel}", method="DELETE", headers=bearer())


def test_jupyter_is_rooted_at_workspace(portal_container: Any) -> None:
    wait_answering(portal_container, 8080, "/api")
    portal_container.exec_run(["touch", "/workspace/visible-in-jupyter.txt"])
    listing = request(portal_container, 8080, "/api/contents/", headers=bearer()).json()
    assert "visible-in-jupyter.txt" in {item["name"] for item in listing["content"]}


class AttackerSite:
    """Pages an attacker serves from another port of the same host (127.0.0.1) or from another
    site (localhost): forms that post to the victim's ports, and a frame around its portal."""

    def __init__(self, pages: dict[str, str]) -> None:
        site = self

        class Pages(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.pages = pages
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def auto_form(action: str, fields: str = "", enctype: str = "application/x-www-form-urlencoded") -> str:
    return (
        f'<!doctype html><form method="post" enctype="{enctype}" action="{action}">{fields}</form>'
        "<script>document.forms[0].submit()</script>"
    )


@pytest.fixture
def attacker(portal_container: Any) -> Iterator[AttackerSite]:
    portal, llama = host_port(portal_container, 1111), host_port(portal_container, 8000)
    # text/plain makes `{"prompt": "...", "x": "="}`: a JSON body llama-server accepts, no preflight.
    prompt = '<input name=\'{"prompt": "pwned", "n_predict": 1, "x": "\' value=\'"}\'>'
    site = AttackerSite(
        {
            "/stop": auto_form(f"http://127.0.0.1:{portal}/api/services/llama/stop"),
            "/completion": auto_form(f"http://127.0.0.1:{llama}/completion", prompt, "text/plain"),
            "/frame": f'<!doctype html><iframe id="victim" src="http://127.0.0.1:{portal}/" width="800"></iframe>',
        }
    )
    yield site
    site.close()


def wait_page(driver: webdriver.Chrome, text: str, seconds: float = 15) -> str:
    WebDriverWait(driver, seconds).until(lambda d: text in d.page_source)
    return driver.page_source


def llama_pid(container: Any) -> str:
    states = program_states(container)
    assert states.get("llama") == "RUNNING", states
    _, status = container.exec_run(["supervisorctl", "status", "llama"])
    found = re.search(rb"pid (\d+)", status)
    assert found, status
    return found.group(1).decode()


def test_forms_and_frames_from_another_port_of_the_host_change_nothing(
    portal_container: Any, browser: webdriver.Chrome, attacker: AttackerSite
) -> None:
    wait_answering(portal_container, 8000, "/health")
    before = llama_pid(portal_container)
    portal = host_port(portal_container, 1111)
    browser.get(f"http://127.0.0.1:{portal}/?token={TOKEN}")  # the user's login: a Lax cookie for the host
    assert browser.get_cookies(), "no session cookie"
    browser.get(f"http://127.0.0.1:{attacker.port}/stop")
    assert "refused: this request comes from another site or port" in wait_page(browser, "refused")
    browser.get(f"http://127.0.0.1:{attacker.port}/completion")
    assert "refused" in wait_page(browser, "refused") and "content" not in browser.page_source
    time.sleep(1)
    assert llama_pid(portal_container) == before  # neither stopped nor restarted
    # Framed by another port, the portal does not load (frame-ancestors 'self', X-Frame-Options).
    browser.get(f"http://127.0.0.1:{attacker.port}/frame")
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.ID, "victim"))
    time.sleep(2)
    browser.switch_to.frame(browser.find_element(By.ID, "victim"))
    assert not browser.find_elements(By.ID, "services")
    browser.switch_to.default_content()
    # The portal's own buttons still work with the same login (the test above clicks them too).
    browser.get(f"http://127.0.0.1:{portal}/")
    outcome = browser.execute_async_script(
        "const done = arguments[0];fetch('/api/services/nope/restart', {method: 'POST'}).then(r => done(r.status));"
    )
    assert outcome == 404  # let through to the portal, which knows no such service


def test_basic_auth_sent_by_the_browser_does_not_let_another_site_change_anything(
    portal_container: Any, browser: webdriver.Chrome, attacker: AttackerSite
) -> None:
    before = llama_pid(portal_container)
    portal = host_port(portal_container, 1111)
    # A login through the 401 page's basic-auth prompt: the browser then sends it by itself.
    browser.get(f"http://vastai:{TOKEN}@127.0.0.1:{portal}/api/health")
    assert '"ok"' in wait_page(browser, "ok")
    assert not browser.get_cookies()
    # Another site (localhost is not 127.0.0.1) submits a form to the portal; the browser sends
    # the basic auth along, and the proxy refuses it.
    browser.get(f"http://localhost:{attacker.port}/stop")
    assert "refused: this request comes from another site or port" in wait_page(browser, "refused")
    time.sleep(1)
    assert llama_pid(portal_container) == before


@pytest.fixture
def second_instance(main_build: Any, client: Any) -> Iterator[Any]:
    container = client.containers.run(
        CPU_IMAGE, detach=True, environment={"OPEN_BUTTON_TOKEN": "second-instance-token-0123"},
        ports=loopback_ports((1111,)),
    )  # fmt: skip
    try:
        wait_answering(container, 1111, "/api/health", token="second-instance-token-0123")
        yield container
    finally:
        container.remove(force=True)


def test_two_instances_on_one_host_keep_their_own_login(
    portal_container: Any, second_instance: Any, browser: webdriver.Chrome
) -> None:
    first, second = host_port(portal_container, 1111), host_port(second_instance, 1111)
    browser.get(f"http://127.0.0.1:{first}/?token={TOKEN}")
    browser.get(f"http://127.0.0.1:{second}/?token=second-instance-token-0123")
    names = {c["name"] for c in browser.get_cookies()}
    assert len(names) == 2, names  # one cookie each: cookies are per host, not per port
    for port in (first, second):
        browser.get(f"http://127.0.0.1:{port}/api/services")
        assert '"services"' in wait_page(browser, "services"), port


def test_jupyterlab_works_in_the_browser_with_the_login(portal_container: Any, browser: webdriver.Chrome) -> None:
    wait_answering(portal_container, 8080, "/api")
    jupyter = host_port(portal_container, 8080)
    browser.get(f"http://127.0.0.1:{jupyter}/lab?token={TOKEN}")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-LabShell"))
    created = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/contents', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({type: 'notebook'})}).then(r => done(r.status));"
    )
    assert created == 201
    # JupyterLab's scripts send its own token back (its page holds it): the proxy takes it for
    # no credential, neither a way in nor a wrong token counted against the owner.
    assert "failed attempt" not in exec_text(portal_container, "cat", "/var/log/portal/auth.log")[1]


def test_the_reference_images_jupyter_terminal_link_opens_a_terminal(
    portal_container: Any, browser: webdriver.Chrome
) -> None:
    # The reference's default PORTAL_CONFIG links "Jupyter Terminal" to Notebook 7's /terminals/1.
    jupyter = host_port(portal_container, 8080)
    browser.get(f"http://127.0.0.1:{jupyter}/terminals/1?token={TOKEN}")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Terminal"))
    assert browser.current_url == f"http://127.0.0.1:{jupyter}/terminals/1"
    terminals = browser.execute_async_script(
        "const done = arguments[0]; fetch('/api/terminals').then(r => r.json()).then(done);"
    )
    assert [terminal["name"] for terminal in terminals] == ["1"]
    assert "failed attempt" not in exec_text(portal_container, "cat", "/var/log/portal/auth.log")[1]
