"""The soak without Docker: what it sends, how it checks an answer, how it judges what it measured
(core/soak.py), the model it serves (core/tiny_model.py), and its load client against a loopback
HTTP/1.1 server (edges/http_load.py). The soak against the image is tests/container/llama/test_soak.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gguf import GGUFReader

from llama_images.core import soak
from llama_images.core.publishing import DigestRecord, Merge
from llama_images.core.soak import KINDS, RELEASE, Kind, Measured, Run, Sample, Settings, SoakRecord, judge
from llama_images.core.tiny_model import tiny_llama_gguf
from llama_images.edges import http_load
from tests.support.tiny_gguf import write_tiny_llama_gguf

SMALL = Settings(blocks=3, rounds=2, sub_block=100, warmup_rounds=1, confirmations=2)


def test_the_release_soak_sends_20400_requests_of_six_kinds_each_with_its_own_prompt() -> None:
    steps = soak.schedule(RELEASE)
    assert RELEASE.total_requests == sum(s.count for s in steps) == 20_400
    assert {(k.path, k.stream) for k in KINDS} == {
        (path, stream)
        for path in ("/v1/chat/completions", "/v1/completions", "/completion")
        for stream in (False, True)
    }
    # Warm-up rounds, then each block is rounds of one sub-block of every kind in turn.
    assert [s.kind for s in steps[:6]] == list(KINDS) and {s.block for s in steps[:24]} == {0}
    assert [s.block for s in steps[24::96]] == [1, 2, 3, 4] and {s.count for s in steps} == {50}
    every = [p for s in steps for p in soak.prompts(s.first, s.count, RELEASE.seed)]
    assert len(set(every)) == len(every) == 20_400
    assert soak.prompts(5, 2, 28) == soak.prompts(5, 2, 28)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_sends_what_its_endpoint_takes(kind: Kind) -> None:
    body = json.loads(kind.body("hello there", 8))
    assert body["stream"] is kind.stream
    if kind.path == "/v1/chat/completions":
        assert body["messages"] == [{"role": "user", "content": "hello there"}] and body["max_tokens"] == 8
    elif kind.path == "/v1/completions":
        assert body["prompt"] == "hello there" and body["max_tokens"] == 8
    else:
        assert body["prompt"] == "hello there" and body["n_predict"] == 8


# Answers as the bundled llama-server (build 11669) gives them, shortened.
CHAT = b'{"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"x"}}]}'
TEXT = b'{"choices":[{"text":"b z","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{}}'
NATIVE = b'{"index":0,"content":"x Q","tokens":[],"stop":true,"tokens_predicted":4}'
OAI_STREAM = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
NATIVE_STREAM = b'data: {"content":"x","stop":false}\n\ndata: {"content":"","stop":true}\n\n'


@pytest.mark.parametrize(
    ("kind", "body", "problem"),
    [
        (KINDS[0], CHAT, None),
        (KINDS[2], TEXT, None),
        (KINDS[4], NATIVE, None),
        (KINDS[1], OAI_STREAM, None),
        (KINDS[3], OAI_STREAM, None),
        (KINDS[5], NATIVE_STREAM, None),
        (KINDS[0], b'{"choices":[]}', "no choices"),
        (KINDS[4], b"<html>", "not JSON: '<html>'"),
        (KINDS[1], OAI_STREAM.replace(b"data: [DONE]\n\n", b""), "the stream did not end with [DONE]"),
        (KINDS[5], NATIVE_STREAM.replace(b'"stop":true', b'"stop":false'), "the stream never stopped"),
        (KINDS[3], b"", "a stream without events"),
    ],
)
def test_an_answer_is_whole_or_says_what_is_missing(kind: Kind, body: bytes, problem: str | None) -> None:
    assert kind.problem(body) == problem


def measured_run(
    settings: Settings = SMALL,
    rate: Callable[[int, str], float] = lambda block, kind: 500.0,
    rss: Callable[[int], int] = lambda requests: 30_000_000,
    log_bytes: int = 60 * 3_600,
    failures: int = 0,
    restart_at: int | None = None,
    confirming: Callable[[str], float] | None = None,
    fresh: Callable[[str], float] | None = None,
) -> Run:
    """What a soak of `settings` would measure, from per-block rates and resident memory by
    requests served; `confirming` gives the rate of the confirmation sub-blocks of slow kinds,
    `fresh` that of a fresh llama-server for those still slow."""
    served = 0
    steps: list[Measured] = []

    def measure(index: int, step: soak.Step, speed: float) -> None:
        nonlocal served
        served += step.count
        pid = 7 if restart_at is None or index < restart_at else 8
        failed = failures if index == 3 else 0
        example = ("POST /v1/completions: status 500: boom",) if failed else ()
        steps.append(
            Measured(step.block, step.kind.name, step.count, failed, 0, step.count / speed, Sample(pid, rss(served)),
                     example)
        )  # fmt: skip

    for index, step in enumerate(soak.schedule(settings)):
        measure(index, step, rate(step.block, step.kind.name))
    if confirming is not None:
        for step in soak.confirmation_steps(settings, steps):
            measure(len(steps), step, confirming(step.kind.name))
    if fresh is not None:
        for step in soak.fresh_steps(settings, steps):
            measure(len(steps), step, fresh(step.kind.name))
            steps[-1] = replace(steps[-1], after=Sample(99, 20_000_000))  # restarted on purpose
    return Run(settings, Sample(7, rss(0)), tuple(steps), log_bytes, 30.0)


def test_a_steady_server_holds() -> None:
    verdict = judge(measured_run(confirming=lambda kind: 1.0))
    assert verdict.passed, verdict.problems
    assert verdict.requests == SMALL.total_requests == 4_200  # nothing needed confirming
    assert [k.ratio for k in verdict.kinds] == [1.0] * 6
    assert verdict.summary().startswith("held: 4200 requests, 0 failed")


def test_a_leak_of_a_prompt_cache_fails_with_its_figures() -> None:
    # The shipped release before issue 28: about 6.6 kB more resident memory for every request.
    verdict = judge(measured_run(rss=lambda served: 25_000_000 + 6_600 * served))
    assert not verdict.passed
    [problem] = verdict.problems
    assert problem.startswith("llama-server's memory grew +6445 kB per 1,000 requests")
    assert "at most +256 kB" in problem
    assert verdict.summary() == "failed: " + problem


def test_growth_within_the_bound_and_the_first_block_filling_caches_pass() -> None:
    first_block_end = (SMALL.warmup_rounds + SMALL.rounds) * len(KINDS) * SMALL.sub_block
    verdict = judge(measured_run(rss=lambda served: 25_000_000 + (2_000_000 if served >= 600 else 0) + served * 200))
    assert verdict.passed, verdict.problems
    assert verdict.rss_first_block == 25_000_000 + 2_000_000 + first_block_end * 200


def slower(block: int, kind: str) -> float:
    return 500.0 / max(block, 1) if kind == "completions" else 500.0


def test_a_kind_that_slows_down_fails_naming_its_endpoint_once_confirmed() -> None:
    verdict = judge(measured_run(rate=slower, confirming=lambda kind: 160.0))
    [problem] = verdict.problems
    assert problem == (
        "completions (/v1/completions) slowed down: the last block ran 167 requests/s, 0.33x the first block's 500 "
        "(at least 0.8x, 2 more sub-blocks as slow)"
    )
    assert verdict.requests == 4_200 + 2 * SMALL.sub_block  # two more sub-blocks of that kind only


def test_a_moment_of_other_work_on_the_machine_is_not_taken_for_a_slowdown() -> None:
    """Every kind's last block ran slow, but the confirming sub-blocks, a moment later, did not."""
    run = measured_run(rate=lambda block, kind: 200.0 if block == SMALL.blocks else 500.0, confirming=lambda k: 480.0)
    verdict = judge(run)
    assert verdict.passed, verdict.problems
    assert [(k.ratio, k.confirmed) for k in verdict.kinds] == [(0.96, 2)] * 6


