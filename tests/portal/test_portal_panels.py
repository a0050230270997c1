"""The portal's panels, pure parts: buttons that follow a program's state, links, the mapped API
port, and the logs archive's contents and masking. (llama-server's "Use it" snippets are its
part's: tests/llama_serving/test_portal_part.py.)"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from llama_portal.logs_archive import members, secrets_in, write_zip
from llama_portal.panels import allowed_actions, link_query, mapped_port
from llama_runtime.paths import PROGRAM_LOGS


@pytest.mark.parametrize(
    ("state", "buttons"),
    [
        ("RUNNING", ["stop", "restart"]),
        ("STARTING", ["stop", "restart"]),
        ("BACKOFF", ["stop", "restart"]),
        ("STOPPED", ["start"]),
        ("EXITED", ["start"]),
        ("FATAL", ["start"]),
        ("STOPPING", []),
        ("UNKNOWN", []),
        ("DISABLED", []),
    ],
)
def test_buttons_follow_the_programs_state(state: str, buttons: list[str]) -> None:
    assert allowed_actions(state, controllable=True) == buttons


def test_programs_the_portal_does_not_control_offer_no_buttons() -> None:
    assert allowed_actions("RUNNING", controllable=False) == []
    assert allowed_actions("STOPPED", controllable=False) == []


def test_a_link_to_an_opened_port_carries_the_service_s_own_token_only_from_a_portal_behind_the_login() -> None:
    assert link_query(protected=False, portal_protected=True, own_token="a+b/c") == "token=a%2Bb%2Fc"
    assert link_query(protected=True, portal_protected=True, own_token="t") == ""  # the proxy sends it
    assert link_query(protected=False, portal_protected=False, own_token="t") == ""  # anyone would see it
    assert link_query(protected=False, portal_protected=True, own_token=None) == ""


def test_the_api_port_follows_vast_ais_port_mapping() -> None:
    assert mapped_port({}, 8000) == 8000
    assert mapped_port({"VAST_TCP_PORT_8000": "41234"}, 8000) == 41234
    assert mapped_port({"VAST_TCP_PORT_8000": "nonsense"}, 8000) == 8000


def test_secrets_the_archive_masks() -> None:
    env = {
        "LLAMA_API_KEY": "key-one, key-two",
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz",
        "MY_SERVICE_PASSWORD": "correct-horse",
        "SHORT_TOKEN": "abc",  # too short to mask safely ("abc" is in many words)
        "PROVISIONING_SCRIPT": "https://user:pa55word@example.com/setup.sh?sig=s3cr3t",
        "PATH": "/usr/bin",
    }
    found = secrets_in(env, ["the-access-token"], ["from-llama-args"])
    assert set(found) == {"key-one", "key-two", "hf_abcdefghijklmnopqrstuvwxyz", "correct-horse", "pa55word",
                          "sig=s3cr3t", "the-access-token", "from-llama-args"}  # fmt: skip
    assert found == sorted(found, key=len, reverse=True)  # longest first: a secret inside another


def test_the_archive_holds_every_log_masked(tmp_path: Path) -> None:
    (tmp_path / PROGRAM_LOGS).mkdir()
    (tmp_path / "boot.log").write_text("[auth] token from OPEN_BUTTON_TOKEN\n[packages] pip install x\n")
    (tmp_path / "provisioning.log").write_text("using the-access-token here\n")
    (tmp_path / PROGRAM_LOGS / "llama.log").write_text("api key key-one\n")
    (tmp_path / PROGRAM_LOGS / "llama.log.1").write_text("older\n")
    (tmp_path / PROGRAM_LOGS / "portal.log").write_bytes(b"\xff binary\n")
    files = members(tmp_path)
    assert [name for name, _ in files] == [
        "boot.log", "provisioning.log", "portal/llama.log", "portal/llama.log.1", "portal/portal.log"
    ]  # fmt: skip
    buffer = io.BytesIO()
    write_zip(buffer, files, {"status/llama": "serving tiny"}, ["the-access-token", "key-one"])
    with zipfile.ZipFile(buffer) as archive:
        contents = {name: archive.read(name).decode() for name in archive.namelist()}
    assert set(contents) == {f"logs/{name}" for name, _ in files} | {"logs/status/llama"}
    assert contents["logs/provisioning.log"] == "using *** here\n"
    assert contents["logs/portal/llama.log"] == "api key ***\n"
    assert contents["logs/boot.log"].startswith("[auth] token from OPEN_BUTTON_TOKEN")
    assert contents["logs/status/llama"] == "serving tiny"
    assert not any("the-access-token" in text or "key-one" in text for text in contents.values())
