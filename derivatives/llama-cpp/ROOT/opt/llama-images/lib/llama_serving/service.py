"""Supervisor program `llama`: start llama-server as planned, watch it, and end failures.

  boot   (/etc/boot.d/50-llama.sh) publishes the effective port to the proxy through the
         runtime override of the service declaration, and the first status line.
  serve  (/opt/supervisor-scripts/llama.sh) runs llama-server under Supervisor.

How failures end: llama-server is started at most LLAMA_START_ATTEMPTS times, with a doubling
delay between starts, however long a failed start takes; then this program gives up. Supervisor
only ends in FATAL when a program exits before `startsecs`, and it has seen this one live longer,
so giving up leaves a marker and exits; Supervisor starts the program again, and its start
script (llama.sh) finds the marker, removes it and exits at once, before Python starts: with
`startretries=0` that is FATAL. A fresh start
(`supervisorctl start/restart llama`, the portal, `docker restart`) finds no marker and begins
again with a full count. A llama-server that served and then died is started again at once.
Each start is watched in watch.py.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_runtime import paths as runtime_paths
from llama_runtime.cgroup import read_budget
from llama_runtime.files import write_atomically, write_private
from llama_runtime.services import load_services

from . import gpu, status, threads
from .config import ConfigError, Plan, make_plan, mask, shown_command
from .paths import (
    GAVE_UP_FILE,
    OVERRIDE_FILE,
    PRESET_FILE,
    SERVICE,
    STATUS_FILE,
    STATUS_RECORD_FILE,
    SUPERVISOR_PROGRAM_FILE,
)
from .status import Download
from .watch import PROGRESS_LOG_SECONDS, Attempt, Handle, Start, Watch, host_for_url, log

if TYPE_CHECKING:
    from .download_types import Prepared

NO_OVERRIDES = Path("/nonexistent")  # the port before this program's own override
FALLBACK_PORT = 18000
# How long llama-server gets to end after SIGTERM when the program is stopped, counted from the
# SIGTERM Supervisor sends: below llama.conf's stopwaitsecs (5), so the launcher ends it (and
# writes the status "stopped") before Supervisor kills the whole group.
STOP_GRACE_SECONDS = 3.5


def set_status(said: str | Download, warning: str = "") -> None:
    """The one line the proxy's 503 and the portal show for this service (`warning` in front),
    and the same as a typed record (status.py: what the portal's part and the worker read)."""
    status.write(status.status(said, warning), STATUS_FILE, STATUS_RECORD_FILE)


def declaration(env: Mapping[str, str]) -> tuple[int, dict[int, str]]:
    """llama's internal port as declared (the shipped file, then PORTAL_CONFIG: what the proxy
    dials unless LLAMA_ARGS moves it), and the ports the other services and the proxy use. Read
    with the base runtime's own loader, so both sides see one declaration."""
    loaded = load_services(runtime_paths.SHIPPED_SERVICES_DIR, NO_OVERRIDES, env)
    default = FALLBACK_PORT
    taken: dict[int, str] = {}
    for service in loaded.services:
        if service.enabled:
            taken[service.external_port] = f"the proxy (external port of {service.name!r})"
        if service.name == SERVICE:
            default = service.internal_port
        elif service.enabled:
            taken.setdefault(service.internal_port, f"service {service.name!r}")
    taken.pop(default, None)
    return default, taken


def startsecs() -> float:
    """Supervisor's `startsecs` for this program (llama.conf), so exits land on the right side."""
    import configparser

    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    with contextlib.suppress(OSError, configparser.Error, ValueError):
        parser.read(SUPERVISOR_PROGRAM_FILE)
        return float(parser.get(f"program:{SERVICE}", "startsecs"))
    return 3.0


def publish_port(plan: Plan | None, default_port: int) -> None:
    """The runtime override of the service declaration: the proxy, portal and health check
    follow the port (and address) LLAMA_ARGS gives llama-server (`default_port`: declared)."""
    lines = []
    if plan is not None and plan.listen.port != default_port:
        lines.append(f"internal_port = {plan.listen.port}")
    if plan is not None and plan.listen.reach_host != "127.0.0.1":
        lines.append(f"host = {json.dumps(plan.listen.reach_host)}")
    if lines:
        shipped = runtime_paths.SHIPPED_SERVICES_DIR / OVERRIDE_FILE.name
        header = f"# Written at boot from LLAMA_ARGS; replaces keys of {shipped}.\n"
        write_atomically(OVERRIDE_FILE, header + "\n".join(lines) + "\n")
    else:
        OVERRIDE_FILE.unlink(missing_ok=True)


def boot(env: Mapping[str, str]) -> int:
    """Boot step: start afresh, publish the port, say what comes. Never fails the boot: a bad
    setting is reported once, by the program when it starts."""
    GAVE_UP_FILE.unlink(missing_ok=True)
    default_port, taken = declaration(env)
    try:
        plan = make_plan(env, default_port, taken)
    except ConfigError as exc:
        publish_port(None, default_port)
        set_status(f"failed: {exc}")
        return 0
    publish_port(plan, default_port)
    if plan is None:
        set_status("no model configured")
        return 0
    if plan.listen.port != default_port:
        log(f"llama-server will listen on port {plan.listen.port} (LLAMA_ARGS); the proxy follows it")
    set_status("starting")
    return 0


def serve(env: Mapping[str, str]) -> int:
    """Program llama (started by llama.sh, which has already handled a gave-up marker)."""
    born = time.monotonic()
    default_port, taken = declaration(env)
    budget = read_budget()
    try:
        plan = make_plan(env, default_port, taken, cpu=budget)
        account = server_account(env)
    except ConfigError as exc:
        log(f"error: {exc}")
        set_status(f"failed: {exc}")
        return 2
    with contextlib.suppress(OSError):
        publish_port(plan, default_port)
    if plan is None:
        log("no model configured: set LLAMA_MODEL (or LLAMA_MODELS_DIR); llama-server not started")
        set_status("no model configured")
        # Outlive startsecs, so Supervisor records a clean exit (EXITED), not a failed start.
        time.sleep(startsecs() + 1)
        return 0
    warn_exposure(plan)
    if plan.threads:
        log(threads.described(budget, plan.threads))
    runner = Runner(plan, env, account)
    if account is not None:
        log(f"llama-server runs as {account.name} (uid {account.uid}, gid {account.gid}): LLAMA_SERVER_USER")
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    gave_up = runner.run()
    if gave_up is None:
        return 0
    # Give up: make sure Supervisor counts this run as started, so it starts the program again,
    # and that start finds the marker (see the module docstring).
    time.sleep(max(0.0, startsecs() + 1.5 - (time.monotonic() - born)))
    write_atomically(GAVE_UP_FILE, gave_up + "\n")
    return 1


def warn_exposure(plan: Plan) -> None:
    """--host beyond loopback bypasses the proxy: said as loudly as ENABLE_AUTH=false is."""
    if not plan.listen.exposed:
        return
    where = ", ".join(f"{host_for_url(h)}:{plan.listen.port}" for h in plan.listen.exposed)
    banner = "WARNING: " + "=" * 70
    log(banner)
    log(f"WARNING: llama-server listens on {where} (--host in LLAMA_ARGS or LLAMA_ARG_HOST):")
    log("WARNING: whoever reaches that address reaches llama-server WITHOUT the proxy's token.")
    log("WARNING: leave --host out (127.0.0.1) to serve only through the proxy on its external port.")
    log(banner)


USER_VARIABLE = "LLAMA_SERVER_USER"


@dataclass(frozen=True)
class Account:
    """Who llama-server runs as when LLAMA_SERVER_USER names someone other than root."""

    name: str
    uid: int
    gid: int
    home: str


def server_account(env: Mapping[str, str]) -> Account | None:
    """LLAMA_SERVER_USER's account (a name or a uid), None for root or unset; ConfigError when
    it does not exist, or the container does not run as root (only root can switch)."""
    value = env.get(USER_VARIABLE, "").strip()
    if not value or value in {"root", "0"}:
        return None
    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        raise ConfigError(f"{USER_VARIABLE}={value!r}: no such user in the container; `user` (UID 1001) is") from None
    if os.geteuid() != 0:
        raise ConfigError(f"{USER_VARIABLE}={value!r}: only root can start llama-server as another user (this "
                          f"container runs as uid {os.geteuid()}); leave it unset")  # fmt: skip
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


class Runner:
    def __init__(self, plan: Plan, env: Mapping[str, str], account: Account | None = None) -> None:
        self.plan = plan
        self.env = env
        self.account = account
        self.secrets = plan.secret_values()
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.gpu = gpu.Check()  # GPU facts, the CPU-fallback warning, CUDA's cache (gpu.py)
        self.warning = ""  # a CPU fallback on a GPU host, shown in every status line
        self.stop_deadline = 0.0  # when llama-server must have ended, once stopping

    def stop(self, signum: int, frame: object) -> None:
        if not self.stopping.is_set():
            self.stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def status(self, said: str | Download) -> None:
        set_status(said, self.warning)

    def track(self, process: subprocess.Popen[bytes] | None) -> None:
        """The child running now (aria2, llama-server), so that a stop reaches it."""
        self.process = process

    def stop_grace(self) -> float:
        """Seconds llama-server has left to end, once stopping."""
        return self.stop_deadline - time.monotonic()

    def run(self) -> str | None:
        """Start llama-server until it serves, or the attempts are used up: the cause then."""
        self.gpu = gpu.check(self.env, log)
        self.warning = self.gpu.warning
        attempts = self.plan.retries.attempts
        failed = 0
        while not self.stopping.is_set():
            attempt = self.attempt(failed + 1)
            if self.stopping.is_set():
                break
            if attempt.served and not attempt.final:
                log(f"llama-server ended ({attempt.cause}) after serving; starting it again")
                failed = 0
                self.stopping.wait(1)
                continue
            failed += 1
            log(f"attempt {failed}/{attempts} failed: {attempt.cause}")
            if attempt.final or failed >= attempts:
                why = "" if failed >= attempts else f" ({attempt.final_reason}: retrying cannot help)"
                log(f"giving up after {failed} attempt{'s' if failed > 1 else ''}{why}: {attempt.cause}")
                self.status(f"failed: {attempt.cause}")
                return attempt.cause
            delay = self.plan.retries.delay_after(failed)
            log(f"retrying in {delay:g} s")
            self.status(f"retrying in {delay:g} s ({failed}/{attempts} failed): {attempt.cause}")
            self.stopping.wait(delay)
        self.status("stopped")
        return None

    def attempt(self, number: int) -> Attempt:
        problem = self.check_sources()
        if problem is not None:
            return Attempt(served=False, cause=problem)
        preset = None
        if self.plan.router and self.plan.sources:
            try:
                PRESET_FILE.parent.mkdir(parents=True, exist_ok=True)  # not root-only: only the preset is private
                write_private(PRESET_FILE, self.plan.preset())  # URLs in it may carry credentials
                if self.account is not None:  # llama-server reads it as that user
                    os.chown(PRESET_FILE, self.account.uid, self.account.gid)
            except OSError as exc:
                return Attempt(served=False, cause=f"cannot write {PRESET_FILE}: {exc.strerror}")
            preset = str(PRESET_FILE)
        for source in self.plan.sources:
            if source.kind == "url":
                directory = Path(source.download_path(self.plan.cache)).parent
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    return Attempt(served=False, cause=f"cannot create {directory} for the download: {exc.strerror}")
        with contextlib.suppress(OSError):
            Path(self.plan.cache).mkdir(parents=True, exist_ok=True)
        downloaded, problem = self.download()
        if problem is not None or self.stopping.is_set():
            return Attempt(served=False, cause=problem or "stopped")
        hf_file = downloaded.hf_files.get(self.plan.sources[0].value) if downloaded and not self.plan.router else None
        # The model is in the cache: llama-server need not ask the hub again (a stalled hub would
        # hold it up), unless LLAMA_ARGS have it download more.
        offline = downloaded is not None and (
            downloaded.offline or (hf_file is not None and not self.plan.args_download)
        )
        command = self.plan.command(preset, hf_file=hf_file, offline=offline)
        shown = shown_command(command, self.plan)
        log(f"starting llama-server (attempt {number}/{self.plan.retries.attempts}): {shown}")
        self.status("starting")
        start = Start(command, self.child_environment(), self.credentials(), self.secrets, self.gpu.facts)
        watch = Watch(self.plan, start, Handle(self.status, self.stopping, self.stop_grace, self.track))
        return watch.run()

    def download(self) -> tuple[Prepared | None, str | None]:
        """The download phase (llama_serving.download): hub repos and URLs into the cache with
        aria2, checked, before llama-server starts. (what it found, the cause of a failure)"""
        if not self.plan.downloads:
            return None, None
        from . import download
        from .download_types import DownloadError, Ui

        # A stop reaches aria2 (tracked), which then keeps its control files.
        ui = Ui(self.status, log, self.stopping, self.track, PROGRESS_LOG_SECONDS)
        try:
            return download.prepare(self.plan, download.settings_from(self.plan, self.env), ui), None
        except DownloadError as exc:
            return None, mask(str(exc), self.secrets)
        except OSError as exc:
            return None, f"cannot write the download into {self.plan.cache}: {exc.strerror or exc}"

    def check_sources(self) -> str | None:
        """A model file or directory that cannot work, said plainly before llama-server is run."""
        for source in self.plan.sources:
            problem = file_problem(source.value) if source.kind == "file" else None
            if problem is not None:
                return f"LLAMA_MODEL={source.value}{problem}"
        models_dir = self.plan.models_dir
        if models_dir is not None:
            directory = Path(models_dir)
            if not directory.is_dir():
                return f"LLAMA_MODELS_DIR={models_dir}: no such directory"
            if not any(directory.glob("*.gguf")) and not any(directory.glob("*/*.gguf")):
                return f"LLAMA_MODELS_DIR={models_dir} holds no .gguf files"
        return None

    def child_environment(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in {"PYTHONPATH", "PYTHONSAFEPATH"}}
        env.update(self.plan.environment())
        env.update(self.gpu.environment)
        # The progress bars need a terminal (see Watch); colours would only clutter the log.
        env.setdefault("LLAMA_ARG_LOG_COLORS", "off")
        if self.account is not None:
            env.update(HOME=self.account.home, USER=self.account.name, LOGNAME=self.account.name)
        return env

    def credentials(self) -> dict[str, Any]:
        """Popen's arguments that start llama-server as LLAMA_SERVER_USER's account (none: as we are)."""
        if self.account is None:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}


def file_problem(name: str) -> str | None:
    """What keeps a model file from loading, as the end of a sentence starting with its name."""
    path = Path(name).expanduser()
    if not path.exists():
        return ": no such file (mount it, or name a Hugging Face repo org/repo[:quant])"
    if path.is_dir():
        return " is a directory: name a .gguf file in it, or set LLAMA_MODELS_DIR to serve all of them"
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        return f": cannot read it ({exc.strerror})"
    if magic != b"GGUF":
        return f" is not a GGUF file (it starts with {magic!r}, not b'GGUF')"
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    command = arguments[0] if arguments else ""
    env: dict[str, Any] = dict(os.environ)
    if command == "boot":
        return boot(env)
    if command == "serve":
        return serve(env)
    if command == "fetch":  # the provisioner's downloads (llama_serving/fetch.py)
        from . import fetch

        return fetch.main(env)
    print("usage: llama-serving boot|serve|fetch", file=sys.stderr)
    return 2
