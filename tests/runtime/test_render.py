"""The proxy's render (llama_runtime/cli.py, credentials.py, certificate.py): which tokens are
valid, the verifier's settings, weak-token warnings, and the last good config kept when a render
cannot be written."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from llama_runtime import certificate, cli, credentials, environment, files
from llama_runtime import paths as runtime_paths
from llama_runtime.proxy import Tls
from llama_runtime.services import load_services

from tests.runtime.test_services import image_declaration


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The runtime's paths moved under tmp_path; the image's declaration as the services."""
    for name, value in runtime_paths.declared(runtime_paths).items():
        if value.is_absolute():
            monkeypatch.setattr(runtime_paths, name, tmp_path / value.relative_to("/"))
    monkeypatch.setattr(environment, "SYSTEM_FILE", tmp_path / "environment")
    monkeypatch.setenv("WORKSPACE", str(tmp_path / "workspace"))
    declaration = image_declaration(tmp_path)

    def load(environ: Any) -> Any:
        return load_services(declaration, tmp_path / "no-overrides", environ)

    monkeypatch.setattr(cli, "load_services", load)
    for name in ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD", "ENABLE_HTTPS", "AUTH_EXCLUDE", "PORTAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return {"caddy": tmp_path / "run/caddy.json", "settings": tmp_path / "run/auth/settings.json", "root": tmp_path}


def render(paths: dict[str, Path]) -> int:
    return cli.render_proxy(paths["caddy"], paths["settings"])


def setup(monkeypatch: pytest.MonkeyPatch, **given: str) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    assert credentials.store_at_boot() == 0
    for name in given:
        monkeypatch.delenv(name)


def verifier_settings(paths: dict[str, Path]) -> dict[str, Any]:
    return json.loads(paths["settings"].read_text())  # type: ignore[no-any-return]


