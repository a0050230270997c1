"""The serving measurements: 3. boot to healthy (the image vs bare llama-server), 4. the proxy
under a bounded loopback load (hey in the container's network namespace)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import load, report
from .measure import (
    EXTERNAL_PORT,
    BenchError,
    Context,
    build_from_stdin,
    container,
    cpu_upstream,
    health_status,
    published_port,
    run,
    tiny_model,
)
from .stats import LoadSample, median, summarize

# hey, the load generator, on the same upstream.
LOADER_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hey \\
    && apt-get clean \\
    && rm -rf /var/lib/apt/lists/*
"""

# ---- 3. boot to healthy ----------------------------------------------------------------------


def boot_once(image: str, models: Path, token: str, bare: bool, timeout: float = 120) -> tuple[float, dict[str, float]]:
    """Seconds from `docker run` to /health answering 200 on the published external port, and
    (image only) when boot reached its phases, read from the log's timestamps."""
    run_args = ["-p", f"127.0.0.1::{EXTERNAL_PORT}", "-v", f"{models}:/models:ro"]
    if bare:
        arguments = [
            *run_args,
            "--entrypoint",
            "llama-server",
            image,
            "-m",
            "/models/tiny.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            str(EXTERNAL_PORT),
        ]
    else:
        arguments = [*run_args, "-e", "LLAMA_MODEL=/models/tiny.gguf", "-e", f"OPEN_BUTTON_TOKEN={token}", image]
    started_wall = time.time()
    started = time.monotonic()
    with container(arguments) as identifier:
        port = published_port(identifier, EXTERNAL_PORT)
        while health_status(port, None if bare else token) != 200:
            if time.monotonic() - started > timeout:
                logs = subprocess.run(["docker", "logs", identifier], capture_output=True, text=True, check=False)
                raise BenchError(
                    f"/health did not answer 200 within {timeout} s:\n{(logs.stdout + logs.stderr)[-2000:]}"
                )
            time.sleep(0.01)
        seconds = time.monotonic() - started
        phases = {} if bare else boot_phases(identifier, started_wall)
    return seconds, phases


PHASE_MARKERS = {
    "boot started": "[boot] ",
    "supervisord started": "supervisord started",
    "llama spawned": "spawned: 'llama'",
}


def boot_phases(identifier: str, started: float) -> dict[str, float]:
    """Seconds after `docker run` at which the container's log first showed each phase."""
    output = subprocess.run(["docker", "logs", "-t", identifier], capture_output=True, text=True, check=False)
    found: dict[str, float] = {}
    for line in (output.stdout + output.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        for phase, marker in PHASE_MARKERS.items():
            if phase not in found and marker in text:
                found[phase] = round(log_time(stamp) - started, 3)
    return found


def log_time(stamp: str) -> float:
    """Docker's RFC 3339 log timestamp (nanoseconds, Z) -> seconds since the epoch."""
    import datetime as dt

    whole, _, fraction = stamp.rstrip("Z").partition(".")
    moment = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def measure_boot(ctx: Context, image: str, runs: int) -> dict[str, Any]:
    models = tiny_model(ctx).parent
    token = secrets.token_urlsafe(18)
    image_seconds: list[float] = []
    bare_seconds: list[float] = []
    phases: dict[str, list[float]] = {}
    boot_once(image, models, token, bare=True)  # warm: image layers unpacked, page cache
    for number in range(runs):
        # Interleaved, alternating which goes first.
        for bare in (number % 2 == 1, number % 2 == 0):
            seconds, found = boot_once(image, models, token, bare)
            (bare_seconds if bare else image_seconds).append(round(seconds, 3))
            for name, value in found.items():
                phases.setdefault(name, []).append(value)
        ctx.log(f"boot: run {number + 1}/{runs}: image {image_seconds[-1]:.2f} s, bare {bare_seconds[-1]:.2f} s")
    image_median, bare_median = median(image_seconds), median(bare_seconds)
    return {
        "image": image,
        "runs": runs,
        "image_seconds": image_seconds,
        "bare_seconds": bare_seconds,
        "image_median_seconds": round(image_median, 3),
        "bare_median_seconds": round(bare_median, 3),
        "added_seconds": round(image_median - bare_median, 3),
        "ratio": round(image_median / bare_median, 3) if bare_median else None,
        "phases": {name: round(median(values), 3) for name, values in phases.items()},
    }


# ---- 4. proxy under load ---------------------------------------------------------------------


def loader_image(ctx: Context) -> str:
    """hey from Debian's packages, on the CPU upstream; built once, kept."""
    image = ctx.ref("bench-load", "hey")
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if present.returncode != 0:
        _, upstream = cpu_upstream(ctx.root)
        build_from_stdin(image, LOADER_DOCKERFILE, {"UPSTREAM_IMAGE": upstream}, ctx.work / "logs" / "loader.log")
    return image


def internal_port(image: str) -> int:
    """llama's internal port as the image declares it (the runtime's own loader)."""
    text = run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "/opt/llama-images/bin/llama-runtime",
            image,
            "services",
            "--field",
            "llama.internal_port",
        ]
    )
    return int(text.strip())


