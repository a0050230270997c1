"""Model sources in the CPU image: a Hugging Face repo downloaded by the launcher (aria2) and served
by llama-server's own `-hf` from the cache, against a loopback fake of the hub; the cache on
/workspace, a URL, several models in router mode, and downloads that fail.

What the bundled llama-server (Debian's build 11669) requests for `-hf org/repo`, observed against
the fake hub: GET /api/models/org/repo/refs, GET /api/models/org/repo/tree/<commit>?recursive=true,
then HEAD and GET /org/repo/resolve/<commit>/<file> (a resumed download sends `Range: bytes=N-`).
The launcher asks the same (its own user agent), fetches the file with ranged GETs, and writes
the cache in the hub's layout llama-server reads: models--org--repo/{blobs,refs,
snapshots/<commit>/<file>}; llama-server, started with `--offline`, finds the file there (in router
mode, where it loads a model on first use, it asks refs and tree again and downloads nothing).
With LLAMA_DOWNLOAD_CONNECTIONS=0 llama-server downloads by itself.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.container.llama.support import FAST_RETRIES, Llama, Models, bridge_gateway, model_ids, run_image
from tests.support.fake_hf_hub import FakeHub, Fault

pytestmark = pytest.mark.container

REPO = "org/repo-GGUF"
TOKEN = "hf_" + "G4t3d" * 7  # llama-server sends only tokens that look like Hugging Face's
# Read by the bundled llama-server, in this order (observed: strings in its library, then runs).
CACHE_VARIABLES = {
    "LLAMA_CACHE": "/workspace/.cache/llama",
    "HF_HUB_CACHE": "/workspace/.cache/huggingface/hub",
    "HUGGINGFACE_HUB_CACHE": "/workspace/.cache/huggingface/hub",
    "HF_HOME": "/workspace/.cache/huggingface",
    "XDG_CACHE_HOME": "/workspace/.cache",
}


def chat(llama: Llama, model: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    if model is not None:
        payload["model"] = model
    status, body = llama.post("/v1/chat/completions", payload)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def expected_requests(hub: FakeHub, file: str, router: bool = False) -> list[str]:
    """The launcher's listing and HEAD, its GETs of the file (one or more ranges), and in router
    mode llama-server's own listing when it loads the model."""
    commit = hub.repos[REPO].commit
    listing = [f"GET /api/models/{REPO}/refs", f"GET /api/models/{REPO}/tree/{commit}?recursive=true"]
    gets = [line for line in hub.request_lines() if line == f"GET /{REPO}/resolve/{commit}/{file}"]
    assert gets, hub.request_lines()
    return [*listing, f"HEAD /{REPO}/resolve/{commit}/{file}", *gets, *(listing if router else [])]


def test_a_hub_repo_is_downloaded_by_hf_into_the_workspace_and_served_from_there_offline(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub, tmp_path: Path
) -> None:
    files = {"tiny-Q4_K_M.gguf": models.dir / "tiny.gguf", "tiny-Q8_0.gguf": models.dir / "alpha.gguf"}
    hub.add_repo(REPO, {name: path.read_bytes() for name, path in files.items()} | {"README.md": b"# tiny\n"})
    workspace = {str(tmp_path): "/workspace"}
    first = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": hub.url}, volumes=workspace, read_only=False)
    first.wait_healthy()
    assert hub.request_lines() == expected_requests(hub, "tiny-Q4_K_M.gguf")  # the default quant
    agents = [r.user_agent for r in hub.requests]
    assert agents[:3] == ["llama-images"] * 3 and {(agent or "").split("/")[0] for agent in agents[3:]} == {"aria2"}
    assert "-hf org/repo-GGUF -hff tiny-Q4_K_M.gguf --offline" in first.llama_log()
    assert chat(first)["choices"][0]["message"]["role"] == "assistant"
    # Every cache variable the bundled llama-server reads points into the /workspace volume.
    code, env = first.exec("env")
    assert code == 0 and set(CACHE_VARIABLES.items()) <= {tuple(line.split("=", 1)) for line in env.splitlines()}
    snapshot = tmp_path / f".cache/llama/models--org--repo-GGUF/snapshots/{hub.repos[REPO].commit}/tiny-Q4_K_M.gguf"
    assert snapshot.read_bytes() == (models.dir / "tiny.gguf").read_bytes()
    first.container.remove(force=True)

    hub.stop()  # the hub is unreachable now
    second = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": hub.url}, volumes=workspace, read_only=False)
    second.wait_healthy()
    assert model_ids(second.curl("/v1/models")[1]) == [REPO]
    assert chat(second)["choices"][0]["finish_reason"] in {"length", "stop"}
    assert second.starts() == 1


