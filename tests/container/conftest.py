"""Fixtures shared by the container tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from llama_runtime.services import Service, load_services
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from llama_images.edges.engine import LOCAL_REGISTRY
from tests import shipped
from tests.conftest import REPO_ROOT, require_host_tools
from tests.shipped import SHIPPED

# Several checkouts may share one engine (e.g. worktrees): each can build and test its images
# under a namespace of its own, so one checkout's build never replaces another's image.
TEST_NAMESPACE = os.environ.get("LLAMA_IMAGES_TEST_NAMESPACE", "")
NAMESPACE = TEST_NAMESPACE or SHIPPED.images.namespace


def image_ref(repository: str, tag: str) -> str:
    """The reference `invoke build` gives an image in this test run's namespace."""
    return f"docker.io/{NAMESPACE}/{repository}:{tag}"


def namespace_args() -> tuple[str, ...]:
    return ("--namespace", TEST_NAMESPACE) if TEST_NAMESPACE else ()


# Screenshots and other files the tests leave for people to look at.
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The image the README's quick-start command builds; most container tests run it.
CPU_IMAGE = shipped.target("cpu", namespace=NAMESPACE).image
# Where the llama-cpp image's services are declared: the base's files, then the derivative's.
DECLARATION_DIRS = (
    REPO_ROOT / "base-image/ROOT/etc/llama-images/services.d",
    REPO_ROOT / "derivatives/llama-cpp/ROOT/etc/llama-images/services.d",
)


def declared_services() -> tuple[Service, ...]:
    """The llama-cpp image's services, read from the one declaration the image ships."""
    services: list[Service] = []
    for directory in DECLARATION_DIRS:
        services += load_services(directory, directory / "no-runtime-overrides", {}).services
    return tuple(sorted(services, key=lambda s: s.external_port))


def loopback_ports(ports: tuple[int, ...] | None = None) -> dict[str, tuple[str, None]]:
    """docker run -p 127.0.0.1::PORT for each (default: every declared external port): Docker
    picks the host port, on loopback only."""
    chosen = ports if ports is not None else tuple(s.external_port for s in declared_services())
    return {f"{port}/tcp": ("127.0.0.1", None) for port in chosen}


def invoke(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """An invoke task run as a user runs it: a separate process, in the repository."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def main_build() -> subprocess.CompletedProcess[str]:
    """The README's quick-start command, run once per test session."""
    return invoke("build", "--matrix", *namespace_args())


@pytest.fixture(scope="session")
def local_registry() -> str:
    """The loopback registry `invoke engine` starts with its engine; required under CI."""
    try:
        with urllib.request.urlopen(f"http://{LOCAL_REGISTRY}/v2/", timeout=3):
            pass
    except OSError as exc:
        message = f"no registry at {LOCAL_REGISTRY} ({exc}); `invoke engine` starts one with its own engine"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return LOCAL_REGISTRY


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    api = docker.from_env()
    yield api
    api.close()


def exec_text(container: Any, *command: str) -> tuple[int, str]:
    code, output = container.exec_run(list(command))
    return code, output.decode(errors="replace")


def wait_for(check: Callable[[], bool], seconds: float, what: str, container: Any) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")[-3000:]
    pytest.fail(f"{what} within {seconds} s; container log:\n{logs}")


@pytest.fixture
def run_container(main_build: Any, client: Any) -> Iterator[Callable[..., Any]]:
    """Starts the CPU image (every declared external port published on loopback unless `ports`
    is given); removes what it started after the test."""
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    started: list[Any] = []

    def run(**kwargs: Any) -> Any:
        kwargs.setdefault("ports", loopback_ports())
        container = client.containers.run(CPU_IMAGE, detach=True, **kwargs)
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium (Debian's, with its driver); under CI a missing browser fails the test."""
    require_host_tools((CHROMIUM, CHROMEDRIVER), "chromium chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    # The page's console (CSP violations, script errors) for tests that read it: driver.get_log("browser").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def click(wait: WebDriverWait[webdriver.Chrome], selector: str) -> None:
    """Click the element, retrying when a redraw replaced it between finding and clicking."""

    def clicked(driver: webdriver.Chrome) -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    wait.until(clicked)
