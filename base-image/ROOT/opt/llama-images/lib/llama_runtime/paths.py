"""Where the runtime keeps its files: the one declaration of the images' paths.

The shell scripts read the same values from `paths.sh` beside this file, generated from it
(`nox -s generate`; a unit test regenerates it and compares). Supervisor's files cannot source
shell: they name the program log directory through boot's environment (LOG_DIR_VARIABLE,
PROGRAM_LOG_DIR_VARIABLE), and a unit test checks the socket path they repeat.

A derivative declares its own paths the same way (llama_serving/paths.py). Stdlib only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

# Kept across restarts of the container (its own layer, or a volume).
STATE_DIR = Path("/var/lib/llama-images")
GENERATED_TOKEN_FILE = STATE_DIR / "token"
SESSION_SECRET_FILE = STATE_DIR / "session-secret"
DONE_DIR = STATE_DIR / "done"  # first-boot work that succeeded: later boots skip it
REVOKED_SESSIONS_FILE = STATE_DIR / "revoked-sessions.json"  # ended by a logout, until they expire

# This boot only (a tmpfs): secrets, status lines, the proxy's rendered config.
RUN_DIR = Path("/run/llama-images")
SECRETS_DIR = RUN_DIR / "secrets"
TOKEN_FILE = SECRETS_DIR / "token"  # what the owner reads: the token in effect
CREDENTIALS_FILE = SECRETS_DIR / "credentials.json"  # what `docker run` gave (or the generated token)
RUN_SESSION_SECRET_FILE = SECRETS_DIR / "session-secret"  # where STATE_DIR is read-only
STATUS_DIR = RUN_DIR / "status"  # one line per service: what the proxy's 503 and the portal show
RUNTIME_SERVICES_DIR = RUN_DIR / "services.d"  # boot steps' overrides of the declaration
BOOT_DIR = RUN_DIR / "boot"
BOOT_STEPS_FILE = BOOT_DIR / "steps"  # each boot step's name, exit status and seconds
LOG_OFFSETS_FILE = BOOT_DIR / "log-offsets"  # where each program log ended when Supervisor started
CUDA_COMPAT_FILE = BOOT_DIR / "cuda-compat"  # the compat library directory boot chose, or nothing
PACKAGES_STATUS_FILE = BOOT_DIR / "packages"
PROVISIONING_STATUS_FILE = BOOT_DIR / "provisioning"
AUTH_DIR = RUN_DIR / "auth"  # the login verifier's, root-only
VERIFIER_SOCKET = AUTH_DIR / "verifier.sock"
VERIFIER_SETTINGS_FILE = AUTH_DIR / "settings.json"
BLOCKED_DIR = AUTH_DIR / "blocked"  # one file per client address in its cooldown
# <session value>/<client address>: a session the verifier let in from that address; Caddy lets the
# next requests of that pair in itself (a stat), the verifier removes them when the session ends.
ADMITTED_DIR = AUTH_DIR / "sessions"
LOCKOUTS_FILE = AUTH_DIR / "lockouts.json"  # recent lock-outs, which the portal shows
RUN_REVOKED_SESSIONS_FILE = AUTH_DIR / "revoked-sessions.json"  # where STATE_DIR is read-only
CADDY_CONFIG_FILE = RUN_DIR / "caddy.json"
CADDY_STORAGE_DIR = RUN_DIR / "caddy"
TLS_LOCK_FILE = RUN_DIR / "tls.lock"
RUN_TLS_DIR = RUN_DIR / "tls"  # a certificate made for this boot where /etc is read-only
JUPYTER_RUNTIME_DIR = RUN_DIR / "jupyter"
NON_ROOT_SUPERVISORD_CONF = RUN_DIR / "supervisord.conf"  # a copy without `user=root`

# Logs: SYSTEM_LOG_DIR, or RUN_LOG_DIR where /var/log is read-only; boot exports the one in use.
LOG_DIR_VARIABLE = "LLAMA_IMAGES_LOG_DIR"
PROGRAM_LOG_DIR_VARIABLE = "LLAMA_IMAGES_PROGRAM_LOG_DIR"  # what the Supervisor programs log to
SYSTEM_LOG_DIR = Path("/var/log")
RUN_LOG_DIR = RUN_DIR / "log"
PROGRAM_LOGS = Path("portal")  # <log dir>/portal/<program>.log (the reference image's place)
WORKSPACE_LOGS = Path("logs")  # ${WORKSPACE}/logs: the log directory when LOGS_ON_WORKSPACE asks
BOOT_LOG = Path("boot.log")
PROVISIONING_LOG = Path("provisioning.log")  # the clean copy of program provisioning's log

# Shipped in the image.
SHIPPED_SERVICES_DIR = Path("/etc/llama-images/services.d")
BOOT_STEPS_DIR = Path("/etc/boot.d")
SUPERVISORD_CONF = Path("/etc/supervisor/supervisord.conf")
SUPERVISOR_PROGRAMS_DIR = Path("/etc/supervisor/conf.d")
SUPERVISOR_SOCKET = Path("/run/supervisor.sock")  # supervisord.conf says it too (a test compares)
RUNTIME_COMMAND = Path("/opt/llama-images/bin/llama-runtime")
CUDA_COMPAT_LIBRARIES = Path("/opt/llama-images/cuda-compat")  # moved there by the Dockerfile
INSTANCE_CERT = Path("/etc/instance.crt")  # the reference image's certificate and key
INSTANCE_KEY = Path("/etc/instance.key")
SUPERVISOR_SCRIPTS_DIR = Path("/opt/supervisor-scripts")  # the programs' start scripts
SYSTEM_ENVIRONMENT_FILE = Path("/etc/environment")  # the settings file every program reads

# The reference image's places, kept for its tools, templates and in-instance tests.
INSTANCE_TOOLS_BIN = Path("/opt/instance-tools/bin")  # on PATH: provisioner
PROVISIONER_COMMAND = INSTANCE_TOOLS_BIN / "provisioner"
PORTAL_YAML = Path("/etc/portal.yaml")  # the applications in effect, its format (written, not read)
CADDYFILE = Path("/etc/Caddyfile")  # a summary of the proxy's listeners (written, not read)
BAKED_MANIFEST = Path("/provisioning.yaml")  # a manifest baked into an image, or a downloaded one
DOWNLOADED_SCRIPT = Path("/provisioning.sh")  # PROVISIONING_SCRIPT fetched from a URL
PROVISIONING_MARKER = Path("/.provisioning")  # provisioning runs (services may wait for it to go)
PROVISIONING_COMPLETE = Path("/.provisioning_complete")  # it succeeded: later boots skip it
PROVISIONING_FAILED = Path("/.provisioning_failed")  # its last run failed: the next boot tries again
PROVISIONER_STATE_DIR = Path("/.provisioner_state")  # each phase's input hash after it succeeded
PROVISIONER_STOPPED = Path("/.provisioner_stopped")  # on_failure: stop happened once (no restart loop)
# A derivative's verified downloader, which the provisioner hands its downloads (TOML: command).
DOWNLOADER_DECLARATION = Path("/etc/llama-images/downloader.toml")

SHELL_PREFIX = "LLAMA_IMAGES_"


def status_file(service: str) -> Path:
    return STATUS_DIR / service


def service_token_file(service: str) -> Path:
    """The token of a service that checks one of its own (`token_scheme` in its declaration)."""
    return SECRETS_DIR / f"{service}-token"


def service_run_dir(service: str) -> Path:
    """A service's own files for this boot."""
    return RUN_DIR / service


def declared(module: ModuleType) -> dict[str, Path]:
    """A paths module's declaration: its upper-case Path constants, in the order written."""
    return {name: value for name, value in vars(module).items() if name.isupper() and isinstance(value, Path)}


def shell_source(module: ModuleType) -> str:
    """The sourced shell file that gives the scripts `module`'s paths (named with its SHELL_PREFIX)."""
    import shlex

    name = module.__name__.replace(".", "/") + ".py"
    lines = [
        f"# Generated from {name} by `nox -s generate`: edit that file, not this one.",
        "# shellcheck shell=bash disable=SC2034",
        *(f"{module.SHELL_PREFIX}{key}={shlex.quote(str(value))}" for key, value in declared(module).items()),
    ]
    return "\n".join(lines) + "\n"


def shell_file(module: ModuleType) -> Path:
    return Path(str(module.__file__)).with_suffix(".sh")


def main(argv: list[str]) -> int:
    """`python3 -m llama_runtime.paths MODULE...`: write each paths module's shell file."""
    import importlib

    for name in argv:
        module = importlib.import_module(name)
        shell_file(module).write_text(shell_source(module), encoding="utf-8")
        print(f"wrote {shell_file(module)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["llama_runtime.paths"]))
