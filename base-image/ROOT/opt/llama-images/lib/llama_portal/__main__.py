"""Supervisor program "portal": serve on the internal port the declaration gives, loopback only."""

import os
import sys

from llama_runtime import program
from llama_runtime.health import API_FIRST_SECONDS, wait_for_essential
from llama_runtime.services import load_services

# The settings files (/etc/environment, ${WORKSPACE}/.env) apply; PORTAL_CONFIG may leave it off.
if not program.start("portal"):
    sys.exit(0)

# The API first: the portal's own start (importing its web framework) would take the CPU from
# llama-server's; a few seconds at most, so a long model download does not keep the portal away.
wait_for_essential(API_FIRST_SECONDS, exclude="portal")

import uvicorn  # noqa: E402

from .app import app  # noqa: E402

service = load_services(environ=os.environ).by_name()["portal"]
# No access log: request lines would only repeat what the proxy already checked.
uvicorn.run(app, host="127.0.0.1", port=service.internal_port, log_level="warning", access_log=False)
