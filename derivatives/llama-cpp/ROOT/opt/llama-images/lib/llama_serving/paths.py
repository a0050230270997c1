"""Where the llama launcher keeps its files: its part of the images' paths (the runtime's are
llama_runtime/paths.py). llama.sh reads them from `paths.sh` beside this file, generated from it
(`nox -s generate`; a unit test regenerates it and compares). Stdlib only."""

from __future__ import annotations

from pathlib import Path

from llama_runtime import paths

SERVICE = "llama"
LAUNCHER_DIR = paths.service_run_dir(SERVICE)  # this boot's files of the launcher
# Written when the launcher gives up; read and removed by /opt/supervisor-scripts/llama.sh.
GAVE_UP_FILE = LAUNCHER_DIR / "gave-up"
PID_FILE = LAUNCHER_DIR / "llama-server.pid"
PRESET_FILE = LAUNCHER_DIR / "models.ini"  # router mode's models (root-only: URLs may carry credentials)
# Requests llama-server has served since it started, counted from its output (its /metrics has
# no such counter); the portal's model panel shows it.
REQUESTS_SERVED_FILE = LAUNCHER_DIR / "requests-served"
STATUS_FILE = paths.status_file(SERVICE)
# The same status as a record, {"state", "detail", "updated"}: what the serverless worker reads
# (llama_worker/launcher_status.py), so it never parses the line.
STATUS_RECORD_FILE = LAUNCHER_DIR / "status.json"
OVERRIDE_FILE = paths.RUNTIME_SERVICES_DIR / f"{SERVICE}.toml"  # the effective port, for the proxy
SUPERVISOR_PROGRAM_FILE = paths.SUPERVISOR_PROGRAMS_DIR / f"{SERVICE}.conf"
# llama-server's working directory: one users do not write. ggml's backend loader searches the
# executable's directory and then the working directory for libggml-*.so, and loads what it finds
# there: in /workspace (the users' volume) a stray or planted library would run in llama-server.
SERVER_DIRECTORY = Path("/")

# The serverless worker (Supervisor program "pyworker", llama_worker/) in front of llama-server.
WORKER_SERVICE = "pyworker"
WORKER_DIR = paths.service_run_dir(WORKER_SERVICE)  # its working directory (the library's benchmark file)
WORKER_STATUS_FILE = paths.status_file(WORKER_SERVICE)
WORKER_OVERRIDE_FILE = paths.RUNTIME_SERVICES_DIR / f"{WORKER_SERVICE}.toml"  # WORKER_PORT, for the health check

SHELL_PREFIX = "LLAMA_SERVING_"
