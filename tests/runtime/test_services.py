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
        ("pyworker", 3000, 3000, "pyworker", True),
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


REFERENCE_DEFAULT = (
    # The reference image's own PORTAL_CONFIG for its llama.cpp image (05-llama-env.sh).
    "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/:Llama.cpp UI|"
    "localhost:8080:18080:/:Jupyter|localhost:8080:8080:/terminals/1:Jupyter Terminal"
)


def test_the_reference_default_names_every_service_and_adds_the_terminal_link(tmp_path: Path) -> None:
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": REFERENCE_DEFAULT})
    assert loaded.problems == ()
    rows = [(s.name, s.label, s.external_port, s.internal_port, s.enabled, s.published) for s in loaded.services]
    assert rows == [
        ("portal", "Instance Portal", 1111, 11111, True, True),
        ("pyworker", "Serverless worker", 3000, 3000, False, False),  # serverless mode only
        ("llama", "Llama.cpp UI", 8000, 18000, True, True),
        ("jupyter", "Jupyter", 8080, 18080, True, True),
        ("jupyter-terminal", "Jupyter Terminal", 8080, 8080, True, False),
    ]
    terminal = loaded.by_name()["jupyter-terminal"]
    assert (terminal.link_only, terminal.path, terminal.program) == (True, "/terminals/1", None)
    assert loaded.by_name()["llama"].program == "llama"


def test_portal_config_decides_what_runs(tmp_path: Path) -> None:
    config = (
        "localhost:1111:11111:/:Instance Portal|localhost:8001:18001:/v1:llama.cpp server|"
        "localhost:7860:17860:/:Gradio App"
    )
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    llama = loaded.by_name()["llama"]
    assert (llama.external_port, llama.internal_port, llama.path, llama.program) == (8001, 18001, "/v1", "llama")
    assert loaded.by_name()["gradio-app"] == Service("gradio-app", "Gradio App", 7860, 17860, "/")
    jupyter = loaded.by_name()["jupyter"]
    assert (jupyter.enabled, jupyter.published, jupyter.off_reason) == (False, False, "not in PORTAL_CONFIG")
    assert loaded.problems == ()


def test_an_enable_switch_and_portal_config_say_why_a_service_is_off(tmp_path: Path) -> None:
    env = {"PORTAL_CONFIG": REFERENCE_DEFAULT, "ENABLE_JUPYTER": "no"}
    jupyter = load_services(image_declaration(tmp_path), tmp_path / "none", env).by_name()["jupyter"]
    assert (jupyter.enabled, jupyter.off_reason) == (False, "ENABLE_JUPYTER=no")


def test_conflicting_entries_are_logged_by_both_names_and_the_later_wins(tmp_path: Path) -> None:
    config = (
        "localhost:8000:18000:/:A|127.0.0.1:8001:18000:/:B|"  # one service twice
        "[::1]:7000:17000:/:V6|localhost:7000:17001:/:Other|"  # one external port twice
        "10.0.0.5:7001:18000:/:Remote|"  # another machine's port 18000 is not llama-server
        "localhost:7002:17002:/:Twice|localhost:7003:17003:/:twice"  # one label twice
    )
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    assert loaded.problems == (
        "PORTAL_CONFIG entry 1 'localhost:8000:18000:/:A' and entry 2 '127.0.0.1:8001:18000:/:B' both name "
        "service 'llama': the later entry wins, entry 1 'localhost:8000:18000:/:A' skipped",
        "PORTAL_CONFIG entry 3 '[::1]:7000:17000:/:V6' and entry 4 'localhost:7000:17001:/:Other' both publish "
        "external port 7000: the later entry wins, entry 3 '[::1]:7000:17000:/:V6' skipped",
        "PORTAL_CONFIG entry 6 'localhost:7002:17002:/:Twice' and entry 7 'localhost:7003:17003:/:twice' both "
        "have the label 'twice': the later entry wins, entry 6 'localhost:7002:17002:/:Twice' skipped",
    )
    published = {s.external_port: (s.name, s.host, s.internal_port) for s in loaded.services if s.published}
    assert published == {
        7000: ("other", "127.0.0.1", 17001),
        7001: ("remote", "10.0.0.5", 18000),
        7003: ("twice", "127.0.0.1", 17003),
        8001: ("llama", "127.0.0.1", 18000),
    }


def test_an_ipv6_host_in_brackets_is_accepted(tmp_path: Path) -> None:
    config = "[::1]:8000:18000:/:llama.cpp server|[fd00::5]:7000:17000:/x:Far"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    assert loaded.problems == ()
    assert loaded.by_name()["llama"].host == "::1"
    assert loaded.by_name()["far"].host == "fd00::5"


