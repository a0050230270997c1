"""Supervisor program "portal": serve on the internal port the declaration gives, loopback only."""

import os

import uvicorn
from llama_runtime.services import load_services

from .app import app

service = load_services(environ=os.environ).by_name()["portal"]
# No access log: request lines would only repeat what the proxy already checked.
uvicorn.run(app, host="127.0.0.1", port=service.internal_port, log_level="warning", access_log=False)
