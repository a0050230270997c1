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
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_runtime import logs
from llama_runtime.files import write_atomically

from . import gpu, output
from .child import LOOK_SECONDS, Child, Stall
from .config import Plan, mask
from .paths import PID_FILE, REQUESTS_SERVED_FILE, SERVER_DIRECTORY, SERVICE
from .status import Download

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


@dataclass(frozen=True)
class Start:
    """What one start of llama-server is given: its command, environment and account (Popen's
    user, group and extra_groups; none: as we are), and what its output is read against: the
    secrets it must never show, the GPU's facts its failures are diagnosed with."""

    command: list[str]
    environment: Mapping[str, str]
    account: Mapping[str, Any]
    secrets: Sequence[str]
    gpu_facts: gpu.Facts


@dataclass(frozen=True)
class Handle:
    """All a Watch uses of the program that started llama-server (service.Runner): its status
    line, its stop and the time llama-server has left then, and where the running child is
    registered so that a stop reaches it."""

    status: Callable[[str | Download], None]  # a line, or a download's progress (status.py)
    stopping: threading.Event
    stop_grace: Callable[[], float]  # seconds llama-server has left to end, once stopping
    register: Callable[[subprocess.Popen[bytes] | None], None]


class Watch:
    """One llama-server process: its output copied to the log (secrets masked), its progress
    and health turned into status lines, a download that stops moving ended."""

    def __init__(self, plan: Plan, start: Start, handle: Handle) -> None:
        self.plan = plan
        self.start = start
        self.handle = handle
        self.lines: list[str] = []
        self.stall = Stall(plan.retries.stall_timeout)
        self.download: output.Progress | None = None
        self.logged_progress = (0.0, -1)
        self.served = False  # it answered /health with 200
        self.cache_bytes = -1
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
        try:
            child = Child.start(
                self.start.command,
                self.take,
                read=self.detail.flush,
                ended=self.output_ended,
                split=output.split_output,
                terminal=True,  # llama-server draws its download progress only on a terminal
                env=self.start.environment,
                cwd=SERVER_DIRECTORY,  # not /workspace: ggml loads backends from its working directory
                account=self.start.account,
            )
        except OSError as exc:
            return Attempt(served=False, cause=f"cannot run llama-server: {exc.strerror}", final=True)
        self.handle.register(child.process)
        with contextlib.suppress(OSError):
            write_atomically(PID_FILE, f"{child.process.pid}\n")
        stalled = child.supervise(
            self.handle.stopping,
            self.look,
            stop_grace=self.handle.stop_grace,
            stall_grace=STALL_GRACE_SECONDS,
            interval=lambda: ROUTER_POLL_SECONDS if self.served else LOOK_SECONDS,
        )
        code = child.finish()
        PID_FILE.unlink(missing_ok=True)
        self.handle.register(None)
        return self.outcome(code, stalled)

    def look(self) -> str:
        """Until llama-server answers, its state twice a second; once it serves, only router
        mode's model list, now and then. The cause when it stopped moving."""
        if self.served:
            self.publish_requests()
            summary = self.router_summary() if self.plan.router else None
            if summary:
                self.handle.status(summary)
            return ""
        health = self.health()
        if health == 200:
            self.served = True
            self.publish_requests()
            log(f"ready: serving {self.plan.model_name} on {self.plan.listen.host}:{self.plan.listen.port}")
            summary = self.router_summary() if self.plan.router else None
            self.handle.status(summary or f"serving {self.plan.model_name}")
            return ""
        if health == 503:
            self.handle.status("loading model")
            return ""
        # Nothing listens yet: a download, or a stall.
        with self.lock:
            download = self.download
        if download is not None and download.percent < 100:
            self.handle.status(Download(download.file, download.percent))
        size = downloading_bytes(self.plan.cache)
        if size != self.cache_bytes:
            self.cache_bytes = size
            self.stall.moved()
        if self.stall.stalled():
            return f"no output and no download progress for {self.plan.retries.stall_timeout:g} s"
        return ""

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

    def output_ended(self) -> None:
        self.detail.close()
        if self.detail.problem:
            log(f"{self.detail.problem}: llama-server's detail is not kept")

    def take(self, segment: str) -> None:
        line = output.clean(segment)
        if not line:
            return
        self.stall.moved()
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
        line = mask(line, self.start.secrets)
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

    def outcome(self, code: int, stalled: str) -> Attempt:
        """How this start ended, from its exit status (negative: the signal), whether it served,
        the stall that ended it ("" none) and its last lines."""
        ended = f"signal {-code}" if code < 0 else f"exit status {code}"
        with self.lock:
            lines = list(self.lines)
        diagnosed = gpu.failure(lines, self.start.gpu_facts)  # a CUDA failure, with its fix
        # The GPU or its driver cannot run the image (222, 803, 804, 209, no kernels): no retries.
        gpu_final = diagnosed is not None and diagnosed.final
        if self.served:
            cause = f"{ended}; {diagnosed.cause}" if diagnosed else ended
            return Attempt(True, cause, final=gpu_final, final_reason=diagnosed.final_reason if diagnosed else "")
        cause = (
            stalled
            or (diagnosed.cause if diagnosed else "")
            or output.failure_cause(lines)
            or f"llama-server ended ({ended}) before it answered"
        )
        if gpu_final and diagnosed is not None and not stalled:
            return Attempt(False, mask(cause, self.start.secrets), final=True, final_reason=diagnosed.final_reason)
        return Attempt(served=False, cause=mask(cause, self.start.secrets), final=output.is_argument_error(lines))


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
