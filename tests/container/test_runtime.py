"""The base runtime in the CPU image, as a user meets it: every service behind one token on its
external port (Caddy), the boot sequence, health, and how the container starts and stops.

One container with a model serves most checks (module fixture); variants run the same image
with other environment variables, never another build. Issue 14's attacks (a login cookie that
was a copy of the key, cross-site changes, free guessing, silent exposure, a full /run) and
issue 13's habits of the reference image (user vastai, WEB_PASSWORD beside the token, settings
changed in /etc/environment, PORTAL_CONFIG deciding what runs, HTTPS) are each run here as a
user or an attacker would, and must fail or work as docs/image.md says.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
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
    # The auth matrix tries many wrong credentials from one address (the Docker bridge's): the
    # guessing limit is raised here and tested on its own.
    env = {"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN, "WEB_USERNAME": "owner",
           "AUTH_FAILURE_LIMIT": "1000"}  # fmt: skip
    container = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment=env,
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
    every = json.loads(declared)["services"]
    # The serverless worker is declared, and off outside serverless mode (SERVERLESS=true).
    enabled = {s["name"]: s["enabled"] for s in every}
    assert enabled == {"portal": True, "pyworker": False, "llama": True, "jupyter": True}
    services = [s for s in every if s["enabled"]]
    assert {s["name"]: s["external_port"] for s in services} == {"portal": 1111, "llama": 8000, "jupyter": 8080}
    wait_running(served, "proxy", *(s["program"] for s in services))
    for service in services:
        reply = request(served, service["external_port"], READY_PATHS[service["external_port"]], headers=bearer())
        assert reply.status == 200, (service["name"], reply.body[:300])


def test_exposed_ports_are_the_declared_external_ports(served: Any, client: Any) -> None:
    _, declared = exec_text(served, "/opt/llama-images/bin/llama-runtime", "services")
    ports = {f"{s['external_port']}/tcp" for s in json.loads(declared)["services"]}
    assert set(client.images.get(CPU_IMAGE).attrs["Config"]["ExposedPorts"]) == ports


# A signed session that expires (the reference image's 7 days), named per instance: its expiry, its
# own id, the network it is bound to, the signature (docs/image.md).
SESSION_COOKIE = re.compile(
    r"^(llama_[0-9a-f]{12}_auth)=(v2\.\d+\.[\w-]{16}\.\d+-[\w-]{11}\.[\w-]{43}); "
    r"Path=/; Max-Age=604800; HttpOnly; SameSite=Lax$"
)


@pytest.mark.parametrize("port", [1111, 8000, 8080])
def test_auth_matrix(served: Any, port: int) -> None:
    path = READY_PATHS[port]
    assert request(served, port, path).status == 401
    assert request(served, port, path, headers=bearer("wrong")).status == 401
    assert request(served, port, path, headers=bearer(TOKEN + "x")).status == 401
    assert request(served, port, path, headers=basic("owner", "wrong")).status == 401
    assert request(served, port, path, headers=basic("someone", TOKEN)).status == 401
    assert request(served, port, f"{path}?token=wrong").status == 401
    assert request(served, port, path, headers={"Cookie": "llama_0123456789ab_auth=v1.9999999999.forged"}).status == 401
    assert request(served, port, path, headers=bearer()).status == 200
    # The scheme in any case (RFC 7235).
    assert request(served, port, path, headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    assert request(served, port, path, headers=basic("owner", TOKEN)).status == 200

    browser = request(served, port, f"{path}?a=1&token={TOKEN}", headers=BROWSER)
    assert browser.status == 302
    assert browser.headers["Location"] == f"{path}?a=1"
    cookie = SESSION_COOKIE.match(browser.headers["Set-Cookie"])
    assert cookie, browser.headers["Set-Cookie"]
    assert TOKEN not in browser.headers["Set-Cookie"]
    session = f"{cookie.group(1)}={cookie.group(2)}"
    forged = f"{cookie.group(1)}=v2.9999999999.{cookie.group(2).split('.', 2)[2]}"  # a later expiry
    assert request(served, port, path, headers={"Cookie": forged}).status == 401
    api = request(served, port, f"{path}?token={TOKEN}")
    # (Jupyter sets its own cookies.)
    assert api.status == 200 and not [c for c in api.headers.get_all("Set-Cookie") or [] if c.startswith("llama_")]
    assert request(served, port, path, headers={"Cookie": "other=1; " + session}).status == 200
    # One login reaches every port of the instance.
    for other_port in READY_PATHS:
        assert request(served, other_port, READY_PATHS[other_port], headers={"Cookie": session}).status == 200

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
    # The portal's answers never hold the token (its links need none: the session reaches every port).
    listing = request(excluded, 1111, "/api/services", headers=bearer())
    assert "token" not in listing.json() and TOKEN.encode() not in listing.body
    assert {s["external_port"]: s["protected"] for s in listing.json()["services"]} == {
        1111: True, 3000: False, 8000: True, 8080: False  # 3000: the serverless worker, never behind the proxy
    }  # fmt: skip
    assert "WARNING: AUTH_EXCLUDE opens port 8080 (jupyter) to anyone" in excluded.logs().decode()
    assert "hidden" not in request(excluded, 1111, "/api/lockouts", headers=bearer()).json()
    portal_open = run_container(environment={"AUTH_EXCLUDE": "1111", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_answering(portal_open, 1111, "/api/health")
    assert TOKEN.encode() not in request(portal_open, 1111, "/api/services").body
    assert "WARNING: AUTH_EXCLUDE opens port 1111 (portal) to anyone" in portal_open.logs().decode()
    # An open portal does not show anyone the addresses that tried the instance's ports.
    hidden = request(portal_open, 1111, "/api/lockouts").json()
    assert hidden["lockouts"] == [] and hidden["hidden"].startswith("not shown: the portal's port is open to anyone")
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
    private = ("/run/llama-images/secrets/token", "/run/llama-images/caddy.json",
               "/run/llama-images/auth/settings.json", "/var/lib/llama-images/session-secret")  # fmt: skip
    _, mode = exec_text(served, "stat", "-c", "%a %U", *private)
    assert mode.split() == ["600", "root"] * len(private), mode
    _, socket_mode = exec_text(served, "stat", "-c", "%a %U %F", "/run/llama-images/auth/verifier.sock")
    assert socket_mode.strip() == "600 root socket"


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


def curl_tls(port: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-ksS", "--max-time", "10", *options, f"https://127.0.0.1:{port}/api/health"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_https_with_a_certificate_generated_at_first_boot_and_plain_http_redirected(
    run_container: Callable[..., Any],
) -> None:
    container = run_container(environment={"ENABLE_HTTPS": "true", "OPEN_BUTTON_TOKEN": TOKEN})
    wait_running(container, "proxy")
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["1111/tcp"][0]["HostPort"]

    def answers() -> bool:
        status = curl_tls(port, "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {TOKEN}")
        return status.stdout == "200"

    wait_for(answers, 60, "no HTTPS answer on 1111", container)
    login = ("-D", "-", "-o", "/dev/null", "-H", "Accept: text/html", "-G", "-d", f"token={TOKEN}")
    cookie = curl_tls(port, *login).stdout
    assert re.search(r"set-cookie: llama_\w+_auth=[\w.-]+; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax; Secure",
                     cookie, re.I), cookie  # fmt: skip
    # The reference image's habit: http:// to a port is redirected to https://, not refused.
    redirect = request(container, 1111, "/api/health?a=1")
    assert redirect.status in {301, 302, 307, 308}
    assert redirect.headers["Location"] == f"https://127.0.0.1:{port}/api/health?a=1"
    # The certificate is where the reference keeps it.
    assert exec_text(container, "openssl", "x509", "-noout", "-in", "/etc/instance.crt")[0] == 0
    assert exec_text(container, "stat", "-c", "%a", "/etc/instance.key")[1].strip() == "600"


def test_https_serves_the_owner_s_own_pair_placed_at_etc_instance(
    run_container: Callable[..., Any], tmp_path: Path
) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=owner-cert",
         "-keyout", str(tmp_path / "instance.key"), "-out", str(tmp_path / "instance.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    container = run_container(
        environment={"ENABLE_HTTPS": "true", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={
            str(tmp_path / "instance.crt"): {"bind": "/etc/instance.crt", "mode": "ro"},
            str(tmp_path / "instance.key"): {"bind": "/etc/instance.key", "mode": "ro"},
        },
    )
    wait_running(container, "proxy")
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["1111/tcp"][0]["HostPort"]
    wait_for(lambda: "CN=owner-cert" in curl_tls(port, "-v", "-o", "/dev/null").stderr.replace(" = ", "="), 60,
             "the owner's certificate was not served", container)  # fmt: skip


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
    packages = next(step for step in boot["steps"] if step["step"] == "10-packages.sh")
    assert packages["ok"] is False
    container.restart(timeout=10)
    wait_answering(container, 1111, "/api/health", seconds=240)
    assert container.logs().decode().count("[packages] apt-get install: no-such-package-llama-images") == 2


# --- Issue 14: what an attacker met, and issue 13: the reference image's habits ---------------

PASSWORD = "web-password-9876543210"


def session_of(container: Any, port: int, token: str = TOKEN) -> str:
    """Log in as a browser does (?token=): the session cookie, `name=value`."""
    login = request(container, port, f"/?token={token}", headers=BROWSER)
    assert login.status == 302, login.body
    found = SESSION_COOKIE.match(login.headers["Set-Cookie"])
    assert found, login.headers["Set-Cookie"]
    return f"{found.group(1)}={found.group(2)}"


def test_guessing_is_limited_per_client_address_logged_without_the_guesses_and_a_weak_token_warned(
    run_container: Callable[..., Any],
) -> None:
    container = run_container(environment={"OPEN_BUTTON_TOKEN": "a"})
    wait_running(container, "proxy", "auth")
    wait_for(lambda: request(container, 1111, "/api/health", headers=bearer("a")).status == 200, 60,
             "the portal did not answer", container)  # fmt: skip
    guesses = [f"guess-Qx7-{n}" for n in range(10)]
    answers = [request(container, 8000, "/health", headers=bearer(g)).status for g in guesses]
    # A small number of failures per minute, then the address is refused whatever it sends.
    assert answers == [401] * 9 + [429], answers
    for port, path in ((8000, "/health"), (1111, "/api/health")):
        refused = request(container, port, path, headers=bearer("a"))
        assert refused.status == 429 and refused.headers["Retry-After"] == "60", (port, refused.status)
    wait_for(lambda: "every protected port refuses it for 60 s" in container.logs().decode(), 30,
             "the cooldown was not logged", container)  # fmt: skip
    log = container.logs().decode(errors="replace")
    assert re.search(r"failed attempt from [\d.]+ on port 8000: wrong bearer token \(9 in the last minute\)", log)
    assert not [g for g in guesses if g in log]
    # The weak token is used, and said to be weak, without being shown.
    assert "WARNING: the token in OPEN_BUTTON_TOKEN is weak: it is shorter than 16 characters." in log


def test_the_reference_user_name_and_both_token_variables_open_every_way(run_container: Callable[..., Any]) -> None:
    container = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN, "WEB_PASSWORD": PASSWORD})
    wait_answering(container, 1111, "/api/health")
    for secret in (TOKEN, PASSWORD):
        assert request(container, 1111, "/api/health", headers=basic("vastai", secret)).status == 200
        assert request(container, 1111, "/api/health", headers=bearer(secret)).status == 200
        assert request(container, 1111, f"/api/health?token={secret}").status == 200
        session = session_of(container, 1111, secret)
        assert request(container, 1111, "/api/health", headers={"Cookie": session}).status == 200
    assert request(container, 1111, "/api/health", headers=basic("admin", TOKEN)).status == 401
    assert "differ" not in container.logs().decode()
    # The instance certificate is where the reference keeps it, HTTPS on or not.
    wait_for(lambda: exec_text(container, "openssl", "x509", "-noout", "-in", "/etc/instance.crt")[0] == 0, 30,
             "no /etc/instance.crt", container)  # fmt: skip


def status_of(container: Any, port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """The status, or 0 while nothing answers (the proxy restarting)."""
    try:
        return request(container, port, path, headers=headers, timeout=5).status
    except OSError:
        return 0


def write_settings(container: Any, path: str, text: str, append: bool = True) -> None:
    """What a user does on a rented machine: edit a settings file inside the running container."""
    mode = "a" if append else "w"
    code, output = exec_text(container, "python3", "-c", f"import sys; open(sys.argv[1], {mode!r}).write(sys.argv[2])",
                             path, text)  # fmt: skip
    assert code == 0, output


def llama_server_environ(container: Any) -> dict[str, str]:
    _, pid = exec_text(container, "cat", "/run/llama-images/llama/llama-server.pid")
    _, raw = exec_text(container, "cat", f"/proc/{pid.strip()}/environ")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def served_models(container: Any) -> list[str]:
    try:
        reply = request(container, 8000, "/v1/models", headers=bearer(), timeout=5)
    except OSError:
        return []
    return [m["id"] for m in reply.json()["data"]] if reply.status == 200 else []


def test_settings_written_to_etc_environment_or_workspace_env_apply_when_a_program_restarts(
    run_container: Callable[..., Any], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for seed, name in enumerate(("tiny", "alpha", "beta")):
        write_tiny_llama_gguf(models / f"{name}.gguf", seed=seed)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN},
        volumes={str(models): {"bind": "/models", "mode": "ro"}, str(workspace): {"bind": "/workspace", "mode": "rw"}},
    )
    wait_for(lambda: any("tiny" in m for m in served_models(container)), 90, "tiny not served", container)
    hf_token = "hf_" + "Zq9" * 12
    nasty = NASTY.replace("'", "'\\''")
    # The reference image's guide: append to /etc/environment, restart the program.
    write_settings(container, "/etc/environment",
                   f"LLAMA_MODEL=/models/alpha.gguf\nHF_TOKEN={hf_token}\nNASTY_VALUE='{nasty}'\n")  # fmt: skip
    assert exec_text(container, "supervisorctl", "restart", "llama")[0] == 0
    wait_for(lambda: any("alpha" in m for m in served_models(container)), 90, "alpha not served", container)
    environ = llama_server_environ(container)
    assert environ["NASTY_VALUE"] == NASTY and environ["HF_TOKEN"] == hf_token
    assert exec_text(container, "ls", "/tmp/pwned", "/tmp/pwned2")[0] != 0  # read as data, never run
    wait_for(lambda: "HF_TOKEN=***" in container.logs().decode(), 30, "HF_TOKEN not masked", container)
    assert hf_token not in container.logs().decode()
    # ${WORKSPACE}/.env comes second and wins.
    (workspace / ".env").write_text("LLAMA_MODEL=/models/beta.gguf\n")
    assert exec_text(container, "supervisorctl", "restart", "llama")[0] == 0
    wait_for(lambda: any("beta" in m for m in served_models(container)), 90, "beta not served", container)
    # The proxy's settings: a port left open and a new password, applied by restarting the proxy.
    assert request(container, 8080, "/api").status == 401
    write_settings(container, "/etc/environment", f"AUTH_EXCLUDE=8080\nWEB_PASSWORD={PASSWORD}\n")
    assert exec_text(container, "supervisorctl", "restart", "proxy")[0] == 0
    wait_for(lambda: status_of(container, 8080, "/api") == 200, 60, "AUTH_EXCLUDE not applied", container)
    assert request(container, 8000, "/health", headers=bearer(PASSWORD)).status == 200
    assert request(container, 8000, "/health", headers=bearer()).status == 200
    # The token variables never reach a service's environment, from a file or not.
    assert exec_text(container, "supervisorctl", "restart", "llama")[0] == 0
    wait_for(lambda: any("beta" in m for m in served_models(container)), 90, "beta not served again", container)
    assert not {"WEB_PASSWORD", "OPEN_BUTTON_TOKEN"} & set(llama_server_environ(container))


REFERENCE_PORTAL_CONFIG = (
    "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/:Llama.cpp UI|"
    "localhost:8080:18080:/:Jupyter|localhost:8080:8080:/terminals/1:Jupyter Terminal"
)


def test_portal_config_decides_what_runs_and_the_reference_default_boots_cleanly(
    run_container: Callable[..., Any],
) -> None:
    reference = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN, "PORTAL_CONFIG": REFERENCE_PORTAL_CONFIG})
    without_jupyter = "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/:Llama.cpp UI"
    conflicts = "|[::1]:7000:17000:/:V6|localhost:7000:17001:/:Other"
    trimmed = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN, "PORTAL_CONFIG": without_jupyter + conflicts})
    wait_answering(reference, 8080, "/api")
    rows = {r["name"]: r for r in request(reference, 1111, "/api/services", headers=bearer()).json()["services"]}
    assert (rows["jupyter-terminal"]["state"], rows["jupyter-terminal"]["path"]) == ("LINK", "/terminals/1")
    assert rows["llama"]["label"] == "Llama.cpp UI"
    assert "ERROR" not in reference.logs().decode()

    wait_answering(trimmed, 1111, "/api/health")
    wait_for(lambda: program_states(trimmed).get("jupyter") == "EXITED", 30, "jupyter did not stay off", trimmed)
    with pytest.raises(OSError):
        request(trimmed, 8080, "/api", headers=bearer(), timeout=5)
    rows = {r["name"]: r for r in request(trimmed, 1111, "/api/services", headers=bearer()).json()["services"]}
    assert (rows["jupyter"]["state"], rows["jupyter"]["status"]) == ("DISABLED", "off: not in PORTAL_CONFIG")
    log = trimmed.logs().decode()
    assert "[jupyter] not started: not in PORTAL_CONFIG" in log
    assert ("PORTAL_CONFIG entry 3 '[::1]:7000:17000:/:V6' and entry 4 'localhost:7000:17001:/:Other' both publish "
            "external port 7000: the later entry wins") in log  # fmt: skip

    # Left out, the portal and llama-server stay off too, as clean exits (not FATAL, not restarted).
    jupyter_only = {"OPEN_BUTTON_TOKEN": TOKEN, "PORTAL_CONFIG": "localhost:8080:18080:/:Jupyter"}
    only_jupyter = run_container(environment=jupyter_only)
    wait_answering(only_jupyter, 8080, "/api")
    wait_for(lambda: {program_states(only_jupyter).get(p) for p in ("portal", "llama")} == {"EXITED"}, 60,
             "portal and llama did not stay off", only_jupyter)  # fmt: skip
    with pytest.raises(OSError):
        request(only_jupyter, 1111, "/api/health", headers=bearer(), timeout=5)
    assert "[portal] not started: not in PORTAL_CONFIG" in only_jupyter.logs().decode()


def test_a_full_run_keeps_the_proxy_serving_with_its_last_config_and_the_render_is_retried(
    run_container: Callable[..., Any],
) -> None:
    container = run_container(environment={"OPEN_BUTTON_TOKEN": TOKEN}, tmpfs={"/run": "size=24m", "/tmp": ""})
    wait_answering(container, 1111, "/api/health")
    exec_text(container, "sh", "-c", "dd if=/dev/zero of=/run/fill bs=1M; sync")
    assert exec_text(container, "df", "--output=avail", "/run")[1].split()[-1] in {"0", "4", "8", "12", "16"}
    exec_text(container, "supervisorctl", "restart", "proxy")
    wait_for(lambda: "serving with the last config written" in container.logs().decode(), 30,
             "the proxy did not fall back to its last config", container)  # fmt: skip
    wait_for(lambda: status_of(container, 1111, "/api/health", bearer()) == 200, 30, "no answer", container)
    assert program_states(container)["proxy"] == "RUNNING"
    assert "the proxy config could not be written (No space left on device)" in container.logs().decode()
    exec_text(container, "rm", "/run/fill")
    wait_for(lambda: "the config is rendered again" in container.logs().decode(), 40, "no retry", container)
    wait_for(lambda: status_of(container, 1111, "/api/health", bearer()) == 200, 30, "no answer after", container)


def test_llama_server_on_a_non_loopback_host_is_announced_loudly_with_its_real_address(
    run_container: Callable[..., Any], models: Path
) -> None:
    container = run_container(
        environment={"LLAMA_MODEL": "/models/tiny.gguf", "OPEN_BUTTON_TOKEN": TOKEN, "LLAMA_ARGS": "--host 0.0.0.0"},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
    )
    wait_for(lambda: "[llama] ready: serving" in container.logs().decode(), 90, "llama not ready", container)
    log = container.logs().decode()
    assert "[llama] ready: serving /models/tiny.gguf on 0.0.0.0:18000" in log
    assert "WARNING: llama-server listens on 0.0.0.0:18000 (--host in LLAMA_ARGS or LLAMA_ARG_HOST):" in log
    assert "WITHOUT the proxy's token" in log
    # What the warning says: the container's own address answers without any token.
    container.reload()
    address = container.attrs["NetworkSettings"]["IPAddress"]
    with urllib.request.urlopen(f"http://{address}:18000/health", timeout=10) as reply:
        assert reply.status == 200


ECHO_SERVER = """
import http.server, json
class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
        self.send_header("Access-Control-Allow-Credentials", "true")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
