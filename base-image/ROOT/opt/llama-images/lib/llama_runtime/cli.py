"""Commands the boot sequence, Supervisor and the HEALTHCHECK run (I/O edge of this package)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

# Heavier modules (the health check's XML-RPC, the log follower, the CUDA decision) are imported
# by the commands that use them: boot and Supervisor run several commands before the services
# answer, and every import is on that path (docs/benchmarks.md, boot to healthy).
from . import access, certificate, credentials, environment, paths, proxy
from .files import write_atomically, write_private
from .services import Service, env_flag, load_services, proxy_off_reason, serverless_mode

FAILURE_LIMIT_VARIABLE = "AUTH_FAILURE_LIMIT"
SESSION_BIND_VARIABLE = "SESSION_BIND"
# render-proxy's exit status when the proxy stays off (serverless mode): proxy.sh then exits 0.
STAYS_OFF = 3


def log(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", flush=True)


def failure_limit(env: Mapping[str, str]) -> tuple[int, list[str]]:
    value = env.get(FAILURE_LIMIT_VARIABLE, "").strip()
    if not value:
        return access.DEFAULT_FAILURE_LIMIT, []
    if value.isdigit():
        return int(value), []
    problem = f"{FAILURE_LIMIT_VARIABLE}={value!r} is not a number; using {access.DEFAULT_FAILURE_LIMIT}"
    return access.DEFAULT_FAILURE_LIMIT, [problem]


def session_binding(env: Mapping[str, str]) -> tuple[access.Binding, list[str]]:
    binding, problem = access.parse_binding(env.get(SESSION_BIND_VARIABLE, ""))
    return binding, [problem] if problem else []


def service_tokens(services: tuple[Service, ...]) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """(service, its own token) for each published service that checks one (token_scheme)."""
    found: list[tuple[str, str]] = []
    problems = []
    for service in services:
        if service.published and service.token_scheme:
            try:
                found.append((service.name, credentials.service_token(service.name)))
            except OSError as exc:
                problems.append(f"{service.name}: its own token could not be written ({exc.strerror or exc})")
    return tuple(found), problems


def render_proxy(output: Path, settings_output: Path, retry: bool = False) -> int:
    """Caddy's config and the login verifier's settings, from the declaration, the environment
    and the settings files. Both are written whole or not at all: when they cannot be written
    (a full /run), the last ones stay in place (proxy.sh serves with them and retries).
    STAYS_OFF, after saying why, when serverless mode stops the proxy."""
    from . import program

    if not retry and not program.decide("proxy"):
        return STAYS_OFF
    files = environment.read(os.environ)
    tokens, token_problems = credentials.effective_tokens(files)
    loaded = load_services(environ=os.environ)
    secret = credentials.session_secret()
    cookie = access.cookie_name(secret)
    auth, problems = proxy.auth_from_env(os.environ, list(dict.fromkeys(tokens.values())), cookie)
    own_tokens, own_token_problems = service_tokens(loaded.services)
    auth = replace(auth, service_tokens=own_tokens)
    limit, limit_problems = failure_limit(os.environ)
    binding, binding_problems = session_binding(os.environ)
    enable_https = env_flag(os.environ, "ENABLE_HTTPS", default=False)
    tls = certificate.ensure() if enable_https else None
    if not retry:
        for problem in loaded.problems:
            log("services", f"ERROR: {problem}")
        for note in loaded.notes:
            log("services", note)
        for problem in [*problems, *token_problems, *limit_problems, *binding_problems, *own_token_problems]:
            log("proxy", f"ERROR: {problem}")
        if not auth.enabled:
            log("proxy", "WARNING: ENABLE_AUTH=false: every port is open to anyone who can reach it")
        for service in loaded.services:
            if auth.enabled and service.published and not auth.protects(service.external_port):
                log("proxy", f"WARNING: AUTH_EXCLUDE opens port {service.external_port} ({service.name}) to anyone "
                    "who can reach it")  # fmt: skip
        if serverless_mode(os.environ).serverless:
            log(
                "proxy",
                "WARNING: serverless mode, and SERVERLESS_KEEP keeps the proxy: its ports reach the "
                "services with the token, beside the worker's signed requests",
            )
        credentials.warn_weak(tokens)
        if enable_https and tls is None:
            log("proxy", "ERROR: no certificate: serving plain HTTP")
    verifier_settings = {
        "tokens": list(auth.tokens),
        "username": auth.username,
        "cookie": cookie,
        "key": access.session_key(secret, auth.username, auth.tokens).hex(),
        "failure_limit": limit,
        "bind": [binding.ipv4, binding.ipv6],
    }
    config = proxy.caddy_config(loaded.services, auth, tls)
    try:
        write_together({settings_output: json.dumps(verifier_settings), output: json.dumps(config, indent=1)})
    except OSError as exc:
        log("proxy", f"ERROR: the proxy config could not be written ({exc.strerror or exc}); the last one stays")
        return 1
    credentials.publish_token(next(iter(tokens.values()), ""))
    log_routes(loaded.services, auth, "https" if tls else "http")
    write_reference_files(loaded.services, auth, tls is not None, output, quiet=retry)
    return 0


def write_reference_files(
    services: tuple[Service, ...], auth: proxy.Auth, https: bool, config: Path, quiet: bool = False
) -> None:
    """/etc/portal.yaml and /etc/Caddyfile, which the reference image's tools read (readable by
    every user, as there); a read-only /etc keeps them out, with one log line."""
    from . import reference_files
    from .files import write_atomically

    protected = {s.external_port: auth.protects(s.external_port) for s in services}
    texts = {
        paths.PORTAL_YAML: reference_files.portal_yaml(reference_files.applications(services)),
        paths.CADDYFILE: reference_files.caddyfile(services, protected, https, str(config)),
    }
    for path, text in texts.items():
        try:
            write_atomically(path, text)
            path.chmod(0o644)
        except OSError as exc:
            if not quiet:
                log("proxy", f"{path} not written ({exc.strerror or exc}); the reference image's tools read it")


def write_together(texts: dict[Path, str]) -> None:
    """Every file written, root-only, or none changed: each is staged beside its place first."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in texts.items():
            staging = path.with_name(f".{path.name}.new")
            write_private(staging, text)
            staged.append((staging, path))
    except OSError:
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
        raise
    for staging, path in staged:
        staging.replace(path)


