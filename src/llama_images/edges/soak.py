"""The soak run against an image (I/O edge): the container started with the tiny model, the load
sent through its proxy (edges/http_load.py), llama-server's process sampled at the end of each block
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core import soak
from ..core.errors import EngineError, LlamaImagesError
from ..core.tiny_model import tiny_llama_gguf
from . import http_load
from .engine import docker

PROXY_PORT = 8000  # the llama service's external port in the image (llama.toml)
MODEL = "/models/tiny.gguf"
# llama-server's process and its resident memory, as one line: "PID RSS_KB".
SAMPLE = "pid=$(pgrep -xo llama-server) && echo $pid $(awk '/^VmRSS:/{print $2}' /proc/$pid/status)"


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
        if done.returncode != 0 or len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise SoakError(f"llama-server's process could not be read in the container: {done.stderr.strip()[-300:]}")
        pid, rss_kb = (int(f) for f in fields)
        return soak.Sample(pid, rss_kb * 1024)

    def log_bytes(self) -> int:
        done = docker(["logs", self.identifier], SoakError, timeout=120)
        return len(done.stdout.encode()) + len(done.stderr.encode())

    def settled_log_bytes(self, seconds: float = 15.0) -> int:
        """What `docker logs` holds once it stops growing (the log copier runs a moment behind)."""
        deadline = time.monotonic() + seconds
        size = self.log_bytes()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.log_bytes()
            if now == size:
                break
            size = now
        return size

    def restart_llama(self) -> None:
        """A fresh llama-server, as a user restarts it (program llama)."""
        done = docker(["exec", self.identifier, "supervisorctl", "restart", "llama"], SoakError, timeout=120)
        if done.returncode != 0:
            raise SoakError(f"llama-server could not be restarted: {(done.stdout + done.stderr).strip()[-300:]}")

    def log_tail(self, lines: int = 40) -> str:
        done = docker(["logs", "--tail", str(lines), self.identifier], SoakError, timeout=60)
        return (done.stdout + done.stderr).strip()


@contextlib.contextmanager
def started(image: str, platform: str | None = None, env: Mapping[str, str] | None = None) -> Iterator[Container]:
    """The image serving the tiny model (with `env` added to its environment), its proxy's port
    published on loopback; removed afterwards."""
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="llama-images-soak-") as folder:
        model = Path(folder) / "tiny.gguf"
        model.write_bytes(tiny_llama_gguf())
        model.chmod(0o644)
        Path(folder).chmod(0o755)
        command = ["run", "-d", "-p", f"127.0.0.1::{PROXY_PORT}", "-v", f"{folder}:/models:ro",
                   "-e", f"LLAMA_MODEL={MODEL}", "-e", "OPEN_BUTTON_TOKEN"]  # fmt: skip
        for name in env or {}:
            command += ["-e", name]
        if platform:
            command += ["--platform", platform]
        # The token travels in the environment of `docker run`, never in its arguments.
        done = docker([*command, image], SoakError, timeout=600, env={**(env or {}), "OPEN_BUTTON_TOKEN": token})
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


def send(
    container: Container, target: http_load.Target, settings: soak.Settings, step: soak.Step, sample: bool
) -> soak.Measured:
    """One sub-block sent and answered (then, with `sample`, llama-server sampled)."""
    kind = step.kind
    requests = [
        http_load.Request("POST", kind.path, kind.body(prompt, settings.max_tokens), kind.stream)
        for prompt in soak.prompts(step.first, step.count, settings.seed)
    ]
    outcome = http_load.send_all(target, requests, settings.concurrency, check=kind.problem)
    return soak.Measured(step.block, kind.name, outcome.requests, outcome.failures, outcome.retried, outcome.seconds,
                         container.sample() if sample else None, tuple(outcome.examples))  # fmt: skip


def wait_serving(container: Container, target: http_load.Target, seconds: float) -> None:
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
        return load(container, settings, progress)


def load(
    container: Container, settings: soak.Settings, progress: Callable[[str], None] = lambda line: None
) -> soak.Run:
    """The soak's load on a started container, and what was measured."""
    target = http_load.Target("127.0.0.1", container.port, (("Authorization", f"Bearer {container.token}"),))
    wait_serving(container, target, settings.ready_seconds)
    logs_before = container.log_bytes()
    start = container.sample()
    measured: list[soak.Measured] = []
    began = time.monotonic()
    steps = soak.schedule(settings)
    for index, step in enumerate(steps):
        block_ends = index + 1 == len(steps) or steps[index + 1].block != step.block
        measured.append(send(container, target, settings, step, sample=block_ends))
        after = measured[-1].after
        if after is not None:
            sent = sum(m.requests for m in measured)
            progress(f"block {step.block} done: {sent} requests sent, llama-server at {after.rss // 1024} kB")
    confirming = soak.confirmation_steps(settings, measured)
    for index, step in enumerate(confirming):
        if index % max(1, settings.confirmations) == 0:
            progress(f"{step.kind.name} looks slower at the end: {settings.confirmations} more sub-blocks to confirm")
        measured.append(send(container, target, settings, step, sample=index + 1 == len(confirming)))
    log_bytes = container.settled_log_bytes() - logs_before
    fresh = soak.fresh_steps(settings, measured)
    if fresh:
        names = ", ".join(dict.fromkeys(step.kind.name for step in fresh))
        progress(f"{names} still slower: llama-server restarted, to compare with a fresh one")
        container.restart_llama()
        wait_serving(container, target, settings.ready_seconds)
        measured += [send(container, target, settings, step, sample=False) for step in fresh]
    seconds = time.monotonic() - began
    return soak.Run(settings, start, tuple(measured), log_bytes, seconds)