def test_a_machine_busier_for_longer_than_a_block_is_told_apart_by_a_fresh_llama_server() -> None:
    """The last block and its confirmations ran slow; a fresh llama-server right after is no
    faster: the machine slowed down, not the server. Its restart is no crash, its memory not
    the soak's."""
    run = measured_run(rate=slower, confirming=lambda kind: 170.0, fresh=lambda kind: 180.0)
    verdict = judge(run)
    assert verdict.passed, verdict.problems
    [completions] = [k for k in verdict.kinds if k.name == "completions"]
    assert (round(completions.ratio, 2), completions.fresh_rate, round(completions.fresh_ratio, 2)) == (0.34, 180, 0.94)
    assert "(as fast as a fresh llama-server: 0.94x)" in verdict.summary()
    assert verdict.requests == 4_200 + 2 * 100 + 3 * 100  # confirmations, then a warm-up and two on the fresh one


def test_a_server_slower_than_a_fresh_one_fails() -> None:
    verdict = judge(measured_run(rate=slower, confirming=lambda kind: 170.0, fresh=lambda kind: 500.0))
    [problem] = verdict.problems
    assert problem == (
        "completions (/v1/completions) slowed down: the last block ran 170 requests/s, 0.34x the first block's 500 "
        "(at least 0.8x, 2 more sub-blocks as slow; a fresh llama-server right after ran 500, the soaked one "
        "0.34x of that)"
    )


