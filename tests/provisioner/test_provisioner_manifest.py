"""Reading a provisioning manifest (llama_provisioner/load.py): the reference image's format,
every section, `${VAR}` expansion, what the environment adds, and problems that name the file,
the line and the key and say how to fix them (never quoting a token)."""

from __future__ import annotations

import textwrap

import pytest
from llama_provisioner.load import (
    ManifestError,
    Problem,
    expand,
    load,
    resolve_conditionals,
    with_environment,
    with_overrides,
)
from llama_provisioner.model import Download, GitRepo, Manifest, OnFailure, PipBlock

EVERY_SECTION = """\
version: 1
settings:
  venv: /venv/custom
  conda_env: /venv/conda
  log_file: /tmp/prov.log
  concurrency: {hf_downloads: 2, wget_downloads: 4}
  retry: {max_attempts: 3, initial_delay: 1, backoff_multiplier: 3}
auth:
  huggingface: {token_env: MY_HF}
  civitai: {token_env: MY_CIVITAI}
on_failure:
  action: stop
  max_retries: 2
  retry_delay: 5
  webhook: https://hooks.example/fail
  webhook_on_success: true
extensions:
  - module: provisioner_comfyui
    config: {workflows: [a.json], depth: 2}
  - module: other.ext
    enabled: false
write_files:
  - path: /etc/app/config.yaml
    content: |
      debug: false
    permissions: "0600"
    owner: user:root
apt_packages: [ffmpeg, "ffmpeg=7:6.1.1-3ubuntu5"]
git_repos:
  - url: https://github.com/org/repo
    ref: v2.0
    recursive: false
    pull_if_exists: true
    post_commands: ["make"]
pip_packages:
  - packages: [torch, "numpy==1.24.0"]
    args: "--torch-backend auto"
  - venv: system
    tool: pip
    requirements: [/r.txt]
conda_packages:
  packages: [ffmpeg]
  channels: [conda-forge]
downloads:
  - url: https://huggingface.co/org/model/resolve/main/m.gguf
    dest: /models/m.gguf
    sha256: 0000000000000000000000000000000000000000000000000000000000000000
  - url: https://huggingface.co/org/model
conditional_downloads:
  - when: hf_token_valid
    downloads: [{url: "https://huggingface.co/org/gated/resolve/main/g.bin", dest: /models/g.bin}]
    else_downloads: [{url: "https://huggingface.co/org/open/resolve/main/o.bin", dest: /models/o.bin}]
env_merge:
  HF_MODELS: downloads
services:
  - name: my-app
    portal_search_term: My App
    skip_on_serverless: false
    venv: system
    workdir: /workspace/app
    command: python app.py --port 7860
    pre_commands: [ln -sf /models ./models]
    wait_for_provisioning: false
    environment: {GRADIO_SERVER_NAME: 0.0.0.0, PORT: 7860}
write_files_late:
  - path: /workspace/app/.env
    content: "PORT=7860"
post_commands: ["chmod +x /workspace/app/run.sh"]
"""


def read(text: str, **env: str) -> Manifest:
    manifest, _ = load(textwrap.dedent(text), "m.yaml", env)
    return manifest


def problems(text: str, **env: str) -> list[Problem]:
    with pytest.raises(ManifestError) as raised:
        load(textwrap.dedent(text), "m.yaml", env)
    return list(raised.value.problems)