def test_a_quant_and_model_endpoint_are_honoured(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub
) -> None:
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": (models.dir / "alpha.gguf").read_bytes(),
                        "tiny-Q8_0.gguf": (models.dir / "tiny.gguf").read_bytes()})  # fmt: skip
    llama = start_llama(env={"LLAMA_MODEL": f"{REPO}:Q8_0", "MODEL_ENDPOINT": hub.url})
    llama.wait_healthy()
    assert hub.request_lines() == expected_requests(hub, "tiny-Q8_0.gguf")


def test_a_gated_repo_is_served_with_hf_token_which_never_reaches_the_log(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub
) -> None:
    hub.add_repo(REPO, {"tiny-Q8_0.gguf": (models.dir / "tiny.gguf").read_bytes()}, token=TOKEN)
    llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})
    llama.wait_healthy()
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}
    llama.wait_logged("[llama] ready: serving")
    assert TOKEN not in llama.log() and "HF_TOKEN=***" in llama.log()
    assert TOKEN not in llama.status_line()


def test_download_progress_is_logged_and_shown_and_an_interrupted_download_resumes(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, client: Any, tmp_path: Path
) -> None:
    big = (models.dir / "tiny.gguf").read_bytes() + bytes(6_000_000)  # padding after the tensors
    # 16 connections of 100 kB/s each: about 4 s for the file.
    with FakeHub(bridge_gateway(client), download_rate=100_000) as slow:
        slow.add_repo(REPO, {"tiny-Q8_0.gguf": big})
        llama = start_llama(env={"LLAMA_MODEL": REPO, "HF_ENDPOINT": slow.url},
                            volumes={str(tmp_path): "/workspace"}, read_only=False)  # fmt: skip
        seen: list[str] = []

        def downloading_a_fifth() -> bool:
            seen.append(llama.status_line())
            match = re.fullmatch(r"downloading tiny-Q8_0\.gguf (\d+)% \(\d.* [kMG]?B/s\)", seen[-1])
            return match is not None and 20 <= int(match.group(1)) < 100

        llama.wait(downloading_a_fifth, 30, "no download progress in the status line")
        assert llama.exec("supervisorctl", "stop", "llama")[0] == 0  # interrupt it
        sent = slow.bytes_sent  # counted once the stopped download's connections are closed
        assert llama.exec("supervisorctl", "start", "llama")[0] == 0
        llama.wait_healthy(60)
        llama.wait_status(f"serving {REPO}")
        resumed_bytes = slow.bytes_sent - sent
    log = llama.llama_log()
    assert re.search(r"^\[llama\] downloading tiny-Q8_0\.gguf \d+% \(.+/s\)$", log, re.MULTILINE)
    assert resumed_bytes < len(big) * 0.9, (resumed_bytes, len(big))  # only the rest
    (blob,) = (tmp_path / ".cache/llama/models--org--repo-GGUF/blobs").iterdir()
    assert blob.read_bytes() == big


def test_a_url_is_downloaded_into_the_cache_and_served_from_it_offline(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub, tmp_path: Path
) -> None:
    hub.add_repo(REPO, {"tiny.gguf": (models.dir / "tiny.gguf").read_bytes()})
    url = f"{hub.url}/{REPO}/resolve/main/tiny.gguf?signature=s3cret-sig"  # a signed URL
    workspace = {str(tmp_path): "/workspace"}
    first = start_llama(env={"LLAMA_MODEL": url}, volumes=workspace, read_only=False)
    first.wait_healthy()
    path = f"/{REPO}/resolve/main/tiny.gguf?signature=s3cret-sig"
    assert hub.request_lines()[0] == f"HEAD {path}" and set(hub.request_lines()[1:]) == {f"GET {path}"}
    first.wait_logged("[llama] ready: serving")
    assert "s3cret-sig" not in first.log() and "tiny.gguf?***" in first.log()
    code, cmdlines = first.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert code == 0 and "llama-server" in cmdlines and "s3cret-sig" not in cmdlines
    (cached,) = (tmp_path / ".cache/llama/url").glob("*-tiny.gguf")
    assert cached.read_bytes() == (models.dir / "tiny.gguf").read_bytes()
    first.container.remove(force=True)
    hub.stop()
    second = start_llama(env={"LLAMA_MODEL": url}, volumes=workspace, read_only=False)
    second.wait_healthy()
    assert chat(second)["object"] == "chat.completion"


# Hubs and URLs that fail: each start fails, three starts, then FATAL. They run at the same time.
@dataclass(frozen=True)
class Failing:
    cause: str
    fault: Fault = Fault.NONE
    token: str | None = None  # a gated repo
    url_path: str | None = None  # LLAMA_MODEL is this URL on the hub
    env: Mapping[str, str] = field(default_factory=dict)


