"""The portal's part for llama-server (services.d/llama.toml: portal_part), through the base's
seam (llama_portal/parts.py): the model panel (GET /api/model, POST /api/model/{load,unload}),
the "Use it" panel (GET /api/usage), their script (portal_panel.js), llama-server's secrets for
the portal's masking, and its status line for the services list.

The launcher's status comes from its record (status.py), llama-server's figures from its own
HTTP API (portal_figures.py). Stdlib only: the portal imports it with its own environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llama_portal.panels import mapped_port
from llama_portal.parts import Part, PartAnswer, PartRequest, PartRoute
from llama_runtime import paths, supervisor
from llama_runtime.proxy import auth_from_env
from llama_runtime.services import Service, load_services

from . import portal_figures, status
from .config import ConfigError, make_plan
from .paths import REQUESTS_SERVED_FILE, SERVICE
from .portal_usage import usage

PANEL = Path(__file__).with_name("portal_panel.js")


def read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def llama_service() -> Service | None:
    service = load_services(environ=os.environ).by_name().get(SERVICE)
    return service if service is not None and service.enabled else None


def llama_secrets(service: Service | None) -> tuple[str | None, list[str]]:
    """llama-server's first API key (the portal's own requests need one) and every secret its
    settings hold, read as the launcher reads them; the environment alone where that fails."""
    try:
        plan = make_plan(os.environ, service.internal_port) if service is not None else None
    except ConfigError:
        plan = None
    keys = plan.secrets.get("LLAMA_API_KEY", "") if plan else os.environ.get("LLAMA_API_KEY", "")
    first = next((key.strip() for key in keys.split(",") if key.strip()), None)
    return first, plan.secret_values() if plan else []


def requests_served() -> int | None:
    """How many requests llama-server has served since it started, as its launcher counts them."""
    text = read_line(REQUESTS_SERVED_FILE) or ""
    return int(text) if text.isdigit() else None


def llama_client(service: Service) -> portal_figures.Llama:
    key, _ = llama_secrets(service)
    return portal_figures.Llama(service.host, service.internal_port, key)


def ready(record: status.Status, line: str | None) -> bool:
    """Whether llama-server serves, as its launcher says (or says nothing at all): only then has
    it figures to give; while it downloads or loads it has none."""
    return record.serving or (record.state == "" and line is None)


def progress(record: status.Status) -> dict[str, Any] | None:
    """The download the launcher reports, as the panel's progress bar shows it."""
    found = record.download if record.state == "downloading" else None
    return {"file": found.file, "percent": found.percent, "detail": found.rate} if found else None


def program_state(service: Service) -> str:
    return str((supervisor.states_or_empty().get(service.program or "") or {}).get("statename", "UNKNOWN"))


def model_figures(request: PartRequest) -> PartAnswer:
    service = llama_service()
    if service is None:
        return PartAnswer({"available": False})
    state = program_state(service)
    record, line = status.read(), status.read_line()
    panel: dict[str, Any] = {"router": False, "models": [], "notes": [], "requests_served": None}
    if state == "RUNNING" and ready(record, line):
        panel = {**portal_figures.model_panel(llama_client(service)), "requests_served": requests_served()}
    return PartAnswer({"available": True, "state": state, "status": line, "progress": progress(record), **panel})


def model_change(request: PartRequest) -> PartAnswer:
    action = request.path_params.get("action", "")
    if action not in portal_figures.ROUTER_ACTIONS:
        return PartAnswer({"error": f"unknown action {action!r}; use load or unload"}, 404)
    service = llama_service()
    if service is None:
        return PartAnswer({"error": "this image serves no model"}, 404)
    name = request.body.get("model") if isinstance(request.body, dict) else None
    if not isinstance(name, str) or not name:
        return PartAnswer({"error": 'send {"model": "<id>"} as JSON, with an id from GET /api/model'}, 400)
    try:
        result = llama_client(service).change(action, name)
    except portal_figures.LlamaError as exc:
        return PartAnswer({"error": str(exc)}, 409)
    return PartAnswer({"model": name, "action": action, "result": result})


def use_it(request: PartRequest) -> PartAnswer:
    service = llama_service()
    if service is None:
        return PartAnswer({"available": False})
    auth, _ = auth_from_env(os.environ, (), "")  # which ports ask for the token; the page never holds one
    key, _ = llama_secrets(service)
    served = None
    if program_state(service) == "RUNNING" and ready(status.read(), status.read_line()):
        try:
            entries, _ = portal_figures.model_entries(llama_client(service).get_json("/v1/models"))
            served = entries[0].id if entries else None
        except portal_figures.LlamaError:
            served = None
    portal = load_services(environ=os.environ).by_name().get("portal")
    found = usage(
        scheme=request.scheme,
        host=request.host,
        port=mapped_port(os.environ, service.external_port),
        declared_port=service.external_port,
        page_port=request.port,
        portal_port=mapped_port(os.environ, portal.external_port) if portal else None,
        model=served,
        token_needed=auth.protects(service.external_port),
        api_key_needed=key is not None,
        token_file=str(paths.TOKEN_FILE),
    )
    return PartAnswer({"available": True, **found.to_json()})


def secrets() -> list[str]:
    """What llama-server's settings hold that the portal's log views and archive mask."""
    _, found = llama_secrets(load_services(environ=os.environ).by_name().get(SERVICE))
    return found


def portal_part(service: str) -> Part:
    return Part(
        routes=(
            PartRoute("GET", "/api/model", model_figures),
            PartRoute("POST", "/api/model/{action:str}", model_change),
            PartRoute("GET", "/api/usage", use_it),
        ),
        panel=PANEL,
        secrets=secrets,
        summary=status.read_line,
    )
