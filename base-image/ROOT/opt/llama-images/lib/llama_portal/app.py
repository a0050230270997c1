"""Portal routes. Everything the page shows comes from the JSON API below it.

Every answer carries security headers (no framing by another origin, no sniffing, no referrer),
and every request that may change something must come from the portal's own origin (the
proxy checks this too; the portal repeats it for ports the proxy leaves open). No answer holds
the access token: links need none, the login session reaches every port of the host. A service
with a token of its own (JupyterLab) on a port the proxy leaves open gets it in its link
(`link_query`), shown only by a portal behind the login."""

from __future__ import annotations

import contextlib
import json
import os
import xmlrpc.client
from pathlib import Path
from typing import Any

from llama_runtime import environment, logs, paths, supervisor
from llama_runtime.access import origin_problem
from llama_runtime.proxy import AUTH_HEADER, CROSS_SITE_MESSAGE, LOGOUT_PATH, Auth, auth_from_env
from llama_runtime.services import Service, load_services
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, panels, reference_routes

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


def current_env() -> dict[str, str]:
    """The environment as a program started now would see it (the settings files applied)."""
    env = dict(os.environ)
    environment.apply(env, environment.read(env))
    return env


def own_token(service: Service, services: tuple[Service, ...]) -> str | None:
    """The token of the service on `service`'s port that checks one of its own (JupyterLab; a
    PORTAL_CONFIG link to another of its paths shares it), or None."""
    owner = next((s for s in services if s.token_scheme and s.external_port == service.external_port), None)
    if owner is None:
        return None
    with contextlib.suppress(OSError):
        return paths.service_token_file(owner.name).read_text(encoding="utf-8") or None
    return None


def behind_login(portal: Service | None, auth: Auth) -> bool:
    """Whether the proxy checks the login on the portal's own port (not AUTH_EXCLUDEd, auth on)."""
    return portal is not None and auth.protects(portal.external_port)


def link_query(service: Service, services: tuple[Service, ...], auth: Auth, portal: Service | None) -> str:
    portal_protected = behind_login(portal, auth)
    protected = auth.protects(service.external_port)
    token = None if protected or not portal_protected else own_token(service, services)
    return panels.link_query(protected=protected, portal_protected=portal_protected, own_token=token)


def service_status(service: Service) -> str | None:
    """What a service says of itself: its part's summary, else its status file's line."""
    return api.PARTS.summary(service.name) or read_line(paths.status_file(service.name))


def service_row(service: Service, info: dict[str, Any] | None, auth: Auth, query: str = "") -> dict[str, Any]:
    if not service.enabled:
        state = "DISABLED"
    elif service.link_only:
        state = "LINK"
    else:
        state = (info or {}).get("statename", "NO PROGRAM" if not service.program else "UNKNOWN")
    return {
        **service.to_json(),
        "state": state,
        "description": (info or {}).get("description", ""),
        # Why it is off (PORTAL_CONFIG, an ENABLE_* switch), else what the service says.
        "status": f"off: {service.off_reason}" if not service.enabled else service_status(service),
        "controllable": bool(service.program) and service.program not in PROTECTED and service.enabled,
        "actions": panels.allowed_actions(state, bool(service.program) and service.program not in PROTECTED),
        "has_log": log_file(info) is not None,
        # Whether the proxy asks for the token there (a service that is not proxied answers itself).
        "protected": service.proxied and auth.protects(service.external_port),
        "link_query": query,
    }


def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def list_services(request: Request) -> Response:
    env = current_env()
    loaded = load_services(environ=env)
    states = supervisor.states_or_empty()
    auth, _ = auth_from_env(env, (), "")
    portal = loaded.by_name().get("portal")
    rows = [
        service_row(s, states.get(s.program) if s.program else None, auth,
                    link_query(s, loaded.services, auth, portal))
        for s in loaded.services
    ]  # fmt: skip
    proxy = states.get("proxy")
    return JSONResponse(
        {
            "services": rows,
            "proxy": {"state": proxy["statename"] if proxy else "UNKNOWN"},
            # A declared part that did not load is one too: the page says so, the rest still works.
            "problems": [*loaded.problems, *api.PARTS.problems],
            "supervisor": bool(states),
            # The logout form is offered where there is a login: the portal behind the proxy's check.
            "logout": LOGOUT_PATH if behind_login(portal, auth) else None,
        }
    )


# Said instead of the lock-outs when the portal's own port is open to anyone.
LOCKOUTS_HIDDEN = "not shown: the portal's port is open to anyone (AUTH_EXCLUDE or ENABLE_AUTH=false)"


def lockouts(request: Request) -> Response:
    """Recent lock-outs (too many failed attempts from an address), newest first, as the login
    verifier recorded them (a root-only file), for the owner behind the login only: on a portal
    left open they would show anyone the addresses that tried the instance's ports."""
    env = current_env()
    auth, _ = auth_from_env(env, (), "")
    if not behind_login(load_services(environ=env).by_name().get("portal"), auth):
        return JSONResponse({"lockouts": [], "hidden": LOCKOUTS_HIDDEN})
    try:
        data = json.loads(paths.LOCKOUTS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    found = data.get("lockouts") if isinstance(data, dict) else None
    return JSONResponse({"lockouts": found if isinstance(found, list) else []})


def find(name: str) -> Service | None:
    return load_services(environ=current_env()).by_name().get(name)


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
    for line in (read_line(paths.BOOT_STEPS_FILE) or "").splitlines():
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
            "packages": read_line(paths.PACKAGES_STATUS_FILE),
            "provisioning": read_line(paths.PROVISIONING_STATUS_FILE),
            "boot_log": api.masked(logs.tail(log_dir / paths.BOOT_LOG, 16 * 1024)),
            "provisioning_log": api.masked(logs.tail(log_dir / paths.PROVISIONING_LOG, 16 * 1024)),
        }
    )


def page(request: Request) -> Response:
    """The page, with a script tag for each declared part's panel."""
    text = PAGE.read_text(encoding="utf-8").replace("<!-- parts -->", api.part_scripts())
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


# frame-ancestors: another port of the same host must not frame the page and click its buttons.
# Scripts only from the portal's own files: the page has no inline script or handler.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
# Let in by a credential a browser does not send on its own: no origin proof needed.
EXPLICIT_CREDENTIALS = {"bearer", "token"}


class Security:
    """Security headers on every answer; a request that may change something (any method but
    GET, HEAD, OPTIONS) from another origin (Sec-Fetch-Site, Origin) is refused with 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get(AUTH_HEADER.lower()) not in EXPLICIT_CREDENTIALS:
            scheme = headers.get("x-forwarded-proto", scope.get("scheme", "http"))
            problem = origin_problem(scope["method"], headers, scheme, headers.get("host", ""))
            if problem:
                refused = JSONResponse({"error": CROSS_SITE_MESSAGE}, status_code=403)
                refused.headers.update({k.decode(): v.decode() for k, v in SECURITY_HEADERS})
                await refused(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


app = Starlette(
    middleware=[Middleware(Security)],
    routes=[
        Route("/", page),
        Route("/api/health", health),
        Route("/api/services", list_services),
        Route("/api/services/{name}/log", service_log),
        Route("/api/services/{name}/{action}", control, methods=["POST"]),
        Route("/api/boot", boot),
        Route("/api/lockouts", lockouts),
        *api.ROUTES,
        *reference_routes.ROUTES,  # the reference portal's, for tools written against it
    ],
)