def test_confirmations_go_to_the_kinds_that_look_slower_with_prompts_of_their_own() -> None:
    measured = measured_run(rate=slower).steps
    steps = soak.confirmation_steps(SMALL, measured)
    assert [(s.block, s.kind.name, s.count) for s in steps] == [(3, "completions", 100)] * 2
    assert [s.first for s in steps] == [4_200, 4_300]
    fresh = soak.fresh_steps(SMALL, measured)
    assert [(s.block, s.kind.name) for s in fresh] == [(soak.FRESH_WARMUP, "completions")] + [
        (soak.FRESH, "completions")
    ] * 2


def test_the_best_sub_block_of_a_block_is_its_rate() -> None:
    slow_first_round = measured_run(rate=lambda block, kind: 500.0)
    steps = list(slow_first_round.steps)
    steps[6] = replace(steps[6], seconds=steps[6].seconds * 10)  # one sub-block of chat, ten times slower
    verdict = judge(replace(slow_first_round, steps=tuple(steps)))
    assert verdict.kinds[0].first_rate == 500.0


def test_failed_requests_fail_the_soak_with_examples() -> None:
    verdict = judge(measured_run(failures=2))
    assert verdict.problems == ("2 of 4200 requests failed (POST /v1/completions: status 500: boom)",)


def test_a_restarted_llama_server_fails_the_soak() -> None:
    verdict = judge(measured_run(restart_at=20, rss=lambda served: 25_000_000))
    assert verdict.problems == ("llama-server was restarted during the soak (processes [7, 8]): it crashed",)


def test_docker_logs_past_100_bytes_a_request_fail() -> None:
    # The shipped release before issue 28: about 1 kB of llama-server's lines per request.
    verdict = judge(measured_run(log_bytes=4_200 * 989))
    assert verdict.problems == ("docker logs got 4153800 bytes, 989 a request (at most 100)",)


def test_the_figures_read_as_a_table() -> None:
    lines = soak.figures_lines(judge(measured_run()))
    assert lines[0].split() == ["kind", "first", "block", "last", "block", "ratio"]
    assert lines[1].split() == ["chat", "500", "r/s", "500", "r/s", "1.00x"]
    assert lines[-1] == "docker logs: 51 bytes a request (at most 100)"
    assert json.loads(json.dumps(soak.verdict_json(judge(measured_run()))))["passed"] is True


