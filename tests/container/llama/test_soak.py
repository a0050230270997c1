"""A week of traffic in a minute (issue 28): the CPU image serves the release soak (core/soak.py,
the same load and verdict the publishing pipeline applies to every image before tagging it) on
every endpoint a client uses, streamed and not, through the proxy, and holds: no failed request,
no kind slower at the end, llama-server's memory flat, `docker logs` at one short line per request
with the detail kept in a capped file.

Before issue 28 the shipped release failed it: llama-server's prompt cache in RAM (`--cache-ram`,
8192 MiB by default) kept the state of every distinct prompt, 6 to 20 kB a request with this
model, and compared each new prompt with all of them; and about 1 kB of llama-server's lines per
request reached `docker logs`. The second test keeps that cache on to show the soak catching it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from llama_images.core import soak
from llama_images.edges import soak as soak_edge
from llama_images.edges.engine import docker
from tests.container.conftest import CPU_IMAGE

pytestmark = pytest.mark.container

# One request's line in docker logs: the program's prefix, then the launcher's summary.
REQUEST_LINE = re.compile(r"llama \| \[llama\] task \d+: \d+ prompt \+ \d+ generated tokens in [\d.]+ ms")


def shell(container: soak_edge.Container, script: str) -> str:
    done = docker(["exec", container.identifier, "bash", "-c", script], soak_edge.SoakError, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_image_holds_the_release_soak_with_bounded_logs(main_build: Any) -> None:
    assert main_build.returncode == 0, main_build.stdout[-3000:]
    with soak_edge.started(CPU_IMAGE) as container:
        run = soak_edge.load(container, soak.RELEASE)
        verdict = soak.judge(run)
        figures = "\n".join(soak.figures_lines(verdict))
        assert verdict.passed, f"{verdict.summary()}\n{figures}"
        assert verdict.requests >= 20_000 and verdict.failures == 0
        # A soak of 20,000 requests writes less than 2 MB to docker logs: one line per request.
        assert run.log_bytes < 2_000_000, figures
        logged = docker(["logs", container.identifier], soak_edge.SoakError, timeout=60).stdout
        requests_logged = REQUEST_LINE.findall(logged)
        assert len(requests_logged) >= verdict.requests, logged[-2000:]
        assert "print_timing" not in logged and "launch_slot_" not in logged
        # The detail stays in the files: every line llama-server wrote, in its capped detail log.
        detail = shell(container, "grep -c 'print_timing' /var/log/portal/llama.detail.log*  | paste -sd' '")
        assert sum(int(count.rsplit(":", 1)[-1]) for count in detail.split()) >= 3 * verdict.requests
        sizes = shell(container, "find /var/log -type f -printf '%s %p\\n'")
        assert all(int(line.split()[0]) <= 20 * 1024 * 1024 + 65536 for line in sizes.splitlines()), sizes


def test_the_soak_catches_llama_servers_prompt_cache_growing(main_build: Any) -> None:
    """The upstream default (`--cache-ram 8192`) back on: the soak fails, naming the memory growth."""
    assert main_build.returncode == 0, main_build.stdout[-3000:]
    short = soak.Settings(blocks=2, rounds=1, sub_block=150, warmup_rounds=1, confirmations=0)
    with soak_edge.started(CPU_IMAGE, env={"LLAMA_ARGS": "--cache-ram 8192"}) as container:
        verdict = soak.judge(soak_edge.load(container, short))
    assert not verdict.passed
    assert any(p.startswith("llama-server's memory grew") for p in verdict.problems), verdict.problems
    assert verdict.growth_per_1000 > 10 * soak.GROWTH_BOUND, soak.figures_lines(verdict)
