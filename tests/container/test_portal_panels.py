"""The Instance Portal's panels in a real browser (Debian's chromium + chromium-driver, via
Selenium), on a running container: machine figures and their graphs, the model and its speed,
router mode's load/unload, the "Use it" snippets, buttons that follow state, and the logs
archive. Screenshots: build/test-artifacts/portal-panels.png, portal-router.png.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.container.conftest import ARTIFACTS, CPU_IMAGE, click, loopback_ports
from tests.container.runtime_support import TOKEN, bearer, host_port, request, wait_answering
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

MEMORY_LIMIT = "3g"
HF_SECRET = "hf_portalArchiveMustMaskThis0123456789"
# A provisioning script that leaks secrets into its log: the archive must mask them.
LEAKY_SCRIPT = """#!/bin/bash
echo "provisioning with token $(cat /run/llama-images/secrets/token) and HF_TOKEN=${HF_TOKEN}"
"""


def start(client: Any, models: Path, **environment: str) -> Any:
    container = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"OPEN_BUTTON_TOKEN": TOKEN, **environment},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
        ports=loopback_ports(),
        mem_limit=MEMORY_LIMIT,
    )
    wait_answering(container, 1111, "/api/health", seconds=120)
    wait_answering(container, 8000, "/health", seconds=120)
    return container


@pytest.fixture(scope="module")
def served(main_build: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One model, a memory limit, and a provisioning script that prints secrets."""
    models = tmp_path_factory.mktemp("models")
    write_tiny_llama_gguf(models / "tiny.gguf")
    (models / "leaky.sh").write_text(LEAKY_SCRIPT)
    container = start(client, models, LLAMA_MODEL="/models/tiny.gguf", HF_TOKEN=HF_SECRET,
                      PROVISIONING_SCRIPT="/models/leaky.sh")  # fmt: skip
    try:
        yield container
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def router(main_build: Any, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    models = tmp_path_factory.mktemp("router-models")
    write_tiny_llama_gguf(models / "alpha.gguf")
    write_tiny_llama_gguf(models / "beta.gguf")
    container = start(client, models, LLAMA_MODEL="/models/alpha.gguf,/models/beta.gguf", LLAMA_MODELS_MAX="1")
    try:
        yield container
    finally:
        container.remove(force=True)


def open_portal(browser: webdriver.Chrome, container: Any) -> WebDriverWait[webdriver.Chrome]:
    browser.get(f"http://127.0.0.1:{host_port(container, 1111)}/?token={TOKEN}")
    return WebDriverWait(browser, 120, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException])


def script(browser: webdriver.Chrome, code: str) -> Any:
    """Reads the page in one call: it redraws while separate element reads would run."""
    return browser.execute_script(code)


def cards(browser: webdriver.Chrome) -> dict[str, dict[str, Any]]:
    return {
        card["figure"]: card
        for card in script(
            browser,
            "return [...document.querySelectorAll('.card')].map(c => ({figure: c.dataset.figure, "
            "value: c.dataset.value, text: c.innerText, points: [...c.querySelectorAll('svg')].map(s => "
            "Number(s.dataset.points))}))",
        )
    }


MODEL_ROWS = (
    "return [...document.querySelectorAll('#models tbody tr')].map(r => "
    "({id: r.dataset.model, state: r.dataset.state, cells: [...r.cells].map(c => c.innerText)}))"
)


def until(wait: WebDriverWait[webdriver.Chrome], check: Callable[[webdriver.Chrome], Any]) -> Any:
    """wait.until, but a stale element read counts as "not yet"."""

    def attempt(driver: webdriver.Chrome) -> Any:
        try:
            return check(driver)
        except StaleElementReferenceException:
            return False

    return wait.until(attempt)


def test_machine_figures_and_their_graphs_update(served: Any, browser: webdriver.Chrome) -> None:
    wait = open_portal(browser, served)
    until(wait, lambda d: {"cpu", "memory", "disk"} <= set(cards(d)))
    shown = cards(browser)
    # The container's limit (docker run --memory 3g), not the host's memory.
    assert "/ 3.0 GiB" in shown["memory"]["text"] and "container limit" in shown["memory"]["text"]
    assert 10 * 2**20 < int(shown["memory"]["value"]) < 3 * 2**30
    assert shown["disk"]["text"].startswith("/workspace") and "free" in shown["disk"]["text"]
    assert "cores" in shown["cpu"]["text"]
    assert browser.find_element(By.ID, "gpu-note").text == "GPU: no GPU found"
    # Live: the graphs gain points every 2 s or so, and CPU gets a figure.
    first = cards(browser)["cpu"]["points"][0]
    until(wait, lambda d: cards(d)["cpu"]["points"][0] >= first + 3 and cards(d)["cpu"]["value"] is not None)
    assert cards(browser)["memory"]["points"][0] >= 3