def test_the_tiny_model_is_the_tests_model_written_without_numpy(tmp_path: Path) -> None:
    """The package writes the model the tests' own writer (gguf-py) writes: same metadata, same
    tensors and shapes, same size; only the random weights differ."""
    ours = tmp_path / "ours.gguf"
    ours.write_bytes(tiny_llama_gguf())
    theirs = GGUFReader(write_tiny_llama_gguf(tmp_path / "theirs.gguf"))
    mine = GGUFReader(ours)
    assert ours.stat().st_size == (tmp_path / "theirs.gguf").stat().st_size
    assert [(t.name, list(t.shape)) for t in mine.tensors] == [(t.name, list(t.shape)) for t in theirs.tensors]
    skip = {"general.name", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    assert {k for k in mine.fields if k not in skip} == {k for k in theirs.fields if k not in skip}
    for key in ("tokenizer.chat_template", "llama.context_length", "tokenizer.ggml.bos_token_id"):
        assert mine.fields[key].contents() == theirs.fields[key].contents(), key
    assert tiny_llama_gguf() == tiny_llama_gguf() != tiny_llama_gguf(seed=1)


# ---- the load client ----


@contextmanager
def http11(handle: Callable[[BaseHTTPRequestHandler, bytes], None]) -> Iterator[tuple[int, list[int]]]:
    """An HTTP/1.1 loopback server (keep-alive) answering with `handle`; yields its port and the
    client port of every request it got (one per connection)."""
    peers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            peers.append(self.client_address[1])
            handle(self, self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1]), peers
    finally:
        server.shutdown()
        server.server_close()


