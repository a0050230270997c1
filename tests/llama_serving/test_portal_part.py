"""llama-server's part of the portal (llama_serving/portal_part.py, through llama_portal/parts.py):
the model panel's figures from llama-server's answers (recorded from the image's build 11669, see
tests/llama_serving/data/README.md), router mode's models and their buttons, the download's
progress and readiness from the launcher's status record, and the "Use it" snippets. A loopback
server plays llama-server with those answers."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from llama_portal.parts import Part, load
from llama_runtime.services import Service
from llama_serving import status
from llama_serving.portal_figures import (
    Llama,
    LlamaError,
    metric_figures,
    model_entries,
    model_panel,
    parse_metrics,
    slot_figures,
)
from llama_serving.portal_part import progress, ready
from llama_serving.portal_usage import usage

DATA = Path(__file__).parent / "data" / "llama-server"


def recorded(name: str) -> Any:
    text = (DATA / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


def test_throughput_from_recorded_metrics_after_one_completion() -> None:
    metrics = parse_metrics(recorded("single-metrics-after-a-completion.txt"))
    assert metrics["llamacpp:tokens_predicted_total"] == 16
    figures = metric_figures(metrics)
    # Tokens over the seconds spent on them: 7 prompt tokens in 0.853358 s, 16 generated in 5.19363 s
    assert figures["prompt_tokens_per_second"] == pytest.approx(7 / 0.853358, abs=0.01)
    assert figures["generation_tokens_per_second"] == pytest.approx(16 / 5.19363, abs=0.01)
    assert (figures["prompt_tokens"], figures["generated_tokens"]) == (7, 16)
    assert (figures["requests_processing"], figures["requests_deferred"]) == (0, 0)


def test_metrics_before_any_request_and_with_labels() -> None:
    assert metric_figures({"llamacpp:tokens_predicted_total": 0.0, "llamacpp:tokens_predicted_seconds_total": 0.0,
                           "llamacpp:predicted_tokens_seconds": 0.0})["generation_tokens_per_second"] == 0  # fmt: skip
    text = '# HELP x\nreq{model="a"} 2\nreq{model="b"} 3\nbroken line\nnan_value NaN\n'
    parsed = parse_metrics(text)
    assert parsed["req"] == 5 and "broken" not in parsed


def test_context_and_busy_slots_from_recorded_slots() -> None:
    assert slot_figures(recorded("single-slots-after-a-completion.json")) == {
        "context": 512,
        "slots": {"total": 4, "busy": 0},
    }
    busy = [{"id": 0, "n_ctx": 4096, "is_processing": True}, {"id": 1, "n_ctx": 4096, "is_processing": False}]
    assert slot_figures(busy)["slots"] == {"total": 2, "busy": 1}


def test_one_model_served() -> None:
    entries, router = model_entries(recorded("single-v1-models.json"))
    assert not router
    assert [(e.id, e.state) for e in entries] == [("/models/alpha.gguf", "loaded")]


@pytest.mark.parametrize(
    ("answer", "states"),
    [
        ("router-v1-models-beta-loaded.json", [("alpha", "unloaded"), ("beta", "loaded")]),
        ("router-v1-models-alpha-loading.json", [("alpha", "loading"), ("beta", "unloaded")]),
        ("router-v1-models-broken-failed.json", [("alpha", "unloaded"), ("broken", "failed")]),
    ],
)
def test_router_models_and_their_states(answer: str, states: list[tuple[str, str]]) -> None:
    entries, router = model_entries(recorded(answer))
    assert router
    assert [(e.id, e.state) for e in entries] == states


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (status.Download("tiny-Q8_0.gguf", 42), {"file": "tiny-Q8_0.gguf", "percent": 42, "detail": ""}),
        (status.Download("big.gguf", 7, "12.5 MB/s"), {"file": "big.gguf", "percent": 7, "detail": "12.5 MB/s"}),
        ("loading model", None),
        ("failed: downloading x.gguf failed", None),
        ("checking big.gguf (sha256)", None),  # downloading, but no progress to show
    ],
)
def test_download_progress_from_the_launchers_record(
    tmp_path: Path, said: str | status.Download, shown: dict[str, Any] | None
) -> None:
    line_file, record_file = tmp_path / "line", tmp_path / "record.json"
    # Behind a CPU-fallback warning too: the record holds the progress, not the words.
    status.write(status.status(said, warning="CPU fallback (GPU not used): "), line_file, record_file)
    assert progress(status.read(record_file)) == shown


def test_llama_server_is_asked_only_once_its_launcher_says_it_serves(tmp_path: Path) -> None:
    def said(line: str, warning: str = "") -> bool:
        record = status.status(line, warning)
        return ready(record, record.detail)

    assert said("serving /models/tiny.gguf") and said("serving 2 models (loaded: alpha)")
    assert said("serving org/repo-GGUF", warning="CPU fallback (GPU not used): ")
    assert not said("loading model") and not said("starting") and not said("retrying in 2 s (1/3 failed): x")
    assert not said("failed: LLAMA_MODEL=/m/x.gguf: no such file")
    assert not ready(status.status(status.Download("x.gguf", 42)), "downloading x.gguf 42%")
    # Nothing said at all (no launcher has run): llama-server is asked; a line without a record is
    # the boot step's, before the launcher: not yet.
    assert ready(status.read(tmp_path / "absent.json"), None)
    assert not ready(status.read(tmp_path / "absent.json"), "starting")


def test_the_part_is_what_the_portal_loads_by_its_declared_name() -> None:
    declared = Service("llama", "llama.cpp server", 8000, 18000, portal_part="llama_serving.portal_part")
    loaded = load([declared])
    assert loaded.problems == ()
    (found,) = loaded.parts
    assert isinstance(found.part, Part) and found.service == "llama"
    assert {(route.method, route.path) for route in found.part.routes} == {
        ("GET", "/api/model"),
        ("POST", "/api/model/{action:str}"),
        ("GET", "/api/usage"),
    }
    assert found.part.panel is not None and found.part.panel.is_file()
    script = found.part.panel.read_text(encoding="utf-8")
    # The page's ids the panel draws, and no service name of its own: the declaration gives it.
    assert 'id="model"' in script and 'id="use"' in script and "dataset.service" in script
    assert '"llama"' not in script


class FakeLlama(BaseHTTPRequestHandler):
    """llama-server's answers as recorded; a key it checks, like --api-key."""

    answers: ClassVar[dict[str, tuple[int, str]]] = {}
    key = "k-123"
    posted: ClassVar[list[tuple[str, Any]]] = []

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.posted.append((self.path, json.loads(self.rfile.read(length))))
        self.answer()

    def answer(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            status, body = 401, json.dumps({"error": {"code": 401, "message": "Invalid API Key"}})
        else:
            status, body = self.answers.get(self.path, (404, json.dumps({"error": {"message": "File Not Found"}})))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_llama() -> Iterator[tuple[int, type[FakeLlama]]]:
    FakeLlama.answers, FakeLlama.posted = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLlama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], FakeLlama
    finally:
        server.shutdown()
        server.server_close()


