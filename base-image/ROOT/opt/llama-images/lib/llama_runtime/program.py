"""What every Supervisor program does as it starts: read the settings files (/etc/environment,
${WORKSPACE}/.env) into its environment, and stay off when the declaration (PORTAL_CONFIG, an
ENABLE_* switch, serverless mode) says its service does not run. The token proxy's programs
(`proxy`, `auth`) are no declared service: serverless mode decides for them by the name "proxy".

Stdlib only: this runs with the image's own python3 (>= 3.11) and the portal's environment.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import time
from pathlib import Path

from . import environment, paths
from .services import (
    PROXY,
    PROXY_PROGRAMS,
    SERVERLESS_KEEP_VARIABLE,
    kept_in_serverless_mode,
    load_services,
    proxy_off_reason,
    serverless_mode,
)


def start(name: str) -> bool:
    """At the start of service `name`'s Supervisor program (or one of the proxy's): apply the
    settings files; when it is off, say why and outlive the program's startsecs (so Supervisor
    records a clean exit, not a failed start) and return False. A service that serverless mode
    would stop but SERVERLESS_KEEP keeps says so too."""
    environment.apply_to_process(name)
    return decide(name)


def decide(name: str) -> bool:
    """`start` without reading the settings files (the caller has applied them)."""
    if name in PROXY_PROGRAMS:
        reason = proxy_off_reason(os.environ)
        program, declared = name, "off"
        kept_name = PROXY
    else:
        service = load_services(environ=os.environ).by_name().get(name)
        if service is None:
            return True
        reason = None if service.enabled else service.off_reason or "switched off"
        program, declared = service.program or name, service.serverless
        kept_name = name
    if reason is None:
        if kept_in_serverless_mode(serverless_mode(os.environ), kept_name, declared):
            print(f"[{name}] serverless mode: kept running ({SERVERLESS_KEEP_VARIABLE} names {kept_name})", flush=True)
        return True
    print(f"[{name}] not started: {reason}", flush=True)
    wait = startsecs(program)
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