def test_every_section_of_the_reference_format_is_read() -> None:
    m = read(EVERY_SECTION, WORKSPACE="/ws")
    assert (m.settings.venv, m.settings.conda_env, m.settings.log_file) == (
        "/venv/custom",
        "/venv/conda",
        "/tmp/prov.log",
    )
    assert (m.settings.concurrency.hf_downloads, m.settings.retry.delays()) == (2, [1.0, 3.0])
    assert (m.auth.huggingface_token_env, m.auth.civitai_token_env) == ("MY_HF", "MY_CIVITAI")
    assert m.on_failure == OnFailure("stop", 2, 5.0, "https://hooks.example/fail", True)
    assert m.extensions[0].config == {"workflows": ["a.json"], "depth": 2} and not m.extensions[1].enabled
    assert (m.write_files[0].permissions, m.write_files[0].owner, m.write_files[0].content) == (
        "0600",
        "user:root",
        "debug: false\n",
    )
    assert m.apt_packages == ("ffmpeg", "ffmpeg=7:6.1.1-3ubuntu5")
    assert m.git_repos == (GitRepo("https://github.com/org/repo", "/ws/repo", "v2.0", False, True, ("make",)),)
    assert m.pip_packages[0] == PipBlock(("torch", "numpy==1.24.0"), args="--torch-backend auto")
    assert (m.pip_packages[1].venv, m.pip_packages[1].tool, m.pip_packages[1].requirements) == (
        "system",
        "pip",
        ("/r.txt",),
    )
    assert m.conda_packages[0].packages == ("ffmpeg",)  # one mapping stands for a list of one
    assert m.downloads[1] == Download("https://huggingface.co/org/model")
    assert m.conditional_downloads[0].when == "hf_token_valid"
    assert m.env_merge == (("HF_MODELS", "downloads"),)
    service = m.services[0]
    assert (service.venv, service.skip_on_serverless, service.wait_for_provisioning) == ("system", False, False)
    assert service.environment == (("GRADIO_SERVER_NAME", "0.0.0.0"), ("PORT", "7860"))
    assert m.write_files_late[0].path == "/workspace/app/.env" and m.post_commands == (
        "chmod +x /workspace/app/run.sh",
    )


def test_variables_are_expanded_as_the_reference_does() -> None:
    env = {"WS": "/workspace", "EMPTY": ""}
    assert expand("${WS}/models/${UNSET}x", env) == "/workspace/models/x"
    assert expand("${UNSET:-/opt/default}|${UNSET:=d}|${WS:-no}", env) == "/opt/default|d|/workspace"
    assert expand("${EMPTY:-default}", env) == ""  # a default only for an unset variable, as there
    m = read("version: 1\nsettings:\n  retry:\n    max_attempts: ${TRIES:-4}\n", TRIES="7")
    assert m.settings.retry.max_attempts == 7  # a number may come from a variable


def test_every_problem_names_the_line_and_key_and_the_fix() -> None:
    found = problems("""\
        version: 1
        apt_packages: ffmpeg
        on_failure:
          action: explode
        write_files:
          - content: x
            permissions: rwx
        downloads:
          - dest: /models/x
          - url: ftp://example.com/file
        services:
          - name: "my app"
            command: run
        conditional_downloads:
          - when: hf_token_vaild
    """)
    shown = [f"{p.line} {p.key}: {p.message} | {p.fix}" for p in found]
    assert shown == [
        "2 apt_packages: expected a list, found a string | write a YAML list, e.g. [ffmpeg]",
        "4 on_failure.action: 'explode' is not one of continue, stop, destroy | write one of them",
        "6 write_files[0].path: required key is missing | add 'path: ...' to this entry",
        "7 write_files[0].permissions: 'rwx' is not an octal mode | write it quoted, e.g. \"0644\"",
        "9 downloads[0].url: required key is missing | add 'url: ...' to this entry",
        "10 downloads[1].url: 'ftp://example.com/file' is not an http(s) URL | write the URL in full, https://host/path",
        "12 services[0].name: 'my app' is not a service name | use letters, digits, '-' and '_' only",
        "15 conditional_downloads[0].when: 'hf_token_vaild' is not one of hf_token_valid, civitai_token_valid | "
        "write one of them (did you mean 'hf_token_valid'?)",
    ]
    assert str(found[0]).startswith("m.yaml:2: apt_packages: expected a list")
    assert "\n    fix: " in str(found[0])


def test_the_version_is_required_and_must_be_1() -> None:
    assert [str(p).splitlines()[0] for p in problems("apt_packages: [x]\n")] == [
        "m.yaml:1: version: required key is missing"
    ]
    assert "version '2' is not supported" in str(problems("version: 2\n")[0])
    assert "the manifest is empty" in str(problems("")[0])
    assert "not a mapping" in str(problems("- a\n- b\n")[0]) or "expected a mapping" in str(problems("- a\n- b\n")[0])


