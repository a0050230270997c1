"""The panels' routes: machine figures, the logs archive, the page's static files, and the parts
the images declare for their services (parts.py: their routes and panel scripts). Thin: the
figures come from machine.py and panels.py, the parts' from their own modules."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from llama_runtime import environment, logs, paths, supervisor
from llama_runtime.credentials import effective_tokens
from llama_runtime.services import load_services
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import logs_archive, machine, parts

STATIC = Path(__file__).with_name("static")
# The page's assets, by name: nothing else under the directory is served.
ASSETS = {"portal.js": "text/javascript", "portal.css": "text/css", "favicon.svg": "image/svg+xml"}
SAMPLER = machine.Sampler()
# Every declared service's part, whatever the settings turn on or off (a part's own routes say
# when its service is off): loaded once, as the portal starts.
PARTS = parts.load(load_services(environ={}).services)


def read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def known_secrets() -> list[str]:
    """Every secret the container knows: what the log views and the archive mask."""
    files = environment.read(os.environ)
    tokens, _ = effective_tokens(files)  # every token that opens the proxy (OPEN_BUTTON_TOKEN, WEB_PASSWORD)
    env = dict(os.environ)
    environment.apply(env, files)
    own = [
        read_line(paths.service_token_file(s.name)) or "" for s in load_services(environ=env).services if s.token_scheme
    ]
    return logs_archive.secrets_in(env, [*tokens.values(), read_line(paths.TOKEN_FILE) or "", *own], PARTS.secrets())


def masked(text: str) -> str:
    """A log's text as the page may show it: secrets masked (a provisioning script may print one)."""
    return logs_archive.mask(text, known_secrets()) if text else text


def machine_figures(request: Request) -> Response:
    since = request.query_params.get("since", "0")
    try:
        after = float(since)
    except ValueError:
        return JSONResponse({"error": f"since={since!r}: give a time in seconds, as the history's t"}, status_code=400)
    return JSONResponse(SAMPLER.snapshot(after))


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


def part_asset(request: Request) -> Response:
    """A part's panel script, by its service's name: /static/parts/<service>.js."""
    name = str(request.path_params["name"])
    panels = dict(PARTS.panels())
    service = name.removesuffix(".js")
    if not name.endswith(".js") or service not in panels:
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(panels[service], media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def part_scripts() -> str:
    """The page's script tags for the parts' panels, after its own portal.js (their helpers)."""
    return "\n".join(
        f'<script src="/static/parts/{service}.js" data-service="{service}" defer></script>'
        for service, _ in PARTS.panels()
    )


def part_endpoint(route: parts.PartRoute) -> Callable[[Request], Awaitable[Response]]:
    """A part's handler as a route: the request told as a PartRequest, the handler in a worker
    thread (it may wait on its server), its answer as JSON."""

    async def endpoint(request: Request) -> Response:
        body = None
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
        asked = parts.PartRequest(
            path_params={key: str(value) for key, value in request.path_params.items()},
            query=dict(request.query_params),
            body=body,
            scheme=request.headers.get("x-forwarded-proto", request.url.scheme),
            host=request.url.hostname or "localhost",
            port=request.url.port,
        )
        answer = await run_in_threadpool(route.handler, asked)
        return JSONResponse(dict(answer.body), status_code=answer.status)

    return endpoint


ROUTES = [
    Route("/api/machine", machine_figures),
    Route("/api/logs/archive", logs_download),
    Route("/static/parts/{name:str}", part_asset),
    Route("/static/{name:str}", asset),
    *(
        Route(route.path, part_endpoint(route), methods=[route.method])
        for loaded in PARTS.parts
        for route in loaded.part.routes
    ),
]
