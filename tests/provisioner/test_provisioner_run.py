"""The provisioner run without Docker (`provisioner MANIFEST`, llama_provisioner): its phases
against temporary directories, downloads from the fake hub and loopback servers, its state,
retries, failure actions and webhook, with every secret kept out of its output. (In the image,
with Supervisor and the image's own downloader: tests/container/test_provisioning_manifest.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from llama_provisioner import cli
from llama_provisioner.state import state_dir
from llama_runtime import paths

from tests.support.fake_hf_hub import FakeHub
from tests.support.loopback import Answer, Loopback, serve

TOKEN = "hf_" + "S3cr3tT0k3n" * 4
WEIGHTS = b"weights " * 5000


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(cdn=True) as fake:
        fake.add_repo("org/model", {"model.gguf": WEIGHTS, "config.json": b'{"a": 1}'})
        fake.add_repo("org/gated", {"gated.gguf": b"gated " * 100}, token=TOKEN)
        yield fake


@pytest.fixture
def provision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """provision(manifest_text, *args, **env) -> (exit status, what it printed)."""
    monkeypatch.setattr(paths, "PROVISIONER_STOPPED", tmp_path / "stopped")
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "LLAMA_IMAGES_SETTINGS_READ": "1",  # no /etc/environment of the host
        "PROVISIONER_STATE_DIR": str(tmp_path / "state"),
        "WORKSPACE": str(tmp_path / "ws"),
    }

    def run(text: str, *args: str, **env: str) -> tuple[int, str]:
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(textwrap.dedent(text), encoding="utf-8")
        monkeypatch.setattr(os, "environ", {**base, **env})
        code = cli.main([str(manifest), *args])
        return code, capsys.readouterr().out

    return run


def test_a_manifest_runs_its_phases_and_a_second_run_skips_what_succeeded(
    hub: FakeHub, provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = f"""\
        version: 1
        write_files:
          - path: {out}/etc/app.conf
            content: "port: 7860"
            permissions: "0600"
        downloads:
          - url: https://huggingface.co/org/model/resolve/main/model.gguf
            dest: {out}/models/model.gguf
          - url: https://huggingface.co/org/model/resolve/main/model.gguf
            dest: {out}/elsewhere/same.gguf
          - url: https://huggingface.co/org/model
            dest: {out}/repo/
          - url: https://huggingface.co/org/model/resolve/main/model.gguf
        post_commands:
          - "echo ran >> {out}/post-command-runs"
    """
    code, said = provision(manifest, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "cache"))
    assert code == 0, said
    assert (out / "etc/app.conf").read_text() == "port: 7860" and (out / "etc/app.conf").stat().st_mode & 0o777 == 0o600
    assert (out / "models/model.gguf").read_bytes() == WEIGHTS
    assert (out / "elsewhere/same.gguf").resolve() == (out / "models/model.gguf")  # one download, a link
    assert (out / "repo/config.json").read_bytes() == b'{"a": 1}' and (out / "repo/model.gguf").read_bytes() == WEIGHTS
    commit = hub.repos["org/model"].commit
    cached = tmp_path / f"cache/models--org--model/snapshots/{commit}/model.gguf"
    assert cached.read_bytes() == WEIGHTS and cached.is_symlink()  # the hub's cache layout, for `hf` and llama
    assert "(sha256 checked)" in said
    files_before = len(hub.file_gets())
    code, said = provision(manifest, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "cache"))
    assert code == 0 and "--- downloads: unchanged since it last succeeded, skipped" in said
    assert len(hub.file_gets()) == files_before and (out / "post-command-runs").read_text() == "ran\n"
    code, said = provision(manifest.replace('"echo ran', '"echo again'), HF_ENDPOINT=hub.url)
    assert "--- post_commands\n" in said and "--- write_files: unchanged" in said
    assert (out / "post-command-runs").read_text() == "ran\nagain\n"


def test_a_failing_run_is_tried_again_then_reported_and_the_instance_stopped_once(
    provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    receiver = Loopback()
    receiver.route("/hook/s3cr3t-path", Answer(200, {}))
    receiver.route("/api/v0/instances/4242/", Answer(200, {"success": True}))
    counter = tmp_path / "attempts"
    manifest = f"""\
        version: 1
        on_failure:
          action: stop
          max_retries: 2
          retry_delay: 0
        post_commands:
          - "echo x >> {counter}; exit 3"
    """
    with serve(receiver):
        env = {"PROVISIONER_WEBHOOK_URL": f"{receiver.url}/hook/s3cr3t-path", "PROVISIONER_VAST_URL": receiver.url,
               "CONTAINER_ID": "4242", "CONTAINER_API_KEY": "vast-key-0123456789"}  # fmt: skip
        code, said = provision(manifest, **env)
        again, said_again = provision(manifest, **env)
    assert code == again == 1
    assert counter.read_text().count("x") == 4  # two attempts per run
    assert "attempt 1/2 failed; the next in 0 s" in said and "post command: exit status 3" in said
    hooks = [r for r in receiver.received if r.path.startswith("/hook")]
    assert [json.loads(r.body)["action"] for r in hooks] == ["stop", "stop"]
    assert "post_commands: post command: exit status 3" in json.loads(hooks[0].body)["error"]
    stops = [r for r in receiver.received if r.path.startswith("/api/")]
    assert len(stops) == 1, "the second failure must not stop the instance again"
    assert (stops[0].method, json.loads(stops[0].body)) == ("PUT", {"state": "stopped"})
    assert stops[0].headers["Authorization"] == "Bearer vast-key-0123456789"
    assert "stopped once already" in said_again
    assert "webhook: answered 200" in said and "on_failure stop: answered 200" in said
    for text in (said, said_again):
        assert "s3cr3t-path" not in text and "vast-key-0123456789" not in text


def test_secrets_never_reach_the_output(
    hub: FakeHub, provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    signed = Loopback()
    signed.route("/file.bin?X-Amz-Signature=sig0123456789", Answer(200, b"payload"))
    with serve(signed):
        manifest = f"""\
            version: 1
            downloads:
              - url: {signed.url}/file.bin?X-Amz-Signature=sig0123456789
                dest: {tmp_path}/file.bin
            post_commands:
              - "echo the token is ${{HF_TOKEN}}"
        """
        code, said = provision(manifest, HF_TOKEN=TOKEN, HF_ENDPOINT=hub.url)
    assert code == 0, said
    assert (tmp_path / "file.bin").read_bytes() == b"payload"
    assert TOKEN not in said and "sig0123456789" not in said
    assert "the token is ***" in said


def test_a_download_that_is_not_what_was_published_fails_and_leaves_nothing(
    hub: FakeHub, provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    manifest = f"""\
        version: 1
        settings: {{retry: {{max_attempts: 2, initial_delay: 0}}}}
        on_failure: {{max_retries: 0}}
        downloads:
          - url: https://huggingface.co/org/model/resolve/main/model.gguf
            dest: {tmp_path}/model.gguf
            sha256: {wrong}
    """
    code, said = provision(manifest, HF_ENDPOINT=hub.url)
    assert code == 1
    assert "sha256 mismatch: not what was published (the download was discarded); trying again in 0 s" in said
    assert "FAILED: downloads: https://huggingface.co/org/model/resolve/main/model.gguf: " in said
    assert list(tmp_path.glob("model.gguf*")) == []


def test_a_gated_repo_is_downloaded_when_the_token_is_valid_else_the_open_one(
    hub: FakeHub, provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    manifest = f"""\
        version: 1
        conditional_downloads:
          - when: hf_token_valid
            downloads:
              - url: https://huggingface.co/org/gated/resolve/main/gated.gguf
                dest: {tmp_path}/chosen.gguf
            else_downloads:
              - url: https://huggingface.co/org/model/resolve/main/model.gguf
                dest: {tmp_path}/chosen.gguf
    """
    code, said = provision(manifest, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
    assert code == 0 and (tmp_path / "chosen.gguf").read_bytes() == b"gated " * 100, said
    assert "hf_token_valid: true" in said
    cdn = [r for r in hub.requests if r.origin == "cdn"]
    assert cdn and all(r.authorization is None for r in cdn)  # the token never goes to the CDN
    (tmp_path / "chosen.gguf").unlink()
    state = str(tmp_path / "another-state")  # the downloads phase must run again
    code, said = provision(manifest, HF_ENDPOINT=hub.url, HF_TOKEN="hf_" + "w" * 40, PROVISIONER_STATE_DIR=state)
    assert code == 0 and "hf_token_valid: false (HF_TOKEN not accepted)" in said
    assert (tmp_path / "chosen.gguf").read_bytes() == WEIGHTS


def test_a_dry_run_plans_each_download_class_and_changes_nothing(
    provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    """The reference's self-test counts exactly one `[DRY RUN] Would download (HF|wget)` line per
    download: a hub file, a hub repo and a plain URL."""
    manifest = """\
        version: 1
        downloads:
          - {url: "https://huggingface.co/org/repo/resolve/main/weights.safetensors", dest: /tmp/x-hf-file/}
          - {url: "https://huggingface.co/org/repo", dest: /tmp/x-hf-repo/}
          - {url: "https://example.invalid/thing.bin", dest: /tmp/x-generic/}
        post_commands: ["touch /tmp/never"]
    """
    code, said = provision(manifest, "--dry-run")
    assert code == 0
    planned = [
        line
        for line in said.splitlines()
        if "[DRY RUN] Would download HF " in line or "[DRY RUN] Would download wget " in line
    ]
    assert len(planned) == 3, said
    assert "[DRY RUN] Would download HF org/repo/weights.safetensors@main -> /tmp/x-hf-file/weights.safetensors" in said
    assert not (tmp_path / "state").exists() and not Path("/tmp/never").exists()


def test_force_refuses_a_state_directory_it_did_not_make(
    provision: Callable[..., tuple[int, str]], tmp_path: Path
) -> None:
    foreign = tmp_path / "important"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    code, said = provision('version: 1\npost_commands: ["true"]\n', "--force", PROVISIONER_STATE_DIR=str(foreign))
    assert code == 78 and "--force refused" in said
    assert (foreign / "data.txt").read_text() == "keep me"
    assert state_dir({"PROVISIONER_STATE_DIR": "/etc"}) == (
        paths.PROVISIONER_STATE_DIR,
        "PROVISIONER_STATE_DIR=/etc is a system directory; using the default",
    )
    assert state_dir({"PROVISIONER_STATE_DIR": "relative/dir"})[0] == paths.PROVISIONER_STATE_DIR


def test_an_extension_appends_to_the_manifest_before_the_phases_run(
    provision: Callable[..., tuple[int, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lib" / "provisioner_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent("""\
        def run(config, context, dry_run=False):
            context.manifest.post_commands.append("echo extension says " + config["word"])
            context.manifest.write_files.append({"path": config["file"], "content": "from the extension"})
    """))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    manifest = f"""\
        version: 1
        extensions:
          - module: provisioner_probe
            config: {{word: hello, file: {tmp_path}/written.txt}}
          - module: provisioner_absent
            enabled: false
    """
    code, said = provision(manifest)
    assert code == 0, said
    assert "extension says hello" in said and (tmp_path / "written.txt").read_text() == "from the extension"
    sys.modules.pop("provisioner_probe", None)


def test_provisioning_script_runs_last_and_its_url_is_never_shown(
    provision: Callable[..., tuple[int, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "DOWNLOADED_SCRIPT", tmp_path / "provisioning.sh")
    served = Loopback()
    served.route(
        "/setup.sh?sig=abc0123456789",
        Answer(200, b"#!/bin/bash\r\necho script ran after $(cat " + str(tmp_path).encode() + b"/first)\r\n"),
    )
    with serve(served):
        code, said = provision(f"version: 1\npost_commands: ['echo the-post-command > {tmp_path}/first']\n",
                               PROVISIONING_SCRIPT=f"{served.url}/setup.sh?sig=abc0123456789")  # fmt: skip
    assert code == 0, said
    assert "script ran after the-post-command" in said
    assert "abc0123456789" not in said and served.url not in said
