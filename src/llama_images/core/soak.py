"""The soak: a sustained load on every endpoint a client uses, and its verdict. Pure: what is sent
and in which order, how an answer is checked, and how the figures are judged; edges/soak.py runs
it against an image, the container test, the publishing pipeline (`invoke soak`) and
`nox -s bench` alike.

The load: the tiny model (core/tiny_model.py) on `/v1/chat/completions`, `/v1/completions` and
`/completion`, each streamed and not, with a distinct prompt per request (as real clients send;
the same prompt every time would hide what grows per prompt), `concurrency` requests at a time,
through the image's proxy with its token. It is sent in blocks; each block is `rounds` rounds of
`sub_block` requests of each kind in turn, so every kind meets the same moments of the machine.
A warm-up round comes first and is not judged.

The verdict, for the whole run and each kind:
- no request fails (a 503 with Retry-After that is waited out is not a failure, and is counted);
- throughput holds: a kind's last block runs at least `min_ratio` of its first block. A block's
  rate is its best sub-block's (other work on the machine only ever slows a sub-block down). A
  kind that looks slower gets `confirmations` more sub-blocks at the end, counted in its last
  block (a moment of other work passes); if it still looks slower, llama-server is restarted and
  the kind measured again on the fresh process, right away: the machine slowed down when the
  fresh one is no faster, llama-server did when the soaked one runs below `min_ratio` of the
  fresh one. (Other work on a shared machine can last longer than a block.)
- memory holds: llama-server's resident memory grows by at most `growth_bound` bytes per 1,000
  requests, from the end of the first block to the end of the last;
- logs hold: `docker logs` gets at most `log_bound` bytes per request;
- llama-server is the same process at the end (a crash and restart would hide a leak).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .publishing import Merge

# What the soak must stay within; docs/publishing.md and docs/serving.md state them.
MIN_RATIO = 0.8
GROWTH_BOUND = 256 * 1024  # bytes of resident memory per 1,000 requests
LOG_BOUND = 100  # bytes of `docker logs` per request (20,000 requests: under 2 MB)


@dataclass(frozen=True)
class Kind:
    """One kind of request a client sends."""

    name: str
    path: str
    stream: bool

    def body(self, prompt: str, max_tokens: int) -> bytes:
        if self.path == "/v1/chat/completions":
            payload: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        elif self.path == "/v1/completions":
            payload = {"prompt": prompt, "max_tokens": max_tokens}
        else:
            payload = {"prompt": prompt, "n_predict": max_tokens}
        payload["stream"] = self.stream
        return json.dumps(payload, separators=(",", ":")).encode()

    def problem(self, body: bytes) -> str | None:
        """Why a 200 answer is not a whole answer of this kind, or None."""
        text = body.decode(errors="replace")
        return stream_problem(text, self.path) if self.stream else answer_problem(text, self.path)


def stream_problem(text: str, path: str) -> str | None:
    """A stream ends with its last event: `[DONE]` (OpenAI's API), or an event that stops (/completion)."""
    events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    if not events:
        return "a stream without events"
    if path != "/completion":
        return None if events[-1] == "[DONE]" else "the stream did not end with [DONE]"
    try:
        last = json.loads(events[-1])
    except ValueError:
        return f"the stream's last event is not JSON: {events[-1][:80]!r}"
    return None if isinstance(last, dict) and last.get("stop") is True else "the stream never stopped"


def answer_problem(text: str, path: str) -> str | None:
    try:
        answer = json.loads(text)
    except ValueError:
        return f"not JSON: {text[:80]!r}"
    if not isinstance(answer, dict):
        return "not a JSON object"
    if path == "/completion":
        return None if "content" in answer else "no content"
    choices = answer.get("choices")
    return None if isinstance(choices, list) and choices else "no choices"


KINDS = (
    Kind("chat", "/v1/chat/completions", False),
    Kind("chat streamed", "/v1/chat/completions", True),
    Kind("completions", "/v1/completions", False),
    Kind("completions streamed", "/v1/completions", True),
    Kind("completion", "/completion", False),
    Kind("completion streamed", "/completion", True),
)


@dataclass(frozen=True)
class Settings:
    blocks: int = 4
    rounds: int = 16  # rounds per block: one sub-block of each kind in turn
    sub_block: int = 50  # requests of one kind sent in a row
    concurrency: int = 8
    max_tokens: int = 8
    warmup_rounds: int = 4
    confirmations: int = 8  # more sub-blocks of a kind whose last block looks slower
    min_ratio: float = MIN_RATIO
    growth_bound: int = GROWTH_BOUND
    log_bound: int = LOG_BOUND
    seed: int = 28
    ready_seconds: float = 180.0  # from `docker run` to the first answer

    @property
    def block_requests(self) -> int:
        return self.rounds * self.sub_block * len(KINDS)

    @property
    def total_requests(self) -> int:
        return (self.warmup_rounds * len(KINDS) + self.blocks * self.rounds * len(KINDS)) * self.sub_block


# The container test's and the publishing pipeline's soak: 20,400 requests, about a minute on 2 cores.
RELEASE = Settings()
# `nox -s bench`: the same load, five times as long.
BENCH = Settings(blocks=20)


# Blocks of the comparison with a fresh llama-server: its warm-up, then what is compared.
FRESH_WARMUP, FRESH = -2, -1


@dataclass(frozen=True)
class Step:
    """One sub-block: `count` requests of one kind; block 0 is the warm-up (FRESH_WARMUP and
    FRESH: the comparison with a fresh llama-server)."""

    block: int
    kind: Kind
    count: int
    first: int  # the number of its first request in the whole run (each request's prompt differs)


def schedule(settings: Settings) -> list[Step]:
    steps: list[Step] = []
    rounds = [(0, r) for r in range(settings.warmup_rounds)]
    rounds += [(block, r) for block in range(1, settings.blocks + 1) for r in range(settings.rounds)]
    for block, _ in rounds:
        for kind in KINDS:
            steps.append(Step(block, kind, settings.sub_block, len(steps) * settings.sub_block))
    return steps


def confirmation_steps(settings: Settings, measured: Sequence[Measured]) -> list[Step]:
    """More sub-blocks, in the last block, of each kind whose last block looks slower than its first."""
    steps: list[Step] = []
    sent = sum(m.requests for m in measured)
    for kind in slow_kinds(settings, measured):
        for _ in range(settings.confirmations):
            steps.append(Step(settings.blocks, kind, settings.sub_block, sent))
            sent += settings.sub_block
    return steps


def slow_kinds(settings: Settings, measured: Sequence[Measured]) -> list[Kind]:
    found = []
    for kind in KINDS:
        figures = kind_figures(kind, measured)
        if figures is not None and figures.ratio < settings.min_ratio:
            found.append(kind)
    return found


def fresh_steps(settings: Settings, measured: Sequence[Measured]) -> list[Step]:
    """For each kind that still looks slower: a warm-up sub-block and `confirmations` more on a
    fresh llama-server."""
    steps: list[Step] = []
    sent = sum(m.requests for m in measured)
    for kind in slow_kinds(settings, measured):
        for block in (FRESH_WARMUP, *[FRESH] * settings.confirmations):
            steps.append(Step(block, kind, settings.sub_block, sent))
            sent += settings.sub_block
    return steps


PROMPT_WORDS = (
    *("the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by", "at", "from"),
    *("his", "her", "they", "this", "which", "when", "time", "people", "water", "world", "story", "river"),
    *("city", "night", "light", "house", "garden", "music", "winter", "letter", "question"),
)


def prompts(first: int, count: int, seed: int) -> list[str]:
    """`count` prompts, distinct from one another and the same for the same numbers."""
    found = []
    for number in range(first, first + count):
        rng = random.Random(seed * 1_000_003 + number)
        words = [rng.choice(PROMPT_WORDS) for _ in range(rng.randint(3, 10))]
        found.append(f"{number} {' '.join(words)}")
    return found


@dataclass(frozen=True)
class Sample:
    """llama-server as seen after a sub-block: its process and its resident bytes."""

    pid: int
    rss: int


@dataclass(frozen=True)
class Measured:
    """One sub-block as sent and answered; llama-server is sampled after the last of each block."""

    block: int
    kind: str
    requests: int
    failures: int
    retried: int
    seconds: float
    after: Sample | None = None
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """Everything a soak measured."""

    settings: Settings
    start: Sample
    steps: tuple[Measured, ...]
    log_bytes: int  # what `docker logs` got while the load ran
    seconds: float


@dataclass(frozen=True)
class KindFigures:
    name: str
    min_ratio: float
    first_rate: float  # requests per second, the first block's best sub-block
    last_rate: float  # the last block's best (its confirmations included)
    confirmed: int = 0  # the confirmations it got
    fresh_rate: float = 0.0  # a fresh llama-server's best, when it was compared with one

    @property
    def fresh_ratio(self) -> float:
        return self.last_rate / self.fresh_rate if self.fresh_rate else 0.0

    @property
    def slower(self) -> bool:
        """Slower than its first block, and (when compared) than a fresh llama-server just after."""
        below = self.ratio < self.min_ratio
        return below and (not self.fresh_rate or self.fresh_ratio < self.min_ratio)

    @property
    def ratio(self) -> float:
        return self.last_rate / self.first_rate if self.first_rate else 0.0


def kind_figures(kind: Kind, measured: Sequence[Measured]) -> KindFigures | None:
    """A kind's first and last block, once it has both (and they differ)."""
    judged = [m for m in measured if m.kind == kind.name and m.block > 0]
    last_block = max((m.block for m in judged), default=0)
    if last_block < 2:
        return None
    first = [rate(m) for m in judged if m.block == 1]
    last = [rate(m) for m in judged if m.block == last_block]
    return KindFigures(kind.name, MIN_RATIO, max(first), max(last)) if first and last else None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    problems: tuple[str, ...]
    kinds: tuple[KindFigures, ...]
    requests: int
    failures: int
    retried: int
    rss_start: int
    rss_first_block: int
    rss_end: int
    growth_per_1000: float  # bytes
    log_bytes_per_request: float
    seconds: float
    settings: Settings = field(default=RELEASE)
    figures_judged: bool = True  # False under emulation: only the answers count

    def summary(self) -> str:
        """One line: the verdict and why."""
        if self.passed and not self.figures_judged:
            return f"held: {self.requests} requests, 0 failed"
        if self.passed:
            slowest = min(self.kinds, key=lambda k: k.ratio, default=None)
            ratio = f", slowest kind {slowest.name} at {slowest.ratio:.2f}x" if slowest else ""
            if slowest and slowest.fresh_rate:
                ratio += f" (as fast as a fresh llama-server: {slowest.fresh_ratio:.2f}x)"
            return (
                f"held: {self.requests} requests, 0 failed{ratio}, memory {kib(self.growth_per_1000)} "
                f"per 1,000 requests, docker logs {self.log_bytes_per_request:.0f} bytes a request"
            )
        return "failed: " + "; ".join(self.problems)


def kib(count: float) -> str:
    return f"{count / 1024:+.0f} kB" if abs(count) >= 1024 else f"{count:+.0f} B"


def judge(run: Run) -> Verdict:
    settings = run.settings
    steps = run.steps
    judged = [s for s in steps if s.block > 0]
    problems: list[str] = []
    requests = sum(s.requests for s in steps)
    failures = sum(s.failures for s in steps)
    retried = sum(s.retried for s in steps)
    if failures:
        examples = [e for s in steps for e in s.examples][:3]
        problems.append(f"{failures} of {requests} requests failed ({'; '.join(examples)})")
    figures = []
    for kind in KINDS:
        found = kind_figures(kind, judged)
        if found is None:
            continue
        confirmed = sum(1 for s in judged if s.kind == kind.name and s.block == settings.blocks) - settings.rounds
        fresh = [rate(s) for s in steps if s.kind == kind.name and s.block == FRESH]
        found = replace(
            found, min_ratio=settings.min_ratio, confirmed=max(0, confirmed), fresh_rate=max(fresh, default=0.0)
        )
        figures.append(found)
        if found.slower:
            again = f", {found.confirmed} more sub-blocks as slow" if found.confirmed else ""
            compared = (
                f"; a fresh llama-server right after ran {found.fresh_rate:.0f}, the soaked one "
                f"{found.fresh_ratio:.2f}x of that"
                if found.fresh_rate
                else ""
            )
            problems.append(
                f"{kind.name} ({kind.path}{', streamed' if kind.stream else ''}) slowed down: the last block ran "
                f"{found.last_rate:.0f} requests/s, {found.ratio:.2f}x the first block's {found.first_rate:.0f} "
                f"(at least {settings.min_ratio}x{again}{compared})"
            )
    # The comparison with a fresh llama-server restarts it on purpose: not a crash, not memory.
    samples = [(s.block, s.after) for s in steps if s.after is not None and s.block >= 0]
    pids = {run.start.pid, *(sample.pid for _, sample in samples)}
    if len(pids) > 1:
        problems.append(f"llama-server was restarted during the soak (processes {sorted(pids)}): it crashed")
    end_of_first = [sample for block, sample in samples if block == 1]
    rss_first = end_of_first[-1].rss if end_of_first else run.start.rss
    rss_end = samples[-1][1].rss if samples else run.start.rss
    after_first = sum(s.requests for s in judged if s.block > 1) if end_of_first else 0
    growth = (rss_end - rss_first) * 1000 / after_first if after_first else 0.0
    if growth > settings.growth_bound:
        problems.append(
            f"llama-server's memory grew {kib(growth)} per 1,000 requests "
            f"({rss_first // 1024} -> {rss_end // 1024} kB over {after_first} requests; "
            f"at most {kib(settings.growth_bound)})"
        )
    logged = sum(s.requests for s in steps if s.block >= 0)  # `docker logs` is read before a fresh start
    per_request = run.log_bytes / logged if logged else 0.0
    if per_request > settings.log_bound:
        problems.append(
            f"docker logs got {run.log_bytes} bytes, {per_request:.0f} a request (at most {settings.log_bound})"
        )
    return Verdict(
        passed=not problems,
        problems=tuple(problems),
        kinds=tuple(figures),
        requests=requests,
        failures=failures,
        retried=retried,
        rss_start=run.start.rss,
        rss_first_block=rss_first,
        rss_end=rss_end,
        growth_per_1000=growth,
        log_bytes_per_request=per_request,
        seconds=run.seconds,
        settings=settings,
    )


def rate(step: Measured) -> float:
    return step.requests / step.seconds if step.seconds > 0 else 0.0


def figures_lines(verdict: Verdict) -> list[str]:
    """The figures as plain lines: a table of kinds, then memory and logs."""
    lines = [f"{'kind':<22} {'first block':>12} {'last block':>11} {'ratio':>6}"]
    for kind in verdict.kinds:
        again = f"  (+{kind.confirmed} confirming sub-blocks)" if kind.confirmed else ""
        if kind.fresh_rate:
            again += f"  (a fresh llama-server: {kind.fresh_rate:.0f} r/s, {kind.fresh_ratio:.2f}x)"
        lines.append(
            f"{kind.name:<22} {kind.first_rate:>8.0f} r/s {kind.last_rate:>7.0f} r/s {kind.ratio:>5.2f}x{again}"
        )
    lines.append(
        f"requests {verdict.requests} ({verdict.failures} failed, {verdict.retried} retried after 503) "
        f"in {verdict.seconds:.0f} s"
    )
    lines.append(
        f"llama-server memory: {verdict.rss_start // 1024} kB at the start, {verdict.rss_first_block // 1024} kB "
        f"after the first block, {verdict.rss_end // 1024} kB at the end: {kib(verdict.growth_per_1000)} per "
        f"1,000 requests (at most {kib(verdict.settings.growth_bound)})"
    )
    lines.append(
        f"docker logs: {verdict.log_bytes_per_request:.0f} bytes a request (at most {verdict.settings.log_bound})"
    )
    return lines


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "summary": verdict.summary(),
        "problems": list(verdict.problems),
        "requests": verdict.requests,
        "failures": verdict.failures,
        "retried": verdict.retried,
        "seconds": round(verdict.seconds, 1),
        "rss_start": verdict.rss_start,
        "rss_first_block": verdict.rss_first_block,
        "rss_end": verdict.rss_end,
        "growth_per_1000": round(verdict.growth_per_1000),
        "log_bytes_per_request": round(verdict.log_bytes_per_request, 1),
        "kinds": [
            {
                "kind": k.name,
                "first_rate": round(k.first_rate, 1),
                "last_rate": round(k.last_rate, 1),
                "ratio": round(k.ratio, 3),
                "confirmed": k.confirmed,
                "fresh_rate": round(k.fresh_rate, 1),
            }
            for k in verdict.kinds
        ],
    }


