"""The instance's TLS certificate: TLS_CERT_FILE/TLS_KEY_FILE, else the reference image's
/etc/instance.crt and .key (the owner's pair, or one generated there at first boot), else a pair
made for this boot in /run.

Stdlib only (and `openssl`): this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import paths
from .proxy import Tls


def log(message: str) -> None:
    print(f"[proxy] {message}", flush=True)


def usable(certificate: Path, key: Path) -> str | None:
    """Why this pair cannot serve TLS, or None."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key)
    except FileNotFoundError:
        return "missing"
    except (OSError, ssl.SSLError) as exc:
        return f"not a usable certificate and key ({exc})"
    return None


def generate(certificate: Path, key: Path) -> str | None:
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


def ensure(quiet: bool = False) -> Tls | None:
    """The pair to serve with (made when there is none); None when none can be made. `quiet`: at
    boot, where HTTPS may be off. One process at a time (boot's and the proxy's render may both
    get here first)."""
    import fcntl

    try:
        handle = paths.TLS_LOCK_FILE.open("a")
    except OSError:
        return find_or_make(quiet)
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return find_or_make(quiet)


def find_or_make(quiet: bool) -> Tls | None:
    def say(message: str) -> None:
        if not quiet:
            log(message)

    instance_cert, instance_key = paths.INSTANCE_CERT, paths.INSTANCE_KEY
    certificate, key = os.environ.get("TLS_CERT_FILE", ""), os.environ.get("TLS_KEY_FILE", "")
    if certificate or key:
        problem = usable(Path(certificate), Path(key))
        if problem is None:
            return Tls(Path(certificate), Path(key))
        say(f"ERROR: TLS_CERT_FILE and TLS_KEY_FILE: {problem}; using {instance_cert} instead")
    problem = usable(instance_cert, instance_key)
    if problem is None:
        return Tls(instance_cert, instance_key)
    if problem != "missing" or instance_key.exists() or instance_cert.exists():
        say(f"ERROR: {instance_cert} and {instance_key}: {problem}; left as they are")
    elif generate(instance_cert, instance_key) is None:
        say(f"generated a self-signed certificate: {instance_cert}")
        return Tls(instance_cert, instance_key)
    fallback = Tls(paths.RUN_TLS_DIR / "instance.crt", paths.RUN_TLS_DIR / "instance.key")
    if usable(fallback.certificate, fallback.key) is None:
        say(f"using the self-signed certificate made for this boot: {fallback.certificate}")
        return fallback
    failure = generate(fallback.certificate, fallback.key)
    if failure is None:
        say(f"using a self-signed certificate made for this boot: {fallback.certificate}")
        return fallback
    say(f"ERROR: no certificate could be made: {failure}")
    return None