http.server.ThreadingHTTPServer(("127.0.0.1", 17001), Echo).serve_forever()
"""


def test_no_service_sees_a_session_or_the_token_and_cross_site_changes_are_refused(
    run_container: Callable[..., Any],
) -> None:
    config = REFERENCE_PORTAL_CONFIG + "|localhost:7001:17001:/:Echo|localhost:7002:17001:/:Echo open"
    container = run_container(
        environment={"OPEN_BUTTON_TOKEN": TOKEN, "PORTAL_CONFIG": config, "AUTH_EXCLUDE": "7002",
                     "CORS_ALLOWED_ORIGINS": "https://app.example"},
        ports=loopback_ports((1111, 7001, 7002, 8000)),
    )  # fmt: skip
    wait_answering(container, 1111, "/api/health")
    container.exec_run(["python3", "-c", ECHO_SERVER], detach=True)
    wait_answering(container, 7001, "/")
    session = session_of(container, 1111)

    seen = request(container, 7001, f"/x?token={TOKEN}&a=1", headers={"Cookie": f"a=1; {session}; b=2"}).json()
    assert seen["path"] == "/x?a=1"
    assert seen["headers"]["Cookie"] == "a=1; b=2"
    assert seen["headers"]["X-Llama-Images-Auth"] == "token"
    seen = request(container, 7001, "/", headers={"Cookie": session, **bearer()}).json()["headers"]
    assert "Authorization" not in seen and seen.get("Cookie", "") == ""
    # Also on a port left open, where the client cannot pose as authenticated either.
    seen = request(container, 7002, "/", headers={"Cookie": f"{session}; c=3", "X-Llama-Images-Auth": "bearer"}).json()
    assert seen["headers"]["Cookie"] == "c=3" and "X-Llama-Images-Auth" not in seen["headers"]

    # A form on another port of the same host, which the browser sends with the session cookie.
    cross = {"Cookie": session, "Origin": "http://127.0.0.1:1", "Content-Type": "text/plain"}
    assert request(container, 7001, "/completion", method="POST", headers=cross, body=b"{}").status == 403
    assert request(container, 8000, "/completion", method="POST", headers=cross, body=b"{}").status == 403
    assert request(container, 1111, "/api/services/llama/stop", method="POST", headers=cross).status == 403
    # The service's own CORS answer (any Origin, with credentials) does not get through.
    read = request(container, 7001, "/", headers={"Cookie": session, "Origin": "http://127.0.0.1:1"})
    assert read.status == 200 and "Access-Control-Allow-Origin" not in read.headers
    # CORS is opt-in, for Bearer clients only.
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    allowed = request(container, 8000, "/v1/chat/completions", method="OPTIONS", headers=preflight)
    assert allowed.status == 204 and allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = {**preflight, "Origin": "https://evil.example"}
    assert request(container, 8000, "/v1/chat/completions", method="OPTIONS", headers=other).status == 401
    api = request(container, 7001, "/", headers={"Origin": "https://app.example", **bearer()})
    assert api.headers["Access-Control-Allow-Origin"] == "https://app.example"
    # The portal's answers carry its security headers.
    page = request(container, 1111, "/", headers={"Cookie": session})
    assert "frame-ancestors 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
