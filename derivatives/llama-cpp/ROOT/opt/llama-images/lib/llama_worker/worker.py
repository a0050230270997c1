"""The worker itself: Vast.ai's serverless `Worker` (vastai.serverless, its own hash-locked
environment) configured for llama-server. The one module that imports vastai and aiohttp.

What the library does: it listens on WORKER_PORT, checks each request's signature against the
engine's public key (fetched from REPORT_ADDR/pubkey/), forwards the payload to llama-server on the
same path and streams the answer back, reports its load to REPORT_ADDR/worker_status/ every
second or so, and runs the benchmark whose figure the engine sizes the endpoint by.

What this module adds: the routes (llama-server's /v1/chat/completions, /v1/completions and
/completion, streamed and not, requests in parallel as llama-server's slots take them), each
request's workload in tokens (workload.py; the prompt counted by llama-server's /tokenize before
the library's handler runs), readiness and failure from the launcher's status record
(llama_serving/status.py, the library's `lifecycle`), the benchmark sized to llama-server's slots, and
the worker's own status line.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from llama_serving import status as launcher_status
from vastai.serverless.server.worker import BenchmarkConfig, HandlerConfig, Worker, WorkerConfig

from . import workload
from .masking import mask_root_handlers
from .settings import Settings

Publish = Callable[[str], None]
# The prompt tokens llama-server counted for the request this task serves (set before the
# library's handler runs; the workload calculator, which the library calls synchronously, reads it).
PROMPT_TOKENS: contextvars.ContextVar[int | None] = contextvars.ContextVar("prompt_tokens", default=None)

BENCHMARK_ROUTE = workload.COMPLETIONS
BENCHMARK_PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain, step by step, how a bill becomes a law.",
    "List ten facts about the planet Mars, one per line.",
    "Describe the water cycle to a ten-year-old.",
)
# Each benchmark request generates exactly this many tokens (ignore_eos).
BENCHMARK_TOKENS = 64
BENCHMARK_RUNS = 3
MAX_BENCHMARK_CONCURRENCY = 16
# A request is refused (429, the client asks the engine again) when the work already in hand
# would take longer than this at the benchmarked rate.
MAX_QUEUE_SECONDS = 30.0
POLL_SECONDS = 0.5
TOKENIZE_SECONDS = 5.0


def log(message: str) -> None:
    print(f"[pyworker] {message}", flush=True)


@dataclass(frozen=True)
class Llama:
    """Where llama-server listens, and the API key it wants (LLAMA_API_KEY), if any."""

    host: str
    port: int
    api_key: str = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class Counts:
    """What workloads are computed with besides the payload: llama-server's own default for
    tokens to generate, and the benchmark prompts' token counts (the benchmark runs outside any
    request, so nothing counted them on the way in)."""

    generated_default: int = workload.DEFAULT_GENERATED_TOKENS
    known: dict[str, int] = field(default_factory=dict)


def calculator(route: str, counts: Counts) -> Callable[[dict[str, Any]], float]:
    def calculate(payload: dict[str, Any]) -> float:
        prompt = workload.prompt_of(route, payload)
        counted = PROMPT_TOKENS.get()
        if counted is None:
            counted = counts.known.get(prompt.text)
        if counted is None:
            counted = workload.estimate_tokens(prompt.text)
        generated = workload.generated_tokens(route, payload, counts.generated_default)
        return workload.workload(counted + prompt.tokens, generated)

    return calculate


class Tokenizer:
    """Counts text in llama-server's own tokens (its /tokenize), over a kept-alive connection."""

    def __init__(self, llama: Llama) -> None:
        self.llama = llama
        self.session: aiohttp.ClientSession | None = None

    async def count(self, text: str, model: str | None = None) -> int | None:
        """The text's tokens, or None when llama-server does not say."""
        if self.session is None:
            self.session = aiohttp.ClientSession(
                self.llama.url, headers=self.llama.headers(), timeout=aiohttp.ClientTimeout(total=TOKENIZE_SECONDS)
            )
        body: dict[str, Any] = {"content": text}
        if model:
            body["model"] = model  # router mode (LLAMA_MODELS_DIR) tokenizes with the model asked for
        try:
            async with self.session.post("/tokenize", json=body) as answer:
                if answer.status != 200:
                    return None
                tokens = (await answer.json()).get("tokens")
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return None
        return len(tokens) if isinstance(tokens, list) else None


