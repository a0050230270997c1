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

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_runtime import paths as runtime_paths
from llama_runtime.files import write_atomically, write_private
from llama_runtime.services import load_services

from . import gpu, output
from .config import ConfigError, Plan, make_plan, mask, shown_command
from .paths import (
    GAVE_UP_FILE,
    OVERRIDE_FILE,
    PID_FILE,
    PRESET_FILE,
    REQUESTS_SERVED_FILE,
    SERVICE,
    STATUS_FILE,
    SUPERVISOR_PROGRAM_FILE,
)

if TYPE_CHECKING:
    from .download import Prepared

NO_OVERRIDES = Path("/nonexistent")  # the port before this program's own override
FALLBACK_PORT = 18000
# How long llama-server gets to end after SIGTERM when the program is stopped, counted from the
# SIGTERM Supervisor sends: below llama.conf's stopwaitsecs (5), so the launcher ends it (and
# writes the status "stopped") before Supervisor kills the whole group.
STOP_GRACE_SECONDS = 3.5
# How long a llama-server that stalled gets to end after SIGTERM (no Supervisor stop pending).
STALL_GRACE_SECONDS = 8.0
PROGRESS_LOG_SECONDS = 5.0
ROUTER_POLL_SECONDS = 3.0


def log(message: str) -> None:
    print(f"[llama] {message}", flush=True)


def set_status(line: str) -> None:
    """The one line the proxy's 503 and the portal show for this service."""
    with contextlib.suppress(OSError):
        write_atomically(STATUS_FILE, line.replace("\n", " ")[:300] + "\n")


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
    try:
        plan = make_plan(env, default_port, taken)
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
    runner = Runner(plan, env)
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


@dataclass
class Attempt:
    """How one start of llama-server ended."""

    served: bool  # it answered /health with 200 before it ended
    cause: str = ""
    final: bool = False  # starting again cannot help (its arguments were refused)


class Runner:
    def __init__(self, plan: Plan, env: Mapping[str, str]) -> None:
        self.plan = plan
        self.env = env
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

    def status(self, line: str) -> None:
        set_status(status_line(self.warning, line))

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
            if attempt.served:
                log(f"llama-server ended ({attempt.cause}) after serving; starting it again")
                failed = 0
                self.stopping.wait(1)
                continue
            failed += 1
            log(f"attempt {failed}/{attempts} failed: {attempt.cause}")
            if attempt.final or failed >= attempts:
                why = "" if failed >= attempts else " (its arguments were refused: retrying cannot help)"
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
                write_private(PRESET_FILE, self.plan.preset())  # URLs in it may carry credentials
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
        watch = Watch(self, command)
        return watch.run()

    def download(self) -> tuple[Prepared | None, str | None]:
        """The download phase (llama_serving.download): hub repos and URLs into the cache with
        aria2, checked, before llama-server starts. (what it found, the cause of a failure)"""
        if not self.plan.downloads:
            return None, None
        from . import download

        def track(process: subprocess.Popen[bytes] | None) -> None:
            self.process = process  # so a stop reaches aria2, which then keeps its control files

        ui = download.Ui(self.status, log, self.stopping, track, PROGRESS_LOG_SECONDS)
        try:
            return download.prepare(self.plan, download.settings_from(self.plan, self.env), ui), None
        except download.DownloadError as exc:
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
        return env