def test_both_token_variables_are_valid_and_the_generated_token_only_without_them(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789", WEB_PASSWORD="password-abcdefghij")
    assert render(paths) == 0
    assert verifier_settings(paths)["tokens"] == ["button-token-0123456789", "password-abcdefghij"]
    assert verifier_settings(paths)["username"] == "vastai"
    assert (runtime_paths.TOKEN_FILE).read_text() == "button-token-0123456789"
    for path in (paths["caddy"], paths["settings"], runtime_paths.SESSION_SECRET_FILE):
        assert path.stat().st_mode & 0o777 == 0o600, path
    setup(monkeypatch)
    assert render(paths) == 0
    generated = verifier_settings(paths)["tokens"]
    assert len(generated) == 1 and len(generated[0]) >= 32  # 192 bits, URL-safe


def test_a_password_set_in_the_settings_files_joins_or_replaces_what_docker_run_gave(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    assert render(paths) == 0
    key_before = verifier_settings(paths)["key"]
    (paths["root"] / "environment").write_text("WEB_PASSWORD=chosen-password-0123\n")
    assert render(paths) == 0
    assert verifier_settings(paths)["tokens"] == ["button-token-0123456789", "chosen-password-0123"]
    assert verifier_settings(paths)["key"] != key_before  # a new password ends every session
    (paths["root"] / "environment").write_text("OPEN_BUTTON_TOKEN=new-button-token-987654\n")
    assert render(paths) == 0
    assert verifier_settings(paths)["tokens"] == ["new-button-token-987654"]
    assert (runtime_paths.TOKEN_FILE).read_text() == "new-button-token-987654"


def test_a_weak_token_is_used_and_warned_about_without_being_shown(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="Qz9")
    assert render(paths) == 0
    out = capsys.readouterr().out
    assert "WARNING: the token in OPEN_BUTTON_TOKEN is weak: it is shorter than 16 characters." in out
    assert verifier_settings(paths)["tokens"] == ["Qz9"]
    assert "Qz9" not in out


def test_each_port_auth_exclude_opens_is_warned_about_by_service(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    monkeypatch.setenv("AUTH_EXCLUDE", "1111,8080,9999")
    assert render(paths) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "AUTH_EXCLUDE opens" in line]
    assert [line.split("WARNING: ")[1] for line in warned] == [
        "AUTH_EXCLUDE opens port 1111 (portal) to anyone who can reach it",
        "AUTH_EXCLUDE opens port 8080 (jupyter) to anyone who can reach it",
    ]
    monkeypatch.setenv("AUTH_EXCLUDE", "")
    assert render(paths) == 0
    assert "AUTH_EXCLUDE opens" not in capsys.readouterr().out


def test_session_bind_reaches_the_verifier_and_a_bad_value_keeps_the_default(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    assert render(paths) == 0
    assert verifier_settings(paths)["bind"] == [24, 64]
    for value, bind in (("none", [None, None]), ("address", [32, 128]), ("16,none", [16, None])):
        monkeypatch.setenv("SESSION_BIND", value)
        assert render(paths) == 0
        assert verifier_settings(paths)["bind"] == bind, value
    monkeypatch.setenv("SESSION_BIND", "everywhere")
    assert render(paths) == 0
    assert verifier_settings(paths)["bind"] == [24, 64]
    assert "ERROR: SESSION_BIND='everywhere' is not understood" in capsys.readouterr().out


def test_jupyter_gets_a_token_of_its_own_which_the_proxy_sends_and_its_start_reads_from_a_file(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    assert render(paths) == 0
    token_file = runtime_paths.service_token_file("jupyter")
    token = token_file.read_text()
    assert len(token) >= 43 and token_file.stat().st_mode & 0o777 == 0o600
    assert f'"Authorization": ["token {token}"]' in json.dumps(json.loads(paths["caddy"].read_text()))
    assert render(paths) == 0 and token_file.read_text() == token  # one token a boot
    # jupyter.sh asks for the file (JUPYTER_TOKEN_FILE): its path, never the token.
    capsys.readouterr()
    assert cli.service_token_file("jupyter") == 0
    assert capsys.readouterr().out.strip() == str(token_file)
    assert cli.service_token_file("portal") == 2  # declares none
    # Asked at once by the render and the start script: both get the one that was linked first.
    token_file.unlink()
    first = credentials.service_token("jupyter")
    assert credentials.service_token("jupyter") == first == token_file.read_text()
    assert [p.name for p in token_file.parent.iterdir() if p.name.startswith(".jupyter")] == []


def test_the_cookie_name_and_sessions_survive_a_restart_but_not_a_new_secret(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    render(paths)
    first = verifier_settings(paths)
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    render(paths)
    assert verifier_settings(paths)["cookie"] == first["cookie"] and verifier_settings(paths)["key"] == first["key"]
    (runtime_paths.SESSION_SECRET_FILE).unlink()
    render(paths)
    assert verifier_settings(paths)["key"] != first["key"]


def test_a_render_that_cannot_be_written_leaves_the_last_config_in_place(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(monkeypatch, OPEN_BUTTON_TOKEN="button-token-0123456789")
    assert render(paths) == 0
    before = (paths["caddy"].read_text(), paths["settings"].read_text())
    real_write = files.write_private

    def full_disk(path: Path, text: str) -> None:
        if path.name.startswith(".caddy.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, text)

    monkeypatch.setattr(cli, "write_private", full_disk)
    (paths["root"] / "environment").write_text("AUTH_EXCLUDE=8080\n")
    assert render(paths) == 1
    assert (paths["caddy"].read_text(), paths["settings"].read_text()) == before
    assert not list(paths["caddy"].parent.glob(".*.new")) and not list(paths["settings"].parent.glob(".*.new"))
    assert "ERROR: the proxy config could not be written (No space left on device); the last one stays" in (
        capsys.readouterr().out
    )


@pytest.fixture
def tls_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(runtime_paths, "INSTANCE_CERT", tmp_path / "etc/instance.crt")
    monkeypatch.setattr(runtime_paths, "INSTANCE_KEY", tmp_path / "etc/instance.key")
    monkeypatch.setattr(runtime_paths, "RUN_TLS_DIR", tmp_path / "run/tls")
    monkeypatch.setattr(runtime_paths, "TLS_LOCK_FILE", tmp_path / "run/tls.lock")
    monkeypatch.delenv("TLS_CERT_FILE", raising=False)
    monkeypatch.delenv("TLS_KEY_FILE", raising=False)
    (tmp_path / "etc").mkdir()
    return tmp_path


def test_the_instance_certificate_is_made_once_where_the_reference_keeps_it(tls_paths: Path) -> None:
    made = certificate.ensure()
    assert made == Tls(tls_paths / "etc/instance.crt", tls_paths / "etc/instance.key")
    assert (tls_paths / "etc/instance.key").stat().st_mode & 0o777 == 0o600
    first = (tls_paths / "etc/instance.crt").read_bytes()
    assert certificate.ensure() == made and (tls_paths / "etc/instance.crt").read_bytes() == first


def test_the_owner_s_pair_is_used_and_a_broken_one_left_alone_for_a_pair_of_this_boot(
    tls_paths: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert certificate.generate(tls_paths / "etc/instance.crt", tls_paths / "etc/instance.key") is None
    owner = (tls_paths / "etc/instance.crt").read_bytes()
    assert certificate.ensure() is not None and (tls_paths / "etc/instance.crt").read_bytes() == owner
    (tls_paths / "etc/instance.key").write_text("not a key\n")
    made = certificate.ensure()
    assert made == Tls(tls_paths / "run/tls/instance.crt", tls_paths / "run/tls/instance.key")
    assert (tls_paths / "etc/instance.key").read_text() == "not a key\n"
    assert "ERROR: " in capsys.readouterr().out
