"""8. The serverless worker (issue 26): generation through the worker (SERVERLESS=true, signed
requests from a loopback stand-in for Vast's engine) vs llama-server directly, in one container
and one run: tokens per second and added latency, at concurrency 1 and 8.

What the worker adds is a fixed share per request (the signature check, one /tokenize, one more
hop) and, on a stream, one more read and write of every token's event. How much of a request that
is depends on how long a token takes, so it is measured at two paces, each a random model from the
tests' generator, each request generating exactly TOKENS tokens:

- "real": about 7 ms per token alone on the benchmark machine's 2 cores, the pace of an 8B model
  on a rented RTX 4090 (about 130 tokens/s). The target is judged at this pace.
- "fast": under 2 ms per token, faster than any real model on a CPU: the worker's per-token cost at
  its largest share. Reported, not judged.

On a GPU host the model's arithmetic runs on the GPU; here it runs on the same 2 CPU cores as the
worker and the load generator, so both paces are harder on the worker than a GPU host is.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import load, report
from .measure import BenchError, Context, container, random_model, run
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


@dataclass(frozen=True)
class Pace:
    name: str
    sizes: dict[str, int]  # tests/support/tiny_gguf.py's options
    model: str  # what the report says about it
    judged: bool  # whether the target applies at this pace


PACES = (
    Pace("real", {"n-embd": 1024, "n-ff": 2816, "n-blocks": 6},
         "random llama, n_embd 1024, n_ff 2816, 6 blocks (about 310 MB): an 8B model's pace on an RTX 4090", True),
    Pace("fast", {"n-embd": 512, "n-ff": 2048, "n-blocks": 4},
         "random llama, n_embd 512, n_ff 2048, 4 blocks (about 70 MB): faster than any real model on a CPU", False),
)  # fmt: skip


def kinds(auth_data: dict[str, Any]) -> dict[str, tuple[load.LoadKind, load.LoadKind]]:
    """Per kind, (through the worker, direct): the same completion, wrapped for the worker."""
    found = {}
    for name, stream in (("completion", False), ("stream", True)):
        payload = {"prompt": PROMPT, "max_tokens": TOKENS, "ignore_eos": True, "stream": stream}
        body = json.dumps({"auth_data": auth_data, "payload": payload})
        found[name] = (
            load.LoadKind(name, "POST", "/v1/completions", body, REQUESTS_PER_WORKER, streamed=stream),
            load.LoadKind(name, "POST", "/v1/completions", json.dumps(payload), REQUESTS_PER_WORKER, streamed=stream),
        )
    return found


def request_count(concurrency: int) -> int:
    wanted = max(MIN_REQUESTS, REQUESTS_PER_WORKER * concurrency)
    return -(-wanted // concurrency) * concurrency


def measure_worker(ctx: Context, image: str, repeats: int) -> dict[str, Any]:
    from tests.support.fake_vast_engine import FakeEngine

    gateway = run(["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"]).strip()
    loader = loader_image(ctx)
    direct_port = internal_port(image)
    paces = []
    with FakeEngine(gateway) as engine:
        engine.expect(WORKER_ID, "bench-master-token")
        for pace in PACES:
            model = random_model(ctx, f"worker-{pace.name}", pace.sizes)
            paces.append(measure_pace(ctx, engine, image, pace, model, loader, direct_port, repeats))
        refused = len(engine.refused_reports)
    return {
        "image": image,
        "repeats": repeats,
        "tokens_per_request": TOKENS,
        "refused_reports": refused,
        "paces": paces,
    }


def measure_pace(ctx: Context, engine: Any, image: str, pace: Pace, model: Path, loader: str, direct_port: int,
                 repeats: int) -> dict[str, Any]:  # fmt: skip
    server_args = [
        "-v", f"{model.parent}:/models:ro",
        "-e", f"LLAMA_MODEL=/models/{model.name}",
        "-e", "SERVERLESS=true",
        "-e", f"REPORT_ADDR={engine.url}",
        "-e", "MASTER_TOKEN=bench-master-token",
        "-e", f"CONTAINER_ID={WORKER_ID}",
        "-e", "PUBLIC_IPADDR=127.0.0.1",
        "-e", f"VAST_TCP_PORT_{WORKER_PORT}={WORKER_PORT}",
        image,
    ]  # fmt: skip
    samples: dict[tuple[str, int, str], list[LoadSample]] = {}
    started = time.monotonic()
    with container(server_args) as server:
        benchmark = wait_benchmarked(engine, server, started)
        paths = {"worker": f"http://127.0.0.1:{WORKER_PORT}", "direct": f"http://127.0.0.1:{direct_port}"}
        chosen = kinds(engine.auth_data(PUBLIC_URL))
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
                ctx.log(f"worker ({pace.name} pace): round {repeat + 1}/{repeats} done")
    summaries = {key: summarize(found).as_json() for key, found in samples.items()}
    alone = summaries[("completion", 1, "direct")]
    return {
        "name": pace.name,
        "model": pace.model,
        "judged": pace.judged,
        "ms_per_token": round(alone["p50_ms"] / TOKENS, 2),  # llama-server alone, direct
        "benchmark_tokens_per_second": benchmark,
        "rows": report.worker_rows(summaries, TOKENS),
    }


def internal_port(image: str) -> int:
    text = run(["docker", "run", "--rm", "--entrypoint", "/opt/llama-images/bin/llama-runtime", image, "services",
                "--field", "llama.internal_port"])  # fmt: skip
    return int(text.strip())


def wait_benchmarked(engine: Any, server: str, since: float, timeout: float = 300) -> float:
    """The benchmark figure this container's worker reported (the engine keeps the previous
    container's last report under the same id until this one reports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker = engine.worker(WORKER_ID)
        last = worker.last
        fresh = worker.reported_at >= since
        if fresh and last.get("error_msg"):
            raise BenchError(f"the worker reported an error: {last['error_msg']}")
        if fresh and float(last.get("max_perf") or 0) > 0:
            return round(float(last["max_perf"]), 1)
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", server], capture_output=True, text=True, check=False)
    raise BenchError(f"the worker reported no benchmark within {timeout} s:\n{(logs.stdout + logs.stderr)[-3000:]}")