def test_a_bad_file_is_reported_with_its_key_and_the_others_still_load(tmp_path: Path) -> None:
    shipped = image_declaration(tmp_path)
    write(shipped, "broken.toml", 'name = "broken"\nlabel = "B"\nexternal_port = "x"\ninternal_port = 1\npath = "/"\n')
    write(shipped, "syntax.toml", "name = \n")
    loaded = load_services(shipped, tmp_path / "none", {})
    assert [s.name for s in loaded.services] == ["portal", "pyworker", "llama", "jupyter"]
    assert f"{shipped}/broken.toml: external_port = 'x' is not a int" in loaded.problems
    assert any(p.startswith(f"{shipped}/syntax.toml: not readable TOML") for p in loaded.problems)


def test_enabled_by_variable_turns_a_service_off(tmp_path: Path) -> None:
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"ENABLE_JUPYTER": "false"})
    assert not loaded.by_name()["jupyter"].enabled
    assert [s.name for s in loaded.services if s.enabled] == ["portal", "llama"]


def test_two_declared_services_on_one_external_port_keep_the_first(tmp_path: Path) -> None:
    shipped = image_declaration(tmp_path)
    other = 'name = "other"\nlabel = "Other"\nexternal_port = 8080\ninternal_port = 17000\npath = "/"\n'
    write(shipped, "other.toml", other)
    loaded = load_services(shipped, tmp_path / "none", {})
    assert "other" not in loaded.by_name()
    assert loaded.problems == ("service 'other': external port 8080 is already used by 'jupyter'; 'other' skipped",)


def test_a_label_containing_a_services_search_term_starts_it_as_the_reference_does(tmp_path: Path) -> None:
    """What a user met: PORTAL_CONFIG with only the "Jupyter Terminal" link left Jupyter off; the
    reference image starts it (its name is in the config)."""
    config = "localhost:1111:11111:/:Instance Portal|localhost:8080:8080:/terminals/1:Jupyter Terminal"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    jupyter = loaded.by_name()["jupyter"]
    assert (jupyter.enabled, jupyter.published, jupyter.external_port, jupyter.internal_port) == (
        True,
        True,
        8080,
        18080,
    )
    assert loaded.by_name()["jupyter-terminal"].link_only
    assert loaded.notes == (
        "PORTAL_CONFIG entry 2 'localhost:8080:8080:/terminals/1:Jupyter Terminal' names 'Jupyter' in its label: "
        "jupyter runs on its declared port 8080, as the reference image starts it",
    )
    assert not loaded.by_name()["llama"].enabled  # "Llama.cpp" is in no label


def test_a_term_only_in_a_host_or_path_starts_nothing_and_the_log_says_so(tmp_path: Path) -> None:
    """The reference greps the whole config: a path /jupyter-docs would start Jupyter there."""
    config = "localhost:1111:11111:/:Instance Portal|localhost:7000:17000:/jupyter/docs:Docs"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    assert not loaded.by_name()["jupyter"].enabled
    assert loaded.notes == (
        "PORTAL_CONFIG entry 2 'localhost:7000:17000:/jupyter/docs:Docs' mentions 'Jupyter' only in its host or path: "
        "jupyter stays off (the reference image would start it, finding the name anywhere in the config); put "
        "'Jupyter' in an entry's label to start it",
    )


def test_a_services_port_published_by_an_entry_stays_the_entrys(tmp_path: Path) -> None:
    config = "localhost:8080:17777:/:Jupyter Lab of mine"
    loaded = load_services(image_declaration(tmp_path), tmp_path / "none", {"PORTAL_CONFIG": config})
    published = {s.external_port: s.name for s in loaded.services if s.published}
    assert published == {8080: "jupyter-lab-of-mine"} and not loaded.by_name()["jupyter"].enabled
    assert "publishes jupyter's port 8080: jupyter stays off" in loaded.notes[0]


def test_an_enable_switch_still_wins_over_a_search_term(tmp_path: Path) -> None:
    env = {"PORTAL_CONFIG": "localhost:8080:8080:/terminals/1:Jupyter Terminal", "ENABLE_JUPYTER": "false"}
    jupyter = load_services(image_declaration(tmp_path), tmp_path / "none", env).by_name()["jupyter"]
    assert (jupyter.enabled, jupyter.off_reason) == (False, "ENABLE_JUPYTER=false")
