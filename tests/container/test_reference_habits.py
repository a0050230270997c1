"""What a user of the reference image counts on (issue 27), each as that user meets it: the `user`
account with passwordless sudo, cron running users' crontabs, ping and dig, PATH in
/etc/environment, /var/log/portal writable by every user, the reference's variables, its
/etc/portal.yaml and portal answers, its PORTAL_CONFIG matching (and where ours stays strict),
and the thread caps a low pids budget gets."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.container.conftest import CPU_IMAGE, exec_text, loopback_ports, wait_for
from tests.container.runtime_support import TOKEN, bearer, program_states, request, wait_answering

pytestmark = pytest.mark.container

# The Jupyter terminal's link alone (the reference starts Jupyter for it), and a path that merely
# mentions llama.cpp (the reference would start llama-server for it; this image does not).
PORTAL_CONFIG = (
    "localhost:1111:11111:/:Instance Portal|localhost:8080:8080:/terminals/1:Jupyter Terminal|"
    "localhost:7000:17000:/llama.cpp/docs:Docs"
)


@pytest.fixture(scope="module")
def container(main_build: Any, client: Any) -> Iterator[Any]:
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    started = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"PORTAL_CONFIG": PORTAL_CONFIG, "OPEN_BUTTON_TOKEN": TOKEN, "VAST_TCP_PORT_1111": "41111"},
        ports=loopback_ports(),
    )
    try:
        wait_answering(started, 1111, "/api/health")
        yield started
    finally:
        started.remove(force=True)


def sh(container: Any, script: str, user: str = "root") -> tuple[int, str]:
    return exec_text(container, "runuser", "-u", user, "--", "bash", "-c", script)


def test_user_runs_sudo_without_a_password_and_owns_its_home(container: Any) -> None:
    assert sh(container, "id -u user; id -g user; stat -c %U /home/user") == (0, "1001\n0\nuser\n")
    assert sh(container, "sudo -n id -u", user="user") == (0, "0\n")
    assert sh(container, "stat -c %a /etc/sudoers.d/user") == (0, "440\n")


def test_a_users_crontab_runs(container: Any) -> None:
    """What a user met: `crontab -e` was accepted and nothing ever ran (no cron daemon)."""
    code, said = sh(container, "echo '* * * * * touch /tmp/cron-ran-as-$(id -un)' | crontab -", user="user")
    assert code == 0, said
    assert program_states(container)["cron"] == "RUNNING"
    wait_for(lambda: exec_text(container, "test", "-e", "/tmp/cron-ran-as-user")[0] == 0, 75,
             "the user's crontab did not run within a minute", container)  # fmt: skip
    assert sh(container, "stat -c %U /tmp/cron-ran-as-user") == (0, "user\n")


def test_the_reference_s_tools_paths_and_variables_are_there(container: Any) -> None:
    code, said = sh(container, "ping -c 1 -W 2 127.0.0.1 >/dev/null && dig -v 2>&1 | head -1")
    assert code == 0 and said.startswith("DiG"), said
    path = container.attrs["Config"]["Env"]
    env = dict(item.split("=", 1) for item in path)
    assert env["PATH"].split(":")[0] == "/opt/instance-tools/bin"
    assert (env["NVIDIA_DRIVER_CAPABILITIES"], env["UV_LINK_MODE"]) == ("all", "copy")
    assert sh(container, "command -v provisioner") == (0, "/opt/instance-tools/bin/provisioner\n")
    assert sh(container, "grep -x 'PATH=.*' /etc/environment") == (0, f'PATH="{env["PATH"]}"\n')
    assert sh(container, "stat -c %a /var/log/portal") == (0, "1777\n")
    assert sh(container, "echo mine > /var/log/portal/mine.log && cat /var/log/portal/mine.log", user="user")[0] == 0
    assert sh(container, "bash -ic umask 2>/dev/null | tail -1") == (0, "0002\n")


def test_portal_config_starts_what_its_labels_name_and_portal_yaml_says_so(container: Any) -> None:
    """What a user met: PORTAL_CONFIG holding only the "Jupyter Terminal" link left Jupyter off."""
    wait_for(lambda: program_states(container).get("jupyter") == "RUNNING", 60, "jupyter not RUNNING", container)
    assert program_states(container)["llama"] in {"EXITED", "STOPPED"}
    _, text = exec_text(container, "cat", "/etc/portal.yaml")
    apps = yaml.safe_load(text)["applications"]
    assert set(apps) == {"Instance Portal", "Jupyter", "Jupyter Terminal", "Docs"}  # Jupyter runs: it is listed
    assert sh(container, "test -r /etc/portal.yaml", user="user")[0] == 0
    log = exec_text(container, "supervisorctl", "tail", "-100000", "proxy")[1]
    assert "names 'Jupyter' in its label: jupyter runs on its declared port 8080" in log
    assert "mentions 'Llama.cpp' only in its host or path: llama stays off" in log
    _, caddyfile = exec_text(container, "cat", "/etc/Caddyfile")
    assert [line for line in caddyfile.splitlines() if line.startswith(":")] == [":1111 {", ":7000 {", ":8080 {"]


def test_the_portal_answers_the_reference_s_applications_and_capabilities(container: Any) -> None:
    apps = request(container, 1111, "/get-applications", headers=bearer()).json()
    assert apps["Instance Portal"]["mapped_port"] == "41111"
    assert apps["Jupyter Terminal"]["open_path"] == "/terminals/1" and TOKEN not in json.dumps(apps)
    assert request(container, 1111, "/get-applications").status == 401  # behind the token, as every port
    found = request(container, 1111, "/capabilities", headers=bearer()).json()
    assert found["schema_version"] == 1
    states = {s["name"]: s["state"] for s in found["services"]}
    assert states["Jupyter"] == "RUNNING" and states["Jupyter Terminal"] == "link"
    assert request(container, 1111, "/capabilities/services", headers=bearer()).json() == found["services"]


def environment_file(container: Any) -> str:
    return exec_text(container, "cat", "/etc/environment")[1]


def test_a_low_pids_budget_caps_thread_pools_and_a_healthy_one_removes_the_caps(
    main_build: Any, client: Any, tmp_path: Path
) -> None:
    """The reference's safety valve, checked as a rented host shows it: more CPUs visible than the
    pids budget can serve pools for (here 2 visible, 31 pids, quota 1 CPU: the cap is 2)."""
    (tmp_path / ".env").write_text("RAYON_NUM_THREADS=5\n")
    started = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment={"OMP_NUM_THREADS": "3", "ENABLE_JUPYTER": "false"},
        volumes={str(tmp_path): {"bind": "/workspace", "mode": "rw"}},
        nano_cpus=1_000_000_000,
        pids_limit=31,
    )
    try:
        wait_for(lambda: "VAST_CPU_THREAD_CAPS_END" in environment_file(started), 60, "no thread caps", started)
        text = environment_file(started)
        assert "MKL_NUM_THREADS=2" in text and "TOKIO_WORKER_THREADS=2" in text
        assert "# OMP_NUM_THREADS: left at the user's value" in text and "RAYON_NUM_THREADS=2" not in text
        seen = exec_text(started, "/opt/llama-images/bin/llama-runtime", "run", "--", "printenv",
                         "MKL_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS")  # fmt: skip
        assert seen == (0, "2\n3\n5\n")
        assert "low pids budget (pids.max=31, CPUs visible=" in started.logs().decode()
        started.stop(timeout=10)
        subprocess.run(["docker", "update", "--pids-limit", "4096", started.id], check=True, capture_output=True)
        started.start()
        wait_for(lambda: "VAST_CPU_THREAD_CAPS" not in environment_file(started), 60, "the caps stayed", started)
        time.sleep(1)
        assert "pids budget healthy: the thread caps are removed" in started.logs().decode()
        assert exec_text(started, "/opt/llama-images/bin/llama-runtime", "run", "--", "printenv",
                         "OMP_NUM_THREADS", "RAYON_NUM_THREADS") == (0, "3\n5\n")  # fmt: skip
        assert (
            exec_text(started, "/opt/llama-images/bin/llama-runtime", "run", "--", "printenv", "MKL_NUM_THREADS")[0]
            == 1
        )
    finally:
        started.remove(force=True)