class Watch:
    """One llama-server process: its output copied to the log (secrets masked), its progress
    and health turned into status lines, a download that stops moving ended."""

    def __init__(self, runner: Runner, command: list[str]) -> None:
        self.runner = runner
        self.plan = runner.plan
        self.command = command
        self.lines: list[str] = []
        self.activity = time.monotonic()
        self.download: output.Progress | None = None
        self.logged_progress = (0.0, -1)
        self.stalled = ""  # why the watch ended a start that stopped moving
        self.requests = 0
        self.published_requests = -1
        self.lock = threading.Lock()

    def run(self) -> Attempt:
        with contextlib.suppress(OSError):
            REQUESTS_SERVED_FILE.unlink(missing_ok=True)  # counted afresh for this llama-server
        reader, writer = open_terminal()
        try:
            process = subprocess.Popen(
                [*die_with_parent(), *self.command],
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
                env=self.runner.child_environment(),
            )
        except OSError as exc:
            os.close(reader)
            os.close(writer)
            return Attempt(served=False, cause=f"cannot run llama-server: {exc.strerror}", final=True)
        os.close(writer)
        self.runner.process = process
        with contextlib.suppress(OSError):
            write_atomically(PID_FILE, f"{process.pid}\n")
        copier = threading.Thread(target=self.copy_output, args=(reader,), daemon=True)
        copier.start()
        served = self.watch(process)
        copier.join(timeout=5)
        PID_FILE.unlink(missing_ok=True)
        self.runner.process = None
        return self.outcome(process, served)

    def watch(self, process: subprocess.Popen[bytes]) -> bool:
        """Until llama-server ends (or is ended): whether it served. Until it answers, its state
        is checked twice a second; once it serves, only router mode's model list, now and then."""
        served = False
        cache_bytes = -1
        while True:
            try:
                process.wait(timeout=ROUTER_POLL_SECONDS if served else 0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.runner.stopping.is_set():
                terminate(process, self.runner.stop_deadline - time.monotonic())
                break
            if served:
                self.publish_requests()
                summary = self.router_summary() if self.plan.router else None
                if summary:
                    self.runner.status(summary)
                continue
            health = self.health()
            if health == 200:
                served = True
                self.publish_requests()
                log(f"ready: serving {self.plan.model_name} on {self.plan.listen.host}:{self.plan.listen.port}")
                summary = self.router_summary() if self.plan.router else None
                self.runner.status(summary or f"serving {self.plan.model_name}")
                continue
            if health == 503:
                self.runner.status("loading model")
                continue
            # Nothing listens yet: a download, or a stall.
            with self.lock:
                download = self.download
            if download is not None and download.percent < 100:
                self.runner.status(f"downloading {download.file} {download.percent}%")
            size = downloading_bytes(self.plan.cache)
            with self.lock:
                if size != cache_bytes:
                    cache_bytes = size
                    self.activity = time.monotonic()
                idle = time.monotonic() - self.activity
            if idle > self.plan.retries.stall_timeout:
                self.stalled = f"no output and no download progress for {self.plan.retries.stall_timeout:g} s"
                terminate(process, STALL_GRACE_SECONDS)
                break
        process.wait()
        return served

    def publish_requests(self) -> None:
        with self.lock:
            count = self.requests
        if count != self.published_requests:
            with contextlib.suppress(OSError):
                write_atomically(REQUESTS_SERVED_FILE, f"{count}\n")
            self.published_requests = count

    def health(self) -> int:
        """HTTP status of /health, 0 when nothing answers."""
        # Imported here, after llama-server is started: urllib is a tenth of the launcher's
        # start-up, which is on the way to the first answer (docs/benchmarks.md).
        import urllib.error
        import urllib.request

        url = f"http://{host_for_url(self.plan.listen.reach_host)}:{self.plan.listen.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, ValueError):
            return 0

    def router_summary(self) -> str | None:
        import urllib.request

        url = f"http://{host_for_url(self.plan.listen.reach_host)}:{self.plan.listen.port}/v1/models"
        request = urllib.request.Request(url)
        key = self.plan.secrets.get("LLAMA_API_KEY", "").split(",")[0].strip()
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=3) as answer:
                return output.router_summary(json.loads(answer.read()))
        except (OSError, ValueError):
            return None

    def copy_output(self, reader: int) -> None:
        """llama-server's output to ours (Supervisor's log), line by line, secrets masked;
        its progress bars become a progress line every few seconds."""
        pending = ""
        while True:
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                chunk = b""
            if not chunk:
                break
            segments, pending = output.split_output(pending + chunk.decode(errors="replace"))
            for segment in segments:
                self.take(segment)
        if pending:
            self.take(pending)
        os.close(reader)

    def take(self, segment: str) -> None:
        line = output.clean(segment)
        if not line:
            return
        with self.lock:
            self.activity = time.monotonic()
        found = output.progress(line)
        if found is not None:
            with self.lock:
                self.download = found
            last_time, last_percent = self.logged_progress
            now = time.monotonic()
            if found.percent != last_percent and (now - last_time >= PROGRESS_LOG_SECONDS or found.percent == 100):
                self.logged_progress = (now, found.percent)
                log(f"downloading {found.file}: {found.percent}%")
            return
        line = mask(line, self.runner.secrets)
        with self.lock:
            self.requests += output.request_done(line)
            self.lines.append(line)
            del self.lines[:-400]
        print(line, flush=True)

    def outcome(self, process: subprocess.Popen[bytes], served: bool) -> Attempt:
        code = process.returncode
        ended = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        with self.lock:
            lines = list(self.lines)
        diagnosed = gpu.failure_cause(lines, self.runner.gpu.facts)  # a CUDA error, with its fix
        if served:
            return Attempt(served=True, cause=f"{ended}; {diagnosed}" if diagnosed else ended)
        cause = (
            self.stalled
            or diagnosed
            or output.failure_cause(lines)
            or f"llama-server ended ({ended}) before it answered"
        )
        return Attempt(served=False, cause=mask(cause, self.runner.secrets), final=output.is_argument_error(lines))


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


def open_terminal() -> tuple[int, int]:
    """(read end, write end) for llama-server's output: a pseudo-terminal, because llama-server
    draws download progress only on a terminal; a pipe where no terminal can be had."""
    try:
        reader, writer = pty.openpty()
    except OSError:
        return os.pipe()
    attributes = termios.tcgetattr(writer)
    attributes[1] &= ~termios.OPOST  # no "\n" -> "\r\n"
    termios.tcsetattr(writer, termios.TCSANOW, attributes)
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    return reader, writer


def die_with_parent() -> list[str]:
    """A prefix that makes llama-server end when this program dies without stopping it (SIGKILL):
    util-linux's setpriv sets the parent-death signal, then runs it in the same process."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (at once when `grace` is not positive)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=max(grace, 0.0))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def downloading_bytes(cache: str) -> int:
    """Bytes in unfinished downloads under the cache (llama-server's *.downloadInProgress)."""
    total = 0
    with contextlib.suppress(OSError):
        for path in Path(cache).rglob("*.downloadInProgress"):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
    return total


def status_line(warning: str, line: str) -> str:
    """A status line with the CPU-fallback warning: in front, except that a failure still starts
    with "failed:" (the health check and the portal tell a failure by that start)."""
    if line.startswith("failed: "):
        return f"failed: {warning}{line.removeprefix('failed: ')}"
    return f"{warning}{line}"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    command = arguments[0] if arguments else ""
    env: dict[str, Any] = dict(os.environ)
    if command == "boot":
        return boot(env)
    if command == "serve":
        return serve(env)
    print("usage: llama-serving boot|serve", file=sys.stderr)
    return 2
