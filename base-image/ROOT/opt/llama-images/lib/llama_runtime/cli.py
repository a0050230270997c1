"""Commands the boot sequence, Supervisor and the HEALTHCHECK run (I/O edge of this package)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Heavier modules (the health check's XML-RPC, the log follower, the CUDA decision) are imported
# by the commands that use them: boot and Supervisor run several commands before the services
# answer, and every import is on that path (docs/benchmarks.md, boot to healthy).
from . import access, environment, proxy
from .services import env_flag, load_services

STATE_DIR = Path("/var/lib/llama-images")
RUN_DIR = Path("/run/llama-images")
SECRETS_DIR = RUN_DIR / "secrets"
TOKEN_FILE = SECRETS_DIR / "token"  # what the owner reads: the token in effect
CREDENTIALS_FILE = SECRETS_DIR / "credentials.json"  # what `docker run` gave (or the generated token)
SECRET_FILES = (STATE_DIR / "session-secret", SECRETS_DIR / "session-secret")
TOKEN_VARIABLES = environment.TOKEN_VARIABLES
GENERATED = "generated"
# The reference image's certificate and key: a pair placed there is used.
INSTANCE_CERT, INSTANCE_KEY = Path("/etc/instance.crt"), Path("/etc/instance.key")
FALLBACK_TLS_DIR = RUN_DIR / "tls"
FAILURE_LIMIT_VARIABLE = "AUTH_FAILURE_LIMIT"


def log(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", flush=True)


def write_private(path: Path, text: str) -> None:
    """Root-only file (0600), written whole; a directory it creates is root-only too (an existing
    one keeps its mode: /run/llama-images holds status files others read)."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    temporary.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def generated_token() -> str:
    """The token generated on an earlier boot (kept root-only across restarts), else a new one
    (192 bits)."""
    stored = STATE_DIR / "token"
    try:
        token = stored.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if token:
        log("auth", f"token generated on an earlier boot ({stored})")
        return token
    token = secrets.token_urlsafe(24)
    try:
        write_private(stored, token)
        log("auth", f"generated a token, kept in {stored}")
    except OSError as exc:
        log("auth", f"generated a token for this boot only ({stored} not writable: {exc.strerror})")
    return token


def session_secret() -> bytes:
    """The instance's secret that signs login sessions: made once, root-only, kept across
    restarts (in /run for one boot where /var/lib is read-only). A new one ends every session."""
    for path in SECRET_FILES:
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
    for path in SECRET_FILES:
        try:
            write_private(path, value)
            break
        except OSError:
            continue
    return bytes.fromhex(value)


def setup_access() -> int:
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
            log("auth", f"token from {name}")
        else:
            log("auth", f"ERROR: {name} {problem}; set it to printable characters. It is not used.")
    if not given:
        given[GENERATED] = generated_token()
    write_private(CREDENTIALS_FILE, json.dumps(given))
    write_private(TOKEN_FILE, next(iter(given.values())))
    log("auth", f"read it with: docker exec <container> cat {TOKEN_FILE}")
    session_secret()
    return 0


def effective_tokens(files: environment.Settings) -> tuple[dict[str, str], list[str]]:
    """Variable -> token: what /etc/environment or ${WORKSPACE}/.env set now, else what `docker
    run` gave, else the generated token. Problems for values that cannot be used."""
    stored = read_json(CREDENTIALS_FILE)
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


def warn_weak(tokens: dict[str, str]) -> None:
    for name, token in tokens.items():
        weakness = access.token_weakness(token) if name != GENERATED else None
        if weakness:
            banner = "WARNING: " + "=" * 70
            log("auth", banner)
            log("auth", f"WARNING: the token in {name} is weak: {weakness}.")
            log("auth", "WARNING: anyone who can reach a port can try to guess it (failed attempts are limited")
            log("auth", "WARNING: and logged). Use 16+ random characters, e.g. `openssl rand -hex 16`.")
            log("auth", banner)


