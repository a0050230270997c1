"""The serverless worker's pure parts (derivatives/llama-cpp/.../llama_worker: settings.py,
workload.py) and the launcher's status record it reads (llama_serving/status.py). The worker itself
(worker.py, on vastai) is tested running, in tests/container/llama/test_serverless.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_serving import service, status
from llama_worker import workload
from llama_worker.settings import Settings, SettingsError, settings_from

PLATFORM = {
    "REPORT_ADDR": "https://run.vast.ai",
    "MASTER_TOKEN": "master-token-value",
    "CONTAINER_ID": "4242",
    "PUBLIC_IPADDR": "203.0.113.7",
    "VAST_TCP_PORT_3000": "41234",
}


def test_the_platform_variables_make_the_settings_and_the_url_the_engine_is_told() -> None:
    settings = settings_from(PLATFORM)
    assert (settings.port, settings.session_port, settings.use_ssl, settings.unsecured) == (3000, 3001, False, False)
    assert settings.url == "http://203.0.113.7:41234"
    assert settings_from({**PLATFORM, "USE_SSL": "TRUE"}).url == "https://203.0.113.7:41234"
    assert settings.defaults == ()


def test_every_missing_platform_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from({})
    assert raised.value.problems == [
        "REPORT_ADDR is not set (the platform sets it on a serverless instance)",
        "MASTER_TOKEN is not set (the platform sets it on a serverless instance)",
        "CONTAINER_ID is not set (the platform sets it on a serverless instance)",
        "PUBLIC_IPADDR is not set (the platform sets it on a serverless instance)",
        "VAST_TCP_PORT_3000 is not set (the platform sets it on a serverless instance)",
    ]


def test_the_public_port_variable_follows_worker_port() -> None:
    env = {**PLATFORM, "WORKER_PORT": "3005"}
    with pytest.raises(SettingsError) as raised:
        settings_from(env)
    assert raised.value.problems == ["VAST_TCP_PORT_3005 is not set (the platform sets it on a serverless instance)"]
    settings = settings_from({**env, "VAST_TCP_PORT_3005": "40000"})
    assert (settings.port, settings.session_port, settings.url) == (3005, 3006, "http://203.0.113.7:40000")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"REPORT_ADDR": "run.vast.ai"}, "REPORT_ADDR='run.vast.ai' is not an http(s) URL (or a comma-separated list"),
        ({"CONTAINER_ID": "C.42"}, "CONTAINER_ID='C.42' is not a number"),
        ({"VAST_TCP_PORT_3000": "70000"}, "VAST_TCP_PORT_3000='70000' is not a port (1-65535)"),
        ({"WORKER_PORT": "http"}, "WORKER_PORT='http' is not a port (1-65535)"),
        ({"USE_SSL": "sometimes"}, "USE_SSL='sometimes' is neither true nor false"),
        ({"UNSECURED": "perhaps"}, "UNSECURED='perhaps' is neither true nor false"),
        ({"WORKER_LOG_LEVEL": "loud"}, "WORKER_LOG_LEVEL='loud' is not one of debug, info, warning, error"),
    ],
)
def test_a_malformed_variable_is_named_with_its_value(change: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from({**PLATFORM, **change})
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_unsecured_fills_in_local_stand_ins_and_lists_them() -> None:
    settings = settings_from({"UNSECURED": "true"})
    assert settings.unsecured
    assert settings.defaults == (
        "REPORT_ADDR=http://127.0.0.1:9",
        "MASTER_TOKEN=(empty)",
        "CONTAINER_ID=0",
        "PUBLIC_IPADDR=127.0.0.1",
        "VAST_TCP_PORT_3000=3000",
    )
    # What the platform does set is used as it is.
    assert settings_from({"UNSECURED": "1", "PUBLIC_IPADDR": "10.0.0.2"}).url == "http://10.0.0.2:3000"


def test_the_library_gets_the_spellings_it_understands() -> None:
    settings = settings_from({**PLATFORM, "USE_SSL": "Yes", "UNSECURED": "0"})
    assert settings.library_environment("master-token-value") == {
        "WORKER_PORT": "3000",
        "WORKER_HTTP_PORT": "3001",
        "USE_SSL": "true",  # the library compares with "true" exactly
        "UNSECURED": "false",
        "REPORT_ADDR": "https://run.vast.ai",
        "MASTER_TOKEN": "master-token-value",
        "CONTAINER_ID": "4242",
        "PUBLIC_IPADDR": "203.0.113.7",
        "VAST_TCP_PORT_3000": "41234",
    }


def test_the_master_token_is_not_part_of_the_settings_record() -> None:
    assert "master-token-value" not in repr(settings_from(PLATFORM))
    assert "master" not in " ".join(f.name for f in Settings.__dataclass_fields__.values())


# ---- workload in tokens -------------------------------------------------------------------------


def test_a_chat_request_counts_its_messages_text_and_the_templates_share() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "image_url", "image_url": {}}]},
        ],
        "max_tokens": 32,
    }
    prompt = workload.prompt_of(workload.CHAT, payload)
    assert prompt == workload.Prompt("Be brief.\nHello", 2 * workload.TOKENS_PER_MESSAGE)
    assert workload.generated_tokens(workload.CHAT, payload) == 32
    assert workload.generated_tokens(workload.CHAT, {"max_completion_tokens": 10, "max_tokens": 99, "n": 3}) == 30


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Once upon a time", workload.Prompt("Once upon a time", 0)),
        ([1, 2, 3, 4], workload.Prompt("", 4)),
        (["a", "b"], workload.Prompt("a\nb", 0)),
        ([[1, 2], "text"], workload.Prompt("text", 2)),
        ({"prompt_string": "with media", "multimodal_data": []}, workload.Prompt("with media", 0)),
        (None, workload.Prompt("", 0)),
    ],
)
def test_completion_prompts_as_text_token_ids_or_batches(prompt: object, expected: workload.Prompt) -> None:
    assert workload.prompt_of(workload.COMPLETIONS, {"prompt": prompt}) == expected
    assert workload.prompt_of(workload.COMPLETION, {"prompt": prompt}) == expected


def test_tokens_to_generate_per_route_and_the_default_for_no_limit() -> None:
    assert workload.generated_tokens(workload.COMPLETION, {"n_predict": 50}) == 50
    assert workload.generated_tokens(workload.COMPLETION, {"n_predict": -1}) == workload.DEFAULT_GENERATED_TOKENS
    assert workload.generated_tokens(workload.COMPLETION, {}, default=128) == 128
    assert workload.generated_tokens(workload.COMPLETIONS, {"max_tokens": True}) == workload.DEFAULT_GENERATED_TOKENS
    assert workload.workload(12, 16) == 28.0


@pytest.mark.parametrize(
    ("slots", "context", "request_tokens", "concurrency"),
    [
        (4, 4096, 130, 4),  # a real context holds every slot's request
        (4, 512, 130, 3),  # the tests' tiny model: 4 x 130 tokens do not fit in 512
        (4, 256, 130, 1),  # LLAMA_ARGS="-c 256": one at a time (4 at once failed every request)
        (4, 100, 130, 1),  # not even one fits: one, and llama-server says why it fails
        (64, 1_000_000, 130, 16),  # at most MAX_BENCHMARK_CONCURRENCY
        (None, None, 130, 1),  # llama-server's /props did not answer
        (8, None, 130, 8),
    ],
)
def test_the_benchmark_runs_as_many_requests_at_once_as_the_slots_and_the_context_hold(
    slots: int | None, context: int | None, request_tokens: int, concurrency: int
) -> None:
    assert workload.benchmark_concurrency(slots, context, request_tokens, 16) == concurrency


def test_the_fallback_estimate_and_what_is_worth_tokenizing() -> None:
    assert workload.estimate_tokens("12345678") == 2
    assert workload.estimate_tokens("123456789") == 3
    assert not workload.tokenizable(workload.Prompt("", 3))
    assert not workload.tokenizable(workload.Prompt("x" * (workload.MAX_TOKENIZED_CHARACTERS + 1), 0))
    assert workload.tokenizable(workload.Prompt("hello", 0))


# ---- the launcher's status record ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "state"),
    [
        ("starting", "starting"),
        ("downloading tiny.gguf 42%", "downloading"),
        ("checking tiny.gguf (sha256)", "downloading"),
        ("loading model", "loading"),
        ("serving tiny", "serving"),
        ("serving 2 models (loaded: a; loading: b)", "serving"),
        ("retrying in 5 s (1/3 failed): llama-server ended", "retrying"),
        ("failed: LLAMA_MODEL=/models/x.gguf: no such file", "failed"),
        ("stopped", "stopped"),
        ("no model configured", "no-model"),
    ],
)
def test_the_launcher_names_the_state_of_each_of_its_lines(line: str, state: str) -> None:
    assert status.state_of(line) == state


def test_the_launcher_writes_its_line_and_the_record_the_worker_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line_file, record_file = tmp_path / "status" / "llama", tmp_path / "llama" / "status.json"
    line_file.parent.mkdir()
    monkeypatch.setattr(service, "STATUS_FILE", line_file)
    monkeypatch.setattr(service, "STATUS_RECORD_FILE", record_file)
    service.set_status("serving tiny", warning="WARNING: no GPU: ")
    assert line_file.read_text(encoding="utf-8") == "WARNING: no GPU: serving tiny\n"
    record = json.loads(record_file.read_text(encoding="utf-8"))
    assert (record["state"], record["detail"]) == ("serving", "WARNING: no GPU: serving tiny")
    said = status.read(record_file)
    assert said.serving and not said.given_up
    service.set_status("failed: llama-server ended (exit status 1) before it answered", warning="WARNING: x ")
    said = status.read(record_file)
    assert (said.state, said.detail) == (
        "failed",
        "failed: WARNING: x llama-server ended (exit status 1) before it answered",
    )
    assert said.given_up and said.download is None
    # A download's progress: its line for people, its figures in the record (no one parses the line).
    service.set_status(status.Download("big.gguf and 1 more", 42, "12.5 MB/s"))
    assert line_file.read_text(encoding="utf-8") == "downloading big.gguf and 1 more 42% (12.5 MB/s)\n"
    said = status.read(record_file)
    assert said.state == "downloading" and said.download == status.Download("big.gguf and 1 more", 42, "12.5 MB/s")


def test_a_missing_or_garbled_record_is_an_unknown_state(tmp_path: Path) -> None:
    assert status.read(tmp_path / "absent.json").state == ""
    (tmp_path / "garbled.json").write_text("{not json", encoding="utf-8")
    garbled = status.read(tmp_path / "garbled.json")
    assert (garbled.state, garbled.serving, garbled.given_up) == ("", False, False)
    assert status.parse('{"state": "no-model", "detail": "no model configured"}').given_up


def test_the_master_token_is_masked_whole_and_as_the_library_shortens_it(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from llama_worker.masking import MaskSecrets

    logger = logging.getLogger("test-masking")
    logger.addFilter(MaskSecrets(["master-token-value", ""]))
    with caplog.at_level(logging.DEBUG, logger="test-masking"):
        logger.debug("report: %s", {"mtoken": "master-..."})
        logger.debug("token master-token-value in a message")
    assert [r.getMessage() for r in caplog.records] == ["report: {'mtoken': '***'}", "token *** in a message"]
