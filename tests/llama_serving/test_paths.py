"""The launcher's paths (llama_serving/paths.py): its generated paths.sh is current and bash reads
the values Python declares (the base's own, llama_runtime/paths.py: tests/runtime/test_paths.py)."""

from __future__ import annotations

import subprocess

from llama_runtime import paths
from llama_serving import paths as launcher_paths

from tests.conftest import REPO_ROOT


def test_the_shell_paths_file_is_generated_from_the_declaration() -> None:
    committed = paths.shell_file(launcher_paths).read_text(encoding="utf-8")
    assert committed == paths.shell_source(launcher_paths), (
        f"{paths.shell_file(launcher_paths).relative_to(REPO_ROOT)} is not what llama_serving.paths declares: "
        "run `nox -s generate`"
    )


def test_bash_reads_the_values_python_declares() -> None:
    declared = paths.declared(launcher_paths)
    script = f"source {paths.shell_file(launcher_paths)}; " + "; ".join(
        f'printf "%s\\n" "${{{launcher_paths.SHELL_PREFIX}{key}}}"' for key in declared
    )
    printed = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, check=True).stdout
    assert printed.splitlines() == [str(value) for value in declared.values()]
