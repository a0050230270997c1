"""Serverless mode end to end (SERVERLESS=true, docs/serverless.md): containers of the CPU image
join a loopback stand-in for Vast.ai's engine (tests/support/fake_vast_engine.py, written from the
`vastai` package's protocol) as workers, and a client reaches llama-server only through them.

Two workers serve the tiny model and a third one a model that cannot load. The workers reach the
stand-in on the Docker bridge's gateway address; each publishes its port 3000 on a loopback port
of the host chosen beforehand, which it is told is its public port (VAST_TCP_PORT_3000), so the
URL it reports (and the engine signs) is the one the client on the host dials.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.container import reference_suite
from tests.container.conftest import CPU_IMAGE
from tests.container.llama.support import Llama, Models, bridge_gateway
from tests.container.runtime_support import program_states
from tests.support import fake_vast_engine
from tests.support.fake_vast_engine import FakeEngine, post_json, request, requests_in_parallel
from tests.support.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.container

# Letters and spaces only, and no early end: a random model's reply whose tokens are whole
# characters, as long as asked (tests/container/llama/test_api.py says why).
STEADY = {"grammar": "root ::= [a-z ]+", "ignore_eos": True}
A, B, FAILING, SMALL_CONTEXT = 101, 102, 103, 104
# The two serving workers' model: wider than the tiny one, a few milliseconds per token, so that a
# request of a thousand tokens is still running when the next report goes out.
SERVED = "slow.gguf"
SERVED_ARGS = "--ctx-size 4096 --parallel 4"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Worker:
    id: int
    port: int  # on the host's loopback: what the worker reports as its public port
    llama: Llama

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        code, text = self.llama.exec("supervisorctl", "tail", "-10000000", "pyworker")
        return text if code == 0 else self.llama.log()


def start_worker(client: Any, engine: FakeEngine, models: Models, worker_id: int, model: str,
                 **extra: str) -> Worker:  # fmt: skip
    port = free_port()
    token = f"master-token-{worker_id}"
    engine.expect(worker_id, token)
    env = {
        "SERVERLESS": "true",
        "LLAMA_MODEL": models.path(model),
        "REPORT_ADDR": engine.url,
        "MASTER_TOKEN": token,
        "CONTAINER_ID": str(worker_id),
        "PUBLIC_IPADDR": "127.0.0.1",
        "VAST_TCP_PORT_3000": str(port),
        **extra,
    }
    container = client.containers.run(
        CPU_IMAGE,
        detach=True,
        environment=env,
        volumes={str(models.dir): {"bind": "/models", "mode": "ro"}},
        ports={"3000/tcp": ("127.0.0.1", port)},
    )
    return Worker(worker_id, port, Llama(container))


@dataclass
class Fleet:
    engine: FakeEngine
    workers: dict[int, Worker]

    def serving(self) -> list[Worker]:
        return [self.workers[A], self.workers[B]]


@pytest.fixture(scope="module")
def fleet(main_build: Any, client: Any, models: Models) -> Iterator[Fleet]:
    assert main_build.returncode == 0, main_build.stdout[-3000:] + main_build.stderr[-3000:]
    if not (models.dir / SERVED).is_file():
        write_tiny_llama_gguf(models.dir / SERVED, n_embd=512, n_ff=2048, n_blocks=4)
    with FakeEngine(bridge_gateway(client)) as engine:
        workers: dict[int, Worker] = {}
        try:
            workers[A] = start_worker(client, engine, models, A, SERVED, LLAMA_ARGS=SERVED_ARGS)
            workers[B] = start_worker(client, engine, models, B, SERVED, LLAMA_ARGS=SERVED_ARGS)
            workers[FAILING] = start_worker(client, engine, models, FAILING, "truncated.gguf", LLAMA_START_ATTEMPTS="1")
            fleet = Fleet(engine, workers)
            try:
                engine.wait(
                    lambda: all(engine.workers[w].last.get("max_perf", 0) > 0 for w in (A, B)),
                    180,
                    "the two workers did not report a benchmark",
                )
            except AssertionError as exc:
                logs = "\n".join(f"--- {w.id}:\n{w.log()[-3000:]}" for w in workers.values())
                raise AssertionError(f"{exc}\n{logs}") from None
            yield fleet
        finally:
            for worker in workers.values():
                worker.llama.container.remove(force=True)


def completion(max_tokens: int = 8, prompt: str = "Once upon a time", **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, **STEADY, **extra}


# ---- joining the engine -------------------------------------------------------------------------


def test_two_workers_register_and_report_their_benchmark(fleet: Fleet) -> None:
    engine = fleet.engine
    assert engine.pubkey_fetches >= 3  # every worker fetched the engine's key
    assert engine.refused_reports == []  # every report carried its worker's MASTER_TOKEN
    for worker in fleet.serving():
        last = engine.worker(worker.id).last
        assert last["url"] == worker.url  # PUBLIC_IPADDR and VAST_TCP_PORT_3000, as the engine signs it
        assert last["error_msg"] == ""
        assert last["loadtime"] > 0 and last["max_perf"] > 0, last
        _, status = worker.llama.exec("cat", "/run/llama-images/status/pyworker")
        assert status.startswith("ready: the benchmark's figure is "), status
        code, health = worker.llama.exec("/opt/llama-images/bin/llama-runtime", "healthcheck")
        assert (code, health.strip()) == (0, "healthy")  # the worker and llama-server; no proxy asked for
        log = worker.log()
        assert f"[pyworker] llama-server serves (serving /models/{SERVED}): benchmarking" in log
        assert "Traceback" not in log


def test_a_worker_with_a_small_context_benchmarks_as_many_requests_as_it_holds(
    fleet: Fleet, client: Any, models: Models
) -> None:
    """Four benchmark requests of about 130 tokens at once in a 256-token context: every one of
    them failed, and the worker reported 'No successful responses from benchmark' (no traffic)."""
    engine = fleet.engine
    worker = start_worker(client, engine, models, SMALL_CONTEXT, SERVED, LLAMA_ARGS="--ctx-size 256 --parallel 4")
    try:
        engine.wait(lambda: bool(engine.worker(SMALL_CONTEXT).last.get("max_perf") or engine.worker(SMALL_CONTEXT)
                                 .last.get("error_msg")), 180, "the worker reported no benchmark")  # fmt: skip
        last = engine.worker(SMALL_CONTEXT).last
        assert last["error_msg"] == "" and last["max_perf"] > 0, worker.log()[-3000:]
        assert "benchmarking, 1 requests at a time (llama-server's context of 256 tokens holds 1 of its " in (
            worker.log()
        )
    finally:
        worker.llama.container.remove(force=True)
        with engine.lock:
            engine.workers.pop(SMALL_CONTEXT)  # no longer a worker the engine could route to


def test_a_worker_whose_model_fails_reports_the_error_and_gets_no_traffic(fleet: Fleet) -> None:
    engine = fleet.engine
    engine.wait(
        lambda: bool(engine.workers[FAILING].last.get("error_msg")), 120, "the failing worker reported no error"
    )
    error = engine.worker(FAILING).last["error_msg"]
    # The launcher's own words about the model, as the engine shows them to the endpoint's owner.
    assert "llama-server will not serve: failed: " in error, error
    _, status = fleet.workers[FAILING].llama.exec("cat", "/run/llama-images/status/pyworker")
    assert status.startswith("failed: "), status
    answers = list(requests_in_parallel(engine, [("/v1/completions", completion(), 10.0)] * 8))
    assert all(a.status == 200 for a in answers)
    assert fleet.workers[FAILING].url not in {a.worker_url for a in answers}
    assert FAILING not in {r.worker_id for r in engine.routed}


# ---- serving through a worker -------------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8, **STEADY}


@pytest.mark.parametrize(
    ("route", "payload"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", completion()),
        ("/completion", {"prompt": "Hi", "n_predict": 8, **STEADY}),
    ],
)
def test_completions_through_the_worker_the_engine_chose(fleet: Fleet, route: str, payload: dict[str, Any]) -> None:
    answer = request(fleet.engine, route, payload, cost=16)
    assert answer.status == 200, answer.body[:500]
    assert answer.worker_url in {w.url for w in fleet.serving()}
    body = answer.json()
    text = body["content"] if route == "/completion" else (
        body["choices"][0]["message"]["content"] if route == "/v1/chat/completions" else body["choices"][0]["text"]
    )  # fmt: skip
    assert text.strip() and set(text) <= set("abcdefghijklmnopqrstuvwxyz ")

    streamed = request(fleet.engine, route, {**payload, "stream": True}, cost=16)
    assert streamed.status == 200, streamed.body[:500]
    assert streamed.headers.get("Content-Type", "").startswith("text/event-stream")
    events = streamed.events()
    assert len(events) >= 3, events  # one event per token or so, not one answer
    if route == "/completion":
        assert events[-1]["stop"] is True
    else:
        assert events[-1] == "[DONE]"


def reported_load(engine: FakeEngine, worker_id: int, since: int) -> float:
    return sum(float(r.get("new_load") or 0) for r in engine.worker(worker_id).reports[since:])


def tokenize(worker: Worker, text: str) -> int:
    status, body = worker.llama.post("/tokenize", {"content": text})
    assert status == 200, body
    return len(json.loads(body)["tokens"])


def test_each_request_is_reported_in_tokens_its_prompt_and_what_it_asks_for(fleet: Fleet) -> None:
    engine, worker = fleet.engine, fleet.workers[A]
    prompt = "The quick brown fox jumps over the lazy dog, and then it runs away"
    expected = tokenize(worker, prompt) + 12

    first = len(engine.worker(A).reports)

    def quiet() -> bool:
        """A report sent after this test began, with nothing in hand and nothing new: earlier
        requests are all accounted for. (The last report from before may predate the previous
        test's requests, whose workload the next report then carries: 213 == 66 once in CI.)"""
        reports = engine.workers[A].reports[first:]
        return bool(reports) and not reports[-1].get("cur_load") and not reports[-1].get("new_load")

    engine.wait(quiet, 30, "worker A still busy")
    since = len(engine.worker(A).reports)
    auth = engine.auth_data(worker.url, cost=expected)
    status, body, _ = post_json(worker.url + "/v1/completions", {"auth_data": auth, "payload": completion(12, prompt)})
    assert status == 200, body
    engine.wait(lambda: reported_load(engine, A, since) >= expected, 30, "the request's workload was not reported")
    time.sleep(2)  # later reports add nothing
    assert reported_load(engine, A, since) == expected


def hold(worker: Worker, engine: FakeEngine, count: int, tokens: int) -> list[threading.Thread]:
    """`count` requests of `tokens` each sent straight to the worker, in the background (on a
    busy machine they may take minutes; their answers do not matter)."""

    def one() -> None:
        auth = engine.auth_data(worker.url)
        payload = {"prompt": "x", "n_predict": tokens, **STEADY}
        with contextlib.suppress(OSError):
            post_json(worker.url + "/completion", {"auth_data": auth, "payload": payload}, timeout=300)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_requests_go_where_the_reported_load_is_lowest(fleet: Fleet) -> None:
    engine = fleet.engine
    # Two requests that keep worker A busy for about six seconds at its benchmarked rate (more would
    # be refused: the library turns away work it could not start within 30 s).
    tokens = int(min(max(engine.worker(A).last["max_perf"] * 3, 200), 1000))
    held = hold(fleet.workers[A], engine, 2, tokens)
    try:
        engine.wait(lambda: float(engine.workers[A].last.get("cur_load") or 0) >= 2 * tokens, 20,
                    "worker A did not report the load it holds")  # fmt: skip
        before = len(engine.routed)
        answers = [request(engine, "/v1/completions", completion(4), cost=8) for _ in range(6)]
        assert {a.worker_url for a in answers} == {fleet.workers[B].url}
        assert {r.worker_id for r in engine.routed[before:]} == {B}
    finally:
        for thread in held:
            thread.join()
    # Both idle again: a burst spreads over both.
    engine.wait(lambda: not any(engine.workers[w].last.get("cur_load") for w in (A, B)), 30, "workers still busy")
    answers = list(requests_in_parallel(engine, [("/v1/completions", completion(32), 40.0)] * 16))
    served = [a.worker_url for a in answers]
    assert all(a.status == 200 for a in answers)
    assert min(served.count(w.url) for w in fleet.serving()) >= 3, served


# ---- signed requests only -----------------------------------------------------------------------


def test_unsigned_forged_and_misaddressed_requests_are_refused(fleet: Fleet) -> None:
    engine, worker, other = fleet.engine, fleet.workers[A], fleet.workers[B]
    url = worker.url + "/v1/completions"
    status, body, _ = post_json(url, completion())  # llama-server's own request, no envelope
    assert status == 422, body
    status, body, _ = post_json(url, {"payload": completion()})  # no auth_data
    assert status == 422, body
    forged = {**engine.auth_data(worker.url), "signature": "Zm9yZ2Vk"}
    status, body, _ = post_json(url, {"auth_data": forged, "payload": completion()})
    assert status == 401, body
    for_another = engine.auth_data(other.url)  # signed, but for worker B's URL
    status, _, _ = post_json(url, {"auth_data": {**for_another, "url": worker.url}, "payload": completion()})
    assert status == 401
    status, _, _ = post_json(url, {"auth_data": engine.auth_data(worker.url), "payload": completion()})
    assert status == 200
    # llama-server itself is not reachable from outside: only port 3000 is published, and it listens on loopback.
    code, _ = worker.llama.sh("ss -ltn | awk '{print $4}' | grep -E ':(18000|8000)$' | grep -v 127.0.0.1")
    assert code != 0


def test_a_signed_request_can_be_sent_again_with_another_payload(fleet: Fleet) -> None:
    """What the library's signature covers is the worker's URL only (docs/serverless.md): whoever
    holds one signed auth_data for a worker can send it any payload, any number of times."""
    engine, worker = fleet.engine, fleet.workers[A]
    seen_once = engine.auth_data(worker.url)
    for payload in (completion(4, "first"), completion(6, "something else entirely")):
        status, body, _ = post_json(worker.url + "/v1/completions", {"auth_data": seen_once, "payload": payload})
        assert status == 200, body


# ---- the reference image's in-instance tests ------------------------------------------------------
# The shared runner (tests/container/reference_suite.py) reads the suite from the reference's clone;
# the fleet's containers are already running, so the suite is copied in rather than mounted.


@pytest.fixture(scope="module")
def reference_tests(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The reference's tests (lib.sh, base/, llama.d/) as a tar to copy into a container."""
    suite = reference_suite.extract(reference_suite.require_mirror(), tmp_path_factory.mktemp("reference"))
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        tar.add(suite, arcname=".")
    return packed.getvalue()


@pytest.mark.parametrize(
    "name", ["base/85-serverless-services", "llama.d/20-serverless-pyworker", "base/50-custom-binaries"]
)
def test_the_reference_images_serverless_tests_pass(fleet: Fleet, reference_tests: bytes, name: str) -> None:
    container = fleet.workers[A].llama.container
    container.exec_run(["mkdir", "-p", reference_suite.MOUNT])
    container.put_archive(reference_suite.MOUNT, reference_tests)
    outcome = reference_suite.run(container, name)
    assert outcome.status == reference_suite.PASSED, str(outcome)
    assert f"PASS: {name}" in outcome.output


def test_the_vastai_command_comes_from_its_own_environment_not_the_users_python(fleet: Fleet) -> None:
    llama = fleet.workers[A].llama
    code, found = llama.sh('readlink -f "$(command -v vastai)"')
    assert (code, found.strip()) == (0, "/opt/llama-images/vastai-venv/bin/vastai")
    code, version = llama.exec("vastai", "--version")
    assert code == 0 and "1.9.1" in version, version
    code, _ = llama.exec("/venv/main/bin/python", "-c", "import vastai")
    assert code != 0  # the users' Python stays as they left it


# ---- a worker that goes away (last: it kills one) -------------------------------------------------


def test_killing_a_worker_moves_the_traffic_to_the_other(fleet: Fleet) -> None:
    engine, doomed, survivor = fleet.engine, fleet.workers[A], fleet.workers[B]
    answers: list[fake_vast_engine.Answer] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            try:
                answer = request(engine, "/v1/completions", completion(4), cost=8, timeout=120)
            except BaseException as exc:  # counted
                with lock:
                    failures.append(exc)
                continue
            with lock:
                answers.append(answer)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()

    def served_by(url: str) -> bool:
        with lock:
            return any(a.worker_url == url for a in answers)

    # Traffic reaches both before one goes away (the engine spreads it by their reports).
    deadline = time.monotonic() + 120
    while not (served_by(doomed.url) and served_by(survivor.url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    with lock:
        before = len(answers)
    doomed.llama.container.kill()
    time.sleep(engine.stale_after + 4)  # the engine stops routing to it once its reports are stale
    stop.set()
    for thread in clients:
        thread.join()
    assert {a.worker_url for a in answers[:before]} == {doomed.url, survivor.url}
    assert failures == []
    # Those in flight when it died, and those routed to it before the engine knew, went to the survivor.
    assert all(a.status == 200 for a in answers), [a.body[:200] for a in answers if a.status != 200]
    assert any(a.reroutes for a in answers[before:])
    late = answers[before + len(clients) :]  # (an answer A gave as it was killed may land just after)
    assert late and {a.worker_url for a in late} == {survivor.url}


# ---- alone: settings -------------------------------------------------------------------------------


def test_missing_platform_variables_are_a_clear_error_not_a_traceback(start_llama: Any, models: Models) -> None:
    llama = start_llama(env={"SERVERLESS": "true", "LLAMA_MODEL": models.path("tiny.gguf")}, volumes=models.volumes)
    llama.wait(lambda: program_states(llama.container).get("pyworker") == "FATAL", 60, "pyworker not FATAL")
    _, log = llama.exec("supervisorctl", "tail", "-100000", "pyworker")
    for name in ("REPORT_ADDR", "MASTER_TOKEN", "CONTAINER_ID", "PUBLIC_IPADDR", "VAST_TCP_PORT_3000"):
        assert f"[pyworker] ERROR: {name} is not set (the platform sets it on a serverless instance)" in log, log
    assert "Traceback" not in log
    _, status = llama.exec("cat", "/run/llama-images/status/pyworker")
    assert status.startswith("failed: REPORT_ADDR is not set"), status
    code, health = llama.exec("/opt/llama-images/bin/llama-runtime", "healthcheck")
    assert (code, health.strip()) == (1, "unhealthy: pyworker: program pyworker is FATAL")
    # The rest of serverless mode is as it should be: llama-server serves, the portal and proxy are off.
    llama.wait_healthy()
    off = ("portal", "proxy", "auth", "jupyter")
    llama.wait(lambda: {program_states(llama.container).get(p) for p in off} == {"EXITED"}, 30, f"{off} not EXITED")
    assert (
        "[portal] not started: serverless mode (SERVERLESS=true) stops it; SERVERLESS_KEEP=portal keeps it"
        in llama.log()
    )


def test_unsecured_for_local_testing_over_tls_with_a_kept_portal(start_llama: Any, models: Models) -> None:
    llama = start_llama(
        env={"SERVERLESS": "true", "UNSECURED": "true", "USE_SSL": "true", "SERVERLESS_KEEP": "portal",
             "LLAMA_MODEL": models.path("tiny.gguf")},
        volumes=models.volumes,
    )  # fmt: skip
    # The library wants every auth_data field; with UNSECURED=true it checks none of them.
    unchecked = {"cost": 0, "endpoint": "local", "reqnum": 1, "request_idx": 1, "signature": "", "url": ""}
    envelope = {"auth_data": unchecked, "payload": completion()}
    command = ["curl", "-ksS", "--max-time", "30", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
               "-d", json.dumps(envelope), "https://127.0.0.1:3000/v1/completions"]  # fmt: skip

    def answered() -> bool:
        code, output = llama.exec(*command)
        return bool(code == 0 and output.rpartition("\n")[2] == "200")

    llama.wait(answered, 120, "no completion over https from the unsecured worker")
    log = llama.log()
    assert "[pyworker] WARNING: UNSECURED=true: requests are NOT checked against the engine's signature;" in log
    assert "[pyworker] WARNING: not set, using a local stand-in: REPORT_ADDR=http://127.0.0.1:9" in log
    assert "[portal] serverless mode: kept running (SERVERLESS_KEEP names portal)" in log
    wanted = {"portal": "RUNNING", "pyworker": "RUNNING", "proxy": "EXITED", "jupyter": "EXITED"}
    llama.wait(lambda: {p: program_states(llama.container).get(p) for p in wanted} == wanted, 30, f"not {wanted}")
