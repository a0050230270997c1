"""Kilobyte updates: editing a base script (or a derivative's) changes only its overlay layer at
the top of the llama.cpp image; the base packages, Python environments and llama.cpp layers keep their digests.

The edit happens in a copy of the checkout, built with the bake file production renders, so the
checkout itself is never touched. Everything but the edited overlay comes from the build cache.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks.measure import copy_checkout
from llama_images.core.bake import bake_name
from llama_images.edges.buildx import secret_files
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import invoke, namespace_args

pytestmark = pytest.mark.container

TARGET = bake_name(shipped.target("cpu").id)
TAG = "llama-images-test/layers"


def build(checkout: Path, bake: dict[str, Any], tag: str) -> None:
    command = ["docker", "buildx", "bake", "--file", "-", "--load", "--progress", "plain",
               *(f"--allow=fs.read={path}" for path in secret_files(bake)),
               "--set", f"{TARGET}.platform=linux/amd64", "--set", f"{TARGET}.tags={tag}", TARGET]  # fmt: skip
    result = subprocess.run(
        command, input=json.dumps(bake), cwd=checkout, capture_output=True, text=True, check=False, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def layers(tag: str, scratch: Path) -> list[tuple[str, int]]:
    """(digest, size) of each layer as a registry would serve it, bottom first."""
    archive = scratch / f"{tag.replace('/', '_').replace(':', '_')}.tar"
    subprocess.run(["docker", "save", "--platform", "linux/amd64", "-o", str(archive), tag], check=True)
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> Any:
            handle = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert handle is not None
            return json.load(handle)

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = blob(index["manifests"][0]["digest"])
        while "manifests" in manifest:  # an index: take the amd64 image
            entry = next(m for m in manifest["manifests"] if m.get("platform", {}).get("architecture") == "amd64")
            manifest = blob(entry["digest"])
    return [(layer["digest"], layer["size"]) for layer in manifest["layers"]]


def test_editing_a_script_changes_only_its_overlay_layer(main_build: Any, tmp_path: Path) -> None:
    rendered = invoke("bake", "--print", *namespace_args(), timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    bake = json.loads(rendered.stdout)
    checkout = copy_checkout(REPO_ROOT, tmp_path / "checkout")
    tags = [f"{TAG}:{name}" for name in ("before", "base-edit", "derivative-edit")]
    edits = (None, "base-image/ROOT/opt/boot/boot.sh", "derivatives/llama-cpp/ROOT/etc/supervisor/conf.d/llama.conf")
    try:
        for tag, edited in zip(tags, edits, strict=True):
            if edited:
                with (checkout / edited).open("a", encoding="utf-8") as script:
                    script.write("# an edit that must not re-pull llama.cpp\n")
            build(checkout, bake, tag)
        before, base_edit, derivative_edit = (layers(tag, tmp_path) for tag in tags)
    finally:
        subprocess.run(["docker", "image", "rm", "-f", *tags], capture_output=True, check=False)
    top = len(before) - 1
    # The base overlay is second from the top, the derivative's overlay the top layer.
    by_base = changed_layers(before, base_edit)
    assert [index for index, _ in by_base] == [top - 1], (before, base_edit)
    by_derivative = changed_layers(base_edit, derivative_edit)
    assert [index for index, _ in by_derivative] == [top], (base_edit, derivative_edit)
    assert sum(size for _, size in by_base + by_derivative) < 1_000_000
    print(f"layers: {len(before)}, changed by a base edit: {by_base}, by a derivative edit: {by_derivative}")


def changed_layers(old: list[tuple[str, int]], new: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """(index, size) of each layer whose digest differs."""
    assert len(old) == len(new)
    return [(index, size) for index, ((a, _), (b, size)) in enumerate(zip(old, new, strict=True)) if a != b]
