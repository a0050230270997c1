"""A stand-in llama-server for the launcher's tests: a shell script first on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_serving import watch


def stand_in_server(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path]:
    """`script` as llama-server, the files the launcher writes beside it in `tmp_path`:
    (the environment that finds it, a model file)."""
    (tmp_path / "bin").mkdir()
    server = tmp_path / "bin" / "llama-server"
    server.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    server.chmod(0o755)
    monkeypatch.setattr(watch, "PID_FILE", tmp_path / "pid")
    monkeypatch.setattr(watch, "REQUESTS_SERVED_FILE", tmp_path / "requests")
    monkeypatch.setenv("LLAMA_IMAGES_LOG_DIR", str(tmp_path))  # the detail log (boot exports it)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(28))
    return {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, model
