"""Portal routes. Everything the page shows comes from the JSON API below it."""

from __future__ import annotations

import os
import xmlrpc.client
from pathlib import Path
from typing import Any

from llama_runtime import logs, supervisor
from llama_runtime.proxy import parse_ports
from llama_runtime.services import STATUS_DIR, Service, load_services
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

RUN_DIR = Path("/run/llama-images")
TOKEN_FILE = RUN_DIR / "secrets" / "token"
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


def programs() -> dict[str, dict[str, Any]]:
    try:
        return supervisor.states()
    except (OSError, xmlrpc.client.Error):
        return {}


def service_row(service: Service, info: dict[str, Any] | None) -> dict[str, Any]:
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
        "has_log": bool(info)
        and str((info or {}).get("stdout_logfile", "")).startswith("/")
        and not str((info or {}).get("stdout_logfile", "")).startswith("/dev/"),
    }


def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def portal_is_protected(portal: Service | None) -> bool:
    """The page may carry the token in its links only where the portal itself needs it."""
    if os.environ.get("ENABLE_AUTH", "true").strip().lower() in {"false", "0", "no", "off"}:
        return False
    excluded, _ = parse_ports(os.environ.get("AUTH_EXCLUDE", ""))
    return portal is not None and portal.external_port not in excluded


def list_services(request: Request) -> Response:
    loaded = load_services(environ=os.environ)
    states = programs()
    rows = [service_row(s, states.get(s.program) if s.program else None) for s in loaded.services]
    proxy = states.get("proxy")
    return JSONResponse(
        {
            "services": rows,
            "proxy": {"state": proxy["statename"] if proxy else "UNKNOWN"},
            "token": read_line(TOKEN_FILE) if portal_is_protected(loaded.by_name().get("portal")) else None,
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
    info = programs().get(service.program, {})
    path = str(info.get("stdout_logfile", ""))
    if not path.startswith("/") or path.startswith("/dev/"):
        return JSONResponse({"text": "", "note": "this program logs to the container's output only (docker logs)"})
    return JSONResponse({"text": logs.tail(Path(path))})


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
            "boot_log": logs.tail(log_dir / "boot.log", 16 * 1024),
            "provisioning_log": logs.tail(log_dir / "provisioning.log", 16 * 1024),
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
    ]
)
