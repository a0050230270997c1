"""llama-server's API end to end, as a user reaches it: through the proxy on external port 8000
with the token, with curl (inside the container, to the proxy's port) and with the official
OpenAI Python client (from the host, through the port Docker publishes on loopback)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.container.conftest import CPU_IMAGE, loopback_ports
from tests.container.llama.support import FAST_RETRIES, Llama, Models, bridge_gateway
from tests.container.runtime_support import TOKEN, bearer, host_port, request
from tests.support.fake_hf_hub import FakeHub
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

ALIAS = "tiny-chat"
# "yes", then only the end of the text is allowed: a reply that stops by itself.
YES = {"grammar": 'root ::= "yes"'}
KEEP_GOING = {"ignore_eos": True}  # a random model could end any reply early
# Letters and spaces only: every token is then whole characters. A random model's first token can
# be half a UTF-8 character, and llama-server then leaves out the stream's opening role chunk
# (seen directly on its internal port too).
ASCII_ONLY = {"grammar": "root ::= [a-z ]+"}


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 68 MB random model: a few milliseconds per token on a CPU, so a streamed reply of a
    hundred tokens takes long enough to see whether its events arrive one by one."""
    directory = tmp_path_factory.mktemp("slow-model")
    write_tiny_llama_gguf(directory / "slow.gguf", n_embd=512, n_ff=2048, n_blocks=4)
    return directory


@pytest.fixture(scope="module")
def served(main_build: Any, client: Any, slow_model: Path) -> Iterator[Llama]:
    env = {"LLAMA_MODEL": "/models/slow.gguf", "LLAMA_ARGS": f"--alias {ALIAS}", "OPEN_BUTTON_TOKEN": TOKEN}
    llama = Llama(
        client.containers.run(
            CPU_IMAGE,
            detach=True,
            environment=env,
            volumes={str(slow_model): {"bind": "/models", "mode": "ro"}},
            ports=loopback_ports((8000,)),
        )
    )
    try:
        llama.wait(lambda: proxied(llama, "/health").status == 200, 120, "/health not 200 through the proxy")
        yield llama
    finally:
        llama.container.remove(force=True)


def proxied(llama: Llama, path: str, token: str | None = TOKEN, **kwargs: Any) -> Any:
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    try:
        return request(llama.container, 8000, path, headers=headers, **kwargs)
    except OSError:
        return type("NoAnswer", (), {"status": 0, "body": b""})()


def openai_client(llama: Llama, token: str = TOKEN, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{host_port(llama.container, 8000)}/v1", api_key=token, **kwargs)


def curl(llama: Llama, path: str, *options: str) -> tuple[int, str]:
    """curl in the container to the proxy's external port 8000, with the token."""
    return llama.exec("curl", "-sS", "-N", "-H", f"Authorization: Bearer {TOKEN}", *options,
                      f"http://127.0.0.1:8000{path}")  # fmt: skip


def post_json(payload: dict[str, Any]) -> tuple[str, ...]:
    return ("-H", "Content-Type: application/json", "-d", json.dumps(payload))


# Without the token


@pytest.mark.parametrize(("method", "path"), [("GET", "/health"), ("GET", "/v1/models"),
                                              ("POST", "/v1/chat/completions"), ("POST", "/completion")])  # fmt: skip
def test_without_the_token_the_api_answers_401(served: Llama, method: str, path: str) -> None:
    reply = proxied(served, path, token=None, method=method, body=b"{}")
    assert reply.status == 401 and json.loads(reply.body)["error"] == "unauthorized"
    assert proxied(served, path, token="wrong-token", method=method, body=b"{}").status == 401


def test_the_openai_client_with_a_wrong_token_is_refused(served: Llama) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(served, token="wrong-token").models.list()


# With curl


def test_health_and_models_with_curl(served: Llama) -> None:
    assert curl(served, "/health") == (0, '{"status":"ok"}')
    code, body = curl(served, "/v1/models")
    assert code == 0 and [m["id"] for m in json.loads(body)["data"]] == [ALIAS]


def test_a_streamed_chat_with_curl_is_framed_as_server_sent_events(served: Llama) -> None:
    payload = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True,
               "stream_options": {"include_usage": True}, **KEEP_GOING, **ASCII_ONLY}  # fmt: skip
    code, body = curl(served, "/v1/chat/completions", *post_json(payload))
    assert code == 0
    events = [event for event in body.split("\n\n") if event.strip()]
    assert all(event.startswith("data: ") and "\n" not in event for event in events), body
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", body
    finishing = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishing == ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_the_native_completion_endpoint_with_curl(served: Llama) -> None:
    code, body = curl(served, "/completion", *post_json({"prompt": "Once upon a time", "n_predict": 4, **KEEP_GOING}))
    answer = json.loads(body)
    assert code == 0 and isinstance(answer["content"], str)
    assert answer["stop"] is True and answer["stop_type"] == "limit" and answer["tokens_predicted"] == 4
    streamed = {"prompt": "Once", "n_predict": 3, "stream": True, **KEEP_GOING}
    code, body = curl(served, "/completion", *post_json(streamed))
    events = [json.loads(line.removeprefix("data: ")) for line in body.splitlines() if line.startswith("data: ")]
    assert code == 0 and len(events) >= 2 and events[-1]["stop"] is True
    assert all(event["stop"] is False for event in events[:-1])