def log_routes(services: tuple[Service, ...], auth: proxy.Auth, scheme: str) -> None:
    for service in services:
        if not service.enabled:
            log("proxy", f"{service.name}: off ({service.off_reason})")
        elif service.link_only:
            log("proxy", f"{service.label}: a portal link to port {service.external_port}{service.path} (not proxied)")
        else:
            lock = "token" if auth.protects(service.external_port) else "OPEN, no auth"
            log(
                "proxy",
                f"{scheme} :{service.external_port} -> {service.host}:{service.internal_port} {service.label} ({lock})",
            )


def run_program(service: str | None, command: list[str]) -> int:
    """A Supervisor program's start: the settings files applied (and the token variables never
    passed on), then `command` in place of this process; when `service` is off, exit 0."""
    from . import program

    if service is not None:
        if not program.start(service):
            return 0
    else:
        environment.apply_to_process(Path(command[0]).name if command else "run")
    if not command:
        print("usage: llama-runtime run [--service NAME] -- COMMAND...", file=sys.stderr)
        return 2
    os.environ["LLAMA_IMAGES_SETTINGS_READ"] = "1"
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


def run_healthcheck() -> int:
    from . import health, supervisor

    loaded = load_services(environ=os.environ)
    try:
        programs = supervisor.states()
    except OSError as exc:
        print(f"unhealthy: supervisord does not answer ({exc})")
        return 1
    found = health.problems(loaded.services, programs, proxy_expected=proxy_off_reason(os.environ) is None)
    for problem in found:
        print(f"unhealthy: {problem}")
    if not found:
        print("healthy")
    return 1 if found else 0