def counted(
    route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], tokenizer: Tokenizer
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The library's handler for `route`, after the request's prompt is counted in tokens."""

    async def handle(request: web.Request) -> web.StreamResponse:
        PROMPT_TOKENS.set(await prompt_tokens(request, route, tokenizer))
        return await handler(request)

    return handle


async def prompt_tokens(request: web.Request, route: str, tokenizer: Tokenizer) -> int | None:
    """The prompt's tokens, or None (the workload is then estimated). A body the library will
    refuse (not JSON, no auth_data or payload) is not worth a /tokenize; aiohttp keeps the body,
    so the library reads the same bytes again."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, Mapping) or not isinstance(body.get("auth_data"), Mapping):
        return None
    payload = body.get("payload")
    if not isinstance(payload, Mapping):
        return None
    prompt = workload.prompt_of(route, payload)
    if not prompt.text:
        return 0
    if not workload.tokenizable(prompt):
        return None
    model = payload.get("model")
    return await tokenizer.count(prompt.text, model if isinstance(model, str) else None)


def benchmark_dataset() -> list[dict[str, Any]]:
    """The benchmark's requests: fixed prompts, each generating exactly BENCHMARK_TOKENS."""
    return [
        {"prompt": prompt, "max_tokens": BENCHMARK_TOKENS, "ignore_eos": True, "temperature": 0.7, "stream": False}
        for prompt in BENCHMARK_PROMPTS
    ]


class ModelFailed(Exception):
    """The launcher gave up on llama-server: what the engine is told."""


class Readiness:
    """The library's `lifecycle`: entered once llama-server serves (the launcher's status record
    says so), when the library then runs its benchmark; raises when the launcher has given up,
    and the library reports that message to the engine."""

    def __init__(self, llama: Llama, tokenizer: Tokenizer, counts: Counts, dataset: list[dict[str, Any]],
                 publish: Publish) -> None:  # fmt: skip
        self.llama = llama
        self.tokenizer = tokenizer
        self.counts = counts
        self.dataset = dataset
        self.publish = publish
        self.backend: Any = None  # the library's Backend, once the Worker is built

    async def __aenter__(self) -> Readiness:
        shown = ""
        while True:
            status = launcher_status.read()
            if status.serving:
                break
            if status.given_up:
                raise ModelFailed(f"llama-server will not serve: {status.detail}")
            if status.detail != shown:
                shown = status.detail
                self.publish(f"waiting for llama-server: {status.detail}")
            await asyncio.sleep(POLL_SECONDS)
        narrower = await self.prepare_benchmark()
        log(f"llama-server serves ({status.detail}): benchmarking, {self.backend.benchmark_handler.concurrency} "
            f"requests at a time{narrower}, {BENCHMARK_RUNS} runs of {BENCHMARK_TOKENS} tokens each")  # fmt: skip
        self.publish("benchmarking")
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def prepare_benchmark(self) -> str:
        """The benchmark as wide as llama-server's slots and its context allow, naming its model
        (router mode needs one), and its prompts counted; llama-server's own limit on generated
        tokens, if set. Returns why the benchmark is narrower than the slots, if it is."""
        props, models = await self.get("/props"), await self.get("/v1/models")
        settings = props.get("default_generation_settings") if isinstance(props, Mapping) else None
        params = settings.get("params", settings) if isinstance(settings, Mapping) else {}
        n_predict = params.get("n_predict") if isinstance(params, Mapping) else None
        if isinstance(n_predict, int) and n_predict > 0:
            self.counts.generated_default = n_predict
        entries = models.get("data") if isinstance(models, Mapping) else None
        first = None
        if isinstance(entries, list) and entries and isinstance(entries[0], Mapping):
            first = entries[0].get("id")
        longest = 0
        for item in self.dataset:
            if isinstance(first, str):
                item["model"] = first
            tokens = await self.tokenizer.count(item["prompt"], first if isinstance(first, str) else None)
            if tokens is not None:
                self.counts.known[item["prompt"]] = tokens
            # +1: the BOS token llama-server adds to the prompt it was asked to count
            longest = max(longest, (tokens if tokens is not None else workload.estimate_tokens(item["prompt"])) + 1)
        found_slots = props.get("total_slots") if isinstance(props, Mapping) else None
        found_context = settings.get("n_ctx") if isinstance(settings, Mapping) else None
        slots = found_slots if isinstance(found_slots, int) else None
        context = found_context if isinstance(found_context, int) else None
        concurrency = workload.benchmark_concurrency(slots, context, longest + BENCHMARK_TOKENS,
                                                     MAX_BENCHMARK_CONCURRENCY)  # fmt: skip
        self.backend.benchmark_handler.concurrency = concurrency
        if concurrency < workload.benchmark_concurrency(slots, None, 0, MAX_BENCHMARK_CONCURRENCY):
            return (f" (llama-server's context of {context} tokens holds {concurrency} of its requests of up to "
                    f"{longest + BENCHMARK_TOKENS} tokens at once)")  # fmt: skip
        return ""

    async def get(self, path: str) -> Any:
        try:
            async with (
                aiohttp.ClientSession(self.llama.url, headers=self.llama.headers()) as session,
                session.get(path, timeout=aiohttp.ClientTimeout(total=10)) as answer,
            ):
                return await answer.json() if answer.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None


