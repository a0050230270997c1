"""Program `llama` in the CPU image: LLAMA_ARGS, secrets, failures that end, restarts.

The first tests reproduce what a new user met (issue 6, "what a new user meets today"): a
quoted LLAMA_ARGS value split at its space, an API key printed in `docker logs`, bad models
restarted 16 to 34+ times instead of ending FATAL.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import CPU_IMAGE
from tests.container.llama.support import FAST_RETRIES, GAVE_UP, Llama, Models, model_ids

pytestmark = pytest.mark.container


def test_a_quoted_llama_args_value_keeps_its_space(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": '--alias "my model"'},
                        volumes=models.volumes)  # fmt: skip
    llama.wait_healthy()
    status, body = llama.curl("/v1/models")
    assert status == 200 and model_ids(body) == ["my model"], body
    assert "--alias 'my model'" in llama.llama_log()  # the start line, quoted as a shell would


def test_an_api_key_in_llama_args_is_enforced_and_never_logged(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    # The secret's tail (llama-server logs a key's last four characters) must be found nowhere else.
    secret, token = "s3cr3t-key-do-not-log-Qz7v", "hf_" + "T0ken" * 7
    llama = start_llama(
        env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": f"--api-key {secret} -v", "HF_TOKEN": token},
        volumes=models.volumes,
    )
    llama.wait_healthy()
    assert llama.curl("/v1/models")[0] == 401
    assert llama.curl("/v1/models", "-H", f"Authorization: Bearer {secret}")[0] == 200
    llama.wait_logged("[llama] ready: serving")
    log = llama.log()
    assert "(environment: HF_TOKEN=***, LLAMA_API_KEY=***)" in log
    assert "api_keys: ****" in log  # llama-server's own line (-v), without the key's tail
    assert secret not in log and secret[-4:] not in log and token not in log
    found = llama.sh(f"grep -rlsF -- {secret[-4:]} /var/log /run/llama-images; true")
    assert found == (0, ""), found  # nor in any log file
    # Not in any process's arguments either (`ps` shows those to every user).
    code, cmdlines = llama.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert code == 0 and "llama-server" in cmdlines and secret not in cmdlines


@pytest.mark.parametrize("args", ["--port 9000", "--port=9000"])
def test_a_port_in_llama_args_moves_llama_server_and_is_published_to_the_proxy(
    args: str, main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": args}, volumes=models.volumes)
    llama.wait_healthy(port=9000)
    assert llama.curl("/health")[0] == 0  # nothing on the default port
    code, override = llama.exec("cat", "/run/llama-images/services.d/llama.toml")
    assert code == 0 and "internal_port = 9000" in override
    assert "--port 9000" in llama.llama_log() and llama.llama_log().count("--port") == 1


def test_without_a_port_in_llama_args_there_is_no_override(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf")}, volumes=models.volumes)
    llama.wait_healthy()
    assert llama.exec("test", "-e", "/run/llama-images/services.d/llama.toml")[0] != 0
    assert "--host 127.0.0.1 --port 18000 -m /models/tiny.gguf" in llama.llama_log()
    llama.wait_status("serving /models/tiny.gguf")


def test_an_unknown_flag_ends_fatal_at_once(main_build: Any, start_llama: Callable[..., Llama], models: Models) -> None:
    llama = start_llama(
        env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": "--bogus-flag"}, volumes=models.volumes
    )
    llama.wait_state("FATAL", 60)
    assert llama.starts() == 1
    assert "error: invalid argument: --bogus-flag" in llama.llama_log()
    assert "retrying cannot help" in llama.llama_log()
    assert llama.status_line() == "failed: error: invalid argument: --bogus-flag"


def test_an_unbalanced_quote_is_one_clear_error_and_no_start(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": '--alias "my model'})
    llama.wait_state("FATAL", 60)
    errors = [line for line in llama.llama_log().splitlines() if line.startswith("[llama] error:")]
    assert errors == ['[llama] error: LLAMA_ARGS: no closing quotation: close the quote; quote a value with spaces '
                      'like --alias "my model"']  # fmt: skip
    assert llama.starts() == 0
    assert llama.status_line().startswith("failed: LLAMA_ARGS: no closing quotation")


# Bad models. They run at the same time (module fixture); "missing" keeps the production retry
# timing (3 starts, 5 s then 10 s apart), the others the short one.
BAD_MODELS = {
    "missing": ("/models/missing.gguf", "LLAMA_MODEL=/models/missing.gguf: no such file"),
    "text file named .gguf": ("/models/text.gguf", "is not a GGUF file (it starts with b'this'"),
    "truncated GGUF": ("/models/truncated.gguf", "not within the file bounds, model is corrupted or incomplete"),
    "directory": ("/models/directory.gguf", "LLAMA_MODEL=/models/directory.gguf is a directory"),
    "command substitution": ("$(id)", "LLAMA_MODEL='$(id)' is not a .gguf path, an http(s) URL or a Hugging Face repo"),
}


@pytest.fixture(scope="module")
def bad_model_containers(main_build: Any, client: Any, models: Models) -> Iterator[dict[str, Llama]]:
    started = {}
    for case, (model, _) in BAD_MODELS.items():
        env = {"LLAMA_MODEL": model, **({} if case == "missing" else FAST_RETRIES)}
        volumes = {str(models.dir): {"bind": "/models", "mode": "ro"}}
        started[case] = Llama(client.containers.run(CPU_IMAGE, detach=True, environment=env, volumes=volumes))
    yield started
    for llama in started.values():
        llama.container.remove(force=True)


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_model_ends_fatal_after_bounded_retries(case: str, bad_model_containers: dict[str, Llama]) -> None:
    llama = bad_model_containers[case]
    _, cause = BAD_MODELS[case]
    llama.wait_state("FATAL", 90)
    log = llama.llama_log()
    assert llama.status_line().startswith("failed: ") and cause in llama.status_line(), llama.status_line()
    if case == "command substitution":  # a setting that can never work: no start, no retries
        assert llama.starts() == 0 and f"[llama] error: {cause}" in log
    else:
        attempts = llama.failed_attempts()
        assert len(attempts) == 3 and all(cause in line for line in attempts), log[-3000:]
        assert "[llama] giving up after 3 attempts: " in log
        # FATAL came from the one start that found the marker and exited at once (no 4th attempt).
        assert log.count("[llama] stopped for good: ") == 1, log[-3000:]
        assert llama.exec("test", "-e", GAVE_UP)[0] != 0  # that start removed the marker
    assert "uid=" not in log  # $(id) was never executed


def test_production_retry_timing_is_a_doubling_delay(bad_model_containers: dict[str, Llama]) -> None:
    llama = bad_model_containers["missing"]
    llama.wait_state("FATAL", 90)
    lines = [line for line in llama.llama_log().splitlines() if line.startswith("[llama] retrying in")]
    assert lines == ["[llama] retrying in 5 s", "[llama] retrying in 10 s"]


def test_without_a_model_llama_stays_stopped_and_says_why(main_build: Any, start_llama: Callable[..., Llama]) -> None:
    llama = start_llama()
    llama.wait_state("EXITED", 30)
    assert llama.status_line() == "no model configured"
    time.sleep(3)
    assert llama.state() == "EXITED"
    assert llama.llama_log().count("[llama] no model configured") == 1


def test_a_killed_llama_server_comes_back_healthy(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf")}, volumes=models.volumes)
    llama.wait_status("serving /models/tiny.gguf")  # the launcher has seen it serve
    first = llama.llama_server_pid()
    assert first is not None
    assert llama.sh(f"kill -9 {first}")[0] == 0
    llama.wait(lambda: llama.llama_server_pid() not in (None, first), 30, "llama-server not started again")
    llama.wait_healthy()
    llama.wait_state("RUNNING", 10)
    ended = "[llama] llama-server ended (signal 9) after serving; starting it again"
    llama.wait(lambda: ended in llama.llama_log(), 10, "the end was not logged")
    # The launcher itself killed: its llama-server ends with it (no orphan holding the port),
    # Supervisor starts the program again, and it serves.
    second = llama.llama_server_pid()
    code, launcher = llama.exec("supervisorctl", "pid", "llama")
    assert code == 0 and llama.sh(f"kill -9 {launcher.strip()}")[0] == 0
    llama.wait(lambda: llama.llama_server_pid() not in (None, second), 30, "llama-server not started again")
    assert llama.exec("test", "-e", f"/proc/{second}")[0] != 0
    llama.wait_healthy()


def test_restarts_begin_afresh_after_fatal(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    """`docker restart` and `supervisorctl restart llama` each get the full number of starts."""
    llama = start_llama(env={"LLAMA_MODEL": "/models/later.gguf", **FAST_RETRIES}, volumes={str(tmp_path): "/models"})
    llama.wait_state("FATAL", 60)
    assert len(llama.failed_attempts()) == 3
    llama.container.restart(timeout=10)
    llama.wait(lambda: len(llama.failed_attempts()) == 6, 60, "a restarted container did not try three times again")
    llama.wait_state("FATAL", 60)
    shutil.copy(models.dir / "tiny.gguf", tmp_path / "later.gguf")
    code, output = llama.exec("supervisorctl", "restart", "llama")
    assert code == 0, output
    llama.wait_healthy()
    llama.wait_state("RUNNING", 10)


FAKE_NVIDIA_SMI = """#!/bin/sh
# What nvidia-smi prints on a host with one GPU: the launcher asks it whether GPUs are visible.
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e1f0000-0000-0000-0000-000000000000)"
"""


def test_gpus_llama_server_cannot_use_are_reported_loudly(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    """The CPU image on a GPU host: nvidia-smi (here a stand-in printing one GPU, as the NVIDIA
    runtime would mount the real one) sees a GPU, the real llama-server lists no CUDA device."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
    smi.chmod(0o755)
    llama = start_llama(env={"LLAMA_MODEL": models.path("tiny.gguf")},
                        volumes={**models.volumes, str(smi): "/usr/local/bin/nvidia-smi"})  # fmt: skip
    llama.wait_healthy()
    llama.wait_status("CPU fallback (GPU not used): serving /models/tiny.gguf")
    log = llama.llama_log()
    assert "[llama] WARNING: CPU FALLBACK. nvidia-smi sees 1 GPU(s) (GPU 0: NVIDIA H100 80GB HBM3" in log
    assert "[llama] WARNING: llama-server --list-devices says: Available devices:; (none)" in log
    assert log.index("CPU FALLBACK") < log.index("[llama] starting llama-server")  # before the start, once
    assert log.count("CPU FALLBACK") == 1
