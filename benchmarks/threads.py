"""Measurement 8: llama-server's tokens per second in a container given fewer CPUs than it sees
(`docker run --cpus 1` on a machine with more): with the image's threads at the quota (its
default, issue 27), and with llama-server's own default (a thread for every CPU it sees, as
before; LLAMA_ARG_THREADS=-1 asks for it). A random llama model big enough that a token takes
measurable compute; /completion's own timings."""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from .measure import EXTERNAL_PORT, BenchError, Context, container, health_status, published_port, random_model, run
from .stats import median

THREAD_WAYS = {
    "threads at the quota (the image's default)": {},
    "llama-server's own default (every CPU seen)": {"LLAMA_ARG_THREADS": "-1"},
}
# About 200 MB of f32 weights: tens of tokens per second on one core.
MODEL_SIZES = {"n-embd": 1024, "n-ff": 2816, "n-blocks": 4}
PROMPT = "Once upon a time, in a land far away, there lived a " * 4


def bench_model(ctx: Context) -> Path:
    return random_model(ctx, "threads", MODEL_SIZES)


def completion(port: int, token: str, tokens: int) -> dict[str, Any]:
    """One /completion through the proxy: llama-server's timings of it."""
    body = json.dumps({"prompt": PROMPT, "n_predict": tokens, "cache_prompt": False, "temperature": 0,
                       "ignore_eos": True}).encode()  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/completion", body=body, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"/completion answered {response.status}: {answer[:300]!r}")
    timings: dict[str, Any] = json.loads(answer)["timings"]
    return timings


def server_threads(identifier: str) -> str:
    """llama-server's --threads as its command line gives it ("llama-server's default" without)."""
    args = subprocess.run(["docker", "exec", identifier, "ps", "-C", "llama-server", "-o", "args="],
                          capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    for option in ("--threads", "-t"):
        if option in args:
            return args[args.index(option) + 1]
    return "default"


def one_way(image: str, model: Path, env: dict[str, str], cpus: float, requests: int, tokens: int) -> dict[str, Any]:
    token = secrets.token_urlsafe(18)
    arguments = ["--cpus", str(cpus), "-p", f"127.0.0.1::{EXTERNAL_PORT}", "-v", f"{model.parent}:/models:ro",
                 "-e", f"LLAMA_MODEL=/models/{model.name}", "-e", f"OPEN_BUTTON_TOKEN={token}",
                 "-e", "ENABLE_JUPYTER=false",
                 *[part for name, value in env.items() for part in ("-e", f"{name}={value}")], image]  # fmt: skip
    with container(arguments) as identifier:
        port = published_port(identifier, EXTERNAL_PORT)
        started = time.monotonic()
        while health_status(port, token) != 200:
            if time.monotonic() - started > 180:
                raise BenchError("llama-server not healthy within 180 s")
            time.sleep(0.2)
        completion(port, token, 8)  # warm-up: page the weights in
        found = [completion(port, token, tokens) for _ in range(requests)]
        return {
            "threads": server_threads(identifier),
            "generation": [round(t["predicted_per_second"], 2) for t in found],
            "prompt": [round(t["prompt_per_second"], 2) for t in found],
        }


def measure_threads(ctx: Context, image: str, runs: int, cpus: float = 1.0, tokens: int = 64) -> dict[str, Any]:
    model = bench_model(ctx)
    ways: dict[str, dict[str, Any]] = {way: {"generation": [], "prompt": [], "threads": ""} for way in THREAD_WAYS}
    for number in range(runs):
        order = list(THREAD_WAYS) if number % 2 == 0 else list(reversed(THREAD_WAYS))
        for way in order:  # interleaved, alternating which goes first
            found = one_way(image, model, THREAD_WAYS[way], cpus, 3, tokens)
            ways[way]["generation"] += found["generation"]
            ways[way]["prompt"] += found["prompt"]
            ways[way]["threads"] = found["threads"]
        ctx.log(f"threads: run {number + 1}/{runs}: "
                + ", ".join(f"{way} {median(f['generation']):.1f} tokens/s" for way, f in ways.items()))  # fmt: skip
    for figures in ways.values():
        figures["median_generation"] = round(median(figures["generation"]), 2)
        figures["median_prompt"] = round(median(figures["prompt"]), 2)
    capped, default = (ways[way]["median_generation"] for way in THREAD_WAYS)
    return {
        "image": image,
        "cpus": cpus,
        "cpus_seen": run(["nproc"]).strip(),
        "tokens": tokens,
        "runs": runs,
        "model_bytes": model.stat().st_size,
        "ways": ways,
        "speedup": round(capped / default, 2) if default else None,
    }
