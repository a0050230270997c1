"""The service declaration loader (base-image/ROOT/opt/llama-images/lib/llama_runtime/services.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from llama_runtime.services import Service, load_services

from tests.conftest import REPO_ROOT

SHIPPED = [REPO_ROOT / "base-image/ROOT/etc/llama-images/services.d",
           REPO_ROOT / "derivatives/llama-cpp/ROOT/etc/llama-images/services.d"]  # fmt: skip


def image_declaration(tmp_path: Path) -> Path:
    """services.d as the llama-cpp image has it: the base's files plus the derivative's."""
    target = tmp_path / "services.d"
    target.mkdir()
    for directory in SHIPPED:
        for path in directory.glob("*.toml"):
            (target / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_shipped_declaration_has_the_documented_ports(tmp_path: Path) -> None:
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {})
    assert loaded.problems == ()
    assert [(s.name, s.external_port, s.internal_port, s.program, s.essential) for s in loaded.services] == [
        ("portal", 1111, 11111, "portal", True),
        ("llama", 8000, 18000, "llama", True),
        ("jupyter", 8080, 18080, "jupyter", False),
    ]
    assert loaded.by_name()["llama"].health_path == "/health"


def test_runtime_overrides_replace_shipped_values(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    write(runtime, "llama.toml", "internal_port = 9000\n")
    loaded = load_services(image_declaration(tmp_path), runtime, {})
    assert loaded.by_name()["llama"].internal_port == 9000
    assert loaded.by_name()["llama"].external_port == 8000


def test_portal_config_overrides_by_label_and_adds_link_only_services(tmp_path: Path) -> None:
    config = "localhost:8001:18001:/v1:llama.cpp server|localhost:7860:17860:/:Gradio App"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    llama = loaded.by_name()["llama"]
    assert (llama.external_port, llama.internal_port, llama.path, llama.program) == (8001, 18001, "/v1", "llama")
    assert loaded.by_name()["gradio-app"] == Service("gradio-app", "Gradio App", 7860, 17860, "/")


def test_malformed_portal_config_entries_are_reported_and_skipped(tmp_path: Path) -> None:
    config = "localhost:70000:1:/:Too big|nonsense|localhost:7000:17000:nopath:X|localhost:7001:17001:/:Fine"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    assert "fine" in loaded.by_name()
    assert loaded.problems == (
        "PORTAL_CONFIG entry 1 'localhost:70000:1:/:Too big': external port '70000' is not a port (1-65535); skipped",
        "PORTAL_CONFIG entry 2 'nonsense': expected host:external_port:internal_port:path:Label; skipped",
        "PORTAL_CONFIG entry 3 'localhost:7000:17000:nopath:X': path 'nopath' must start with '/'; skipped",
    )
    assert len(loaded.services) == 4


def test_a_bad_file_is_reported_with_its_key_and_the_others_still_load(tmp_path: Path) -> None:
    shipped = image_declaration(tmp_path)
    write(shipped, "broken.toml", 'name = "broken"\nlabel = "B"\nexternal_port = "x"\ninternal_port = 1\npath = "/"\n')
    write(shipped, "syntax.toml", "name = \n")
    loaded = load_services(shipped, tmp_path / "none", {})
    assert [s.name for s in loaded.services] == ["portal", "llama", "jupyter"]
    assert f"{shipped}/broken.toml: external_port = 'x' is not a int" in loaded.problems
    assert any(p.startswith(f"{shipped}/syntax.toml: not readable TOML") for p in loaded.problems)


def test_enabled_by_variable_turns_a_service_off(tmp_path: Path) -> None:
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"ENABLE_JUPYTER": "false"})
    assert not loaded.by_name()["jupyter"].enabled
    assert [s.name for s in loaded.services if s.enabled] == ["portal", "llama"]


def test_two_services_on_one_external_port_keep_the_first(tmp_path: Path) -> None:
    loaded = load_services(
        image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": "localhost:8080:17000:/:Other"}
    )
    assert "other" not in loaded.by_name()
    assert loaded.problems == ("service 'other': external port 8080 is already used by 'jupyter'; 'other' skipped",)