def wait_essential(timeout: float) -> int:
    """Wait until the essential services answer or stop trying, `timeout` seconds at most
    (JupyterLab's start, jupyter.sh). Always exits 0."""
    from .health import wait_for_essential

    wait_for_essential(timeout)
    return 0


def print_services(field: str | None) -> int:
    loaded = load_services(environ=os.environ)
    if field:
        # "jupyter.internal_port" -> that value, for shell scripts
        name, _, key = field.partition(".")
        service = loaded.by_name().get(name)
        if service is None or key not in service.to_json():
            print(f"no service field {field!r}", file=sys.stderr)
            return 2
        value = service.to_json()[key]
        print(json.dumps(value) if isinstance(value, bool) else value)  # true/false for shell tests
        return 0
    print(json.dumps({"services": [s.to_json() for s in loaded.services], "problems": list(loaded.problems)}, indent=1))
    return 0


def cuda_compat() -> int:
    """One [cuda-compat] log line with the decision (probed with a real cuInit); prints the
    library directory to put first on LD_LIBRARY_PATH, or nothing."""
    from .compat import decide

    decided = decide(os.environ, disabled=env_flag(os.environ, "DISABLE_FORWARD_COMPAT", default=False))
    print(f"[cuda-compat] {decided.line}", file=sys.stderr, flush=True)
    if decided.library_dir is not None:
        print(decided.library_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llama_runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup-access", help="at boot: keep the token(s) and the session secret")
    render = commands.add_parser("render-proxy", help="write Caddy's config from the service declaration")
    render.add_argument("--output", type=Path, default=paths.CADDY_CONFIG_FILE)
    render.add_argument("--settings-output", type=Path, default=paths.VERIFIER_SETTINGS_FILE)
    render.add_argument("--retry", action="store_true", help="a retry after a failed render: only the outcome")
    commands.add_parser("auth-verifier", help="serve the proxy's login checks on its unix socket")
    own_token = commands.add_parser("service-token", help="make a service's own token (once a boot); print its file")
    own_token.add_argument("service", help="a service declaring token_scheme, e.g. jupyter")
    commands.add_parser("make-certificate", help="make /etc/instance.crt and .key when there is no usable pair")
    commands.add_parser("healthcheck", help="exit 1 when the proxy or an essential service is down")
    services = commands.add_parser("services", help="print the loaded service declaration as JSON")
    services.add_argument("--field", help="print one value, e.g. llama.internal_port")
    commands.add_parser("follow-logs", help="copy the services' log files to stdout")
    wait = commands.add_parser("wait-essential", help="wait until the essential services answer (or stop trying)")
    wait.add_argument("--timeout", type=float, default=10.0, help="seconds at most (default 10)")
    commands.add_parser("cuda-compat", help="decide whether to use CUDA forward-compat libraries")
    commands.add_parser(
        "environment-file", help="at boot: PATH in /etc/environment, and the thread caps a low pids budget needs"
    )
    has = commands.add_parser("portal-has", help="exit 0 when a PORTAL_CONFIG label in effect contains TERM")
    has.add_argument("term")
    run = commands.add_parser("run", help="run a program with the settings files applied")
    run.add_argument("--service", help="exit 0 (saying why) when this service is off")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    container_env = dict(os.environ)  # before the settings files: what `docker run` set
    if args.command not in {"setup-access", "environment-file"}:
        # What a user wrote to /etc/environment or ${WORKSPACE}/.env applies to every command
        # (read as data; the token variables are never put into this environment).
        environment.apply(os.environ, environment.read(os.environ))
    commands_run: dict[str, Callable[[], int]] = {
        "setup-access": credentials.store_at_boot,
        "render-proxy": lambda: render_proxy(args.output, args.settings_output, args.retry),
        "auth-verifier": auth_verifier,
        "service-token": lambda: service_token_file(args.service),
        "make-certificate": lambda: 0 if certificate.ensure(quiet=True) else 1,
        "healthcheck": run_healthcheck,
        "services": lambda: print_services(args.field),
        "wait-essential": lambda: wait_essential(args.timeout),
        "follow-logs": follow_logs,
        "cuda-compat": cuda_compat,
        "environment-file": lambda: environment_file(container_env),
        "portal-has": lambda: portal_has(args.term),
        "run": lambda: run_program(args.service, args.program[1:] if args.program[:1] == ["--"] else args.program),
    }
    return commands_run[args.command]()


def service_token_file(name: str) -> int:
    """For a start script: the file holding the service's own token (never the token itself)."""
    service = load_services(environ=os.environ).by_name().get(name)
    if service is None or not service.token_scheme:
        print(f"no service {name!r} declares token_scheme", file=sys.stderr)
        return 2
    credentials.service_token(name)
    print(paths.service_token_file(name))
    return 0


def auth_verifier() -> int:
    from . import program, verifier

    if not program.start("auth"):  # off with the proxy (serverless mode)
        return 0
    return verifier.serve()


def follow_logs() -> int:
    from . import logs
    from .health import API_FIRST_SECONDS, wait_for_essential

    # Like the portal (which waits itself), it lets the API start first. Nothing is lost
    # meanwhile: the copy starts where each log stood when boot began.
    wait_for_essential(API_FIRST_SECONDS, exclude="portal")
    logs.follow()
    return 0


def environment_file(env: Mapping[str, str], system_file: Path = paths.SYSTEM_ENVIRONMENT_FILE) -> int:
    """At boot, /etc/environment as the reference image's tools expect it: a PATH line (the
    container's, when the file has none), and the thread caps' managed block where the pids
    budget is too low for pools sized to the visible CPUs (removed again on a healthy host)."""
    from . import cgroup, threads

    try:
        text = system_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        log("environment", f"{system_file} not readable ({exc.strerror}); left as it is")
        return 0
    values, _ = environment.parse(threads.strip_block(text), str(system_file))
    updated = text
    if "PATH" not in values and env.get("PATH"):
        updated = updated + ("" if not updated or updated.endswith("\n") else "\n")
        updated += f'# The container\'s PATH (the reference image keeps it here).\nPATH="{env["PATH"]}"\n'
    budget = cgroup.read_budget()
    cap = threads.thread_cap(budget.pids_max, budget.visible, budget.quota_cores, threads.ceiling({**values, **env}))
    workspace = values.get("WORKSPACE") or env.get("WORKSPACE") or environment.WORKSPACE_DEFAULT
    try:
        dotenv, _ = environment.parse(Path(workspace, ".env").read_text(encoding="utf-8"), ".env")
    except OSError:
        dotenv = {}
    updated = threads.rewrite(updated, cap, set(env) | set(dotenv))
    quota = f"{budget.quota:g}" if budget.quota is not None else "none"
    if cap is not None:
        log(
            "thread-limits",
            f"low pids budget (pids.max={budget.pids_max}, CPUs visible={budget.visible}, quota={quota}): "
            f"thread pools capped to {cap} in {system_file} (values you set are kept)",
        )
    elif threads.BEGIN_MARK in text:
        log("thread-limits", f"pids budget healthy: the thread caps are removed from {system_file}")
    if updated == text:
        return 0
    try:
        write_atomically(system_file, updated)
        system_file.chmod(0o644)
    except OSError as exc:
        log("environment", f"{system_file} not written ({exc.strerror or exc}); PATH and thread caps not recorded")
    return 0


def portal_has(term: str) -> int:
    """For a start script: 0 when a service in effect (PORTAL_CONFIG, the declaration) has a
    label containing `term` (any case), like the reference's exit_portal.sh but in labels only."""
    loaded = load_services(environ=os.environ)
    wanted = term.strip().lower()
    return 0 if wanted and any(s.enabled and wanted in s.label.lower() for s in loaded.services) else 1