def test_the_panel_of_one_model_with_the_api_key(fake_llama: tuple[int, type[FakeLlama]]) -> None:
    port, fake = fake_llama
    fake.answers = {
        "/v1/models": (200, (DATA / "single-v1-models.json").read_text()),
        "/slots": (200, (DATA / "single-slots-after-a-completion.json").read_text()),
        "/metrics": (200, (DATA / "single-metrics-after-a-completion.txt").read_text()),
    }
    panel = model_panel(Llama("127.0.0.1", port, "k-123"))
    assert not panel["router"] and panel["notes"] == []
    (served,) = panel["models"]
    assert served["id"] == "/models/alpha.gguf" and served["actions"] == []
    assert served["figures"]["context"] == 512 and served["figures"]["generated_tokens"] == 16
    # Without the key llama-server refuses, and the panel says so.
    refused = model_panel(Llama("127.0.0.1", port, None))
    assert refused["models"] == [] and "401 Invalid API Key" in refused["notes"][0]


def test_without_metrics_the_panel_says_why(fake_llama: tuple[int, type[FakeLlama]]) -> None:
    port, fake = fake_llama
    fake.answers = {
        "/v1/models": (200, (DATA / "single-v1-models.json").read_text()),
        "/slots": (200, (DATA / "single-slots-after-a-completion.json").read_text()),
        "/metrics": (501, json.dumps({"error": {"message": "This server does not support metrics endpoint."}})),
    }
    panel = model_panel(Llama("127.0.0.1", port, "k-123"))
    assert panel["models"][0]["figures"]["slots"]["total"] == 4
    assert panel["notes"] == ["/metrics: 501 This server does not support metrics endpoint."]