# With the OpenAI Python client


def test_the_openai_client_lists_the_model(served: Llama) -> None:
    assert [model.id for model in openai_client(served).models.list()] == [ALIAS]


def test_a_chat_completion_has_the_openai_shape_usage_and_finish_reasons(served: Llama) -> None:
    chat = openai_client(served).chat.completions
    messages: Any = [{"role": "user", "content": "Hello"}]
    cut = chat.create(model=ALIAS, messages=messages, max_tokens=5, extra_body=KEEP_GOING)
    assert cut.object == "chat.completion" and cut.id.startswith("chatcmpl-") and cut.model == ALIAS
    assert cut.choices[0].message.role == "assistant" and cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 5 and cut.usage.prompt_tokens > 0
    assert cut.usage.total_tokens == cut.usage.prompt_tokens + cut.usage.completion_tokens
    stopped = chat.create(model=ALIAS, messages=messages, max_tokens=20, extra_body=YES)
    assert stopped.choices[0].message.content == "yes" and stopped.choices[0].finish_reason == "stop"
    assert stopped.usage is not None and stopped.usage.completion_tokens < 20


def test_a_streamed_chat_arrives_event_by_event(served: Llama) -> None:
    chat = openai_client(served).chat.completions
    started = time.monotonic()
    arrivals: list[float] = []
    chunks = []
    stream = chat.create(model=ALIAS, messages=[{"role": "user", "content": "Tell a story"}], max_tokens=150,
                         stream=True, stream_options={"include_usage": True}, extra_body=KEEP_GOING)  # fmt: skip
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        chunks.append(chunk)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 50
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 150
    # A few milliseconds per token: buffered by the proxy, they would all arrive at the end together.
    total = arrivals[-1]
    assert arrivals[-1] - arrivals[1] > 0.3, arrivals
    assert arrivals[1] < total / 2, arrivals


def test_text_completions_with_the_openai_client(served: Llama) -> None:
    completion = openai_client(served).completions.create(
        model=ALIAS, prompt="Once upon a time", max_tokens=4, extra_body=KEEP_GOING
    )
    assert completion.object == "text_completion" and isinstance(completion.choices[0].text, str)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4


# llama-server's own key, metrics, a moved port, and what the proxy says while it cannot answer