FAILING = {
    "hub answers 500": Failing("GET failed (500)", fault=Fault.SERVER_ERROR),
    # Each start takes longer than Supervisor's startsecs: still three starts.
    "hub never answers": Failing("no download progress for 5 s", Fault.STALL, env={"LLAMA_STALL_TIMEOUT": "5"}),
    "download cut short": Failing("download failed", fault=Fault.TRUNCATE),
    "download corrupt": Failing("sha256 mismatch: tiny-Q8_0.gguf is not what the hub published", fault=Fault.CORRUPT),
    "gated repo without token": Failing("GET failed (401): Access to model org/repo-GGUF is restricted", token=TOKEN),
    "url not found": Failing("HEAD failed (404)", url_path=f"/{REPO}/resolve/main/none.gguf"),
}


@pytest.fixture(scope="module")
def failing_downloads(main_build: Any, client: Any, models: Models) -> Iterator[dict[str, tuple[Llama, FakeHub]]]:
    started: dict[str, tuple[Llama, FakeHub]] = {}
    data = (models.dir / "tiny.gguf").read_bytes()
    try:
        for case, failing in FAILING.items():
            hub = FakeHub(bridge_gateway(client), fault=failing.fault).start()
            hub.add_repo(REPO, {"tiny-Q8_0.gguf": data}, token=failing.token)
            model = f"{hub.url}{failing.url_path}" if failing.url_path else REPO
            llama = run_image(client, {"LLAMA_MODEL": model, "HF_ENDPOINT": hub.url, **FAST_RETRIES, **failing.env})
            started[case] = (llama, hub)
        yield started
    finally:
        for llama, hub in started.values():
            llama.container.remove(force=True)
            hub.stop()


@pytest.mark.parametrize("case", list(FAILING))
def test_a_failing_download_ends_fatal_after_bounded_retries(
    case: str, failing_downloads: dict[str, tuple[Llama, FakeHub]]
) -> None:
    llama, _ = failing_downloads[case]
    cause = FAILING[case].cause
    llama.wait_state("FATAL", 120)
    attempts = llama.failed_attempts()
    assert len(attempts) == 3 and all(cause in line for line in attempts), llama.llama_log()[-3000:]
    assert llama.starts() == 0  # the download failed: llama-server was never started on it
    assert llama.status_line().startswith("failed: ") and cause in llama.status_line()
    # A corrupt or cut-short file never enters the cache, so llama-server is never given one.
    cached = "find /workspace/.cache/llama -path '*/snapshots/*' -o -path '*/blobs/*' ! -name '*.incomplete*'"
    code, listing = llama.sh(cached)
    assert code == 0 and listing.strip() == "", listing


# Router mode


def test_a_models_dir_serves_each_model_by_name_one_loaded_at_a_time(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, tmp_path: Path
) -> None:
    for name in ("alpha.gguf", "beta.gguf"):
        shutil.copy(models.dir / name, tmp_path / name)
    llama = start_llama(env={"LLAMA_MODELS_DIR": "/models"}, volumes={str(tmp_path): "/models"})
    llama.wait_healthy()
    assert sorted(model_ids(llama.curl("/v1/models")[1])) == ["alpha", "beta"]
    assert "--models-max 1 --models-dir /models" in llama.llama_log()
    llama.wait_status("serving 2 models (none loaded)")
    assert chat(llama, "alpha")["model"] == "alpha"
    llama.wait_status("serving 2 models (loaded: alpha)")
    assert chat(llama, "beta")["model"] == "beta"
    llama.wait_status("serving 2 models (loaded: beta)")  # LLAMA_MODELS_MAX=1: alpha was unloaded
    llama.wait(lambda: llama.portal_row().get("status") == "serving 2 models (loaded: beta)", 30, "not on the portal")
    unknown = {"model": "gamma", "messages": [{"role": "user", "content": "?"}]}
    status, body = llama.post("/v1/chat/completions", unknown)
    assert status == 400 and "model 'gamma' not found" in body


def test_a_list_in_llama_model_serves_files_and_hub_repos_side_by_side(
    main_build: Any, start_llama: Callable[..., Llama], models: Models, hub: FakeHub
) -> None:
    hub.add_repo(REPO, {"tiny-Q8_0.gguf": (models.dir / "beta.gguf").read_bytes()})
    llama = start_llama(
        env={"LLAMA_MODEL": f"{models.path('alpha.gguf')}, {REPO}", "LLAMA_MODELS_MAX": "2", "HF_ENDPOINT": hub.url},
        volumes=models.volumes,
    )
    llama.wait_healthy()
    # The repo was downloaded before the router started, so llama-server also lists what it finds in
    # the cache under the name it gives cached models (org/repo:QUANT), as on any later start.
    assert model_ids(llama.curl("/v1/models")[1]) == ["alpha", REPO, f"{REPO}:Q8_0"]
    assert chat(llama, REPO)["model"] == REPO
    assert chat(llama, "alpha")["model"] == "alpha"
    assert hub.request_lines() == expected_requests(hub, "tiny-Q8_0.gguf", router=True)  # fetched before it started
    llama.wait_status(f"serving 3 models (loaded: alpha, {REPO})")  # with the cached name