# ---- the gate: publishing only what held ----------------------------------------------------

# An image whose platform this machine can only emulate (an arm64 job on an amd64 machine, off
# GitHub's native runners): its answers are checked, its timing, memory and logs are not judged
# (emulation is tens of times slower and says nothing about them).
EMULATED = Settings(blocks=1, rounds=1, sub_block=10, warmup_rounds=0, confirmations=0, ready_seconds=900.0)


def judge_emulated(run: Run) -> Verdict:
    """An emulated soak: every request must be answered whole; nothing else is judged."""
    full = judge(run)
    problems = tuple(p for p in full.problems if "requests failed" in p or "restarted" in p)
    return replace(full, passed=not problems, problems=problems, figures_judged=False)


@dataclass(frozen=True)
class SoakRecord:
    """What a publishing job's soak found for one image it pushed (a digest record's image)."""

    target: str
    image: str
    platform: str
    digest: str
    passed: bool
    summary: str
    figures: tuple[str, ...] = ()
    emulated: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "image": self.image,
            "platform": self.platform,
            "digest": self.digest,
            "passed": self.passed,
            "summary": self.summary,
            "figures": list(self.figures),
            "emulated": self.emulated,
        }

    def line(self) -> str:
        how = " (emulated: answers checked only)" if self.emulated else ""
        return f"soak of {self.image} [{self.platform}]{how}: {self.summary}"