async def watch(backend: Any, publish: Publish) -> None:
    """The worker's status line from what the library reports (loaded, its benchmark, an error),
    and a launcher that gives up after the model served reported as the worker's error."""
    shown = ""
    while True:
        await asyncio.sleep(POLL_SECONDS)
        metrics = backend.metrics
        error = metrics.model_metrics.error_msg
        loaded = metrics.system_metrics.model_is_loaded
        if loaded and not error:
            status = launcher_status.read()
            if status.given_up:
                backend.backend_errored(f"llama-server stopped serving: {status.detail}")
                continue
        if error:
            line = f"failed: {error}"
        elif loaded:
            line = f"ready: the benchmark's figure is {metrics.model_metrics.max_throughput:.1f} tokens/s"
        else:
            continue
        if line != shown:
            shown = line
            publish(line)
            log(line)


def build(
    settings: Settings, llama: Llama, publish: Publish, secrets: tuple[str, ...] = ()
) -> tuple[Worker, Tokenizer, Readiness]:
    tokenizer = Tokenizer(llama)
    counts = Counts()
    dataset = benchmark_dataset()
    readiness = Readiness(llama, tokenizer, counts, dataset, publish)
    handlers = [
        HandlerConfig(
            route=route,
            allow_parallel_requests=True,  # llama-server batches its slots; the library would queue one at a time
            max_queue_time=MAX_QUEUE_SECONDS,
            workload_calculator=calculator(route, counts),
            benchmark_config=(
                BenchmarkConfig(dataset=dataset, runs=BENCHMARK_RUNS) if route == BENCHMARK_ROUTE else None
            ),
        )
        for route in workload.ROUTES
    ]
    config = WorkerConfig(
        model_server_url=llama.url.rsplit(":", 1)[0],
        model_server_port=llama.port,
        model_log_file="",  # readiness comes from the launcher's record (lifecycle), not its log
        handlers=handlers,
        model_healthcheck_url="/health",
        lifecycle=readiness,
    )
    worker = Worker(config)
    # The Worker turns the root logger to DEBUG (a dump of every report, every second).
    logging.getLogger().setLevel(settings.log_level.upper())
    for handler in logging.getLogger().handlers:
        handler.setLevel(settings.log_level.upper())
    # One line per request would go through Supervisor and the log copier on the instance's CPUs
    # (the engine counts the requests): only with WORKER_LOG_LEVEL=debug.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if settings.log_level == "debug" else logging.WARNING)
    mask_root_handlers((*secrets, llama.api_key))
    readiness.backend = worker.backend
    worker.routes = [
        web.route(route.method, route.path, counted(route.path, route.handler, tokenizer), **route.kwargs)
        for route in worker.routes
    ]
    return worker, tokenizer, readiness


async def serve(settings: Settings, llama: Llama, publish: Publish, secrets: tuple[str, ...]) -> None:
    worker, tokenizer, _ = build(settings, llama, publish, secrets)
    if llama.api_key:
        # The library's connection to llama-server, as it makes it, with the key llama-server wants.
        worker.backend.session = aiohttp.ClientSession(
            llama.url,
            headers=llama.headers(),
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(force_close=True, enable_cleanup_closed=True),
        )
    try:
        await asyncio.gather(worker.run_async(), watch(worker.backend, publish))
    finally:
        if tokenizer.session is not None:
            await tokenizer.session.close()


def run(settings: Settings, llama: Llama, publish: Publish, secrets: tuple[str, ...] = ()) -> int:
    """Serve until stopped. `secrets` (the MASTER_TOKEN) never reach the log."""
    asyncio.run(serve(settings, llama, publish, secrets))
    return 0
