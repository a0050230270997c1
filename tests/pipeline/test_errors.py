"""Exit codes: every error type's code is documented, in errors.EXIT_CODES and in docs/building.md."""

from __future__ import annotations

import re

from llama_images.core import errors
from tests.conftest import REPO_ROOT


def subclasses(cls: type[errors.LlamaImagesError]) -> set[type[errors.LlamaImagesError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def documented_exit_codes() -> set[int]:
    text = (REPO_ROOT / "docs" / "building.md").read_text(encoding="utf-8")
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}


def test_every_error_type_has_a_documented_exit_code() -> None:
    codes = {cls.exit_code for cls in subclasses(errors.LlamaImagesError)} | {errors.LlamaImagesError.exit_code}
    assert codes | {0} == set(errors.EXIT_CODES)


def test_the_documented_table_lists_exactly_the_exit_codes() -> None:
    assert documented_exit_codes() == set(errors.EXIT_CODES)
