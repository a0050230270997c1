"""The soak run against an image (I/O edge): the container started with the tiny model, the load
sent through its proxy (edges/http_load.py), llama-server's process sampled after every sub-block
(`docker exec`), and what `docker logs` got. What is sent and how it is judged is core/soak.py.

The container publishes the proxy's port on loopback only, with a token made for this run; the
model is written to a temporary folder mounted read-only. Whatever happens, the container and
the folder are removed.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core import soak
from ..core.errors import EngineError, LlamaImagesError
from ..core.tiny_model import tiny_llama_gguf
from . import http_load
from .engine import docker

PROXY_PORT = 8000  # the llama service's external port in the image (llama.toml)
MODEL = "/models/tiny.gguf"
READY_SECONDS = 180.0  # boot and first answer; emulated platforms are slow
# llama-server's process, its resident memory and CPU ticks, as one line: "PID RSS_KB TICKS".
SAMPLE = (
    "pid=$(pgrep -xo llama-server) && "
    "rss=$(awk '/^VmRSS:/{print $2}' /proc/$pid/status) && "
    "ticks=$(awk '{print $14 + $15}' /proc/$pid/stat) && echo $pid $rss $ticks"
)


class SoakError(LlamaImagesError):
    """The soak could not run (the image did not serve): its message says why."""

    exit_code = EngineError.exit_code


@dataclass
class Container:
    identifier: str
    port: int
    token: str

    def sample(self) -> soak.Sample:
        done = docker(["exec", self.identifier, "sh", "-c", SAMPLE], SoakError, timeout=60)
        fields = done.stdout.split()
        if done.returncode != 0 or len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise SoakError(f"llama-server's process could not be read in the container: {done.stderr.strip()[-300:]}")
        pid, rss_kb, ticks = (int(f) for f in fields)
        return soak.Sample(pid, rss_kb * 1024, ticks)

    def log_bytes(self) -> int:
        done = docker(["logs", self.identifier], SoakError, timeout=120)
        return len(done.stdout.encode()) + len(done.stderr.encode())

    def log_tail(self, lines: int = 40) -> str:
        done = docker(["logs", "--tail", str(lines), self.identifier], SoakError, timeout=60)
        return (done.stdout + done.stderr).strip()


@contextlib.contextmanager
def started(image: str, platform: str | None = None) -> Iterator[Container]:
    """The image serving the tiny model, its proxy's port published on loopback."""
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="llama-images-soak-") as folder:
        model = Path(folder) / "tiny.gguf"
        model.write_bytes(tiny_llama_gguf())
        model.chmod(0o644)
        Path(folder).chmod(0o755)
        command = ["run", "-d", "-p", f"127.0.0.1::{PROXY_PORT}", "-v", f"{folder}:/models:ro",
                   "-e", f"LLAMA_MODEL={MODEL}", "-e", "OPEN_BUTTON_TOKEN"]  # fmt: skip
        if platform:
            command += ["--platform", platform]
        # The token travels in the environment of `docker run`, never in its arguments.
        done = docker([*command, image], SoakError, timeout=600, env={"OPEN_BUTTON_TOKEN": token})
        if done.returncode != 0:
            raise SoakError(f"{image} did not start: {done.stderr.strip()[-500:]}")
        identifier = done.stdout.strip()
        try:
            port = published_port(identifier)
            yield Container(identifier, port, token)
        finally:
            docker(["rm", "-f", "-v", identifier], SoakError, timeout=120)


def published_port(identifier: str) -> int:
    done = docker(["port", identifier, f"{PROXY_PORT}/tcp"], SoakError, timeout=60)
    for line in done.stdout.splitlines():
        host, _, port = line.strip().rpartition(":")
        if host in ("127.0.0.1", "0.0.0.0") and port.isdigit():
            return int(port)
    raise SoakError(f"the proxy's port {PROXY_PORT} was not published: {done.stdout.strip()} {done.stderr.strip()}")


def wait_serving(container: Container, target: http_load.Target, seconds: float = READY_SECONDS) -> None:
    """Until a completion answers 200 through the proxy (llama-server up, the model loaded)."""
    kind = soak.KINDS[0]
    probe = http_load.Request("POST", kind.path, kind.body("ready?", 1), kind.stream)
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        outcome = http_load.send_all(target, [probe], 1, timeout=10)
        if outcome.failures == 0:
            return
        last = outcome.examples[0] if outcome.examples else ""
        time.sleep(0.5)
    raise SoakError(f"the image did not serve within {seconds:g} s ({last}); its log ends:\n{container.log_tail()}")


def run(
    image: str,
    settings: soak.Settings = soak.RELEASE,
    platform: str | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> soak.Run:
    """Soak `image` (on `platform`, when given) and return what was measured."""
    with started(image, platform) as container:
        target = http_load.Target("127.0.0.1", container.port, (("Authorization", f"Bearer {container.token}"),))
        wait_serving(container, target)
        logs_before = container.log_bytes()
        start = container.sample()
        measured: list[soak.Measured] = []
        began = time.monotonic()
        steps = soak.schedule(settings)
        for step in steps:
            requests = [
                http_load.Request("POST", step.kind.path, step.kind.body(prompt, settings.max_tokens), step.kind.stream)
                for prompt in soak.prompts(step.first, step.count, settings.seed)
            ]
            outcome = http_load.send_all(target, requests, settings.concurrency, check=step.kind.problem)
            after = container.sample()
            measured.append(
                soak.Measured(step.block, step.kind.name, outcome.requests, outcome.failures, outcome.retried,
                              outcome.seconds, after, tuple(outcome.examples))
            )  # fmt: skip
            if step is steps[-1] or steps[len(measured)].block != step.block:
                sent = sum(m.requests for m in measured)
                progress(f"block {step.block} done: {sent} requests sent, llama-server at {after.rss // 1024} kB")
        seconds = time.monotonic() - began
        log_bytes = container.log_bytes() - logs_before
        return soak.Run(settings, start, tuple(measured), log_bytes, seconds)
