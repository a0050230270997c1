"""Portal routes. Everything the page shows comes from the JSON API below it."""

from __future__ import annotations

import os
import xmlrpc.client
from pathlib import Path
from typing import Any

from llama_runtime import logs, supervisor
from llama_runtime.cli import RUN_DIR, TOKEN_FILE
from llama_runtime.proxy import Auth, auth_from_env
from llama_runtime.services import STATUS_DIR, Service, load_services
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import api, panels

BOOT_DIR = RUN_DIR / "boot"
# Programs the portal will not stop: without them nobody could reach the portal again.
PROTECTED = {"portal", "proxy"}
ACTIONS = {"start", "stop", "restart"}
PAGE = Path(__file__).with_name("index.html")


def read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def log_file(info: dict[str, Any] | None) -> Path | None:
    """The file a program logs to, or None where it logs to the container's output only."""
    path = str((info or {}).get("stdout_logfile", ""))
    return Path(path) if path.startswith("/") and not path.startswith("/dev/") else None


def service_row(service: Service, info: dict[str, Any] | None, auth: Auth) -> dict[str, Any]:
    state = (
        "DISABLED"
        if not service.enabled
        else (info or {}).get("statename", "NO PROGRAM" if not service.program else "UNKNOWN")
    )
    return {
        **service.to_json(),
        "state": state,
        "description": (info or {}).get("description", ""),
        "status": read_line(STATUS_DIR / service.name),
        "controllable": bool(service.program) and service.program not in PROTECTED and service.enabled,
        "actions": panels.allowed_actions(state, bool(service.program) and service.program not in PROTECTED),
        "has_log": log_file(info) is not None,
        # Only links to ports that ask for the token carry it: elsewhere it would reach the service.
        "protected": auth.protects(service.external_port),
    }


def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def list_services(request: Request) -> Response:
    loaded = load_services(environ=os.environ)
    states = supervisor.states_or_empty()
    token = read_line(TOKEN_FILE) or ""
    auth, _ = auth_from_env(os.environ, token)
    rows = [service_row(s, states.get(s.program) if s.program else None, auth) for s in loaded.services]
    portal = loaded.by_name().get("portal")
    proxy = states.get("proxy")
    return JSONResponse(
        {
            "services": rows,
            "proxy": {"state": proxy["statename"] if proxy else "UNKNOWN"},
            # The page may carry the token in its links only where the portal itself asks for it.
            "token": token if portal is not None and auth.protects(portal.external_port) else None,
            "problems": list(loaded.problems),
            "supervisor": bool(states),
        }
    )


def find(name: str) -> Service | None:
    return load_services(environ=os.environ).by_name().get(name)


def control(request: Request) -> Response:
    name, action = request.path_params["name"], request.path_params["action"]
    service = find(name)
    if service is None or not service.program:
        return JSONResponse({"error": f"no service {name!r} with a Supervisor program"}, status_code=404)
    if action not in ACTIONS:
        return JSONResponse({"error": f"unknown action {action!r}; use one of {sorted(ACTIONS)}"}, status_code=400)
    if service.program in PROTECTED:
        return JSONResponse({"error": f"{name} cannot be stopped from the portal"}, status_code=403)
    api = supervisor.connect().supervisor
    try:
        info = api.getProcessInfo(service.program)
        running = info["statename"] in {"RUNNING", "STARTING", "BACKOFF"}
        if action in {"stop", "restart"} and running:
            api.stopProcess(service.program, True)
        if action in {"start", "restart"}:
            api.startProcess(service.program, False)
    except xmlrpc.client.Fault as fault:
        return JSONResponse({"error": fault.faultString}, status_code=409)
    return JSONResponse({"service": name, "action": action, "state": api.getProcessInfo(service.program)["statename"]})


def service_log(request: Request) -> Response:
    service = find(request.path_params["name"])
    if service is None or not service.program:
        return JSONResponse({"error": "no such service"}, status_code=404)
    path = log_file(supervisor.states_or_empty().get(service.program))
    if path is None:
        return JSONResponse({"text": "", "note": "this program logs to the container's output only (docker logs)"})
    return JSONResponse({"text": api.masked(logs.tail(path))})


def boot_steps() -> list[dict[str, Any]]:
    steps = []
    for line in (read_line(BOOT_DIR / "steps") or "").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit():
            seconds = int(parts[2]) if parts[2].isdigit() else None
            steps.append({"step": parts[0], "exit_status": int(parts[1]), "seconds": seconds, "ok": parts[1] == "0"})
    return steps


def boot(request: Request) -> Response:
    log_dir = logs.log_dir()
    return JSONResponse(
        {
            "steps": boot_steps(),
            "packages": read_line(BOOT_DIR / "packages"),
            "provisioning": read_line(BOOT_DIR / "provisioning"),
            "boot_log": api.masked(logs.tail(log_dir / "boot.log", 16 * 1024)),
            "provisioning_log": api.masked(logs.tail(log_dir / "provisioning.log", 16 * 1024)),
        }
    )


def page(request: Request) -> Response:
    return FileResponse(PAGE, headers={"Cache-Control": "no-store"})


app = Starlette(
    routes=[
        Route("/", page),
        Route("/api/health", health),
        Route("/api/services", list_services),
        Route("/api/services/{name}/log", service_log),
        Route("/api/services/{name}/{action}", control, methods=["POST"]),
        Route("/api/boot", boot),
        *api.ROUTES,
    ]
)
