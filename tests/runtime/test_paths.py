"""One declaration of the images' paths: llama_runtime/paths.py (and llama_serving/paths.py for the
launcher, tested in tests/llama_serving/test_paths.py: these tests run with the base's library
alone). The shell scripts source the files generated from them, Supervisor's files name the log
directory through boot's environment, and nothing else writes a runtime path."""

from __future__ import annotations

import configparser
import importlib
import re
import subprocess
from pathlib import Path

import pytest
from llama_runtime import paths

from tests.conftest import REPO_ROOT

LIBS = (
    REPO_ROOT / "base-image/ROOT/opt/llama-images/lib",
    REPO_ROOT / "derivatives/llama-cpp/ROOT/opt/llama-images/lib",
)
OVERLAYS = (REPO_ROOT / "base-image/ROOT", REPO_ROOT / "derivatives/llama-cpp/ROOT")
PATH_MODULES = sorted(f"{path.parent.name}.paths" for lib in LIBS for path in lib.glob("*/paths.py"))
BASE_PATH_MODULES = [name for name in PATH_MODULES if (LIBS[0] / name.replace(".", "/")).with_suffix(".py").is_file()]
# Where the runtime keeps its files (this boot's, and those kept across restarts).
RUNTIME_ROOTS = (str(paths.RUN_DIR), str(paths.STATE_DIR))


def test_both_images_declare_their_paths() -> None:
    assert PATH_MODULES == ["llama_runtime.paths", "llama_serving.paths"]


@pytest.mark.parametrize("name", BASE_PATH_MODULES)
def test_the_shell_paths_file_is_generated_from_the_declaration(name: str) -> None:
    module = importlib.import_module(name)
    committed = paths.shell_file(module).read_text(encoding="utf-8")
    assert committed == paths.shell_source(module), (
        f"{paths.shell_file(module).relative_to(REPO_ROOT)} is not what {name} declares: run `nox -s generate`"
    )


@pytest.mark.parametrize("name", BASE_PATH_MODULES)
def test_bash_reads_the_values_python_declares(name: str) -> None:
    module = importlib.import_module(name)
    declared = paths.declared(module)
    script = f"source {paths.shell_file(module)}; " + "; ".join(
        f'printf "%s\\n" "${{{module.SHELL_PREFIX}{key}}}"' for key in declared
    )
    printed = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, check=True).stdout
    assert printed.splitlines() == [str(value) for value in declared.values()]


def shell_scripts() -> list[Path]:
    found = []
    for overlay in OVERLAYS:
        for path in sorted(overlay.rglob("*")):
            if path.is_file() and path.name != "paths.sh":
                with path.open("rb") as handle:
                    first = handle.readline(80)
                if path.suffix == ".sh" or (first.startswith(b"#!") and b"bash" in first):
                    found.append(path)
    return found


def code_lines(path: Path, comment: str) -> list[tuple[int, str]]:
    return [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if not line.lstrip().startswith(comment)
    ]


def test_no_script_or_module_writes_a_runtime_path_of_its_own() -> None:
    """Only the declarations hold /run/llama-images and /var/lib/llama-images: the scripts read
    them from paths.sh, the Python from the paths modules (docstrings may name them)."""
    found = []
    for script in shell_scripts():
        for number, line in code_lines(script, "#"):
            if any(root in line for root in RUNTIME_ROOTS):
                found.append(f"{script.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    for lib in LIBS:
        for module in sorted(lib.rglob("*.py")):
            if module.name == "paths.py":
                continue
            for number, line in code_lines(module, "#"):
                if re.search(r"[\"'](/run/llama-images|/var/lib/llama-images)", line):
                    found.append(f"{module.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert found == [], "runtime paths written outside llama_runtime/paths.py:\n" + "\n".join(found)
    assert len(shell_scripts()) >= 9  # boot.sh, the boot steps, the start scripts, supervisorctl


def supervisor_files() -> list[Path]:
    return [
        REPO_ROOT / "base-image/ROOT/etc/supervisor/supervisord.conf",
        *(path for overlay in OVERLAYS for path in sorted((overlay / "etc/supervisor/conf.d").glob("*.conf"))),
    ]


def read_conf(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    parser.read(path)
    return parser


def test_supervisor_repeats_the_declared_socket() -> None:
    """supervisorctl reads supervisord.conf without boot's environment: the socket is written
    there as it is, and must be the one the runtime, the portal and boot dial."""
    conf = read_conf(REPO_ROOT / "base-image/ROOT/etc/supervisor/supervisord.conf")
    assert conf.get("unix_http_server", "file") == str(paths.SUPERVISOR_SOCKET)
    assert conf.get("supervisorctl", "serverurl") == f"unix://{paths.SUPERVISOR_SOCKET}"


def test_every_program_logs_where_the_runtime_reads_program_logs() -> None:
    """Supervisor's files name the program log directory by the variable boot exports (the
    portal, the log copier and the archive read <log dir>/portal/<program>.log)."""
    variable = f"%(ENV_{paths.PROGRAM_LOG_DIR_VARIABLE})s"
    programs = 0
    for path in supervisor_files():
        conf = read_conf(path)
        for section in conf.sections():
            if section == "supervisord":
                assert conf.get(section, "childlogdir") == variable
            if section.startswith("program:"):
                programs += 1
                assert conf.get(section, "stdout_logfile") in {f"{variable}/%(program_name)s.log", "/dev/stdout"}, (
                    f"{path.name} [{section}]"
                )
    assert programs >= 7
    boot = (REPO_ROOT / "base-image/ROOT/opt/boot/boot.sh").read_text(encoding="utf-8")
    assert re.search(rf"^export .*\b{paths.PROGRAM_LOG_DIR_VARIABLE}\b", boot, re.M)
    assert re.search(rf"^{paths.PROGRAM_LOG_DIR_VARIABLE}=.*\$\{{{paths.SHELL_PREFIX}PROGRAM_LOGS\}}", boot, re.M)