def certificate_usable(certificate: Path, key: Path) -> str | None:
    """Why this pair cannot serve TLS, or None."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key)
    except FileNotFoundError:
        return "missing"
    except (OSError, ssl.SSLError) as exc:
        return f"not a usable certificate and key ({exc})"
    return None


def generate_certificate(certificate: Path, key: Path) -> str | None:
    """A self-signed pair (EC P-256: made in milliseconds); why not, or None."""
    try:
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "3650", "-subj", "/CN=llama-images",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:0.0.0.0",
             "-keyout", str(key), "-out", str(certificate)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        key.chmod(0o600)
        certificate.chmod(0o644)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip().splitlines()[-1:] if isinstance(exc, subprocess.CalledProcessError) else [exc]
        return f"openssl failed ({detail[0] if detail else exc})"
    return None


def ensure_certificate(quiet: bool = False) -> proxy.Tls | None:
    """TLS_CERT_FILE/TLS_KEY_FILE when given, else /etc/instance.crt and /etc/instance.key (the
    owner's pair placed there, or one generated there at first boot), else a pair generated
    for this boot in /run; None when none can be made. `quiet`: at boot, where HTTPS may be off.
    One process at a time (boot's and the proxy's render may both get here first)."""
    import fcntl

    lock = RUN_DIR / "tls.lock"
    try:
        handle = lock.open("a")
    except OSError:
        return find_or_make_certificate(quiet)
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return find_or_make_certificate(quiet)


def find_or_make_certificate(quiet: bool) -> proxy.Tls | None:
    def say(message: str) -> None:
        if not quiet:
            log("proxy", message)

    certificate, key = os.environ.get("TLS_CERT_FILE", ""), os.environ.get("TLS_KEY_FILE", "")
    if certificate or key:
        problem = certificate_usable(Path(certificate), Path(key))
        if problem is None:
            return proxy.Tls(Path(certificate), Path(key))
        say(f"ERROR: TLS_CERT_FILE and TLS_KEY_FILE: {problem}; using {INSTANCE_CERT} instead")
    problem = certificate_usable(INSTANCE_CERT, INSTANCE_KEY)
    if problem is None:
        return proxy.Tls(INSTANCE_CERT, INSTANCE_KEY)
    if problem != "missing" or INSTANCE_KEY.exists() or INSTANCE_CERT.exists():
        say(f"ERROR: {INSTANCE_CERT} and {INSTANCE_KEY}: {problem}; left as they are")
    elif generate_certificate(INSTANCE_CERT, INSTANCE_KEY) is None:
        say(f"generated a self-signed certificate: {INSTANCE_CERT}")
        return proxy.Tls(INSTANCE_CERT, INSTANCE_KEY)
    fallback = proxy.Tls(FALLBACK_TLS_DIR / "instance.crt", FALLBACK_TLS_DIR / "instance.key")
    if certificate_usable(fallback.certificate, fallback.key) is None:
        say(f"using the self-signed certificate made for this boot: {fallback.certificate}")
        return fallback
    failure = generate_certificate(fallback.certificate, fallback.key)
    if failure is None:
        say(f"using a self-signed certificate made for this boot: {fallback.certificate}")
        return fallback
    say(f"ERROR: no certificate could be made: {failure}")
    return None


def failure_limit(env: Mapping[str, str]) -> tuple[int, list[str]]:
    value = env.get(FAILURE_LIMIT_VARIABLE, "").strip()
    if not value:
        return access.DEFAULT_FAILURE_LIMIT, []
    if value.isdigit():
        return int(value), []
    problem = f"{FAILURE_LIMIT_VARIABLE}={value!r} is not a number; using {access.DEFAULT_FAILURE_LIMIT}"
    return access.DEFAULT_FAILURE_LIMIT, [problem]


def render_proxy(output: Path, settings_output: Path, retry: bool = False) -> int:
    """Caddy's config and the login verifier's settings, from the declaration, the environment
    and the settings files. Both are written whole or not at all: when they cannot be written
    (a full /run), the last ones stay in place (proxy.sh serves with them and retries)."""
    files = environment.read(os.environ)
    tokens, token_problems = effective_tokens(files)
    loaded = load_services(environ=os.environ)
    secret = session_secret()
    cookie = access.cookie_name(secret)
    auth, problems = proxy.auth_from_env(os.environ, list(dict.fromkeys(tokens.values())), cookie)
    limit, limit_problems = failure_limit(os.environ)
    enable_https = env_flag(os.environ, "ENABLE_HTTPS", default=False)
    tls = ensure_certificate() if enable_https else None
    if not retry:
        for problem in [*loaded.problems]:
            log("services", f"ERROR: {problem}")
        for problem in [*problems, *token_problems, *limit_problems]:
            log("proxy", f"ERROR: {problem}")
        if not auth.enabled:
            log("proxy", "WARNING: ENABLE_AUTH=false: every port is open to anyone who can reach it")
        warn_weak(tokens)
        if enable_https and tls is None:
            log("proxy", "ERROR: no certificate: serving plain HTTP")
    config = proxy.caddy_config(loaded.services, auth, tls)
    key = access.session_key(secret, auth.username, auth.tokens)
    verifier_settings = {
        "tokens": list(auth.tokens),
        "username": auth.username,
        "cookie": cookie,
        "key": key.hex(),
        "failure_limit": limit,
    }
    written: list[tuple[Path, Path]] = []
    try:
        for path, text in ((settings_output, json.dumps(verifier_settings)), (output, json.dumps(config, indent=1))):
            staged = path.with_name(f".{path.name}.new")
            write_private(staged, text)
            written.append((staged, path))
    except OSError as exc:
        for staged, _ in written:
            staged.unlink(missing_ok=True)
        log("proxy", f"ERROR: the proxy config could not be written ({exc.strerror or exc}); the last one stays")
        return 1
    for staged, path in written:
        staged.replace(path)
    write_private_quietly(TOKEN_FILE, next(iter(tokens.values()), ""))
    scheme = "https" if tls else "http"
    for service in loaded.services:
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
    return 0


def write_private_quietly(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if text and (not path.is_file() or path.read_text(encoding="utf-8") != text):
            write_private(path, text)


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
    found = health.problems(loaded.services, programs)
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
    render.add_argument("--output", type=Path, default=RUN_DIR / "caddy.json")
    render.add_argument("--settings-output", type=Path, default=proxy.AUTH_DIR / "settings.json")
    render.add_argument("--retry", action="store_true", help="a retry after a failed render: only the outcome")
    commands.add_parser("auth-verifier", help="serve the proxy's login checks on its unix socket")
    commands.add_parser("make-certificate", help="make /etc/instance.crt and .key when there is no usable pair")
    commands.add_parser("healthcheck", help="exit 1 when the proxy or an essential service is down")
    services = commands.add_parser("services", help="print the loaded service declaration as JSON")
    services.add_argument("--field", help="print one value, e.g. llama.internal_port")
    commands.add_parser("follow-logs", help="copy the services' log files to stdout")
    wait = commands.add_parser("wait-essential", help="wait until the essential services answer (or stop trying)")
    wait.add_argument("--timeout", type=float, default=10.0, help="seconds at most (default 10)")
    commands.add_parser("cuda-compat", help="decide whether to use CUDA forward-compat libraries")
    run = commands.add_parser("run", help="run a program with the settings files applied")
    run.add_argument("--service", help="exit 0 (saying why) when this service is off")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    if args.command != "setup-access":
        # What a user wrote to /etc/environment or ${WORKSPACE}/.env applies to every command
        # (read as data; the token variables are never put into this environment).
        environment.apply(os.environ, environment.read(os.environ))
    commands_run: dict[str, Callable[[], int]] = {
        "setup-access": setup_access,
        "render-proxy": lambda: render_proxy(args.output, args.settings_output, args.retry),
        "auth-verifier": auth_verifier,
        "make-certificate": lambda: 0 if ensure_certificate(quiet=True) else 1,
        "healthcheck": run_healthcheck,
        "services": lambda: print_services(args.field),
        "wait-essential": lambda: wait_essential(args.timeout),
        "follow-logs": follow_logs,
        "cuda-compat": cuda_compat,
        "run": lambda: run_program(args.service, args.program[1:] if args.program[:1] == ["--"] else args.program),
    }
    return commands_run[args.command]()


def auth_verifier() -> int:
    from . import verifier

    return verifier.serve()


def follow_logs() -> int:
    from . import logs
    from .health import API_FIRST_SECONDS, wait_for_essential

    # Like the portal (which waits itself), it lets the API start first. Nothing is lost
    # meanwhile: the copy starts where each log stood when boot began.
    wait_for_essential(API_FIRST_SECONDS, exclude="portal")
    logs.follow()
    return 0