def test_broken_yaml_is_reported_at_its_line() -> None:
    found = problems("version: 1\napt_packages:\n  - a\n - b\n")
    assert found[0].line == 4 and found[0].message.startswith("not valid YAML")


def test_an_unknown_key_is_a_warning_with_a_suggestion_not_an_error() -> None:
    manifest, warnings = load("version: 1\napt_pakages: [x]\nsettings:\n  venvv: /v\n", "m.yaml", {})
    assert manifest.apt_packages == ()
    assert [(w.line, w.key, w.warning) for w in warnings] == [(2, "apt_pakages", True), (4, "settings.venvv", True)]
    assert "did you mean 'apt_packages'?" in warnings[0].fix and "did you mean 'venv'?" in warnings[1].fix


def test_a_problem_quotes_the_file_never_the_expanded_secret() -> None:
    token = "hf_" + "S3cr3t" * 7
    found = problems("version: 1\non_failure:\n  max_retries: ${HF_TOKEN}\n", HF_TOKEN=token)
    assert "'${HF_TOKEN}' is not a whole number" in str(found[0])
    assert token not in str(found[0])


def test_the_environment_adds_what_the_reference_s_conventions_say() -> None:
    env = {
        "WORKSPACE": "/ws",
        "HF_MODELS": "https://h/a|/m/a;#comment;no-bar; https://h/b | /m/b ",
        "PROVISIONING_DOWNLOADS": "https://x/c|/m/c",
        "PROVISIONING_GIT_REPOS": "https://github.com/org/app;https://github.com/org/lib.git|/opt/lib|v2",
        "PROVISIONING_APT": "ffmpeg;htop",
        "PROVISIONING_PIP": "transformers>=4.0;accelerate",
        "PROVISIONING_CONDA": "numpy",
        "PROVISIONING_POST_COMMANDS": "echo one;echo two",
    }
    manifest = Manifest(env_merge=(("HF_MODELS", "downloads"),), downloads=(Download("https://first", "/m/0"),))
    added, notes = with_environment(manifest, env)
    assert [d.dest for d in added.downloads] == ["/m/0", "/m/a", "/m/b", "/m/c"]
    assert added.git_repos == (
        GitRepo("https://github.com/org/app", "/ws/app"),
        GitRepo("https://github.com/org/lib.git", "/opt/lib", "v2"),
    )
    assert added.apt_packages == ("ffmpeg", "htop") and added.post_commands == ("echo one", "echo two")
    assert added.pip_packages == (PipBlock(("transformers>=4.0", "accelerate")),)
    assert added.conda_packages[0].packages == ("numpy",)
    assert "HF_MODELS entry 2: expected url|dest; skipped" in notes


def test_a_condition_picks_its_downloads_or_the_others() -> None:
    m = read(EVERY_SECTION)
    chosen, _ = resolve_conditionals(m, {"hf_token_valid": True})
    other, _ = resolve_conditionals(m, {"hf_token_valid": False})
    assert chosen.downloads[-1].dest == "/models/g.bin" and other.downloads[-1].dest == "/models/o.bin"
    assert chosen.conditional_downloads == ()


def test_provisioner_variables_override_the_manifest_and_bad_ones_are_named_not_shown() -> None:
    m = read(EVERY_SECTION)
    hook = "https://hooks.example/secret-path"
    changed, notes = with_overrides(m, {"PROVISIONER_RETRY_MAX": "0", "PROVISIONER_FAILURE_ACTION": "continue",
                                        "PROVISIONER_WEBHOOK_URL": hook, "PROVISIONER_VENV": "/v"})  # fmt: skip
    assert (changed.on_failure.max_retries, changed.on_failure.action, changed.on_failure.webhook) == (
        0,
        "continue",
        hook,
    )
    assert changed.settings.venv == "/v" and notes == []
    _, notes = with_overrides(m, {"PROVISIONER_RETRY_MAX": "many", "PROVISIONER_WEBHOOK_URL": "ftp://secret"})
    assert notes == ["PROVISIONER_RETRY_MAX is not a whole number; ignored",
                     "PROVISIONER_WEBHOOK_URL is not an http(s) URL; ignored"]  # fmt: skip
