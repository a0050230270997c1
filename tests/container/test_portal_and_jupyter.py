"""The Instance Portal in a real browser (Debian's chromium + chromium-driver, via Selenium) and
JupyterLab's kernel over REST and a websocket, both through the proxy with the token.

The portal screenshot is saved as a test artifact: build/test-artifacts/portal.png.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.container.conftest import ARTIFACTS, CPU_IMAGE, loopback_ports, wait_for
from tests.container.runtime_support import (
    TOKEN,
    bearer,
    host_port,
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


def click(wait: WebDriverWait[webdriver.Chrome], selector: str) -> None:
    """Click the element, retrying when a redraw replaced it between finding and clicking."""

    def clicked(driver: webdriver.Chrome) -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    wait.until(clicked)


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
    # No token in links: the session cookie reaches every port of this host.
    assert rows == [
        ["portal", "http://127.0.0.1:1111/"],
        ["llama", "http://127.0.0.1:8000/"],
        ["jupyter", "http://127.0.0.1:8080/"],
    ]
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