def record_of(target: str, image: str, platform: str, digest: str, verdict: Verdict, emulated: bool) -> SoakRecord:
    return SoakRecord(target, image, platform, digest, verdict.passed, verdict.summary(),
                      tuple(figures_lines(verdict)), emulated)  # fmt: skip


def not_served(target: str, image: str, platform: str, digest: str, why: str) -> SoakRecord:
    """A soak that could not run: the image never served the load."""
    return SoakRecord(target, image, platform, digest, False, f"failed: the soak could not run: {why}")


def parse_soak_record(data: Any) -> SoakRecord:
    if not isinstance(data, dict):
        raise ValueError("not a soak record")
    return SoakRecord(
        str(data["target"]), str(data["image"]), str(data["platform"]), str(data["digest"]), data["passed"] is True,
        str(data["summary"]), tuple(str(f) for f in data.get("figures", ())), data.get("emulated") is True,
    )  # fmt: skip


def is_soaked(target: str) -> bool:
    """Only llama.cpp images serve a model; a base image (`base/<upstream>`) is not soaked."""
    return not target.startswith("base/")


def gate(merges: Sequence[Merge], records: Sequence[SoakRecord]) -> tuple[list[Merge], list[str], list[str]]:
    """The tags that may be created: each llama.cpp image's every platform passed its soak, for the
    digest being tagged. (merges kept, why each other was not published, one note per soak)."""
    found = {(r.target, r.platform, r.digest): r for r in records}
    kept: list[Merge] = []
    refused: list[str] = []
    for merge in merges:
        problems = []
        for source in merge.sources:
            if not is_soaked(source.target):
                continue
            record = found.get((source.target, source.platform, source.digest))
            if record is None:
                problems.append(f"{source.platform} was not soaked (its job's soak did not run)")
            elif not record.passed:
                problems.append(f"{source.platform} failed the soak: {record.summary.removeprefix('failed: ')}")
        if problems:
            refused.append(f"{merge.image}: not published: {'; '.join(problems)}")
        else:
            kept.append(merge)
    notes = [r.line() for r in records]
    return kept, refused, notes