def test_the_model_panel_shows_the_model_and_its_speed_after_a_completion(
    served: Any, browser: webdriver.Chrome
) -> None:
    completion = request(served, 8000, "/completion", method="POST", timeout=120,
                         body=json.dumps({"prompt": "Once upon a time", "n_predict": 16}).encode(),
                         headers={**bearer(), "Content-Type": "application/json"})  # fmt: skip
    assert completion.status == 200, completion.body
    wait = open_portal(browser, served)

    def model_row(driver: webdriver.Chrome) -> dict[str, Any] | None:
        rows = script(driver, MODEL_ROWS)
        return rows[0] if rows else None

    row = until(wait, lambda d: (r := model_row(d)) and r["cells"][5] not in {"—", "0.0"} and r)
    assert row["id"] == "/models/tiny.gguf" and row["state"] == "loaded"
    _, _, context, slots, prompt, generation, generated, _, _ = row["cells"]
    assert (context, slots) == ("512", "0 / 4")
    assert float(prompt) > 0 and float(generation) > 0 and int(generated) >= 16
    until(wait, lambda d: re.match(r"[1-9]\d* requests? served", d.find_element(By.ID, "model-served").text))
    assert browser.find_element(By.ID, "model-status").text == "RUNNING: serving /models/tiny.gguf"

    # "Use it": this instance's address, the API's port, a placeholder where the token goes.
    curl = browser.find_element(By.ID, "use-curl").text
    assert "Authorization: Bearer YOUR_TOKEN" in curl
    assert "http://127.0.0.1:8000/v1/chat/completions" in curl
    assert 'api_key="YOUR_TOKEN"' in browser.find_element(By.ID, "use-python").text
    assert "cat /run/llama-images/secrets/token" in browser.find_element(By.ID, "use-hint").text
    assert browser.find_element(By.ID, "use-chat").get_attribute("href") == "http://127.0.0.1:8000/"
    # The test publishes ports on others than the declared ones: the page says the API's is mapped too.
    assert "maps to 8000" in browser.find_element(By.ID, "use-port-note").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1200, 2000)
    browser.save_screenshot(str(ARTIFACTS / "portal-panels.png"))
    # The page never holds the token: not in what it shows, nor in what its panels' API answers.
    assert TOKEN not in browser.page_source
    # The leaky provisioning script's output is shown masked, as in the archive.
    assert "provisioning with token *** and HF_TOKEN=***" in browser.find_element(By.ID, "boot").text
    for path in ("/api/machine", "/api/model", "/api/usage", "/api/boot"):
        assert TOKEN.encode() not in request(served, 1111, path, headers=bearer()).body, path


def test_a_download_in_the_status_line_shows_as_a_progress_bar(served: Any, browser: webdriver.Chrome) -> None:
    # What the launcher writes while llama-server downloads (its tests check that it does): its
    # line and its record, written here by its own status module (llama_serving/status.py).
    status, record = "/run/llama-images/status/llama", "/run/llama-images/llama/status.json"
    original = {path: served.exec_run(["cat", path]).output.decode() for path in (status, record)}
    line = "downloading big-Q4_K_M.gguf 42% (12.5 MB/s)"
    write = "from llama_serving import status as s; s.write(s.status(s.Download('big-Q4_K_M.gguf', 42, '12.5 MB/s')))"
    assert served.exec_run(["python3", "-c", write], environment={"PYTHONPATH": "/opt/llama-images/lib"}).exit_code == 0
    assert served.exec_run(["cat", status]).output.decode() == line + "\n"
    try:
        wait = open_portal(browser, served)
        until(wait, lambda d: d.find_element(By.ID, "model-progress").get_attribute("value") == "42")
        assert browser.find_element(By.ID, "model-download").is_displayed()
        assert browser.find_element(By.ID, "model-progress-text").text == "big-Q4_K_M.gguf: 42% 12.5 MB/s"
        assert browser.find_element(By.ID, "model-status").text == f"RUNNING: {line}"
    finally:
        for path, text in original.items():
            served.exec_run(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, path])


