"""The Instance Portal's cost (issue 17), measured on the CPU image: the page's size, what one of
its refreshes downloads, and, with generation running, the portal's and the proxy's CPU use and
llama-server's generation speed while a real page (headless Chromium) is open against while none
is. The browser runs on a core of its own and the container on the others, so what is compared is
the portal's work, not the browser's: on a rented machine the browser runs on the user's laptop.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .measure import BenchError, Context, container, health_status, published_port, run, tiny_model
from .stats import median, ratio

PORTAL_PORT = 1111  # the portal's external port (services.d/portal.toml)
API_PORT = 8000
PAGE_FILES = ("/", "/static/portal.js", "/static/portal.css", "/static/favicon.svg")
# What the page asks at each refresh (static/portal.js, tick()).
REFRESH_PATHS = ("/api/services", "/api/machine?since={now}", "/api/model", "/api/services/llama/log")
PROGRAMS = ("portal", "proxy")
COMPLETION = {"prompt": "Once upon a time", "n_predict": 64, "ignore_eos": True, "cache_prompt": False}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def get(port: int, path: str, token: str, timeout: float = 30) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def generate(port: int, token: str) -> float:
    """One completion of a fixed length: llama-server's own generation speed (tokens/s)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request(
            "POST",
            "/completion",
            body=json.dumps(COMPLETION),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"/completion answered {response.status}: {body[:300]!r}")
    return float(json.loads(body)["timings"]["predicted_per_second"])


def cpu_seconds(server: str, program: str) -> float:
    """CPU time of a Supervisor program's process and the children it waited for (nvidia-smi...)."""
    pid = run(["docker", "exec", server, "supervisorctl", "pid", program]).strip()
    fields = run(["docker", "exec", server, "cat", f"/proc/{pid}/stat"]).rsplit(")", 1)[1].split()
    # After the command name: state is field 3; utime, stime, cutime, cstime are fields 14-17.
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def page_size(port: int, token: str) -> dict[str, Any]:
    files = []
    for path in PAGE_FILES:
        status, body = get(port, path, token)
        if status != 200:
            raise BenchError(f"the portal answered {status} for {path}")
        files.append({"path": path, "bytes": len(body), "gzip_bytes": len(gzip.compress(body))})
    return {
        "files": files,
        "bytes": sum(f["bytes"] for f in files),
        "gzip_bytes": sum(f["gzip_bytes"] for f in files),
    }


def refresh_bytes(port: int, token: str) -> int:
    """Bytes of one refresh's answers (the machine's history: only the newest points, as the page asks)."""
    total = 0
    for path in REFRESH_PATHS:
        status, body = get(port, path.format(now=time.time() - 2), token)
        if status != 200:
            raise BenchError(f"the portal answered {status} for {path}")
        total += len(body)
    return total


@contextlib.contextmanager
def open_page(url: str, cpu: int) -> Iterator[None]:
    """Headless Chromium with the page open, on core `cpu` (the container runs on the others)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        raise BenchError(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(argument)
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # the driver and the browser inherit it
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    finally:
        os.sched_setaffinity(0, allowed)
    try:
        driver.get(url)
        time.sleep(3)  # its first refresh and the first graph points
        yield
    finally:
        driver.quit()


def phase(server: str, api_port: int, token: str, seconds: float) -> dict[str, Any]:
    """Generation back to back for `seconds`: its speed, and the portal's and proxy's CPU meanwhile."""
    before = {program: cpu_seconds(server, program) for program in PROGRAMS}
    started = time.monotonic()
    speeds: list[float] = []
    while time.monotonic() - started < seconds or not speeds:
        speeds.append(generate(api_port, token))
    elapsed = time.monotonic() - started
    after = {program: cpu_seconds(server, program) for program in PROGRAMS}
    return {
        "tokens_per_second": median(speeds),
        "completions": len(speeds),
        "cpu_percent": {p: round(100 * (after[p] - before[p]) / elapsed, 2) for p in PROGRAMS},
    }


def measure_portal(ctx: Context, image: str, seconds: float, rounds: int) -> dict[str, Any]:
    models = tiny_model(ctx).parent
    token = secrets.token_urlsafe(18)
    cores = sorted(os.sched_getaffinity(0))
    browser_cpu, server_cpus = cores[0], cores[1:] or cores
    arguments = [
        "-p", f"127.0.0.1::{PORTAL_PORT}", "-p", f"127.0.0.1::{API_PORT}",
        "--cpuset-cpus", ",".join(str(c) for c in server_cpus),
        "-v", f"{models}:/models:ro", "-e", "LLAMA_MODEL=/models/tiny.gguf", "-e", f"OPEN_BUTTON_TOKEN={token}",
        image,
    ]  # fmt: skip
    with container(arguments) as server:
        portal, api = published_port(server, PORTAL_PORT), published_port(server, API_PORT)
        deadline = time.monotonic() + 120
        while health_status(api, token) != 200 or get(portal, "/api/health", token)[0] != 200:
            if time.monotonic() > deadline:
                raise BenchError("the container did not serve /health and the portal within 120 s")
            time.sleep(0.5)
        generate(api, token)  # warm-up: the model's first evaluation
        size = page_size(portal, token)
        refresh = refresh_bytes(portal, token)
        phases: dict[str, list[dict[str, Any]]] = {"closed": [], "open": []}
        for number in range(rounds):
            order = ["closed", "open"] if number % 2 == 0 else ["open", "closed"]
            for state in order:
                if state == "open":
                    with open_page(f"http://127.0.0.1:{portal}/?token={token}", browser_cpu):
                        phases[state].append(phase(server, api, token, seconds))
                else:
                    phases[state].append(phase(server, api, token, seconds))
            ctx.log(f"portal: round {number + 1}/{rounds} done")
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {**summary(size, refresh, phases, seconds), "browser": version, "browser_cpu": browser_cpu,
            "server_cpus": server_cpus}  # fmt: skip


def summary(
    size: Mapping[str, Any], refresh: int, phases: Mapping[str, list[dict[str, Any]]], seconds: float
) -> dict[str, Any]:
    """The figures of the rounds: medians of each phase's, and generation open against closed."""

    def medians(state: str, pick: str, program: str | None = None) -> float:
        values = [p[pick][program] if program else p[pick] for p in phases[state]]
        return round(median(values), 2)

    speed = {state: medians(state, "tokens_per_second") for state in ("closed", "open")}
    found = ratio(speed["open"], speed["closed"])
    return {
        "page": dict(size),
        "refresh_bytes": refresh,
        "refresh_seconds": 2.0,
        "seconds": seconds,
        "rounds": len(phases["open"]),
        "portal_cpu_percent": {state: medians(state, "cpu_percent", "portal") for state in ("closed", "open")},
        "proxy_cpu_percent": {state: medians(state, "cpu_percent", "proxy") for state in ("closed", "open")},
        "generation_tokens_per_second": speed,
        "generation_ratio": None if found is None else round(found, 3),
        "phases": {state: list(found) for state, found in phases.items()},
    }
