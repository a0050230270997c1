"""The reference image's files that its tools, templates and in-instance tests read, written from
this image's own facts at every proxy start: /etc/portal.yaml (the applications PORTAL_CONFIG
gives, in the reference's format) and /etc/Caddyfile (a summary of the proxy's listeners; the
proxy itself runs from its JSON config). Neither is read back: settings go in PORTAL_CONFIG
(/etc/environment, then `supervisorctl restart caddy`).

Pure: text from the loaded services. Stdlib only: this runs with the image's own python3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .services import LOCAL_HOSTS, Service

PORTAL_YAML_HEADER = (
    "# The applications in effect (PORTAL_CONFIG and the image's service declaration), in the\n"
    "# reference image's format, rewritten at every proxy start; edits here are not read back:\n"
    "# set PORTAL_CONFIG in /etc/environment and run `supervisorctl restart caddy`.\n"
)
CADDYFILE_HEADER = (
    "# A summary of this image's proxy, for tools written for the reference image: the proxy\n"
    "# runs from {config} (JSON), not from this file, which it rewrites at every start.\n"
)


def hostname(service: Service) -> str:
    return "localhost" if service.host in LOCAL_HOSTS else service.host


def applications(services: Iterable[Service]) -> dict[str, dict[str, Any]]:
    """label -> the reference's application entry, for each service that runs or is a link."""
    found: dict[str, dict[str, Any]] = {}
    for service in services:
        if not service.enabled:
            continue
        found[service.label] = {
            "hostname": hostname(service),
            "external_port": service.external_port,
            "internal_port": service.internal_port,
            "open_path": service.path,
            "name": service.label,
        }
    return found


def portal_yaml(apps: Mapping[str, Mapping[str, Any]]) -> str:
    """/etc/portal.yaml: `applications:` with one mapping per label (strings written as JSON
    strings, which YAML reads as they are)."""
    lines = [PORTAL_YAML_HEADER.rstrip("\n"), "applications:" if apps else "applications: {}"]
    for label, app in apps.items():
        lines.append(f"  {json.dumps(label)}:")
        for key, value in app.items():
            lines.append(f"    {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def hydrated(apps: Mapping[str, Mapping[str, Any]], env: Mapping[str, str], https: bool) -> dict[str, dict[str, Any]]:
    """The reference portal's GET /get-applications: each entry with the URL it is reached at
    (`target_url`) and the host port a marketplace mapped to its external port (`mapped_port`).
    Unlike the reference, `open_path` never carries the access token."""
    proxied = {app["external_port"] for app in apps.values() if app["external_port"] != app["internal_port"]}
    found = {}
    for label, app in apps.items():
        port = app["external_port"]
        direct_tls = port == app["internal_port"] == 8080 and 8080 not in proxied  # the reference's rule
        scheme = "https" if https or direct_tls else "http"
        found[label] = {
            **app,
            "target_url": f"{scheme}://{app['hostname']}:{port}",
            "mapped_port": env.get(f"VAST_TCP_PORT_{port}", ""),
        }
    return found


def caddyfile(services: Iterable[Service], protected: Mapping[int, bool], https: bool, config: str) -> str:
    """/etc/Caddyfile: one `:PORT {` block per listener (the reference's tools find the ports by
    these lines), with where it leads and whether it asks for the token, as comments only."""
    lines = [CADDYFILE_HEADER.format(config=config).rstrip("\n")]
    for service in services:
        if not service.published:
            continue
        lock = "the access token" if protected.get(service.external_port, True) else "nothing (open)"
        lines += [
            f":{service.external_port} {{",
            f"    # {service.label}: {'https' if https else 'http'} -> {service.host}:{service.internal_port}, "
            f"asks for {lock}",
            *(["    # tls /etc/instance.crt /etc/instance.key"] if https else []),
            "}",
        ]
    return "\n".join(lines) + "\n"
