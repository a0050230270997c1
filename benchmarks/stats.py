"""Statistics of the benchmark's samples. Pure: numbers in, numbers out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated linearly between the closest ranks (the
    definition numpy and most load generators use)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(value: float, baseline: float) -> float | None:
    """value / baseline, or None where the baseline is zero (nothing to compare against)."""
    return None if baseline == 0 else value / baseline


@dataclass(frozen=True)
class LoadSample:
    """One fixed-count load run: each request's latency (seconds; only requests that got an
    answer), how many failed (no answer, or a status other than 2xx), and the wall time."""

    latencies: tuple[float, ...]
    errors: int
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors


@dataclass(frozen=True)
class LoadSummary:
    requests: int
    errors: int
    requests_per_second: float  # median over the runs
    p50_ms: float  # over every answered request of every run
    p99_ms: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_second": round(self.requests_per_second, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        }


def summarize(samples: Sequence[LoadSample]) -> LoadSummary:
    """Runs of one load (same path, kind and concurrency) -> throughput and latency."""
    if not samples:
        raise ValueError("no load runs to summarize")
    latencies = [latency for sample in samples for latency in sample.latencies]
    throughputs = [len(s.latencies) / s.seconds if s.seconds > 0 else 0.0 for s in samples]
    return LoadSummary(
        requests=sum(s.requests for s in samples),
        errors=sum(s.errors for s in samples),
        requests_per_second=median(throughputs),
        p50_ms=percentile(latencies, 50) * 1000 if latencies else math.nan,
        p99_ms=percentile(latencies, 99) * 1000 if latencies else math.nan,
    )
