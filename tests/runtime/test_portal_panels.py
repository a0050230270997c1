"""The portal's panels, pure parts: buttons that follow a program's state, the "Use it" snippets,
and the logs archive's contents and masking."""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from pathlib import Path

import pytest
from llama_portal.logs_archive import members, secrets_in, write_zip
from llama_portal.panels import allowed_actions, link_query, mapped_port, usage
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


def test_snippets_call_this_instance_with_a_placeholder_for_the_token() -> None:
    found = usage(scheme="http", host="203.0.113.9", port=41234, declared_port=8000, page_port=41111,
                  portal_port=41111, model="tiny", token_needed=True, api_key_needed=False,
                  token_file="/run/llama-images/secrets/token")  # fmt: skip
    assert found.base_url == "http://203.0.113.9:41234"
    assert found.chat_url == "http://203.0.113.9:41234/"
    words = shlex.split(found.curl.replace("\\\n", " "))
    assert words[words.index("-d") + 1] == json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}]}
    )
    assert "Authorization: Bearer YOUR_TOKEN" in words
    assert words[-1] == "http://203.0.113.9:41234/v1/chat/completions"
    assert 'base_url="http://203.0.113.9:41234/v1"' in found.python
    assert 'api_key="YOUR_TOKEN"' in found.python
    compile(found.python, "snippet", "exec")  # valid Python as shown
    assert "docker exec <container> cat /run/llama-images/secrets/token" in found.token_hint
    assert "X-Api-Key" not in found.curl + found.python
    assert found.port_note is None  # Vast.ai said which port the API has


def test_a_note_when_the_host_maps_ports_the_portal_cannot_know() -> None:
    # docker run -p 21111:1111 -p 28000:8000: the page is on 21111, the API's port is unknown here.
    found = usage(scheme="http", host="127.0.0.1", port=8000, declared_port=8000, page_port=21111, portal_port=1111,
                  model=None, token_needed=True, api_key_needed=False, token_file="/t")  # fmt: skip
    assert found.port_note is not None and "maps to 8000" in found.port_note
    same = usage(scheme="http", host="h", port=8000, declared_port=8000, page_port=1111, portal_port=1111,
                 model=None, token_needed=True, api_key_needed=False, token_file="/t")  # fmt: skip
    assert same.port_note is None


def test_snippets_with_llama_api_key_an_open_port_ipv6_and_odd_names() -> None:
    found = usage(scheme="https", host="2001:db8::1", port=8000, declared_port=8000, page_port=None,
                  portal_port=1111, model="it's \"x\"", token_needed=False, api_key_needed=True,
                  token_file="/t")  # fmt: skip
    assert found.base_url == "https://[2001:db8::1]:8000"
    words = shlex.split(found.curl.replace("\\\n", " "))
    assert "X-Api-Key: YOUR_LLAMA_API_KEY" in words
    assert not any(word.startswith("Authorization") for word in words)
    assert json.loads(words[words.index("-d") + 1])["model"] == 'it\'s "x"'
    compile(found.python, "snippet", "exec")
    assert "open without a token" in found.token_hint and "LLAMA_API_KEY" in found.token_hint


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
