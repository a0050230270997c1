"""One start of llama-server, watched: its output read on a pseudo-terminal (secrets masked,
progress bars turned into progress lines), every line kept in its detail log and all but the
lines about each request copied to the log, which gets one line per request instead
(LLAMA_LOG_REQUESTS); its health and progress turned into status lines, a start that stops moving
ended, and how it ended (an Attempt).

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llama_runtime import logs
from llama_runtime.files import write_atomically

from . import gpu, output
from .config import mask
from .paths import PID_FILE, REQUESTS_SERVED_FILE, SERVER_DIRECTORY, SERVICE
from .status import Download

if TYPE_CHECKING:
    from .service import Runner

# How long a llama-server that stalled gets to end after SIGTERM (no Supervisor stop pending).
STALL_GRACE_SECONDS = 8.0
PROGRESS_LOG_SECONDS = 5.0
ROUTER_POLL_SECONDS = 3.0


def log(message: str) -> None:
    print(f"[llama] {message}", flush=True)


@dataclass
class Attempt:
    """How one start of llama-server ended."""

    served: bool  # it answered /health with 200 before it ended
    cause: str = ""
    final: bool = False  # starting again cannot help
    final_reason: str = "its arguments were refused"  # why, when final


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
        # Every line llama-server writes is kept in the detail log; `docker logs` gets one line per
        # request from it (LLAMA_LOG_REQUESTS, output.Requests).
        self.detail = logs.RotatingFile(logs.detail_log(SERVICE))
        self.request_lines = output.Requests()

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
                cwd=SERVER_DIRECTORY,  # not /workspace: ggml loads backends from its working directory
                **self.runner.credentials(),
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
                self.runner.status(Download(download.file, download.percent))
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
            self.detail.flush()
        if pending:
            self.take(pending)
        self.detail.close()
        if self.detail.problem:
            log(f"{self.detail.problem}: llama-server's detail is not kept")
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
        detail, summary = self.request_lines.route(line)
        with self.lock:
            self.requests += output.request_done(line)
            self.lines.append(line)
            del self.lines[:-400]
        self.detail.write(line)
        shown = self.plan.log_requests
        if shown == "full" or not detail:
            print(line, flush=True)
        elif summary is not None and shown == "summary":
            print(summary, flush=True)

    def outcome(self, process: subprocess.Popen[bytes], served: bool) -> Attempt:
        code = process.returncode
        ended = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        with self.lock:
            lines = list(self.lines)
        diagnosed = gpu.failure(lines, self.runner.gpu.facts)  # a CUDA failure, with its fix
        # The GPU or its driver cannot run the image (222, 803, 804, 209, no kernels): no retries.
        gpu_final = diagnosed is not None and diagnosed.final
        if served:
            cause = f"{ended}; {diagnosed.cause}" if diagnosed else ended
            return Attempt(True, cause, final=gpu_final, final_reason=diagnosed.final_reason if diagnosed else "")
        cause = (
            self.stalled
            or (diagnosed.cause if diagnosed else "")
            or output.failure_cause(lines)
            or f"llama-server ended ({ended}) before it answered"
        )
        if gpu_final and diagnosed is not None and not self.stalled:
            return Attempt(False, mask(cause, self.runner.secrets), final=True, final_reason=diagnosed.final_reason)
        return Attempt(served=False, cause=mask(cause, self.runner.secrets), final=output.is_argument_error(lines))


def open_terminal() -> tuple[int, int]:
    """(read end, write end) for llama-server's output: a pseudo-terminal, because llama-server
    draws download progress only on a terminal; a pipe where no terminal can be had, or set up
    (an arm64 image under qemu's emulation answers the terminal's settings with ENOSYS)."""
    try:
        reader, writer = pty.openpty()
    except OSError:
        return os.pipe()
    try:
        attributes = termios.tcgetattr(writer)
        attributes[1] &= ~termios.OPOST  # no "\n" -> "\r\n"
        termios.tcsetattr(writer, termios.TCSANOW, attributes)
    except termios.error:
        os.close(reader)
        os.close(writer)
        return os.pipe()
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
