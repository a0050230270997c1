"""The reference image's files and answers its tools read, from this image's facts: /etc/portal.yaml
and /etc/Caddyfile (llama_runtime/reference_files.py), the portal's /get-applications and
/capabilities (llama_portal/reference.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from llama_portal.reference import capabilities, get_applications, provisioning_state
from llama_runtime.proxy import Auth
from llama_runtime.reference_files import applications, caddyfile, portal_yaml
from llama_runtime.services import load_services

from tests.runtime.test_services import REFERENCE_DEFAULT, image_declaration


def services(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_services(image_declaration(tmp_path), tmp_path / "none", env).services


def test_portal_yaml_lists_what_runs_in_the_reference_format(tmp_path: Path) -> None:
    text = portal_yaml(applications(services(tmp_path, PORTAL_CONFIG=REFERENCE_DEFAULT)))
    read = yaml.safe_load(text)
    assert read["applications"]["Jupyter Terminal"] == {
        "hostname": "localhost", "external_port": 8080, "internal_port": 8080, "open_path": "/terminals/1",
        "name": "Jupyter Terminal",
    }  # fmt: skip
    assert list(read["applications"]) == ["Instance Portal", "Llama.cpp UI", "Jupyter", "Jupyter Terminal"]
    # The reference's start scripts grep non-comment lines for their name.
    assert [line for line in text.splitlines() if "jupyter" in line.lower() and not line.startswith("#")]


def test_a_service_that_is_off_is_not_in_portal_yaml(tmp_path: Path) -> None:
    text = portal_yaml(applications(services(tmp_path, ENABLE_JUPYTER="false")))
    assert "Jupyter" not in yaml.safe_load(text)["applications"]
    assert not [line for line in text.splitlines() if "jupyter" in line.lower() and not line.startswith("#")]


def test_the_caddyfile_summary_names_each_listener_for_the_reference_s_tools(tmp_path: Path) -> None:
    loaded = services(tmp_path)
    text = caddyfile(loaded, {1111: True, 8000: True, 8080: False}, https=True, config="/run/llama-images/caddy.json")
    blocks = [line for line in text.splitlines() if line.startswith(":")]
    assert blocks == [":1111 {", ":8000 {", ":8080 {"]
    assert "# Jupyter: https -> 127.0.0.1:18080, asks for nothing (open)" in text
    assert "    # tls /etc/instance.crt /etc/instance.key" in text


def test_get_applications_answers_as_the_reference_portal_without_the_token(tmp_path: Path) -> None:
    env = {"PORTAL_CONFIG": REFERENCE_DEFAULT, "VAST_TCP_PORT_8000": "40123"}
    apps = get_applications(services(tmp_path, **env), env, https=False)
    assert apps["Llama.cpp UI"] == {
        "hostname": "localhost",
        "external_port": 8000,
        "internal_port": 18000,
        "open_path": "/",
        "name": "Llama.cpp UI",
        "target_url": "http://localhost:8000",
        "mapped_port": "40123",
    }
    assert apps["Jupyter Terminal"]["target_url"] == "http://localhost:8080"  # Jupyter proxies 8080 here
    assert "token" not in str(apps)


def test_capabilities_list_the_services_and_the_openai_endpoint(tmp_path: Path) -> None:
    env = {"PUBLIC_IPADDR": "203.0.113.7", "VAST_TCP_PORT_8000": "40123", "HF_TOKEN": "hf_secret"}
    found = capabilities(
        services(tmp_path),
        env,
        {"llama": {"statename": "RUNNING"}},
        Auth(("token",)),
        https=False,
        provisioning=provisioning_state(complete=True, failed=False, running=False),
        gpu="no GPU found",
        now=0,
    )
    assert found["schema_version"] == 1 and found["generated_at"] == "1970-01-01T00:00:00Z"
    llama = next(s for s in found["services"] if s["supervisor_process"] == "llama")
    assert (llama["state"], llama["direct_url"], llama["openai_v1_base"]) == (
        "RUNNING", "http://203.0.113.7:40123/", "http://203.0.113.7:40123/v1",
    )  # fmt: skip
    assert found["endpoints_openai"][0]["internal_base_url"] == "http://localhost:18000/v1"
    assert found["credentials"]["huggingface"] is True and "hf_secret" not in str(found)
    assert found["provisioning"]["status"] == "complete"
    assert found["instance"]["open_ports"] == [{"proto": "tcp", "container_port": 8000, "public_port": 40123}]
