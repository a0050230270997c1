"""llama-server in a container with a CPU quota below the CPUs it sees (`docker run --cpus 1` on a
host with more): its threads follow the quota unless LLAMA_ARGS set them; and LLAMA_SERVER_USER
starts it as the reference image's `user` account (issue 27)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.container.llama.support import Llama, Models

pytestmark = pytest.mark.container


def llama_server_line(llama: Llama) -> tuple[str, str]:
    """(its owner, its command line) from ps."""
    code, output = llama.exec("ps", "-C", "llama-server", "-o", "user=,args=")
    assert code == 0, output
    owner, _, args = output.strip().splitlines()[0].partition(" ")
    return owner, args.strip()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a quota below the CPUs seen needs a host with 2 CPUs or more")
def test_under_a_cpu_quota_llama_server_runs_as_many_threads_as_the_quota_allows_and_as_user(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    """What a user met: on a host showing 384 CPUs with a quota of 46, llama-server started 384
    threads. Here: --cpus 1 on a host of more CPUs."""
    readable = tmp_path / "models"  # a model `user` may read (the test's own folders are root's only)
    readable.mkdir(mode=0o755)
    readable.chmod(0o755)
    tmp_path.chmod(0o755)
    shutil.copy(models.dir / "tiny.gguf", readable / "tiny.gguf")
    (readable / "tiny.gguf").chmod(0o644)
    env = {"LLAMA_MODEL": "/models/tiny.gguf", "LLAMA_SERVER_USER": "user"}
    llama = start_llama(env=env, volumes={str(readable): "/models"}, nano_cpus=1_000_000_000)
    llama.wait_healthy(120)
    owner, args = llama_server_line(llama)
    assert "--threads 1 --threads-batch 1" in args, args
    assert owner == "user"
    assert "CPU quota 1 CPUs of" in llama.llama_log()
    assert "llama-server runs as user (uid 1001, gid 0): LLAMA_SERVER_USER" in llama.llama_log()


def test_threads_set_in_llama_args_are_left_as_they_are(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    env = {"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": "-t 2"}
    llama = start_llama(env=env, volumes=models.volumes, nano_cpus=1_000_000_000)
    llama.wait_healthy(120)
    owner, args = llama_server_line(llama)
    assert owner == "root" and "--threads" not in args and args.endswith("-t 2")
