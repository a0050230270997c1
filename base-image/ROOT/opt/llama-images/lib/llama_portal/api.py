"""The panels' routes: machine figures, the model, "Use it", the logs archive and the page's
static files. Thin: the figures come from machine.py, model.py and panels.py."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from llama_runtime import environment, logs, paths, supervisor
from llama_runtime.credentials import effective_tokens
from llama_runtime.proxy import auth_from_env
from llama_runtime.services import Service, load_services
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import logs_archive, machine, model, panels

STATIC = Path(__file__).with_name("static")
# The page's assets, by name: nothing else under the directory is served.
ASSETS = {"portal.js": "text/javascript", "portal.css": "text/css", "favicon.svg": "image/svg+xml"}
SAMPLER = machine.Sampler()


def read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def llama_service() -> Service | None:
    service = load_services(environ=os.environ).by_name().get(model.SERVICE)
    return service if service is not None and service.enabled else None


def llama_secrets(service: Service) -> tuple[str | None, list[str]]:
    """llama-server's first API key (the portal's own requests need one) and every secret its
    settings hold, read as the launcher reads them; the environment alone where that fails."""
    try:
        from llama_serving.config import ConfigError, make_plan
    except ImportError:  # a base image without llama-server
        return None, []
    try:
        plan = make_plan(os.environ, service.internal_port)
    except ConfigError:
        plan = None
    keys = plan.secrets.get("LLAMA_API_KEY", "") if plan else os.environ.get("LLAMA_API_KEY", "")
    first = next((key.strip() for key in keys.split(",") if key.strip()), None)
    return first, plan.secret_values() if plan else []


def requests_served() -> int | None:
    """How many requests llama-server has served since it started, as its launcher counts them."""
    try:
        from llama_serving.paths import REQUESTS_SERVED_FILE
    except ImportError:
        return None
    text = read_line(REQUESTS_SERVED_FILE) or ""
    return int(text) if text.isdigit() else None


def known_secrets() -> list[str]:
    """Every secret the container knows: what the log views and the archive mask."""
    service = llama_service()
    _, llama = llama_secrets(service) if service is not None else (None, [])
    files = environment.read(os.environ)
    tokens, _ = effective_tokens(files)  # every token that opens the proxy (OPEN_BUTTON_TOKEN, WEB_PASSWORD)
    env = dict(os.environ)
    environment.apply(env, files)
    own = [
        read_line(paths.service_token_file(s.name)) or "" for s in load_services(environ=env).services if s.token_scheme
    ]
    return logs_archive.secrets_in(env, [*tokens.values(), read_line(paths.TOKEN_FILE) or "", *own], llama)


def masked(text: str) -> str:
    """A log's text as the page may show it: secrets masked (a provisioning script may print one)."""
    return logs_archive.mask(text, known_secrets()) if text else text


def llama_client(service: Service) -> model.Llama:
    key, _ = llama_secrets(service)
    return model.Llama(service.host, service.internal_port, key)


def machine_figures(request: Request) -> Response:
    since = request.query_params.get("since", "0")
    try:
        after = float(since)
    except ValueError:
        return JSONResponse({"error": f"since={since!r}: give a time in seconds, as the history's t"}, status_code=400)
    return JSONResponse(SAMPLER.snapshot(after))


def model_figures(request: Request) -> Response:
    service = llama_service()
    if service is None:
        return JSONResponse({"available": False})
    states = supervisor.states_or_empty()
    state = (states.get(service.program or "") or {}).get("statename", "UNKNOWN")
    status = read_line(paths.status_file(service.name))
    panel: dict[str, Any] = {"router": False, "models": [], "notes": [], "requests_served": None}
    # While it downloads or loads, the status line says so and llama-server has nothing to tell.
    if state == "RUNNING" and model.ready(status):
        panel = {**model.model_panel(llama_client(service)), "requests_served": requests_served()}
    return JSONResponse(
        {"available": True, "state": state, "status": status, "progress": model.download_progress(status), **panel}
    )


async def model_change(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in model.ROUTER_ACTIONS:
        return JSONResponse({"error": f"unknown action {action!r}; use load or unload"}, status_code=404)
    service = llama_service()
    if service is None:
        return JSONResponse({"error": "this image serves no model"}, status_code=404)
    try:
        body = await request.json()
    except ValueError:
        body = None
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return JSONResponse(
            {"error": 'send {"model": "<id>"} as JSON, with an id from GET /api/model'}, status_code=400
        )
    client = llama_client(service)

    def change() -> str:
        return client.change(action, name)

    try:
        result = await run_in_threadpool(change)
    except model.LlamaError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse({"model": name, "action": action, "result": result})


def usage(request: Request) -> Response:
    service = llama_service()
    if service is None:
        return JSONResponse({"available": False})
    auth, _ = auth_from_env(os.environ, (), "")  # which ports ask for the token; the page never holds one
    key, _ = llama_secrets(service)
    served = None
    state = (supervisor.states_or_empty().get(service.program or "") or {}).get("statename")
    if state == "RUNNING" and model.ready(read_line(paths.status_file(service.name))):
        try:
            entries, _ = model.model_entries(llama_client(service).get_json("/v1/models"))
            served = entries[0].id if entries else None
        except model.LlamaError:
            served = None
    portal = load_services(environ=os.environ).by_name().get("portal")
    found = panels.usage(
        scheme=request.headers.get("x-forwarded-proto", request.url.scheme),
        host=request.url.hostname or "localhost",
        port=panels.mapped_port(os.environ, service.external_port),
        declared_port=service.external_port,
        page_port=request.url.port,
        portal_port=panels.mapped_port(os.environ, portal.external_port) if portal else None,
        model=served,
        token_needed=auth.protects(service.external_port),
        api_key_needed=key is not None,
        token_file=str(paths.TOKEN_FILE),
    )
    return JSONResponse({"available": True, **found.to_json()})


def logs_download(request: Request) -> Response:
    secrets = known_secrets()
    texts = {f"status/{path.name}": read_line(path) or "" for path in sorted(paths.STATUS_DIR.glob("*"))}
    texts.update({f"boot/{path.name}": read_line(path) or "" for path in sorted(paths.BOOT_DIR.glob("*"))})
    texts["services.json"] = json.dumps(
        {
            name: {k: info.get(k) for k in ("statename", "description")}
            for name, info in supervisor.states_or_empty().items()
        },
        indent=1,
    )
    chunks = logs_archive.archive_chunks(logs_archive.members(logs.log_dir()), texts, secrets)
    name = f"logs-{socket.gethostname()}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.zip"
    return StreamingResponse(
        iterate_in_threadpool(chunks),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


ROUTES = [
    Route("/api/machine", machine_figures),
    Route("/api/model", model_figures),
    Route("/api/model/{action:str}", model_change, methods=["POST"]),
    Route("/api/usage", usage),
    Route("/api/logs/archive", logs_download),
    Route("/static/{name:str}", asset),
]
