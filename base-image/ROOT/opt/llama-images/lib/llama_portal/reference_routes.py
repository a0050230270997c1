"""The routes of the reference portal that tools are written against: GET /get-applications and
the capability manifest (llama_portal/reference.py builds the answers). Thin."""

from __future__ import annotations

import os
from typing import Any

from llama_runtime import environment, paths, supervisor
from llama_runtime.proxy import auth_from_env
from llama_runtime.services import env_flag, load_services
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import machine, reference


def current_env() -> dict[str, str]:
    env = dict(os.environ)
    environment.apply(env, environment.read(env))
    return env


def get_applications(request: Request) -> Response:
    env = current_env()
    loaded = load_services(environ=env)
    return JSONResponse(reference.get_applications(loaded.services, env, env_flag(env, "ENABLE_HTTPS", default=False)))


def manifest() -> dict[str, Any]:
    env = current_env()
    loaded = load_services(environ=env)
    auth, _ = auth_from_env(env, (), "")
    gpus, note = machine.read_nvidia()
    status = reference.provisioning_state(
        paths.PROVISIONING_COMPLETE.exists(), paths.PROVISIONING_FAILED.exists(), paths.PROVISIONING_MARKER.exists()
    )
    return reference.capabilities(
        loaded.services,
        env,
        supervisor.states_or_empty(),
        auth,
        https=env_flag(env, "ENABLE_HTTPS", default=False),
        provisioning=status,
        gpu=", ".join(gpu.name for gpu in gpus) or note or "no GPU found",
    )


def capabilities(request: Request) -> Response:
    return JSONResponse(manifest())


def capability_services(request: Request) -> Response:
    return JSONResponse(manifest()["services"])


def capability_endpoints(request: Request) -> Response:
    return JSONResponse(manifest()["endpoints_openai"])


ROUTES = [
    Route("/get-applications", get_applications),
    Route("/capabilities", capabilities),
    Route("/capabilities/services", capability_services),
    Route("/capabilities/endpoints", capability_endpoints),
    Route("/.well-known/vast-capabilities", capabilities),
]
