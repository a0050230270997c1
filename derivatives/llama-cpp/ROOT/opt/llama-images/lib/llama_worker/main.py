"""Supervisor program `pyworker` (/opt/llama-images/bin/llama-worker, serverless mode only): check
the platform's settings, say loudly what is unusual (UNSECURED, local stand-ins), make sure the
instance certificate is there for USE_SSL, then run the worker (worker.py). A setting that cannot
work ends the program before its startsecs, so Supervisor records FATAL, with every problem in
the log and in the worker's status line; never a traceback.

Stdlib until worker.py is imported (the vastai environment's python runs it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from llama_runtime import certificate
from llama_runtime import paths as runtime_paths
from llama_runtime.files import write_atomically
from llama_runtime.services import load_services
from llama_serving.config import ConfigError, split_args, take_secrets
from llama_serving.paths import SERVICE as LLAMA_SERVICE
from llama_serving.paths import WORKER_DIR, WORKER_OVERRIDE_FILE, WORKER_SERVICE, WORKER_STATUS_FILE

from .settings import Settings, SettingsError, settings_from


def log(message: str) -> None:
    print(f"[pyworker] {message}", flush=True)


def publish(line: str) -> None:
    """The worker's status line (the portal shows it; the health check reads it)."""
    with contextlib.suppress(OSError):
        write_atomically(WORKER_STATUS_FILE, line.replace("\n", " ")[:300] + "\n")


def fail(problems: list[str]) -> int:
    for problem in problems:
        log(f"ERROR: {problem}")
    log("not started: fix the settings above (docs/serverless.md); `supervisorctl start pyworker` tries again")
    publish(f"failed: {'; '.join(problems)}")
    return 2


def llama_api_key(env: Mapping[str, str]) -> str:
    """The key llama-server wants (LLAMA_API_KEY, or --api-key in LLAMA_ARGS, which wins), as the
    launcher reads it; the first of a comma-separated list."""
    try:
        _, secrets = take_secrets(split_args(env.get("LLAMA_ARGS", "")))
    except ConfigError:
        secrets = {}  # the launcher reports a bad LLAMA_ARGS; the worker then waits for nothing
    value = secrets.get("LLAMA_API_KEY") or env.get("LLAMA_API_KEY", "")
    return value.split(",")[0].strip()


def publish_port(settings: Settings, declared: int) -> None:
    """The health check dials the worker where WORKER_PORT puts it (a runtime override of the
    declaration, as the launcher's for llama-server's port)."""
    if settings.port == declared:
        WORKER_OVERRIDE_FILE.unlink(missing_ok=True)
        return
    shipped = runtime_paths.SHIPPED_SERVICES_DIR / WORKER_OVERRIDE_FILE.name
    header = f"# Written by the worker from WORKER_PORT; replaces keys of {shipped}.\n"
    ports = f"external_port = {settings.port}\ninternal_port = {settings.port}\n"
    write_atomically(WORKER_OVERRIDE_FILE, header + ports)


def certificate_problem() -> str | None:
    """USE_SSL=true: the library serves TLS with /etc/instance.crt and .key and no other pair
    (the platform's, or one made at first boot); made here if boot has not yet."""
    cert, key = runtime_paths.INSTANCE_CERT, runtime_paths.INSTANCE_KEY
    if certificate.usable(cert, key) is None:
        return None
    certificate.ensure(quiet=True)
    problem = certificate.usable(cert, key)
    if problem is None:
        return None
    return f"USE_SSL=true, but {cert} and {key}: {problem} (the worker serves TLS with that pair only)"


def warn_unsecured(settings: Settings) -> None:
    banner = "WARNING: " + "=" * 70
    log(banner)
    log("WARNING: UNSECURED=true: requests are NOT checked against the engine's signature;")
    log(f"WARNING: whoever reaches port {settings.port} reaches llama-server. For local testing only.")
    for default in settings.defaults:
        log(f"WARNING: not set, using a local stand-in: {default}")
    log(banner)


def main() -> int:
    env = os.environ
    try:
        settings = settings_from(env)
    except SettingsError as exc:
        return fail(exc.problems)
    services = load_services(environ=env).by_name()
    llama, worker_service = services.get(LLAMA_SERVICE), services.get(WORKER_SERVICE)
    if llama is None or not llama.enabled:
        why = llama.off_reason if llama is not None else "it is not declared"
        return fail([f"llama-server does not run ({why}): the worker has nothing to serve"])
    if worker_service is not None:
        with contextlib.suppress(OSError):
            publish_port(settings, worker_service.internal_port)
    if settings.use_ssl:
        problem = certificate_problem()
        if problem:
            return fail([problem])
    if settings.unsecured:
        warn_unsecured(settings)
    try:
        WORKER_DIR.mkdir(parents=True, exist_ok=True)
        os.chdir(WORKER_DIR)  # where the library keeps its benchmark's figure (.has_benchmark), this boot only
    except OSError as exc:
        return fail([f"cannot use {WORKER_DIR}: {exc.strerror}"])
    os.environ.update(settings.library_environment(env.get("MASTER_TOKEN", "")))
    try:
        from . import worker
    except ImportError as exc:
        return fail([f"Vast.ai's worker framework cannot be imported ({exc}): the image's vastai environment is broken"
                     ])  # fmt: skip
    target = worker.Llama(llama.host, llama.internal_port, llama_api_key(env))
    scheme = "https" if settings.use_ssl else "http"
    log(
        f"{scheme} on port {settings.port} (all addresses) in front of llama-server at {target.url}; "
        f"the engine is told {settings.url} and reports go to {settings.report_addr}"
    )
    publish("waiting for llama-server")
    return worker.run(settings, target, publish, secrets=(env.get("MASTER_TOKEN", ""),))
