"""Release detection against a loopback GitHub releases API: the newest release, what it carries,
retries, and what a publishing run builds or skips because of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llama_images.core.bake import render_plan
from llama_images.core.errors import ReleaseLookupError
from llama_images.core.matrix import parse_matrix
from llama_images.core.options import Overrides
from llama_images.core.releases import parse_release, resolve_latest
from llama_images.core.targets import expand, select
from llama_images.edges.github import fetch_release
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.matrices import VALID, broken, planned, request_for
from tests.support.loopback import CURRENT, RELEASES_PATH, Answer, Loopback, release, serve, sha256_of, tag_path


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loopback]:
    with serve(Loopback()) as api:
        monkeypatch.setenv("GITHUB_API_URL", api.url)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        yield api


# The source publishes many releases with one creation time, and lists them in no useful order.
LISTING = [
    release("b9290", CURRENT, published_at="2026-07-20T10:00:00Z"),
    release("b9310", CURRENT, draft=True),
    release("b9301", CURRENT, published_at="2026-07-20T09:00:00Z"),
    release("b9305", CURRENT, prerelease=True),
    release("b9300", CURRENT, published_at="2026-07-20T11:00:00Z"),
]


def test_latest_is_the_highest_published_build_not_the_first_listed(github: Loopback) -> None:
    github.route(RELEASES_PATH, Answer(body=LISTING))
    newest = fetch_release("ai-dock/llama.cpp-cuda")
    assert newest.tag == "b9301"
    assert newest.carries() == "CUDA 12.8: amd64, arm64"
    assert github.paths() == [RELEASES_PATH]


def test_latest_resolves_tags_and_checksums_of_the_targets(github: Loopback) -> None:
    github.route(RELEASES_PATH, Answer(body=LISTING))
    matrix = parse_matrix(broken("[b9159, b9000]", "[latest, b9000]"))
    resolved, releases = resolve_latest(matrix, select(expand(matrix), ["cuda/cuda-12.9/*"]), fetch_release)
    images = {t.id: t.image for t in resolved}
    assert images["cuda/cuda-12.9/latest"] == "docker.io/example/llama-cpp:b9301-cuda-12.9"
    assert images["cuda/cuda-12.9/b9000"] == "docker.io/example/llama-cpp:b9000-cuda-12.9"
    assert releases["b9301"].asset("llama.cpp-b9301-cuda-12.8-arm64.tar.gz") is not None


def test_rate_limits_and_server_errors_are_retried_then_answered(github: Loopback) -> None:
    github.route(
        tag_path("b9000"),
        Answer(429, {"message": "slow down"}, {"Retry-After": "0"}),
        Answer(
            403, {"message": "rate limit"}, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()))}
        ),
        Answer(502, b"<html>bad gateway</html>"),
        Answer(body=release("b9000", CURRENT)),
    )
    assert fetch_release("ai-dock/llama.cpp-cuda", "b9000").tag == "b9000"
    assert github.paths() == [tag_path("b9000")] * 4


def test_a_rate_limit_that_resets_much_later_fails_at_once_and_says_so(github: Loopback) -> None:
    reset = str(int(time.time()) + 3600)
    github.route(tag_path("b9000"), Answer(403, {"message": "rate limit"}, {"X-RateLimit-Remaining": "0",
                                                                           "X-RateLimit-Reset": reset}))  # fmt: skip
    with pytest.raises(ReleaseLookupError, match=r"rate limited until .* set GITHUB_TOKEN"):
        fetch_release("ai-dock/llama.cpp-cuda", "b9000")
    assert len(github.received) == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(503, {"message": "unavailable"}), r"answered HTTP 503 on every attempt \(4 attempts\)"),
        (Answer(200, b"{not json"), "the answer is not JSON"),
        (Answer(200, [1, 2]), "answered without"),
    ],
)
def test_bad_answers_end_in_a_clear_error_never_an_invented_release(
    github: Loopback, answer: Answer, reason: str
) -> None:
    github.route(tag_path("b9000"), answer)
    with pytest.raises(ReleaseLookupError, match=reason):
        fetch_release("ai-dock/llama.cpp-cuda", "b9000")


def test_timeouts_are_retried_a_bounded_number_of_times(github: Loopback) -> None:
    github.route(tag_path("b9000"), Answer(body=release("b9000", CURRENT), delay=1.0))
    started = time.monotonic()
    with pytest.raises(ReleaseLookupError, match=r"no answer \(.*\) \(4 attempts\)"):
        fetch_release("ai-dock/llama.cpp-cuda", "b9000", timeout=0.2)
    assert len(github.received) == 4
    assert time.monotonic() - started < 15


def test_unknown_release_is_named_and_the_token_goes_only_into_the_header(
    github: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_token_value")
    with pytest.raises(ReleaseLookupError) as caught:
        fetch_release("ai-dock/llama.cpp-cuda", "b1")
    assert "no release b1 of ai-dock/llama.cpp-cuda" in str(caught.value)
    assert "ghp_secret_token_value" not in str(caught.value)
    assert github.received[0].headers["Authorization"] == "Bearer ghp_secret_token_value"


def test_publishing_looks_up_pinned_releases_for_their_checksums(
    github: Loopback, write_matrix: Callable[[str], Path]
) -> None:
    github.route(tag_path("b9000"), Answer(body=release("b9000", CURRENT)))
    path = write_matrix(VALID.replace('cuda-13.1: "13.0"', 'cuda-13.1: "12.8"'))
    request = request_for(path, ("cuda/cuda-12.9/b9000",), push=True)
    plan = planned(request, fetch_release)
    args = render_plan(plan, request, "rev", "now", None)["target"]["cuda_cuda-12_9_b9000"]["args"]
    assert args["LLAMA_CPP_SHA256_ARM64"] == sha256_of("b9000", "12.8", "arm64")
    # A local build does not ask the API for pinned releases.
    github.received.clear()
    assert planned(request_for(path, ("cuda/cuda-12.9/b9000",)), fetch_release).releases == {}
    assert github.received == []


# What ai-dock/llama.cpp-cuda releases really hold: current ones CUDA 12.8 per architecture,
# older ones several CUDA versions without an architecture.
OLD_FORMAT = (("12.4", None), ("12.8", None), ("13.0", None))


def test_a_scheduled_run_publishes_what_exists_and_reports_what_it_skipped(
    github: Loopback, write_matrix: Callable[[str], Path]
) -> None:
    github.route(RELEASES_PATH, Answer(body=[release("b9300", (("12.8", "amd64"), ("12.8", "arm64")))]))
    path = write_matrix(VALID)  # cuda-13.1 wants 13.0 tarballs, which current releases lack
    request = request_for(path, ("cuda/*",), Overrides(release="latest"), push=True, skip_unavailable=True)
    plan = planned(request, fetch_release)
    assert {t.image: t.platforms for t in plan.images} == {
        "docker.io/example/llama-cpp:b9300-cuda-12.9": ("linux/amd64", "linux/arm64")
    }
    assert [t.id for t in plan.targets if t.id.startswith("base/")] == ["base/cuda-12.9"]
    [skip] = plan.skipped
    assert skip.target == "cuda/cuda-13.1/b9300"  # named by the release it resolved
    assert skip.reason == (
        "release b9300 has no asset llama.cpp-b9300-cuda-13.0-amd64.tar.gz (it carries CUDA 12.8: amd64, arm64)"
    )


def test_an_explicit_target_that_cannot_be_built_fails_naming_the_asset(
    github: Loopback, write_matrix: Callable[[str], Path]
) -> None:
    github.route(tag_path("b5460"), Answer(body=release("b5460", OLD_FORMAT)))
    path = write_matrix(VALID)
    with pytest.raises(ReleaseLookupError) as caught:
        planned(request_for(path, ("cuda/cuda-12.9/*",), Overrides(release="b5460"), push=True), fetch_release)
    message = str(caught.value)
    assert "cuda/cuda-12.9/b5460 (linux/arm64): release b5460 has llama.cpp-b5460-cuda-12.8.tar.gz" in message
    assert "older format, no architecture" in message
    assert caught.value.exit_code == 6


def run_task(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_release_task_shows_what_the_newest_release_carries_with_actions_outputs(
    github: Loopback, tmp_path: Path
) -> None:
    newest = release("b9300", shipped.tarballs())
    carries = parse_release(newest).carries()
    github.route(RELEASES_PATH, Answer(body=[newest, release("b5460", OLD_FORMAT)]))
    plain = run_task("release", env={"GITHUB_API_URL": github.url, "GITHUB_ACTIONS": ""})
    assert plain.returncode == 0, plain.stderr
    assert f"release b9300: {carries}" in plain.stdout
    cuda = shipped.target("cuda", release="b9300")
    assert f"buildable: {shipped.target('cuda', release='latest').id} -> {cuda.image}" in plain.stdout
    outputs, summary = tmp_path / "outputs", tmp_path / "summary.md"
    actions = {"GITHUB_API_URL": github.url, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs),
               "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    assert run_task("release", env=actions).returncode == 0
    lines = outputs.read_text().splitlines()
    assert lines[0].startswith("release<<EOF_") and lines[1] == "b9300" and lines[2] == lines[0].split("<<")[1]
    assert f"`b9300`: {carries}" in summary.read_text()
    github.route(RELEASES_PATH, Answer(body=[release("b5460", OLD_FORMAT)]))
    old = run_task("release", env={"GITHUB_API_URL": github.url, "GITHUB_ACTIONS": ""})
    assert "release b5460: CUDA 12.4: no architecture (older format); CUDA 12.8: no architecture" in old.stdout
