"""The invoke tasks as a user runs them (no engine needed for these)."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO_ROOT


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def test_every_task_is_listed_with_its_summary() -> None:
    listing = invoke("--list").stdout
    for task in ("engine", "matrix", "bake", "build"):
        line = next((line for line in listing.splitlines() if line.strip().startswith(task + " ")), "")
        assert len(line.split()) > 3, f"{task} has no summary in:\n{listing}"


def test_matrix_lists_the_shipped_targets_with_tags_and_upstreams() -> None:
    result = invoke("matrix")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["cpu/debian-forky/b11669"] == [
        "docker.io/llamaimages/llama-cpp:b11669-cpu",
        "debian:forky-slim",
        "linux/amd64,linux/arm64",
    ]
    assert rows["cuda/cuda-12.9/b11669"][:2] == [
        "docker.io/llamaimages/llama-cpp:b11669-cuda-12.9",
        "nvidia/cuda:12.9.1-runtime-ubuntu24.04",
    ]
    # Current llama.cpp-cuda releases carry CUDA 12.8 tarballs only: no CUDA 13 target.
    assert not any(target.startswith("cuda/cuda-13.") for target in rows)


def test_bake_prints_the_default_targets_and_honours_overrides() -> None:
    default = json.loads(invoke("bake", "--print").stdout)
    assert default["group"]["default"]["targets"] == ["base_debian-forky", "cpu_debian-forky_b11669"]
    custom = invoke("bake", "--filter", "cuda/cuda-12.9/*", "--tag", "my-build", "--repository", "mine")
    target = json.loads(custom.stdout)["target"]["cuda_cuda-12_9_b11669"]
    assert target["tags"] == ["docker.io/llamaimages/mine:my-build-cuda-12.9"]


def test_bad_option_values_exit_2_without_traceback() -> None:
    for args, message in (
        (("matrix", "--platform", "amd64"), "--platform: 'amd64' is not a platform"),
        (("matrix", "--filter", "gpu/*"), "--filter 'gpu/*' matches no target"),
    ):
        result = invoke(*args)
        assert result.returncode in (2, 3), result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