def test_llama_api_key_is_a_second_lock_and_metrics_pass_the_proxy(
    main_build: Any, start_llama: Callable[..., Llama], models: Models
) -> None:
    env = {"LLAMA_MODEL": models.path("tiny.gguf"), "LLAMA_API_KEY": "second-lock", "OPEN_BUTTON_TOKEN": TOKEN}
    llama = start_llama(
        env={**env, "LLAMA_ARGS": "--metrics --port 9000"},
        volumes=models.volumes,
        ports=loopback_ports((8000,)),
    )
    llama.wait(lambda: proxied(llama, "/health").status == 200, 90, "/health not 200 through the proxy on 8000")
    refused = proxied(llama, "/v1/models")
    assert refused.status == 401 and b"Invalid API Key" in refused.body  # llama-server's own answer
    key = {"X-Api-Key": "second-lock"}
    assert proxied(llama, "/v1/models", headers=key).status == 200
    metrics = proxied(llama, "/metrics", headers=key)
    assert metrics.status == 200 and b"llamacpp:prompt_tokens_total" in metrics.body
    assert proxied(llama, "/metrics", token=None, headers=key).status == 401  # the proxy's lock
    with pytest.raises(openai.AuthenticationError):
        openai_client(llama).models.list()
    assert [m.id for m in openai_client(llama, default_headers=key).models.list()] == ["/models/tiny.gguf"]
    llama.wait_logged("[llama] ready: serving")
    assert "second-lock" not in llama.log()


def portal_services(llama: Llama) -> list[dict[str, Any]]:
    reply = request(llama.container, 1111, "/api/services", headers=bearer())
    services: list[dict[str, Any]] = reply.json()["services"]
    return services


def unavailable(llama: Llama) -> dict[str, Any]:
    reply = proxied(llama, "/health")
    if reply.status != 503:
        return {}
    assert reply.headers["Retry-After"]
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def test_the_proxy_says_why_llama_does_not_answer(main_build: Any, client: Any, models: Models) -> None:
    """No model, a download under way, a failed model: 503 with the status line, not a reset."""
    data = (models.dir / "tiny.gguf").read_bytes() + bytes(4_000_000)
    with FakeHub(bridge_gateway(client), download_rate=30_000) as slow:  # 16 connections: about 8 s
        slow.add_repo("org/repo-GGUF", {"tiny-Q8_0.gguf": data})
        cases = {
            "none": {},
            "downloading": {"LLAMA_MODEL": "org/repo-GGUF", "HF_ENDPOINT": slow.url},
            "failed": {"LLAMA_MODEL": "/models/missing.gguf", **FAST_RETRIES},
        }
        started = {}
        try:
            for case, env in cases.items():
                container = client.containers.run(
                    CPU_IMAGE, detach=True, ports=loopback_ports((8000, 1111)),
                    environment={**env, "OPEN_BUTTON_TOKEN": TOKEN},
                )  # fmt: skip
                started[case] = Llama(container)
            none, downloading, failed = started["none"], started["downloading"], started["failed"]
            none.wait(lambda: unavailable(none).get("status") == "no model configured", 60, "no 503 'no model'")
            assert unavailable(none)["service"] == "llama"
            downloading.wait(
                lambda: re.fullmatch(
                    r"downloading tiny-Q8_0\.gguf \d+% \(.+/s\)", unavailable(downloading).get("status", "")
                )
                is not None, 60, "no 503 with the download's progress",
            )  # fmt: skip
            failed.wait_state("FATAL", 60)
            assert unavailable(failed)["status"].startswith("failed: LLAMA_MODEL=/models/missing.gguf: no such file")
            # The portal (its API, through the proxy on 1111): state, status line and the last log lines.
            portal = {row["name"]: row for row in portal_services(failed)}
            assert portal["llama"]["state"] == "FATAL" and portal["llama"]["status"].startswith("failed: ")
            log = request(failed.container, 1111, "/api/services/llama/log", headers=bearer()).json()["text"]
            assert "[llama] giving up after 3 attempts: LLAMA_MODEL=/models/missing.gguf: no such file" in log
            idle = {row["name"]: row for row in portal_services(none)}["llama"]
            assert (idle["state"], idle["status"]) == ("EXITED", "no model configured")
            downloading.wait(lambda: proxied(downloading, "/health").status == 200, 60, "not served after download")
        finally:
            for llama in started.values():
                llama.container.remove(force=True)
