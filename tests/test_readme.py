"""The README's generated blocks are what the declarations give (docker-library style: regenerate
and compare). `invoke readme` rewrites them."""

from __future__ import annotations

import pytest

from llama_images.cli.readme import blocks, regenerated
from llama_images.cli.tasks import TASKS
from llama_images.core.errors import UsageError

from .conftest import REPO_ROOT


def test_the_readme_blocks_are_what_the_option_declarations_give() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert regenerated(text, TASKS) == text, "README.md's generated blocks are stale: run `invoke readme`"


def test_every_option_and_workflow_input_is_in_the_readme() -> None:
    from llama_images.core.options import OPTIONS

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for option in OPTIONS:
        assert f"`{option.flag}" in text or f"`--no-{option.flag[2:]}" in text, option.name
        if option.workflow is not None and not option.workflow.setting:
            assert f"| `{option.workflow.name}` |" in text


def test_a_stale_block_is_regenerated_and_a_missing_one_is_an_error() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    options = blocks(TASKS)["options"]
    stale = text.replace(options, options.replace("`--push`", "`--pushed`"), 1)
    assert stale != text
    assert regenerated(stale, TASKS) == text
    with pytest.raises(UsageError, match="no generated block 'options'"):
        regenerated(text.replace("<!-- begin generated: options (invoke readme) -->", ""), TASKS)