def test_buttons_follow_state_and_a_press_shows_its_result(served: Any, browser: webdriver.Chrome) -> None:
    wait = open_portal(browser, served)

    def enabled(driver: webdriver.Chrome) -> dict[str, bool]:
        return dict(script(driver, "return [...document.querySelectorAll('button[data-service=\"jupyter\"]')]"
                                   ".map(b => [b.dataset.action, !b.disabled])"))  # fmt: skip

    until(wait, lambda d: enabled(d) == {"start": False, "stop": True, "restart": True})
    click(wait, 'button[data-service="jupyter"][data-action="stop"]')
    until(wait, lambda d: d.find_element(By.ID, "message").text == "stop jupyter: now STOPPED")
    until(wait, lambda d: enabled(d) == {"start": True, "stop": False, "restart": False})
    click(wait, 'button[data-service="jupyter"][data-action="start"]')
    until(wait, lambda d: enabled(d) == {"start": False, "stop": True, "restart": True})
    wait_answering(served, 8080, "/api")


def test_the_logs_archive_downloads_every_log_with_secrets_masked(
    served: Any, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # The leaky provisioning script has run; the provisioner masked its output at the source.
    wait_answering(served, 1111, "/api/health")
    deadline = time.monotonic() + 60
    masked = "provisioning with token *** and HF_TOKEN=***"
    while masked not in served.exec_run(["cat", "/var/log/provisioning.log"]).output.decode(errors="replace"):
        assert time.monotonic() < deadline, "the provisioning script did not run"
        time.sleep(1)
    raw = served.exec_run(["cat", "/var/log/portal/provisioning.log"]).output.decode(errors="replace")
    assert TOKEN not in raw and HF_SECRET not in raw
    # A program that prints a secret anyway: its log holds it, in the container; the archive masks it.
    planted = f"a program printed {TOKEN} and {HF_SECRET}"
    assert served.exec_run(["sh", "-c", 'echo "$1" >> /var/log/portal/portal.log', "sh", planted]).exit_code == 0
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    wait = open_portal(browser, served)
    click(wait, "#logs-archive")
    until(wait, lambda d: list(tmp_path.glob("*.zip")))
    (archive_path,) = tmp_path.glob("*.zip")
    with zipfile.ZipFile(io.BytesIO(archive_path.read_bytes())) as archive:
        contents = {name: archive.read(name).decode(errors="replace") for name in archive.namelist()}
    for expected in ("logs/boot.log", "logs/provisioning.log", "logs/portal/llama.log", "logs/status/llama"):
        assert expected in contents, sorted(contents)
    assert "[packages]" in contents["logs/boot.log"] or "10-packages.sh" in contents["logs/boot.log"]
    assert "starting llama-server" in contents["logs/portal/llama.log"]
    assert "provisioning with token *** and HF_TOKEN=***" in contents["logs/provisioning.log"]
    assert "a program printed *** and ***" in contents["logs/portal/portal.log"]
    assert not any(TOKEN in text or HF_SECRET in text for text in contents.values())


def test_router_models_load_and_unload_from_the_page(router: Any, browser: webdriver.Chrome) -> None:
    wait = open_portal(browser, router)

    def states(driver: webdriver.Chrome) -> dict[str, str]:
        return dict(script(driver, "return [...document.querySelectorAll('#models tbody tr')]"
                                   ".map(r => [r.dataset.model, r.dataset.state])"))  # fmt: skip

    until(wait, lambda d: states(d) == {"alpha": "unloaded", "beta": "unloaded"})
    click(wait, 'button[data-model="alpha"][data-model-action="load"]')
    until(wait, lambda d: d.find_element(By.ID, "model-message").text == "load alpha: requested")
    until(wait, lambda d: states(d) == {"alpha": "loaded", "beta": "unloaded"})
    # A loaded model shows its own figures.
    until(wait, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-model="alpha"] td:nth-child(3)').text == "512")
    click(wait, 'button[data-model="beta"][data-model-action="load"]')
    # LLAMA_MODELS_MAX=1: loading beta unloads alpha.
    until(wait, lambda d: states(d) == {"alpha": "unloaded", "beta": "loaded"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "portal-router.png"))
    click(wait, 'button[data-model="beta"][data-model-action="unload"]')
    until(wait, lambda d: states(d) == {"alpha": "unloaded", "beta": "unloaded"})


def test_the_model_api_refuses_what_cannot_work_with_the_reason(router: Any) -> None:
    def post(path: str, body: bytes) -> Any:
        return request(router, 1111, path, method="POST", body=body,
                       headers={**bearer(), "Content-Type": "application/json"})  # fmt: skip

    refused = post("/api/model/unload", json.dumps({"model": "alpha"}).encode())
    assert refused.status == 409 and "model is not running" in refused.json()["error"]
    assert post("/api/model/load", b"not json").status == 400
    assert post("/api/model/explode", b"{}").status == 404
    unknown = post("/api/model/load", json.dumps({"model": "nope"}).encode())
    assert unknown.status == 409 and "refused to load nope" in unknown.json()["error"]
