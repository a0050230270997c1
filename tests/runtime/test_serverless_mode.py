"""Serverless mode (SERVERLESS=true) in the service declaration (llama_runtime/services.py): which
services run in it, what keeps one, why one is off; the proxy's and the health check's part."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import pytest
from llama_runtime import cli, program
from llama_runtime.health import problems
from llama_runtime.services import Loaded, Service, load_services, proxy_off_reason

from tests.runtime.test_services import REFERENCE_DEFAULT, image_declaration, write

SERVERLESS = {"SERVERLESS": "true"}


Declared = functools.partial[Loaded]


@pytest.fixture
def declared(tmp_path: Path) -> Declared:
    """load_services(environ=...) over the llama-cpp image's declaration, no runtime overrides."""
    return functools.partial(load_services, image_declaration(tmp_path), tmp_path / "none")


def enabled(env: dict[str, str], load: Declared) -> dict[str, bool]:
    loaded = load(environ=env)
    assert loaded.problems == ()
    return {s.name: s.enabled for s in loaded.services}


def test_outside_serverless_mode_the_worker_is_off_and_everything_else_runs(declared: Declared) -> None:
    assert enabled({}, declared) == {"portal": True, "pyworker": False, "llama": True, "jupyter": True}
    worker = declared(environ={}).by_name()["pyworker"]
    assert worker.off_reason == "it runs only in serverless mode (SERVERLESS=true)"


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on"])
def test_serverless_mode_stops_the_portal_and_jupyter_and_runs_the_worker(declared: Declared, value: str) -> None:
    assert enabled({"SERVERLESS": value}, declared) == {
        "portal": False,
        "pyworker": True,
        "llama": True,
        "jupyter": False,
    }
    portal = declared(environ={"SERVERLESS": value}).by_name()["portal"]
    assert portal.off_reason == "serverless mode (SERVERLESS=true) stops it; SERVERLESS_KEEP=portal keeps it"
    assert proxy_off_reason({"SERVERLESS": value}) == (
        "serverless mode (SERVERLESS=true) stops it; SERVERLESS_KEEP=proxy keeps it"
    )


@pytest.mark.parametrize("value", ["", "false", "0", "maybe"])
def test_anything_but_a_yes_is_the_usual_mode(declared: Declared, value: str) -> None:
    assert enabled({"SERVERLESS": value}, declared)["portal"] is True
    assert proxy_off_reason({"SERVERLESS": value}) is None


def test_serverless_keep_keeps_the_services_it_names_and_the_proxy(declared: Declared) -> None:
    env = {**SERVERLESS, "SERVERLESS_KEEP": "Portal, proxy"}
    assert enabled(env, declared) == {"portal": True, "pyworker": True, "llama": True, "jupyter": False}
    assert proxy_off_reason(env) is None
    # An ENABLE_* switch still turns a kept service off.
    off = {**SERVERLESS, "SERVERLESS_KEEP": "jupyter", "ENABLE_JUPYTER": "false"}
    jupyter = declared(environ=off).by_name()["jupyter"]
    assert (jupyter.enabled, jupyter.off_reason) == (False, "ENABLE_JUPYTER=false")


def test_a_name_serverless_keep_cannot_keep_is_reported(declared: Declared) -> None:
    env = {**SERVERLESS, "SERVERLESS_KEEP": "portal caddy jupyterlab"}
    loaded = declared(environ=env)
    assert loaded.problems == (
        "SERVERLESS_KEEP: 'caddy', 'jupyterlab' are not a service of this image "
        "(known: jupyter, llama, portal, proxy, pyworker); ignored",
    )
    assert loaded.by_name()["portal"].enabled


def test_portal_config_is_not_read_in_serverless_mode(declared: Declared) -> None:
    """As in the reference image: a template's PORTAL_CONFIG (which never names the worker, and
    may leave out llama-server) does not decide what a serverless instance runs."""
    config = "localhost:1111:11111:/:Instance Portal|localhost:7860:17860:/:Gradio App"
    assert enabled({**SERVERLESS, "PORTAL_CONFIG": config}, declared) == {
        "portal": False, "pyworker": True, "llama": True, "jupyter": False
    }  # fmt: skip
    assert enabled({**SERVERLESS, "PORTAL_CONFIG": REFERENCE_DEFAULT}, declared)["pyworker"] is True