def json_answer(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    data = json.dumps({"choices": [{"text": body.decode()}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def chunked_stream(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for event in (b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"):
        handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
    handler.wfile.write(b"0\r\n\r\n")


def test_the_client_keeps_connections_and_checks_each_answer() -> None:
    with http11(json_answer) as (port, peers):
        target = http_load.Target("127.0.0.1", port, (("Authorization", "Bearer t"),))
        requests = [http_load.Request("POST", "/v1/completions", b'{"n": %d}' % i, False) for i in range(40)]
        outcome = http_load.send_all(target, requests, 4, check=KINDS[2].problem)
    assert (outcome.requests, outcome.failures, outcome.retried) == (40, 0, 0)
    assert len(set(peers)) == 4  # one keep-alive connection per thread


def test_a_streamed_answer_is_read_in_chunks_and_ends_its_connection() -> None:
    with http11(chunked_stream) as (port, peers):
        requests = [http_load.Request("POST", "/v1/completions", b"{}", True) for _ in range(6)]
        outcome = http_load.send_all(http_load.Target("127.0.0.1", port), requests, 2, check=KINDS[3].problem)
    assert outcome.failures == 0
    assert len(set(peers)) == 6  # a fresh connection after each stream, as the proxy does upstream


def test_a_503_with_retry_after_is_waited_out_and_counted_apart() -> None:
    answers = iter([503, 503])

    def restarting(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        status = next(answers, 200)
        if status == 503:
            data = b'{"error": "service unavailable"}'
            handler.send_response(503)
            handler.send_header("Retry-After", "0")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        json_answer(handler, body)

    with http11(restarting) as (port, _):
        requests = [http_load.Request("POST", "/v1/completions", b"{}", False)]
        outcome = http_load.send_all(http_load.Target("127.0.0.1", port), requests, 1, check=KINDS[2].problem)
    assert (outcome.failures, outcome.retried) == (0, 2)


def test_bad_answers_are_failures_with_reasons() -> None:
    def broken(handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if body == b"500":
            data = b'{"error": "boom"}'
            handler.send_response(500)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        elif body == b"cut":
            handler.send_response(200)
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            handler.wfile.write(b"{")
            handler.close_connection = True
        else:
            json_answer(handler, b"")

    with http11(broken) as (port, _):
        requests = [http_load.Request("POST", "/v1/completions", body, False) for body in (b"500", b"cut", b"ok")]
        started = time.monotonic()
        outcome = http_load.send_all(http_load.Target("127.0.0.1", port), requests, 1, check=KINDS[2].problem)
    assert outcome.failures == 2 and time.monotonic() - started < 5
    assert outcome.examples == [
        'POST /v1/completions: status 500: {"error": "boom"}',
        "POST /v1/completions: no complete answer (the connection closed before the answer was complete)",
    ]


# ---- the gate ----

IMAGE = "docker.io/someone/llama-cpp:b11669-cpu"
BASE = "docker.io/someone/base-image:debian-forky"
DIGESTS = {"linux/amd64": "sha256:" + "a" * 64, "linux/arm64": "sha256:" + "b" * 64}


def merge_of(target: str, image: str) -> Merge:
    return Merge(image, tuple(DigestRecord(target, image, p, d) for p, d in DIGESTS.items()))


def soaked(platform: str, passed: bool = True, digest: str | None = None) -> SoakRecord:
    summary = "held: 20400 requests, 0 failed" if passed else "failed: llama-server's memory grew +6445 kB per 1,000"
    return SoakRecord("cpu/debian-forky/b11669", IMAGE, platform, digest or DIGESTS[platform], passed, summary)


def test_an_image_that_held_on_every_platform_is_tagged_and_base_images_need_no_soak() -> None:
    merges = [merge_of("base/debian-forky", BASE), merge_of("cpu/debian-forky/b11669", IMAGE)]
    kept, refused, notes = soak.gate(merges, [soaked("linux/amd64"), soaked("linux/arm64")])
    assert kept == merges and refused == []
    assert notes == [f"soak of {IMAGE} [linux/amd64]: held: 20400 requests, 0 failed",
                     f"soak of {IMAGE} [linux/arm64]: held: 20400 requests, 0 failed"]  # fmt: skip


def test_an_image_that_failed_its_soak_on_one_platform_is_not_published_and_the_report_says_why() -> None:
    merges = [merge_of("cpu/debian-forky/b11669", IMAGE)]
    kept, refused, _ = soak.gate(merges, [soaked("linux/amd64", passed=False), soaked("linux/arm64")])
    assert kept == []
    assert refused == [
        f"{IMAGE}: not published: linux/amd64 failed the soak: llama-server's memory grew +6445 kB per 1,000"
    ]


def test_an_image_without_a_soak_of_the_digest_being_tagged_is_not_published() -> None:
    merges = [merge_of("cpu/debian-forky/b11669", IMAGE)]
    stale = soaked("linux/arm64", digest="sha256:" + "c" * 64)  # an earlier push's soak
    kept, refused, _ = soak.gate(merges, [soaked("linux/amd64"), stale])
    assert kept == []
    assert refused == [f"{IMAGE}: not published: linux/arm64 was not soaked (its job's soak did not run)"]


def test_a_soak_record_survives_its_json_and_an_emulated_one_says_so() -> None:
    record = replace(soaked("linux/arm64"), figures=("a", "b"), emulated=True)
    assert soak.parse_soak_record(json.loads(json.dumps(record.as_json()))) == record
    assert (
        record.line()
        == f"soak of {IMAGE} [linux/arm64] (emulated: answers checked only): held: 20400 requests, 0 failed"
    )
    with pytest.raises(KeyError):
        soak.parse_soak_record({"target": "x"})


def test_an_emulated_soak_judges_only_the_answers() -> None:
    leaky_and_slow = measured_run(rate=lambda block, kind: 50.0, rss=lambda served: 25_000_000 + 9_000 * served,
                                  log_bytes=10_000_000)  # fmt: skip
    assert not judge(leaky_and_slow).passed
    assert soak.judge_emulated(leaky_and_slow).passed
    assert soak.judge_emulated(leaky_and_slow).summary() == "held: 4200 requests, 0 failed"
    assert soak.judge_emulated(measured_run(failures=1)).problems[0].startswith("1 of 4200 requests failed")
