"""The access token(s) and the login sessions' secret: stored at boot, root-only, and read back by
the proxy's render and the portal (which masks them). Never printed, never in an environment a
service inherits.

Stdlib only: this runs with the image's own python3 (>= 3.11) and the portal's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from . import access, environment, paths, proxy
from .files import write_private

TOKEN_VARIABLES = environment.TOKEN_VARIABLES
GENERATED = "generated"


def log(message: str) -> None:
    print(f"[auth] {message}", flush=True)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def generated_token() -> str:
    """The token generated on an earlier boot (kept root-only across restarts), else a new one
    (192 bits)."""
    stored = paths.GENERATED_TOKEN_FILE
    try:
        token = stored.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if token:
        log(f"token generated on an earlier boot ({stored})")
        return token
    token = secrets.token_urlsafe(24)
    try:
        write_private(stored, token)
        log(f"generated a token, kept in {stored}")
    except OSError as exc:
        log(f"generated a token for this boot only ({stored} not writable: {exc.strerror})")
    return token


def session_secret() -> bytes:
    """The instance's secret that signs login sessions: made once, root-only, kept across
    restarts (in /run for one boot where /var/lib is read-only). A new one ends every session."""
    places = (paths.SESSION_SECRET_FILE, paths.RUN_SESSION_SECRET_FILE)
    for path in places:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if len(value) >= 32:  # written here as hex; an owner's own value is taken as it is
            try:
                return bytes.fromhex(value)
            except ValueError:
                return value.encode()
    value = secrets.token_hex(32)
    for path in places:
        try:
            write_private(path, value)
            break
        except OSError:
            continue
    return bytes.fromhex(value)


def service_token(service: str) -> str:
    """The token of a service that checks one of its own (JupyterLab), made on first use of this
    boot, root-only (paths.service_token_file). The proxy's render and the service's start script
    may ask at once: the first file linked into place wins, both read that one."""
    path = paths.service_token_file(service)
    try:
        existing = path.read_text(encoding="utf-8")
    except OSError:
        existing = ""
    if existing:
        return existing
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    write_private(staging, secrets.token_urlsafe(32))  # no newline: Jupyter reads the file as it is
    try:
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8")


def store_at_boot() -> int:
    """At boot, before Supervisor: keep what OPEN_BUTTON_TOKEN and WEB_PASSWORD hold (either, or
    both: each is then valid) root-only, or a generated token, and the session secret. Boot then
    drops the variables from every service's environment. Never prints a token."""
    given: dict[str, str] = {}
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "")
        if not value:
            continue
        problem = proxy.token_problem(value)
        if problem is None:
            given[name] = value
            log(f"token from {name}")
        else:
            log(f"ERROR: {name} {problem}; set it to printable characters. It is not used.")
    if not given:
        given[GENERATED] = generated_token()
    write_private(paths.CREDENTIALS_FILE, json.dumps(given))
    write_private(paths.TOKEN_FILE, next(iter(given.values())))
    log(f"read it with: docker exec <container> cat {paths.TOKEN_FILE}")
    session_secret()
    return 0


def effective_tokens(files: environment.Settings) -> tuple[dict[str, str], list[str]]:
    """Variable -> token: what /etc/environment or ${WORKSPACE}/.env set now, else what `docker
    run` gave, else the generated token. Problems for values that cannot be used."""
    stored = read_json(paths.CREDENTIALS_FILE)
    problems = []
    tokens: dict[str, str] = {}
    for name in TOKEN_VARIABLES:
        value = files.credentials.get(name, "")
        if value:
            problem = proxy.token_problem(value)
            if problem is None:
                tokens[name] = value
                continue
            problems.append(f"{name} in {' or '.join(map(str, files.files))} {problem}; it is not used")
        if isinstance(stored.get(name), str):
            tokens[name] = stored[name]
    if not tokens and isinstance(stored.get(GENERATED), str):
        tokens[GENERATED] = stored[GENERATED]
    return tokens, problems


def publish_token(token: str) -> None:
    """The token in effect, where the owner reads it (left alone when unchanged or unwritable)."""
    path = paths.TOKEN_FILE
    with contextlib.suppress(OSError):
        if token and (not path.is_file() or path.read_text(encoding="utf-8") != token):
            write_private(path, token)


def warn_weak(tokens: dict[str, str]) -> None:
    for name, token in tokens.items():
        weakness = access.token_weakness(token) if name != GENERATED else None
        if weakness:
            banner = "WARNING: " + "=" * 70
            log(banner)
            log(f"WARNING: the token in {name} is weak: {weakness}.")
            log("WARNING: anyone who can reach a port can try to guess it (failed attempts are limited")
            log("WARNING: and logged). Use 16+ random characters, e.g. `openssl rand -hex 16`.")
            log(banner)
