"""Settings files (/etc/environment, ${WORKSPACE}/.env) read as data at every program start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from llama_runtime import environment, paths, program
from llama_runtime.environment import apply, parse, read


def test_values_are_data_quotes_are_read_as_a_shell_reads_them_nothing_is_expanded() -> None:
    text = (
        "# the reference image's guide\n"
        "LLAMA_MODEL=org/repo-GGUF:Q4_K_M\n"
        "export LLAMA_ARGS='--ctx-size 4096 --alias \"my model\"'\n"
        'HF_TOKEN="hf_$ecret`x`"  # a comment\n'
        'MULTI="one\ntwo \\"three\\" \\$four"\n'
        "EMPTY=\n"
        "ESCAPED=a\\ b\n"
    )
    values, problems = parse(text, "/etc/environment")
    assert problems == []
    assert values == {
        "LLAMA_MODEL": "org/repo-GGUF:Q4_K_M",
        "LLAMA_ARGS": '--ctx-size 4096 --alias "my model"',
        "HF_TOKEN": "hf_$ecret`x`",
        "MULTI": 'one\ntwo "three" $four',
        "EMPTY": "",
        "ESCAPED": "a b",
    }


def test_a_line_that_cannot_be_read_is_named_without_its_value_and_the_rest_still_apply() -> None:
    text = 'GOOD=1\nLLAMA_ARGS=--ctx-size 4096\nnot a setting\nHF_TOKEN="hf_secret\nLATER=2\n1BAD=x\n'
    values, problems = parse(text, "/workspace/.env")
    assert values == {"GOOD": "1", "LATER": "2"}
    assert problems == [
        '/workspace/.env:2: LLAMA_ARGS: a value with spaces must be quoted (NAME="a b"); line skipped',
        "/workspace/.env:3: this line: expected NAME=value; line skipped",
        "/workspace/.env:4: HF_TOKEN: a double quote is never closed; line skipped",
        "/workspace/.env:6: this line: expected NAME=value; line skipped",
    ]
    assert all("hf_secret" not in p and "4096" not in p for p in problems)


def test_the_workspace_file_comes_second_and_wins_and_workspace_may_move(tmp_path: Path) -> None:
    system = tmp_path / "environment"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    system.write_text(f"WORKSPACE={workspace}\nLLAMA_MODEL=/models/a.gguf\nAUTH_EXCLUDE=8080\n")
    (workspace / ".env").write_text("LLAMA_MODEL=/models/b.gguf\n")
    settings = read({"WORKSPACE": "/elsewhere"}, system)
    assert settings.files == (system, workspace / ".env")
    assert settings.values["LLAMA_MODEL"] == "/models/b.gguf"
    assert settings.values["AUTH_EXCLUDE"] == "8080"


def test_token_variables_are_kept_apart_and_never_reach_an_environment(tmp_path: Path) -> None:
    system = tmp_path / "environment"
    system.write_text("WEB_PASSWORD=new-password-0123456789\nOPEN_BUTTON_TOKEN=x\nLLAMA_MODEL=m\n")
    settings = read({"WORKSPACE": str(tmp_path)}, system)
    assert settings.credentials == {"WEB_PASSWORD": "new-password-0123456789", "OPEN_BUTTON_TOKEN": "x"}
    env = {"LLAMA_MODEL": "old", "OPEN_BUTTON_TOKEN": "leftover", "PATH": "/bin"}
    assert apply(env, settings) == ["LLAMA_MODEL"]
    assert env == {"LLAMA_MODEL": "m", "PATH": "/bin"}


def test_missing_files_change_nothing(tmp_path: Path) -> None:
    settings = read({"WORKSPACE": str(tmp_path)}, tmp_path / "none")
    assert (settings.values, settings.credentials, settings.problems, settings.files) == ({}, {}, (), ())


def test_a_program_start_logs_the_names_it_applied_never_the_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    system = tmp_path / "environment"
    system.write_text("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123456789\nLLAMA_MODEL=m\n")
    monkeypatch.setenv("WORKSPACE", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("LLAMA_MODEL", "old")
    environment.apply_to_process("llama", system)
    out = capsys.readouterr().out
    assert out == f"[llama] settings from {system}: HF_TOKEN, LLAMA_MODEL\n"


def test_startsecs_is_read_from_the_program_s_supervisor_conf(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("[program:portal]\ncommand=x\nstartsecs=6 ; comment\n")
    (tmp_path / "b.conf").write_text("[program:jupyter]\ncommand=y\n")
    assert program.startsecs("portal", tmp_path) == 6.0
    assert program.startsecs("jupyter", tmp_path) == 0.0
    assert program.startsecs("nothing", tmp_path) == 0.0


def test_boot_s_cuda_compat_decision_stays_first_whatever_a_settings_file_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`env >> /etc/environment` writes the LD_LIBRARY_PATH of the moment (NVIDIA's images set
    one): applied as it is, it would drop the compat libraries boot chose, while boot's line
    still says they are used."""
    decision = tmp_path / "cuda-compat"
    decision.write_text("/opt/llama-images/cuda-compat\n", encoding="utf-8")
    monkeypatch.setattr(paths, "CUDA_COMPAT_FILE", decision)
    system = tmp_path / "environment"
    system.write_text("LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64\nLLAMA_MODEL=m\n")
    monkeypatch.setenv("WORKSPACE", str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/llama-images/cuda-compat:/usr/local/nvidia/lib")
    monkeypatch.setenv("LLAMA_MODEL", "old")  # restored after the test, as the file changes it
    environment.apply_to_process("llama", system)
    assert os.environ["LD_LIBRARY_PATH"] == (
        "/opt/llama-images/cuda-compat:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    )
    logged = capsys.readouterr().out.splitlines()
    assert logged[-1] == (
        f"[llama] WARNING: LD_LIBRARY_PATH from {system} leaves out /opt/llama-images/cuda-compat, the CUDA "
        f"forward-compatibility libraries boot chose ({decision}): they stay first; DISABLE_FORWARD_COMPAT=true "
        "(and a restart of the container) turns them off"
    )
    # Without a decision (a CPU image, or no compat libraries chosen) the file's value stands.
    decision.write_text("", encoding="utf-8")
    env = {"LD_LIBRARY_PATH": "/x"}
    apply(env, read({"WORKSPACE": str(tmp_path)}, system))
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    # A file that keeps the directory first draws no warning.
    decision.write_text("/opt/llama-images/cuda-compat\n", encoding="utf-8")
    system.write_text("LD_LIBRARY_PATH=/opt/llama-images/cuda-compat:/usr/lib\n")
    assert environment.compat_note(read({"WORKSPACE": str(tmp_path)}, system)) is None
    env = {}
    apply(env, read({"WORKSPACE": str(tmp_path)}, tmp_path / "none"))
    assert env == {"LD_LIBRARY_PATH": "/opt/llama-images/cuda-compat"}
