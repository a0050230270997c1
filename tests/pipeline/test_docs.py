"""The documentation (README.md and docs/*.md) as a reader meets it: the generated blocks are what
the declarations give (`invoke docs` rewrites them), no line outside a table is over 120
characters, every relative link and anchor leads somewhere, and example names are the shipped
matrix's (a matrix bump that renames a target shows up here, not in a user's copy-paste)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_images.cli.docs import BLOCK_FILES, blocks, files_blocks, regenerated
from llama_images.cli.tasks import TASKS
from llama_images.core.bake import bake_name
from llama_images.core.errors import UsageError
from llama_images.core.model import arch
from llama_images.core.options import OPTIONS
from llama_images.core.targets import ImageTarget, expand
from tests import shipped
from tests.conftest import REPO_ROOT

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LONGEST_LINE = 120
README_LINES = 200


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# ---- generated blocks --------------------------------------------------------------------------


def test_the_generated_blocks_are_what_the_option_declarations_give() -> None:
    for file, names in files_blocks().items():
        text = text_of(REPO_ROOT / file)
        assert regenerated(text, names, TASKS, file) == text, f"{file}'s generated blocks are stale: run `invoke docs`"


def test_every_option_and_workflow_input_is_documented() -> None:
    building, publishing = (text_of(REPO_ROOT / BLOCK_FILES[n]) for n in ("options", "workflow-inputs"))
    for option in OPTIONS:
        assert f"`{option.flag}" in building or f"`--no-{option.flag[2:]}" in building, option.name
        if option.workflow is not None and not option.workflow.setting:
            assert f"| `{option.workflow.name}` |" in publishing


def test_a_stale_block_is_regenerated_and_a_missing_one_is_an_error() -> None:
    file = BLOCK_FILES["options"]
    text = text_of(REPO_ROOT / file)
    options = blocks(TASKS)["options"]
    stale = text.replace(options, options.replace("`--push`", "`--pushed`"), 1)
    assert stale != text
    assert regenerated(stale, ["options"], TASKS, file) == text
    with pytest.raises(UsageError, match=r"docs/building.md has no generated block 'options'"):
        regenerated(text.replace("<!-- begin generated: options (invoke docs) -->", ""), ["options"], TASKS, file)


# ---- lines and links ---------------------------------------------------------------------------


def test_the_readme_is_a_front_door() -> None:
    lines = text_of(REPO_ROOT / "README.md").splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; move reference text to docs/"
    # No dated figures: timings and their dates live in docs/benchmarks.md.
    dated = [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d+ (s|seconds|minutes)\b", line)]
    assert dated == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_no_line_outside_a_table_is_over_120_characters(path: Path) -> None:
    long = [f"{name(path)}:{number}: {len(line)} characters"
            for number, line in enumerate(text_of(path).splitlines(), 1)
            if len(line) > LONGEST_LINE and not line.lstrip().startswith("|")]  # fmt: skip
    assert long == []


FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without code blocks and code spans (where brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lowercase, punctuation dropped, spaces as
    dashes, a repeated one numbered."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, count = slug, 0
        while candidate in found:
            count += 1
            candidate = f"{slug}-{count}"
        found.add(candidate)
    return found


def test_the_anchor_rule_is_githubs() -> None:
    text = "# Tasks (`invoke --list`)\n## matrix.yaml reference\n## CI (`.ci/run`)\n## Ports\n## Ports\n"
    assert anchors(text) == {"tasks-invoke---list", "matrixyaml-reference", "ci-cirun", "ports", "ports-1"}


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_every_relative_link_and_anchor_leads_somewhere(path: Path) -> None:
    broken = []
    for target in LINK.findall(prose(text_of(path))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        destination = (path.parent / file).resolve() if file else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(text_of(destination)):
            broken.append(f"{target}: no heading gives #{anchor}")
    assert broken == [], f"{name(path)}: {broken}"


def test_every_document_is_linked_from_the_readme() -> None:
    readme = text_of(REPO_ROOT / "README.md")
    missing = [name(path) for path in DOCUMENTS[1:] if f"]({name(path)})" not in readme]
    assert missing == []


# ---- example names -----------------------------------------------------------------------------


def shipped_names() -> tuple[set[str], set[str], set[str]]:
    """(target ids, bake names, image references) the shipped matrix gives, for any release."""
    ids, bakes, images = set(), set(), set()
    for target in expand(shipped.SHIPPED):
        ids.add(target.id)
        bakes.add(bake_name(target.id))
        images.add(target.image)
    return ids, bakes, images


def test_example_target_job_and_image_names_follow_the_shipped_matrix() -> None:
    """What a user met: the docs' job and target examples said `cuda-12_9` / `cuda-12.9`, which the
    matrix no longer had. Every target id, job or artifact name, base tag and image of the shipped
    namespace in the docs is one the shipped matrix gives (a release may differ: examples show a
    newer one)."""
    ids, bakes, images = shipped_names()
    any_release = {re.sub(r"b\d+$", "b0", i) for i in ids} | {re.sub(r"_b\d+$", "_b0", b) for b in bakes}
    flavors = "|".join(re.escape(f) for f in shipped.SHIPPED.flavors)
    upstreams = set(shipped.SHIPPED.upstreams)
    wrong = []
    for path in DOCUMENTS:
        text = text_of(path)
        for found in re.findall(rf"\b(?:{flavors})/[a-z0-9.-]+/b\d+\b", text):
            if re.sub(r"b\d+$", "b0", found) not in any_release:
                wrong.append(f"{name(path)}: target {found}")
        for upstream in re.findall(rf"\b(?:{flavors})/([a-z0-9.-]+)/[*\w]", text) + re.findall(
            r"\bbase/([a-z0-9][a-z0-9.-]*)", text
        ):
            if upstream not in upstreams:
                wrong.append(f"{name(path)}: upstream {upstream}")
        for found in re.findall(rf"\b(?:{flavors})_[a-z0-9_-]+?_b\d+", text):
            if re.sub(r"_b\d+$", "_b0", found) not in any_release:
                wrong.append(f"{name(path)}: job or bake name {found}")
        for upstream in re.findall(r"base-image:([a-z0-9][a-z0-9.-]*)", text):
            if upstream not in upstreams:
                wrong.append(f"{name(path)}: base tag {upstream}")
        namespace = re.escape(f"{shipped.SHIPPED.images.registry}/{shipped.NAMESPACE}/")
        for found in re.findall(rf"{namespace}[a-z0-9-]+:[\w.-]+", text):
            if found not in images:
                wrong.append(f"{name(path)}: image {found}")
    assert wrong == []


def test_the_publishing_examples_are_the_names_a_run_of_the_newest_release_gives() -> None:
    cuda = shipped.target("cuda", release="b9300")
    job = f"{bake_name(cuda.id)}-{arch(cuda.platforms[0])}"
    text = text_of(REPO_ROOT / "docs" / "publishing.md")
    assert f"job `build {job}`" in text and f"artifact `digests-{job}`" in text and f"target `{cuda.id}`" in text
    cpu = next(t for t in expand(shipped.SHIPPED) if isinstance(t, ImageTarget) and t.flavor.name == "cpu")
    assert f"`{cpu.image}`" in text_of(REPO_ROOT / "README.md")