def test_the_worker_is_never_published_by_the_proxy(declared: Declared) -> None:
    worker = declared(environ=SERVERLESS).by_name()["pyworker"]
    assert (worker.enabled, worker.proxied, worker.published, worker.external_port) == (True, False, False, 3000)
    # The proxy, kept, publishes llama-server and the kept portal, never the worker's port.
    kept = declared(environ={**SERVERLESS, "SERVERLESS_KEEP": "proxy"})
    assert [s.external_port for s in kept.services if s.published] == [8000]


def test_a_bad_serverless_value_is_reported_with_its_file_and_key(tmp_path: Path) -> None:
    shipped = image_declaration(tmp_path)
    write(shipped, "other.toml", 'name = "other"\nlabel = "O"\nexternal_port = 7000\ninternal_port = 17000\n'
          'path = "/"\nserverless = "sometimes"\n')  # fmt: skip
    loaded = load_services(shipped, tmp_path / "none", {})
    assert f"{shipped}/other.toml: serverless = 'sometimes' is not one of 'on', 'off', 'only'" in loaded.problems
    assert "other" not in loaded.by_name()


def test_each_program_says_its_own_decision(
    declared: Declared, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(program, "load_services", declared)
    monkeypatch.delenv("SERVERLESS", raising=False)
    monkeypatch.setenv("SERVERLESS_KEEP", "")
    assert program.decide("pyworker") is False
    assert program.decide("portal") is True
    monkeypatch.setenv("SERVERLESS", "true")
    assert program.decide("pyworker") is True
    assert program.decide("portal") is False
    assert program.decide("proxy") is False
    monkeypatch.setenv("SERVERLESS_KEEP", "portal,proxy")
    assert program.decide("portal") is True
    assert program.decide("auth") is True
    said = capsys.readouterr().out.splitlines()
    assert said == [
        "[pyworker] not started: it runs only in serverless mode (SERVERLESS=true)",
        "[portal] not started: serverless mode (SERVERLESS=true) stops it; SERVERLESS_KEEP=portal keeps it",
        "[proxy] not started: serverless mode (SERVERLESS=true) stops it; SERVERLESS_KEEP=proxy keeps it",
        "[portal] serverless mode: kept running (SERVERLESS_KEEP names portal)",
        "[auth] serverless mode: kept running (SERVERLESS_KEEP names proxy)",
    ]


def test_the_proxy_script_and_the_render_agree_on_the_status_that_means_off() -> None:
    script = Path(__file__).resolve().parents[2] / "base-image/ROOT/opt/supervisor-scripts/proxy.sh"
    assert f"stays_off={cli.STAYS_OFF} " in script.read_text(encoding="utf-8")


WORKER = Service("pyworker", "Serverless worker", 3000, 3000, program="pyworker", essential=True, proxied=False)
LLAMA = Service("llama", "llama.cpp server", 8000, 18000, program="llama", essential=True)


def test_health_in_serverless_mode_asks_for_the_worker_not_the_proxy(tmp_path: Path) -> None:
    states = {"llama": {"statename": "RUNNING"}, "pyworker": {"statename": "RUNNING"}, "proxy": {"statename": "EXITED"}}
    assert problems((WORKER, LLAMA), states, lambda h, p: True, tmp_path, proxy_expected=False) == []
    assert problems((WORKER, LLAMA), states, lambda h, p: True, tmp_path) == ["proxy is EXITED"]
    fatal = {**states, "pyworker": {"statename": "FATAL"}}
    assert problems((WORKER, LLAMA), fatal, lambda h, p: True, tmp_path, proxy_expected=False) == [
        "pyworker: program pyworker is FATAL"
    ]
    (tmp_path / "pyworker").write_text(textwrap.dedent("failed: MASTER_TOKEN is not set\n"), encoding="utf-8")
    silent = problems((WORKER, LLAMA), states, lambda h, p: p != 3000, tmp_path, proxy_expected=False)
    assert silent == ["pyworker: RUNNING but port 3000 does not answer"]
