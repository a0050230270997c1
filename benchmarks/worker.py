"""8. The serverless worker (issue 26): generation through the worker (SERVERLESS=true, signed
requests from a loopback stand-in for Vast's engine) vs llama-server directly, in one container
and one run: tokens per second and added latency, at concurrency 1 and 8.

The worker's share of a request is fixed (the signature check, one /tokenize, one more hop), so it
is measured on requests that take as long as a small real model's do: a random model of about 70
MB (a few milliseconds per token on a CPU), each request generating exactly TOKENS tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import load, report
from .measure import BenchError, Context, container, run
from .serving import loader_image
from .stats import LoadSample, summarize

CONCURRENCY = (1, 8)
TOKENS = 64
PROMPT = "Once upon a time"
REQUESTS_PER_WORKER = 4
MIN_REQUESTS = 16
WORKER_PORT = 3000
PUBLIC_URL = f"http://127.0.0.1:{WORKER_PORT}"  # what the worker reports, as hey (in its namespace) dials it
WORKER_ID = 1


def bench_model(ctx: Context) -> Path:
    """The test models' generator (tests/support/tiny_gguf.py), wider: a few ms per token."""
    folder = ctx.work / "models"
    model = folder / "worker.gguf"
    if not model.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "tests.support.tiny_gguf", str(model), "--n-embd", "512", "--n-ff", "2048",
             "--n-blocks", "4"], cwd=ctx.root)  # fmt: skip
    return model


def kinds(auth_data: dict[str, Any]) -> dict[str, tuple[load.LoadKind, load.LoadKind]]:
    """Per kind, (through the worker, direct): the same completion, wrapped for the worker."""
    found = {}
    for name, stream in (("completion", False), ("stream", True)):
        payload = {"prompt": PROMPT, "max_tokens": TOKENS, "ignore_eos": True, "stream": stream}
        body = json.dumps({"auth_data": auth_data, "payload": payload})
        found[name] = (
            load.LoadKind(name, "POST", "/v1/completions", body, REQUESTS_PER_WORKER),
            load.LoadKind(name, "POST", "/v1/completions", json.dumps(payload), REQUESTS_PER_WORKER),
        )
    return found


def request_count(concurrency: int) -> int:
    wanted = max(MIN_REQUESTS, REQUESTS_PER_WORKER * concurrency)
    return -(-wanted // concurrency) * concurrency


def measure_worker(ctx: Context, image: str, repeats: int) -> dict[str, Any]:
    from tests.support.fake_vast_engine import FakeEngine

    models = bench_model(ctx).parent
    gateway = run(["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"]).strip()
    loader = loader_image(ctx)
    direct_port = internal_port(image)
    with FakeEngine(gateway) as engine:
        engine.expect(WORKER_ID, "bench-master-token")
        server_args = [
            "-v", f"{models}:/models:ro",
            "-e", "LLAMA_MODEL=/models/worker.gguf",
            "-e", "SERVERLESS=true",
            "-e", f"REPORT_ADDR={engine.url}",
            "-e", "MASTER_TOKEN=bench-master-token",
            "-e", f"CONTAINER_ID={WORKER_ID}",
            "-e", "PUBLIC_IPADDR=127.0.0.1",
            "-e", f"VAST_TCP_PORT_{WORKER_PORT}={WORKER_PORT}",
            image,
        ]  # fmt: skip
        with container(server_args) as server:
            benchmark = wait_benchmarked(engine, server)
            paths = {"worker": f"http://127.0.0.1:{WORKER_PORT}", "direct": f"http://127.0.0.1:{direct_port}"}
            chosen = kinds(engine.auth_data(PUBLIC_URL))
            samples: dict[tuple[str, int, str], list[LoadSample]] = {}
            sleeper = ["--network", f"container:{server}", "--entrypoint", "sleep", loader, "infinity"]
            with container(sleeper) as client:

                def hey(kind: load.LoadKind, concurrency: int, path: str) -> LoadSample:
                    count = request_count(concurrency)
                    command = load.hey_command(paths[path] + kind.path, kind, concurrency, {}, count)
                    text = run(["docker", "exec", client, *command], timeout=600)
                    return load.parse_hey_csv(text, count)

                for worker_kind, direct_kind in chosen.values():  # warm-up
                    hey(worker_kind, 8, "worker")
                    hey(direct_kind, 8, "direct")
                for repeat in range(repeats):
                    for name, (worker_kind, direct_kind) in chosen.items():
                        for concurrency in CONCURRENCY:
                            order = ["worker", "direct"] if (repeat + concurrency) % 2 == 0 else ["direct", "worker"]
                            for path in order:
                                kind = worker_kind if path == "worker" else direct_kind
                                samples.setdefault((name, concurrency, path), []).append(hey(kind, concurrency, path))
                    ctx.log(f"worker: round {repeat + 1}/{repeats} done")
            refused = len(engine.refused_reports)
    summaries = {key: summarize(found).as_json() for key, found in samples.items()}
    return {
        "image": image,
        "repeats": repeats,
        "tokens_per_request": TOKENS,
        "model": "random llama, n_embd 512, n_ff 2048, 4 blocks (about 70 MB)",
        "benchmark_tokens_per_second": benchmark,
        "refused_reports": refused,
        "rows": report.worker_rows(summaries, TOKENS),
    }


def internal_port(image: str) -> int:
    text = run(["docker", "run", "--rm", "--entrypoint", "/opt/llama-images/bin/llama-runtime", image, "services",
                "--field", "llama.internal_port"])  # fmt: skip
    return int(text.strip())


def wait_benchmarked(engine: Any, server: str, timeout: float = 300) -> float:
    """The worker's benchmark figure, once it has reported one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = engine.worker(WORKER_ID).last
        if last.get("error_msg"):
            raise BenchError(f"the worker reported an error: {last['error_msg']}")
        if float(last.get("max_perf") or 0) > 0:
            return round(float(last["max_perf"]), 1)
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", server], capture_output=True, text=True, check=False)
    raise BenchError(f"the worker reported no benchmark within {timeout} s:\n{(logs.stdout + logs.stderr)[-3000:]}")
