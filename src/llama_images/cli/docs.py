"""The generated blocks of the documentation, made from the option declarations (core/options.py)
and the tasks that take them: the task options table (docs/building.md) and the publishing
workflow's inputs table (docs/publishing.md).

Each block sits between `<!-- begin generated: NAME (invoke docs) -->` and
`<!-- end generated: NAME -->` in the file that declares it below; `invoke docs` rewrites them,
and a test fails while a file's blocks differ from what the declarations give.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UsageError
from ..core.options import OPTIONS, Kind, Option

# Each generated block and the file it lives in, relative to the checkout.
BLOCK_FILES = {"options": Path("docs/building.md"), "workflow-inputs": Path("docs/publishing.md")}


class Declared(Protocol):
    """What a table needs of a task: its name and its options."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> tuple[Option, ...]: ...


def usage(option: Option) -> str:
    """How a user writes the option: `--filter GLOB`, `--matrix [FILE]`, `--no-sbom`."""
    if option.kind is Kind.FLAG:
        return f"--no-{option.flag.removeprefix('--')}" if option.default else option.flag
    metavar = option.metavar or "VALUE"
    return f"{option.flag} [{metavar}]" if option.value_optional else f"{option.flag} {metavar}"


def options_table(tasks: Sequence[Declared]) -> str:
    rows = ["| Option | Tasks | Meaning |", "|---|---|---|"]
    for option in OPTIONS:
        takers = ", ".join(f"`{task.name}`" for task in tasks if option in task.options)
        meaning = option.help
        if option.kind is not Kind.FLAG and option.default is not None and "default" not in meaning:
            meaning += f" (default: `{option.default}`)"
        rows.append(f"| `{usage(option)}` | {takers} | {escape(meaning)} |")
    return "\n".join(rows)


def workflow_inputs_table() -> str:
    rows = ["| Input | Meaning | Option it fills |", "|---|---|---|"]
    for option in OPTIONS:
        source = option.workflow
        if source is not None and not source.setting:
            rows.append(f"| `{source.name}` | {escape(source.meaning)}. | `{option.flag}` |")
    return "\n".join(rows)


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def blocks(tasks: Sequence[Declared]) -> dict[str, str]:
    """Block name -> its content, as the declarations give it."""
    return {"options": options_table(tasks), "workflow-inputs": workflow_inputs_table()}


def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- begin generated: {re.escape(name)} \(invoke docs\) -->\n)(.*?)(<!-- end generated: "
        rf"{re.escape(name)} -->)",
        re.DOTALL,
    )


def regenerated(text: str, names: Sequence[str], tasks: Sequence[Declared], file: Path) -> str:
    """`text` with each of the named blocks made anew; a missing marker is an error naming `file`."""
    made = blocks(tasks)
    for name in names:
        match = block_pattern(name).search(text)
        if match is None:
            raise UsageError(f"{file} has no generated block '{name}'; restore its begin and end comments")
        text = text[: match.start(2)] + made[name] + "\n" + text[match.end(2) :]
    return text


def files_blocks() -> dict[Path, list[str]]:
    """File -> the names of the blocks it holds."""
    found: dict[Path, list[str]] = {}
    for name, file in BLOCK_FILES.items():
        found.setdefault(file, []).append(name)
    return found


def update(root: Path, tasks: Sequence[Any]) -> None:
    """Rewrite every generated block in its file (what `invoke docs` does)."""
    for file, names in files_blocks().items():
        path = root / file
        text = path.read_text(encoding="utf-8")
        new = regenerated(text, names, tasks, file)
        if new == text:
            print(f"{file}: the generated blocks are up to date")
            continue
        path.write_text(new, encoding="utf-8")
        print(f"{file}: regenerated {', '.join(names)}")
