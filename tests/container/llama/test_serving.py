"""Program `llama` in the CPU image: LLAMA_ARGS, secrets, failures that end, restarts.

The first tests reproduce what a new user met (issue 6, "what a new user meets today"):
a quoted LLAMA_ARGS value split at its space, an API key printed in `docker logs`, bad models
restarted 16 to 34+ times instead of ending FATAL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.container.llama.support import FAST_RETRIES, Llama, Models, model_ids
from tests.support.fake_hf_hub import FakeHub

pytestmark = pytest.mark.container


def test_a_quoted_llama_args_value_keeps_its_space(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    llama = start_llama(
        env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": '--alias "my model"'},
        volumes=models.volumes,
    )
    llama.wait_healthy()
    status, body = llama.curl("/v1/models")
    assert status == 200 and model_ids(body) == ["my model"], body


def test_an_api_key_in_llama_args_is_enforced_and_never_logged(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    secret = "s3cr3t-key-do-not-log"
    llama = start_llama(
        env={"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_ARGS": f"--api-key {secret}"},
        volumes=models.volumes,
    )
    llama.wait_healthy()
    assert llama.curl("/v1/models")[0] == 401
    assert llama.curl("/v1/models", "-H", f"Authorization: Bearer {secret}")[0] == 200
    assert "[llama] starting llama-server" in llama.log()
    assert secret not in llama.log()
    # Not in any process's arguments either (`ps` shows those to every user).
    code, cmdlines = llama.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert code == 0 and "llama-server" in cmdlines and secret not in cmdlines


BAD_MODELS = {
    "missing": ("/models/missing.gguf", "no such file"),
    "text file named .gguf": ("/models/text.gguf", "not a GGUF file"),
    "truncated GGUF": ("/models/truncated.gguf", "corrupted or incomplete"),
    "directory": ("/models/directory.gguf", "is a directory"),
    "command substitution": ("$(id)", "not a .gguf path"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_model_ends_fatal_after_bounded_retries(
    case: str, main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    model, cause = BAD_MODELS[case]
    llama = start_llama(env={"LLAMA_MODEL": model, **FAST_RETRIES}, volumes=models.volumes)
    llama.wait_state("FATAL", 60)
    log = llama.log()
    assert cause in log, log[-3000:]
    assert 1 <= len(llama.failed_attempts()) <= 3, log[-3000:]
    assert llama.status_line().startswith("failed:"), llama.status_line()
    assert "uid=" not in log  # $(id) was never executed


def test_a_hugging_face_repo_is_served_through_llama_servers_own_hf_download(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub
) -> None:
    hub.add_repo("org/repo-GGUF", {"tiny-Q8_0.gguf": (models.dir / "tiny.gguf").read_bytes()})
    llama = start_llama(env={"LLAMA_MODEL": "org/repo-GGUF", "HF_ENDPOINT": hub.url})
    llama.wait_healthy()
    status, body = llama.curl("/v1/models")
    assert status == 200 and model_ids(body) == ["org/repo-GGUF"], body
    assert hub.request_lines()[0] == "GET /api/models/org/repo-GGUF/refs"
    answer = llama.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert answer[0] == 200 and json.loads(answer[1])["choices"][0]["message"]["role"] == "assistant"