def test_router_models_get_load_and_unload_buttons(fake_llama: tuple[int, type[FakeLlama]]) -> None:
    port, fake = fake_llama
    fake.answers = {
        "/v1/models": (200, (DATA / "router-v1-models-beta-loaded.json").read_text()),
        "/slots?model=beta&autoload=false": (200, (DATA / "single-slots-after-a-completion.json").read_text()),
        "/metrics?model=beta&autoload=false": (200, (DATA / "single-metrics-after-a-completion.txt").read_text()),
        "/models/load": (200, json.dumps({"success": True})),
        "/models/unload": (400, json.dumps({"error": {"code": 400, "message": "model is not running"}})),
    }
    llama = Llama("127.0.0.1", port, "k-123")
    panel = model_panel(llama)
    assert panel["router"]
    assert [(m["id"], m["state"], m["actions"]) for m in panel["models"]] == [
        ("alpha", "unloaded", ["load"]),
        ("beta", "loaded", ["unload"]),
    ]
    # Only the loaded model is asked for figures, with autoload=false: asking would load a model
    # that is unloading (the router loads on demand).
    assert panel["models"][0]["figures"] == {} and panel["models"][1]["figures"]["context"] == 512
    assert llama.change("load", "alpha") == "requested"
    with pytest.raises(LlamaError, match="refused to unload alpha: 400 model is not running"):
        llama.change("unload", "alpha")
    assert fake.posted == [("/models/load", {"model": "alpha"}), ("/models/unload", {"model": "alpha"})]


def test_a_llama_server_that_does_not_answer() -> None:
    panel = model_panel(Llama("127.0.0.1", 9, None))
    assert panel["models"] == [] and "does not answer on 127.0.0.1:9" in panel["notes"][0]


def test_snippets_call_this_instance_with_a_placeholder_for_the_token() -> None:
    found = usage(scheme="http", host="203.0.113.9", port=41234, declared_port=8000, page_port=41111,
                  portal_port=41111, model="tiny", token_needed=True, api_key_needed=False,
                  token_file="/run/llama-images/secrets/token")  # fmt: skip
    assert found.base_url == "http://203.0.113.9:41234"
    assert found.chat_url == "http://203.0.113.9:41234/"
    words = shlex.split(found.curl.replace("\\\n", " "))
    assert words[words.index("-d") + 1] == json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}]}
    )
    assert "Authorization: Bearer YOUR_TOKEN" in words
    assert words[-1] == "http://203.0.113.9:41234/v1/chat/completions"
    assert 'base_url="http://203.0.113.9:41234/v1"' in found.python
    assert 'api_key="YOUR_TOKEN"' in found.python
    compile(found.python, "snippet", "exec")  # valid Python as shown
    assert "docker exec <container> cat /run/llama-images/secrets/token" in found.token_hint
    assert "X-Api-Key" not in found.curl + found.python
    assert found.port_note is None  # Vast.ai said which port the API has


def test_a_note_when_the_host_maps_ports_the_portal_cannot_know() -> None:
    # docker run -p 21111:1111 -p 28000:8000: the page is on 21111, the API's port is unknown here.
    found = usage(scheme="http", host="127.0.0.1", port=8000, declared_port=8000, page_port=21111, portal_port=1111,
                  model=None, token_needed=True, api_key_needed=False, token_file="/t")  # fmt: skip
    assert found.port_note is not None and "maps to 8000" in found.port_note
    same = usage(scheme="http", host="h", port=8000, declared_port=8000, page_port=1111, portal_port=1111,
                 model=None, token_needed=True, api_key_needed=False, token_file="/t")  # fmt: skip
    assert same.port_note is None


def test_snippets_with_llama_api_key_an_open_port_ipv6_and_odd_names() -> None:
    found = usage(scheme="https", host="2001:db8::1", port=8000, declared_port=8000, page_port=None,
                  portal_port=1111, model="it's \"x\"", token_needed=False, api_key_needed=True,
                  token_file="/t")  # fmt: skip
    assert found.base_url == "https://[2001:db8::1]:8000"
    words = shlex.split(found.curl.replace("\\\n", " "))
    assert "X-Api-Key: YOUR_LLAMA_API_KEY" in words
    assert not any(word.startswith("Authorization") for word in words)
    assert json.loads(words[words.index("-d") + 1])["model"] == 'it\'s "x"'
    compile(found.python, "snippet", "exec")
    assert "open without a token" in found.token_hint and "LLAMA_API_KEY" in found.token_hint
