"""Pure decisions behind the page's panels: which buttons a program's state allows, a link's
query, the port clients dial. No I/O; the routes in app.py and api.py feed them.

Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

# Supervisor states: start only a program that is not running; stop or restart one that is, or
# is trying to (BACKOFF: between failed starts).
STARTABLE = frozenset({"STOPPED", "EXITED", "FATAL"})
RUNNING_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF"})


def allowed_actions(state: str, controllable: bool) -> list[str]:
    """The buttons a program in `state` offers: start when stopped or failed, stop and restart
    when running or starting; none for a program the portal does not control."""
    if not controllable:
        return []
    if state in STARTABLE:
        return ["start"]
    if state in RUNNING_STATES:
        return ["stop", "restart"]
    return []


def link_query(*, protected: bool, portal_protected: bool, own_token: str | None) -> str:
    """What the portal's link to a service adds to its address: the service's own token (one that
    checks one, JupyterLab) when the proxy leaves its port open, so the browser must bring it, and
    the portal is itself behind the login (an open portal would show it to anyone); else nothing."""
    if protected or not portal_protected or not own_token:
        return ""
    return urlencode({"token": own_token})


def mapped_port(env: Mapping[str, str], port: int) -> int:
    """The port clients dial for the container's `port`: on Vast.ai the host maps each published
    port to another one and says which in VAST_TCP_PORT_<port>; elsewhere the port itself."""
    value = env.get(f"VAST_TCP_PORT_{port}", "").strip()
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else port


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
