"""Commands the boot sequence, Supervisor and the HEALTHCHECK run (I/O edge of this package)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Heavier modules (the health check's XML-RPC, the log follower, the CUDA decision) are imported
# by the commands that use them: boot and Supervisor run several commands before the services
# answer, and every import is on that path (docs/benchmarks.md, boot to healthy).
from . import proxy
from .services import env_flag, load_services

STATE_DIR = Path("/var/lib/llama-images")
RUN_DIR = Path("/run/llama-images")
SECRETS_DIR = RUN_DIR / "secrets"
TOKEN_FILE = SECRETS_DIR / "token"
TOKEN_VARIABLES = ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD")


def log(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", flush=True)


def write_private(path: Path, text: str) -> None:
    """Root-only file (0600), written whole; a directory it creates is root-only too (an existing
    one keeps its mode: /run/llama-images holds status files others read)."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    temporary.replace(path)


def setup_token() -> int:
    """The token from OPEN_BUTTON_TOKEN or WEB_PASSWORD (either), else the one generated on an
    earlier boot, else a new one, kept root-only. Never printed."""
    given = [(name, os.environ[name]) for name in TOKEN_VARIABLES if os.environ.get(name)]
    token = None
    if given:
        name, value = given[0]
        if len({v for _, v in given}) > 1:
            log("auth", f"OPEN_BUTTON_TOKEN and WEB_PASSWORD differ; using {name}")
        problem = proxy.token_problem(value)
        if problem is None:
            token = value
            log("auth", f"token from {name}")
        else:
            log("auth", f"ERROR: {name} {problem}; set it to printable characters. Using a generated token instead.")
    if token is None:
        stored = STATE_DIR / "token"
        try:
            token = stored.read_text(encoding="utf-8").strip() or None
        except OSError:
            token = None
        if token is not None:
            log("auth", f"token generated on an earlier boot ({stored})")
        else:
            token = secrets.token_urlsafe(24)
            try:
                write_private(stored, token)
                log("auth", f"generated a token, kept in {stored}")
            except OSError as exc:
                log("auth", f"generated a token for this boot only ({stored} not writable: {exc.strerror})")
    write_private(TOKEN_FILE, token)
    log("auth", f"read it with: docker exec <container> cat {TOKEN_FILE}")
    return 0


def read_token() -> str:
    return TOKEN_FILE.read_text(encoding="utf-8")


def tls_settings() -> proxy.Tls | None:
    if not env_flag(os.environ, "ENABLE_HTTPS", default=False):
        return None
    certificate, key = os.environ.get("TLS_CERT_FILE", ""), os.environ.get("TLS_KEY_FILE", "")
    if certificate or key:
        if Path(certificate).is_file() and Path(key).is_file():
            log("proxy", f"HTTPS with {certificate}")
            return proxy.Tls(Path(certificate), Path(key))
        log(
            "proxy",
            "ERROR: TLS_CERT_FILE and TLS_KEY_FILE must both name readable files; using a generated certificate",
        )
    for directory in (STATE_DIR / "tls", RUN_DIR / "tls"):
        generated = proxy.Tls(directory / "cert.pem", directory / "key.pem")
        if generated.certificate.is_file() and generated.key.is_file():
            return generated
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                 "/CN=llama-images", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(generated.key), "-out", str(generated.certificate)],
                check=True, capture_output=True,
            )  # fmt: skip
            generated.key.chmod(0o600)
            log("proxy", f"HTTPS with a self-signed certificate generated now ({generated.certificate})")
            return generated
        except (OSError, subprocess.CalledProcessError) as exc:
            log("proxy", f"could not write a certificate in {directory}: {exc}")
    log("proxy", "ERROR: no certificate could be made; serving plain HTTP")
    return None


def render_proxy(output: Path) -> int:
    loaded = load_services(environ=os.environ)
    for problem in loaded.problems:
        log("services", f"ERROR: {problem}")
    auth, problems = proxy.auth_from_env(os.environ, read_token())
    for problem in problems:
        log("proxy", f"ERROR: {problem}")
    if not auth.enabled:
        log("proxy", "WARNING: ENABLE_AUTH=false: every port is open to anyone who can reach it")
    tls = tls_settings()
    config = proxy.caddy_config(loaded.services, auth, tls)
    write_private(output, json.dumps(config, indent=1))
    scheme = "https" if tls else "http"
    for service in loaded.services:
        if not service.enabled:
            log("proxy", f"{service.name}: disabled ({service.enabled_by}=false)")
            continue
        lock = "token" if auth.protects(service.external_port) else "OPEN, no auth"
        log(
            "proxy",
            f"{scheme} :{service.external_port} -> {service.host}:{service.internal_port} {service.label} ({lock})",
        )
    return 0


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
    commands.add_parser("setup-token", help="store the access token root-only")
    render = commands.add_parser("render-proxy", help="write Caddy's config from the service declaration")
    render.add_argument("--output", type=Path, default=RUN_DIR / "caddy.json")
    commands.add_parser("healthcheck", help="exit 1 when the proxy or an essential service is down")
    services = commands.add_parser("services", help="print the loaded service declaration as JSON")
    services.add_argument("--field", help="print one value, e.g. llama.internal_port")
    commands.add_parser("follow-logs", help="copy the services' log files to stdout")
    wait = commands.add_parser("wait-essential", help="wait until the essential services answer (or stop trying)")
    wait.add_argument("--timeout", type=float, default=10.0, help="seconds at most (default 10)")
    commands.add_parser("cuda-compat", help="decide whether to use CUDA forward-compat libraries")
    args = parser.parse_args(argv)
    commands_run: dict[str, Callable[[], int]] = {
        "setup-token": setup_token,
        "render-proxy": lambda: render_proxy(args.output),
        "healthcheck": run_healthcheck,
        "services": lambda: print_services(args.field),
        "wait-essential": lambda: wait_essential(args.timeout),
        "follow-logs": follow_logs,
        "cuda-compat": cuda_compat,
    }
    return commands_run[args.command]()


def follow_logs() -> int:
    from . import logs
    from .health import API_FIRST_SECONDS, wait_for_essential

    # Like the portal (which waits itself), it lets the API start first. Nothing is lost
    # meanwhile: the copy starts where each log stood when boot began.
    wait_for_essential(API_FIRST_SECONDS, exclude="portal")
    logs.follow()
    return 0
