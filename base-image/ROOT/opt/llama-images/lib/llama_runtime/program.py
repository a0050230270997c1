"""What every Supervisor program does as it starts: read the settings files (/etc/environment,
${WORKSPACE}/.env) into its environment, and stay off when the declaration (PORTAL_CONFIG, an
ENABLE_* switch) says its service does not run.

Stdlib only: this runs with the image's own python3 (>= 3.11) and the portal's environment.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import time
from pathlib import Path

from . import environment, paths
from .services import load_services


def start(name: str) -> bool:
    """At the start of service `name`'s Supervisor program: apply the settings files; when the
    service is off, say why and outlive the program's startsecs (so Supervisor records a clean
    exit, not a failed start) and return False."""
    environment.apply_to_process(name)
    service = load_services(environ=os.environ).by_name().get(name)
    if service is None or service.enabled:
        return True
    print(f"[{name}] not started: {service.off_reason or 'switched off'}", flush=True)
    wait = startsecs(service.program or name)
    if wait:
        time.sleep(wait + 1)
    return False


def startsecs(program: str, conf_dir: Path = paths.SUPERVISOR_PROGRAMS_DIR) -> float:
    """Supervisor's `startsecs` for `program` (0 when not found)."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), strict=False)
    with contextlib.suppress(OSError, configparser.Error):
        parser.read(sorted(conf_dir.glob("*.conf")))
    with contextlib.suppress(configparser.Error, ValueError):
        return float(parser.get(f"program:{program}", "startsecs"))
    return 0.0
