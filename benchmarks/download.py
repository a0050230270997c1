"""Measurement 6: cold start with a model download (the launcher's connections vs llama-server's
own -hf), from a loopback fake of the hub behind a rate limit."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .measure import EXTERNAL_PORT, BenchError, Context, container, health_status, published_port, run, tiny_model
from .stats import median

# ---- 6. cold start: model download ------------------------------------------------------------

DOWNLOAD_REPO = "bench/model-GGUF"
DOWNLOAD_FILE = "bench-Q4_K_M.gguf"  # the quant llama-server's -hf picks by default
DOWNLOAD_WAYS = {"launcher, 16 connections": "16", "llama-server's own -hf": "0"}


def download_model(ctx: Context, size: int) -> Path:
    """The tests' tiny model padded to `size` bytes (it still loads): what the hub serves."""
    model = ctx.work / "models" / "download" / DOWNLOAD_FILE
    if not model.is_file() or model.stat().st_size != size:
        tiny = tiny_model(ctx).read_bytes()
        model.parent.mkdir(parents=True, exist_ok=True)
        with model.open("wb") as handle:
            handle.write(tiny)
            handle.truncate(size)
    return model


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, where containers reach the fake hub."""
    text = run(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"])
    return text.strip()


@contextlib.contextmanager
def fake_hub(ctx: Context, model: Path, rate: int, link_rate: int) -> Iterator[str]:
    """tests/support/fake_hf_hub.py serving the model, capped per connection and/or in all -> its URL."""
    log_file = ctx.work / "logs" / "download-hub.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.support.fake_hf_hub", str(model), "--repo", DOWNLOAD_REPO,
               "--host", bridge_gateway(), "--rate", str(rate), "--link-rate", str(link_rate)]  # fmt: skip
    with log_file.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ctx.root, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "HF_ENDPOINT=" not in log_file.read_text(encoding="utf-8"):
                if process.poll() is not None:
                    raise BenchError(f"the fake hub ended: {log_file.read_text(encoding='utf-8')[-2000:]}")
                time.sleep(0.1)
            first = log_file.read_text(encoding="utf-8").split()
            url = next((word.removeprefix("HF_ENDPOINT=") for word in first if word.startswith("HF_ENDPOINT=")), "")
            if not url:
                raise BenchError("the fake hub did not say where it listens")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def download_once(image: str, endpoint: str, token: str, connections: str, timeout: float = 900) -> float:
    """Seconds from `docker run` (empty cache) to /health 200 through the proxy."""
    arguments = ["-p", f"127.0.0.1::{EXTERNAL_PORT}", "-e", f"LLAMA_MODEL={DOWNLOAD_REPO}",
                 "-e", f"HF_ENDPOINT={endpoint}", "-e", f"LLAMA_DOWNLOAD_CONNECTIONS={connections}",
                 "-e", f"OPEN_BUTTON_TOKEN={token}", image]  # fmt: skip
    started = time.monotonic()
    with container(arguments) as identifier:
        port = published_port(identifier, EXTERNAL_PORT)
        while health_status(port, token) != 200:
            if time.monotonic() - started > timeout:
                logs = subprocess.run(["docker", "logs", identifier], capture_output=True, text=True, check=False)
                raise BenchError(f"no /health 200 within {timeout} s:\n{(logs.stdout + logs.stderr)[-2000:]}")
            time.sleep(0.05)
        return time.monotonic() - started


def download_scenarios(rate: int, link_rate: int) -> dict[str, dict[str, int]]:
    """The two situations a rented machine meets: a CDN that caps each connection, and a link that
    is the limit whatever the number of connections."""
    return {"per-connection cap": {"rate": rate, "link_rate": 0}, "link cap": {"rate": 0, "link_rate": link_rate}}


def measure_download(ctx: Context, image: str, runs: int, size: int, rate: int, link_rate: int) -> dict[str, Any]:
    model = download_model(ctx, size)
    token = secrets.token_urlsafe(18)
    scenarios: dict[str, Any] = {}
    for scenario, limits in download_scenarios(rate, link_rate).items():
        seconds: dict[str, list[float]] = {way: [] for way in DOWNLOAD_WAYS}
        with fake_hub(ctx, model, limits["rate"], limits["link_rate"]) as endpoint:
            for number in range(runs):
                ways = list(DOWNLOAD_WAYS) if number % 2 == 0 else list(reversed(DOWNLOAD_WAYS))
                for way in ways:  # interleaved, alternating which goes first
                    seconds[way].append(round(download_once(image, endpoint, token, DOWNLOAD_WAYS[way]), 2))
                ctx.log(f"download: {scenario}: run {number + 1}/{runs}: "
                        + ", ".join(f"{way} {found[-1]:.1f} s" for way, found in seconds.items()))  # fmt: skip
        medians = {way: median(found) for way, found in seconds.items()}
        ours, theirs = medians["launcher, 16 connections"], medians["llama-server's own -hf"]
        scenarios[scenario] = {
            **limits,
            "seconds": seconds,
            "median_seconds": {way: round(value, 2) for way, value in medians.items()},
            "speedup": round(theirs / ours, 2) if ours else None,
        }
    return {"image": image, "bytes": size, "runs": runs, "scenarios": scenarios}
