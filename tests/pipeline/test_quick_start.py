"""CI runs the README's quick start word for word, from a cold engine (issue 12: both commands
failed on a fresh machine while CI, on a warm engine, passed)."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def quick_start_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the Quick start section has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_exactly_after_forgetting_the_engine_state() -> None:
    commands = quick_start_commands()
    assert commands == [
        "python3 -m pip install -e '.[dev]' && invoke build --matrix",
        "python3 -m pip install -e '.[dev]' && nox -s lint test",
    ]
    lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    positions = [lines.index(command) for command in commands]
    assert positions == sorted(positions)
    assert lines.index("invoke clean") < positions[0]