def session_cookie(server: str, token: str) -> str:
    """A browser's login inside the container (127.0.0.1, the address hey sends from: the session
    is bound to it): the session cookie as `name=value`."""
    head = run(["docker", "exec", server, "curl", "-s", "-o", "/dev/null", "-D", "-", "-H", "Accept: text/html",
                f"http://127.0.0.1:{EXTERNAL_PORT}/health?token={token}"])  # fmt: skip
    for line in head.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "set-cookie":
            return value.strip().split(";")[0]
    raise BenchError(f"the login with ?token= set no session cookie:\n{head}")


def measure_load(ctx: Context, image: str, repeats: int) -> dict[str, Any]:
    models = tiny_model(ctx).parent
    token = secrets.token_urlsafe(18)
    loader = loader_image(ctx)
    direct_port = internal_port(image)
    proxy_url = f"http://127.0.0.1:{EXTERNAL_PORT}"
    paths = {"proxy": proxy_url, "session": proxy_url, "direct": f"http://127.0.0.1:{direct_port}"}
    headers = {"Authorization": f"Bearer {token}"}
    samples: dict[tuple[str, int, str], list[LoadSample]] = {}
    server_args = [
        "-v",
        f"{models}:/models:ro",
        "-e",
        "LLAMA_MODEL=/models/tiny.gguf",
        "-e",
        f"OPEN_BUTTON_TOKEN={token}",
        image,
    ]
    with container(server_args) as server:
        wait_serving(server, loader, paths["proxy"], headers)
        # The same header names on every path: the session path sends the cookie instead.
        sent = {"proxy": headers, "direct": headers, "session": {"Cookie": session_cookie(server, token)}}
        with container(["--network", f"container:{server}", "--entrypoint", "sleep", loader, "infinity"]) as client:

            def hey(kind: load.LoadKind, concurrency: int, path: str) -> LoadSample:
                command = load.hey_command(paths[path] + kind.path, kind, concurrency, sent[path])
                text = run(["docker", "exec", client, *command], timeout=600)
                return load.parse_hey_csv(text, load.request_count(kind, concurrency))

            for kind in load.KINDS:  # warm-up: connections, caches, the model's first evaluation
                for path in paths:
                    hey(kind, 8, path)
            for repeat in range(repeats):
                for kind in load.KINDS:
                    for concurrency in load.CONCURRENCY:
                        # Each path goes first in turn.
                        shift = (repeat + load.CONCURRENCY.index(concurrency)) % len(load.PATHS)
                        order = [*load.PATHS[shift:], *load.PATHS[:shift]]
                        for path in order:
                            samples.setdefault((kind.name, concurrency, path), []).append(hey(kind, concurrency, path))
                ctx.log(f"load: round {repeat + 1}/{repeats} done")
    summaries = {key: summarize(found).as_json() for key, found in samples.items()}
    return {"image": image, "repeats": repeats, "tool": "hey (Debian)", "rows": report.load_rows(summaries)}


def wait_serving(server: str, loader: str, proxy_url: str, headers: Mapping[str, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                f"container:{server}",
                loader,
                "hey",
                "-n",
                "1",
                "-c",
                "1",
                "-o",
                "csv",
                *header_args,
                f"{proxy_url}/health",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and ",200," in probe.stdout:
            return
        time.sleep(0.5)
    raise BenchError(f"the container did not serve /health through the proxy within {timeout} s")
