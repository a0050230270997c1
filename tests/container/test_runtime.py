"""The base runtime in the CPU image, as a user meets it: every service behind one token on its
external port (Caddy), the boot sequence, health, and how the container starts and stops.

One container with a model serves most checks (module fixture); variants run the same image
with other environment variables, never another build.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import CPU_IMAGE, exec_text, loopback_ports, wait_for
from tests.container.runtime_support import (
    BROWSER,
    READY_PATHS,
    TOKEN,
    basic,
    bearer,
    program_states,
    request,
    stream_lines,
    wait_answering,
    wait_running,
)
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

# Port -> a path that answers 200 there when authenticated.


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_llama_gguf(directory / "tiny.gguf")
    return directory


@pytest.fixture(scope="module")
def served(main_build: Any, client: Any, models: Path) -> Iterator[Any]:
    """The CPU image with a model and a token, every service up."""
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    container = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN, "WEB_USERNAME": "owner"},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
        ports=loopback_ports(),
    )
    try:
        for port, path in READY_PATHS.items():
            wait_answering(container, port, path)
        yield container
    finally:
        container.remove(force=True)


def test_every_declared_service_is_running_and_answers_on_its_external_port(served: Any) -> None:
    _, declared = exec_text(served, "/opt/llama-images/bin/llama-runtime", "services")
    services = json.loads(declared)["services"]
    assert {s["name"]: s["external_port"] for s in services} == {"portal": 1111, "llama": 8000, "jupyter": 8080}
    wait_running(served, "proxy", *(s["program"] for s in services))
    for service in services:
        reply = request(served, service["external_port"], READY_PATHS[service["external_port"]], headers=bearer())
        assert reply.status == 200, (service["name"], reply.body[:300])


def test_exposed_ports_are_the_declared_external_ports(served: Any, client: Any) -> None:
    _, declared = exec_text(served, "/opt/llama-images/bin/llama-runtime", "services")
    ports = {f"{s['external_port']}/tcp" for s in json.loads(declared)["services"]}
    assert set(client.images.get(CPU_IMAGE).attrs["Config"]["ExposedPorts"]) == ports


@pytest.mark.parametrize("port", [1111, 8000, 8080])
def test_auth_matrix(served: Any, port: int) -> None:
    path = READY_PATHS[port]
    assert request(served, port, path).status == 401
    assert request(served, port, path, headers=bearer("wrong")).status == 401
    assert request(served, port, path, headers=bearer(TOKEN + "x")).status == 401
    assert request(served, port, path, headers=basic("owner", "wrong")).status == 401
    assert request(served, port, path, headers=basic("someone", TOKEN)).status == 401
    assert request(served, port, f"{path}?token=wrong").status == 401
    assert request(served, port, path, headers={"Cookie": "llama_images_auth=forged"}).status == 401
    assert request(served, port, path, headers=bearer()).status == 200
    assert request(served, port, path, headers=basic("owner", TOKEN)).status == 200

    browser = request(served, port, f"{path}?a=1&token={TOKEN}", headers=BROWSER)
    assert browser.status == 302
    assert browser.headers["Location"] == f"{path}?a=1"
    cookie = browser.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
    api = request(served, port, f"{path}?token={TOKEN}")
    assert api.status == 200
    assert api.headers["Set-Cookie"] == cookie
    assert request(served, port, path, headers={"Cookie": "other=1; " + cookie.split(";")[0]}).status == 200

    denied_page = request(served, port, path, headers=BROWSER)
    assert denied_page.status == 401 and b"<form" in denied_page.body
    assert denied_page.headers["Content-Type"].startswith("text/html")
    assert request(served, port, path).json()["error"] == "unauthorized"


def test_auth_can_be_switched_off_or_left_off_listed_ports(run_container: Callable[..., Any], models: Path) -> None:
    off = run_container(environment={"ENABLE_AUTH": "false"})
    excluded = run_container(environment={"AUTH_EXCLUDE": "8080", "OPEN_BUTTON_TOKEN": TOKEN})
    for container in (off, excluded):
        wait_answering(container, 8080, "/api", token=TOKEN)
    for port in (1111, 8080):
        assert request(off, port, READY_PATHS[port]).status == 200
    assert "ENABLE_AUTH=false" in off.logs().decode()
    assert request(excluded, 8080, "/api").status == 200
    assert request(excluded, 1111, "/api/health").status == 401
    # The portal hands its links' token only to those who already hold it, and its links carry it
    # only to ports that ask for it (elsewhere the token would reach the service itself).
    listing = request(excluded, 1111, "/api/services", headers=bearer()).json()
    assert listing["token"] == TOKEN
    assert {s["external_port"]: s["protected"] for s in listing["services"]} == {1111: True, 8000: True, 8080: False}
    portal_open = run_container(environment={"AUTH_EXCLUDE": "1111", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_answering(portal_open, 1111, "/api/health")
    assert request(portal_open, 1111, "/api/services").json()["token"] is None
    assert request(excluded, 8000, "/health").status == 401


def test_only_the_proxy_listens_on_non_loopback_addresses(served: Any) -> None:
    script = (
        "import socket\n"
        "for name in ('tcp', 'tcp6'):\n"
        "    for line in open('/proc/net/' + name).read().splitlines()[1:]:\n"
        "        local, state = line.split()[1], line.split()[3]\n"
        "        if state == '0A':\n"
        "            address, port = local.split(':')\n"
        "            print(name, address, int(port, 16))\n"
    )
    _, output = exec_text(served, "python3", "-c", script)
    exposed = set()
    for line in output.splitlines():
        _, address, port = line.split()
        loopback = address in {"0100007F", "00000000000000000000000001000000"}
        if not loopback:
            exposed.add(int(port))
    assert exposed == {1111, 8000, 8080}, output


def test_the_token_stays_out_of_logs_arguments_and_service_environments(served: Any) -> None:
    # Use it once in a query, where a careless proxy would log it.
    request(served, 8000, f"/health?token={TOKEN}")
    assert TOKEN not in served.logs().decode(errors="replace")
    code, found = exec_text(served, "grep", "-rl", TOKEN, "/var/log")
    assert code == 1, f"token found in {found}"
    script = (
        "import os, sys\n"
        "token = sys.argv[1].encode()\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    if pid in ('1', str(os.getpid())):\n"  # tini holds docker's environment
        "        continue\n"
        "    try:\n"
        "        for part in ('cmdline', 'environ'):\n"
        "            if token in open(f'/proc/{pid}/{part}', 'rb').read():\n"
        "                print(pid, part, open(f'/proc/{pid}/cmdline', 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    # The token reaches this script only through its own argv, which it skips.
    code, output = exec_text(served, "python3", "-c", script, TOKEN)
    assert code == 0 and output == "", output
    code, stored = exec_text(served, "cat", "/run/llama-images/secrets/token")
    assert stored == TOKEN
    _, mode = exec_text(
        served, "stat", "-c", "%a %U", "/run/llama-images/secrets/token", "/run/llama-images/caddy.json"
    )
    assert mode.split() == ["600", "root", "600", "root"]


def test_a_generated_token_is_kept_root_only_and_survives_a_restart(run_container: Callable[..., Any]) -> None:
    container = run_container()
    wait_running(container, "proxy")
    _, token = exec_text(container, "cat", "/run/llama-images/secrets/token")
    assert len(token) >= 24
    assert token not in container.logs().decode()
    wait_answering(container, 1111, "/api/health", token=token)
    assert request(container, 1111, "/api/health", headers=bearer(token + "x")).status == 401
    container.restart(timeout=10)
    wait_running(container, "proxy")
    assert exec_text(container, "cat", "/run/llama-images/secrets/token")[1] == token


def test_a_stopped_service_answers_503_with_its_status_line(served: Any) -> None:
    assert exec_text(served, "supervisorctl", "stop", "jupyter")[0] == 0
    try:
        exec_text(served, "sh", "-c", "echo 'maintenance \"now\"' > /run/llama-images/status/jupyter")
        reply = request(served, 8080, "/api", headers=bearer())
        assert reply.status == 503
        assert reply.headers["Retry-After"] == "5"
        assert reply.json() == {"error": "service unavailable", "service": "jupyter", "status": 'maintenance "now"'}
        page = request(served, 8080, "/lab", headers={**bearer(), **BROWSER})
        assert page.status == 503 and b'http-equiv="refresh"' in page.body and b"maintenance &#34;now&#34;" in page.body
    finally:
        exec_text(served, "rm", "-f", "/run/llama-images/status/jupyter")
        exec_text(served, "supervisorctl", "start", "jupyter")
    wait_answering(served, 8080, "/api")


EVENTS_SERVER = """
import http.server, time
class Events(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for n in range(4):
            self.wfile.write(f"data: {n}\\n\\n".encode())
            self.wfile.flush()
            time.sleep(0.5)
http.server.ThreadingHTTPServer(("127.0.0.1", 17000), Events).serve_forever()
"""


def test_server_sent_events_arrive_through_the_proxy_as_they_are_produced(
    run_container: Callable[..., Any],
) -> None:
    # A link-only service from PORTAL_CONFIG, served by a small event source inside the container;
    # a malformed entry beside it is logged with what is wrong and skipped.
    container = run_container(
        environment={"OPEN_BUTTON_TOKEN": TOKEN, "PORTAL_CONFIG": "localhost:7000:17000:/:Events|nonsense"},
        ports=loopback_ports((7000,)),
    )
    wait_running(container, "proxy")
    wait_for(
        lambda: (
            "PORTAL_CONFIG entry 2 'nonsense': expected host:external_port:internal_port:path:Label; skipped"
            in container.logs().decode(errors="replace")
        ),
        30,
        "the malformed PORTAL_CONFIG entry was not reported",
        container,
    )
    container.exec_run(["python3", "-c", EVENTS_SERVER], detach=True)
    wait_answering(container, 7000, "/")
    arrivals = [(t, line) for t, line in stream_lines(container, 7000, "/", bearer()) if line.startswith(b"data:")]
    assert [line for _, line in arrivals] == [b"data: 0\n", b"data: 1\n", b"data: 2\n", b"data: 3\n"]
    # Produced 0.5 s apart: buffered, they would arrive together at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 1.2


def test_the_healthcheck_turns_unhealthy_when_an_essential_service_is_fatal(
    run_container: Callable[..., Any], client: Any
) -> None:
    healthcheck = client.images.get(CPU_IMAGE).attrs["Config"]["Healthcheck"]
    assert healthcheck["Test"] == ["CMD", "/opt/llama-images/bin/llama-runtime", "healthcheck"]
    # Same check, polled faster than the image's 30 s so the test sees the state change.
    container = run_container(
        environment={"LLAMA_MODEL": "/models/missing.gguf"},
        healthcheck={"test": healthcheck["Test"], "interval": 1_000_000_000, "retries": 1, "start_period": 0},
    )
    wait_for(lambda: program_states(container).get("llama") == "FATAL", 60, "llama did not end FATAL", container)
    code, output = exec_text(container, "/opt/llama-images/bin/llama-runtime", "healthcheck")
    assert code == 1 and "llama: program llama is FATAL" in output

    def unhealthy() -> bool:
        container.reload()
        return bool(container.attrs["State"]["Health"]["Status"] == "unhealthy")

    wait_for(unhealthy, 30, "docker did not report unhealthy", container)


def test_the_healthcheck_is_healthy_when_serving_and_without_a_model(
    served: Any, run_container: Callable[..., Any]
) -> None:
    assert exec_text(served, "/opt/llama-images/bin/llama-runtime", "healthcheck") == (0, "healthy\n")
    idle = run_container()
    wait_running(idle, "proxy", "portal")
    wait_for(lambda: program_states(idle).get("llama") == "EXITED", 30, "llama did not stop", idle)
    assert exec_text(idle, "/opt/llama-images/bin/llama-runtime", "healthcheck") == (0, "healthy\n")
    exec_text(idle, "supervisorctl", "stop", "proxy")
    assert exec_text(idle, "/opt/llama-images/bin/llama-runtime", "healthcheck") == (1, "unhealthy: proxy is STOPPED\n")


def test_docker_stop_is_quick_and_restart_comes_back_serving(run_container: Callable[..., Any], models: Path) -> None:
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
    )
    wait_answering(container, 8000, "/health")
    wait_answering(container, 8080, "/api")
    # One SIGTERM reaches llama-server (a second one makes it skip its own shutdown).
    assert exec_text(container, "supervisorctl", "stop", "llama")[0] == 0
    llama_log = exec_text(container, "cat", "/var/log/portal/llama.log")[1]
    assert "cleaning up before exit" in llama_log and "second interrupt" not in llama_log, llama_log[-1500:]
    assert exec_text(container, "supervisorctl", "start", "llama")[0] == 0
    wait_answering(container, 8000, "/health")
    started = time.monotonic()
    container.stop(timeout=10)
    took = time.monotonic() - started
    assert took < 10, f"docker stop took {took:.1f} s"
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    container.start()
    wait_answering(container, 8000, "/health")


NASTY = "a \"quoted\" 'value' with $HOME, $(touch /tmp/pwned) `touch /tmp/pwned2`;\nsecond line \\ end"


def test_environment_values_reach_services_and_login_shells_unchanged(run_container: Callable[..., Any]) -> None:
    container = run_container(environment={"NASTY_VALUE": NASTY, "APT_PACKAGES": "", "PIP_PACKAGES": ""})
    wait_running(container, "portal")
    script = (
        "import sys\n"
        "pid = open('/run/supervisord.pid').read().split()[0]\n"
        "for child in open(f'/proc/{pid}/task/{pid}/children').read().split():\n"
        "    env = dict(e.split('=', 1) for e in open(f'/proc/{child}/environ').read().split('\\0') if '=' in e)\n"
        "    if 'llama_portal' in open(f'/proc/{child}/cmdline').read():\n"
        "        sys.stdout.write(env['NASTY_VALUE'])\n"
    )
    assert exec_text(container, "python3", "-c", script) == (0, NASTY)
    assert exec_text(container, "bash", "-lc", 'printf %s "$NASTY_VALUE"') == (0, NASTY)
    assert exec_text(container, "ls", "/tmp/pwned", "/tmp/pwned2")[0] != 0


def test_a_read_only_root_boots_with_tmpfs_on_run_and_tmp(run_container: Callable[..., Any], tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    container = run_container(
        read_only=True,
        tmpfs={"/run": "", "/tmp": ""},
        volumes={str(workspace): {"bind": "/workspace", "mode": "rw"}},
        environment={"OPEN_BUTTON_TOKEN": TOKEN},
    )
    wait_answering(container, 1111, "/api/health")
    wait_answering(container, 8080, "/api")
    logs = container.logs().decode()
    assert "/var/log is read-only: logs are kept in /run/llama-images/log" in logs


def test_without_writable_run_the_container_says_what_to_mount(run_container: Callable[..., Any]) -> None:
    container = run_container(read_only=True)
    assert container.wait(timeout=60)["StatusCode"] == 78
    lines = container.logs().decode().strip().splitlines()
    assert lines == [
        "[boot] FATAL: /run is not writable for uid 0; it must be: mount a tmpfs there (docker run --tmpfs /run)"
    ]


def test_a_non_root_user_runs_with_a_writable_run(run_container: Callable[..., Any], tmp_path: Path) -> None:
    refused = run_container(user="1000:1000")
    assert refused.wait(timeout=60)["StatusCode"] == 78
    assert "/run is not writable for uid 1000" in refused.logs().decode()
    assert "--tmpfs /run:uid=1000,gid=1000" in refused.logs().decode()
    workspace = tmp_path / "workspace"
    workspace.mkdir(mode=0o777)
    workspace.chmod(0o777)
    container = run_container(
        user="1000:1000",
        tmpfs={"/run": "uid=1000,gid=1000", "/tmp": ""},
        volumes={str(workspace): {"bind": "/workspace", "mode": "rw"}},
        environment={"OPEN_BUTTON_TOKEN": TOKEN},
    )
    wait_answering(container, 1111, "/api/health")
    wait_answering(container, 8080, "/api")


@pytest.mark.parametrize("switch", ["false", "0"])
def test_enable_jupyter_false_leaves_port_8080_closed(run_container: Callable[..., Any], switch: str) -> None:
    container = run_container(environment={"ENABLE_JUPYTER": switch, "OPEN_BUTTON_TOKEN": TOKEN})
    wait_answering(container, 1111, "/api/health")
    wait_for(lambda: program_states(container).get("jupyter") == "EXITED", 30, "jupyter did not stay off", container)
    with pytest.raises((ConnectionError, OSError)):
        request(container, 8080, "/api", headers=bearer(), timeout=5)
    services = request(container, 1111, "/api/services", headers=bearer()).json()["services"]
    assert {s["name"]: s["state"] for s in services}["jupyter"] == "DISABLED"


def test_https_with_a_certificate_generated_at_first_boot(run_container: Callable[..., Any]) -> None:
    container = run_container(environment={"ENABLE_HTTPS": "true", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_running(container, "proxy")

    def answers() -> bool:
        result = subprocess.run(
            ["curl", "-ksS", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {TOKEN}",
             f"https://127.0.0.1:{port}/api/health"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.stdout == "200"

    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["1111/tcp"][0]["HostPort"]
    wait_for(answers, 60, "no HTTPS answer on 1111", container)
    cookie = subprocess.run(
        ["curl", "-ksS", "-D", "-", "-o", "/dev/null", f"https://127.0.0.1:{port}/api/health?token={TOKEN}"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert re.search(r"set-cookie: llama_images_auth=\w+; Path=/; HttpOnly; SameSite=Lax; Secure", cookie, re.I), cookie


def test_a_failing_boot_step_is_logged_and_boot_goes_on(run_container: Callable[..., Any], tmp_path: Path) -> None:
    step = tmp_path / "50-broken.sh"
    step.write_text("#!/usr/bin/env bash\necho 'about to fail'\nexit 3\n")
    container = run_container(
        environment={"OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(step): {"bind": "/etc/boot.d/50-broken.sh", "mode": "ro"}},
    )
    wait_answering(container, 1111, "/api/health")
    logs = container.logs().decode()
    assert "[boot] FAILED: /etc/boot.d/50-broken.sh exited with status 3; boot goes on" in logs
    assert "about to fail" in exec_text(container, "cat", "/var/log/boot.log")[1]
    steps = request(container, 1111, "/api/boot", headers=bearer()).json()["steps"]
    assert {"step": "50-broken.sh", "exit_status": 3, "ok": False}.items() <= next(
        s for s in steps if s["step"] == "50-broken.sh"
    ).items()


def test_first_boot_installs_apt_packages_once(run_container: Callable[..., Any]) -> None:
    container = run_container(environment={"APT_PACKAGES": "jq", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_running(container, "proxy", "portal", seconds=240)
    assert exec_text(container, "jq", "--version")[0] == 0
    container.restart(timeout=10)
    wait_running(container, "proxy", "portal")
    logs = container.logs().decode(errors="replace")
    assert logs.count("[packages] apt-get install: jq") == 1
    assert "[packages] APT_PACKAGES already installed on an earlier boot" in logs


def test_a_bad_apt_package_leaves_services_up_shows_on_the_portal_and_is_retried(
    run_container: Callable[..., Any],
) -> None:
    container = run_container(environment={"APT_PACKAGES": "no-such-package-llama-images", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_answering(container, 1111, "/api/health", seconds=240)
    wait_answering(container, 8080, "/api")
    assert "FAILED: apt-get could not install: no-such-package-llama-images" in container.logs().decode()
    boot = request(container, 1111, "/api/boot", headers=bearer()).json()
    assert boot["packages"] == "failed: apt: no-such-package-llama-images"
    assert {"step": "10-packages.sh", "ok": False}.items() <= boot["steps"][0].items()
    container.restart(timeout=10)
    wait_answering(container, 1111, "/api/health", seconds=240)
    assert container.logs().decode().count("[packages] apt-get install: no-such-package-llama-images") == 2
