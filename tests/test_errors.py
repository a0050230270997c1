"""Exit codes: every error type's code is documented, in errors.EXIT_CODES and in the README."""

from __future__ import annotations

import re

from llama_images.core import errors

from .conftest import REPO_ROOT


def subclasses(cls: type[errors.LlamaImagesError]) -> set[type[errors.LlamaImagesError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def readme_exit_codes() -> set[int]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("Exit codes (every task", 1)[1].split("\n\n")[1]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}


def test_every_error_type_has_a_documented_exit_code() -> None:
    codes = {cls.exit_code for cls in subclasses(errors.LlamaImagesError)} | {errors.LlamaImagesError.exit_code}
    assert codes | {0} == set(errors.EXIT_CODES)


def test_the_readme_table_lists_exactly_the_exit_codes() -> None:
    assert readme_exit_codes() == set(errors.EXIT_CODES)
