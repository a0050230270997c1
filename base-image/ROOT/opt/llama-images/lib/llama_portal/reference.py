"""The reference portal's machine-readable answers, for tools written against it: the applications
(GET /get-applications) and the capability manifest (GET /capabilities, /capabilities/services,
/capabilities/endpoints, /.well-known/vast-capabilities), in its format, from this image's facts.
Unlike the reference, no answer carries the access token (its /get-applications appends it to
every link); the login session opens every port instead.

Pure: dicts from the loaded services, the environment and the program states. Stdlib only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from llama_runtime.proxy import Auth
from llama_runtime.reference_files import applications, hostname, hydrated
from llama_runtime.services import Service

SCHEMA_VERSION = 1
TOKEN_VARIABLES = ["OPEN_BUTTON_TOKEN", "WEB_PASSWORD"]
PROVISIONING_VARIABLES = [
    "PROVISIONING_MANIFEST",
    "PROVISIONING_SCRIPT",
    "PROVISIONING_APT",
    "PROVISIONING_PIP",
    "PROVISIONING_CONDA",
    "PROVISIONING_GIT_REPOS",
    "PROVISIONING_DOWNLOADS",
    "PROVISIONING_POST_COMMANDS",
]
PROVISIONING_LOG = "/var/log/portal/provisioning.log"


def get_applications(services: Iterable[Service], env: Mapping[str, str], https: bool) -> dict[str, dict[str, Any]]:
    return hydrated(applications(services), env, https)


def open_ports(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ports a marketplace mapped (VAST_TCP_PORT_<container port>=<public port>)."""
    found = []
    for name, value in sorted(env.items()):
        for proto in ("TCP", "UDP"):
            prefix = f"VAST_{proto}_PORT_"
            if name.startswith(prefix) and name[len(prefix) :].isdigit() and value.strip().isdigit():
                found.append({"proto": proto.lower(), "container_port": int(name[len(prefix) :]),
                              "public_port": int(value)})  # fmt: skip
    return found


def service_entry(service: Service, env: Mapping[str, str], states: Mapping[str, Mapping[str, Any]],
                  scheme: str) -> dict[str, Any]:  # fmt: skip
    mapped = env.get(f"VAST_TCP_PORT_{service.external_port}", "")
    public_ip = env.get("PUBLIC_IPADDR", "")
    direct = f"{scheme}://{public_ip}:{mapped}{service.path}" if public_ip and mapped else None
    info = states.get(service.program or "") if service.program else None
    entry: dict[str, Any] = {
        "name": service.label,
        "hostname": hostname(service),
        "internal_port": service.internal_port,
        "external_port": service.external_port,
        "open_path": service.path,
        "mapped_port": mapped,
        "internal_url": f"http://localhost:{service.internal_port}",
        "direct_url": direct,
        "supervisor_process": service.program,
        "state": (info or {}).get("statename", "unknown") if service.program else "link",
    }
    if service.openai_path:
        base = f"{scheme}://{public_ip}:{mapped}{service.openai_path}" if public_ip and mapped else None
        entry["openai_v1_base"] = base
        entry["capabilities"] = ["chat", "completions", "embeddings", "models"]
    return entry


def endpoints(entries: Iterable[tuple[Service, dict[str, Any]]]) -> list[dict[str, Any]]:
    found = []
    for service, entry in entries:
        if service.openai_path:
            found.append({
                "service": service.label,
                "base_url": entry.get("openai_v1_base"),
                "internal_base_url": f"http://localhost:{service.internal_port}{service.openai_path}",
                "capabilities": entry.get("capabilities", []),
                "models_path": f"{service.openai_path}/models",
                "auth": {"type": "bearer", "token_env": TOKEN_VARIABLES},
            })  # fmt: skip
    return found


def provisioning_state(complete: bool, failed: bool, running: bool) -> str:
    return "complete" if complete else "failed" if failed else "in_progress" if running else "none"


def capabilities(
    services: Iterable[Service],
    env: Mapping[str, str],
    states: Mapping[str, Mapping[str, Any]],
    auth: Auth,
    *,
    https: bool,
    provisioning: str,
    gpu: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The reference's capability manifest (schema 1), for the services that run or are links."""
    scheme = "https" if https else "http"
    running = [s for s in services if s.enabled]
    pairs = [(service, service_entry(service, env, states, scheme)) for service in running]
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": generated,
        "image": {"repo": "llama-images", "llama_cpp_backend": env.get("LLAMA_CPP_BACKEND", "")},
        "credentials": {
            "huggingface": bool(env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")),
            "civitai": bool(env.get("CIVITAI_TOKEN")),
            "note": "presence only; token values are not exposed",
        },
        "instance": {
            "container_id": env.get("CONTAINER_ID", ""),
            "containerlabel": env.get("VAST_CONTAINERLABEL", ""),
            "workspace": env.get("WORKSPACE", "/workspace"),
            "scheme": scheme,
            "public_ip": env.get("PUBLIC_IPADDR", ""),
            "open_ports": open_ports(env),
        },
        "hardware": {"gpu": {"summary": gpu}},
        "python_environments": [
            {"path": "/venv/main", "kind": "venv", "note": "JupyterLab's kernel; pip installs here"}
        ],
        "tools": [{"name": "provisioner", "path": "/opt/instance-tools/bin/provisioner"}],
        "services": [entry for _, entry in pairs],
        "endpoints_openai": endpoints(pairs),
        "provisioning": {
            "status": provisioning,
            "how_to": "Boot time: set PROVISIONING_MANIFEST=<url> or the PROVISIONING_* variables. Later: run "
            "`provisioner <manifest.yaml>` in the container.",
            "env_conventions": PROVISIONING_VARIABLES,
            "log_file": PROVISIONING_LOG,
        },
        "auth": {
            "edge": "caddy",
            "enabled": auth.enabled,
            "token_env": TOKEN_VARIABLES,
            "methods": ["bearer", "cookie", "query"],
            "bearer_header": "Authorization: Bearer <token>",
            "cookie_name": None,  # a signed login session, not the token: its name is per instance
            "query_param": "token",
            "excluded_ports": sorted(str(port) for port in auth.excluded_ports),
            "note": "a browser logs in once with ?token= (an expiring session cookie for every port); API "
            "clients send the Bearer token; localhost requests to a service's internal port need none.",
        },
        "discovery": {
            "capabilities_url": "/capabilities",
            "well_known_url": "/.well-known/vast-capabilities",
            "applications_url": "/get-applications",
        },
    }
