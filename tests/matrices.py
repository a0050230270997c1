"""Matrix texts for tests: a small valid one, and ways to break it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_images.core.options import Overrides, Request, Selection
from llama_images.core.plan import Plan, make_plan, select_targets
from llama_images.core.releases import Fetcher, Release
from llama_images.core.targets import Target
from llama_images.edges.files import load_matrix

VALID = """\
images:
  registry: docker.io
  namespace: example
  repository: llama-cpp
  base_repository: base-image
default_targets:
  - cpu/*
release_source:
  github_repository: ai-dock/llama.cpp-cuda
  download_url: https://github.com/ai-dock/llama.cpp-cuda/releases/download
  cuda_architectures: {"12.8": [75-virtual, 80-virtual, 86-virtual, 90-virtual], 13.0: [75-virtual, 120a-real]}
upstreams:
  cuda-12.9:
    image: nvidia/cuda:12.9.1-runtime-ubuntu24.04
    cuda: "12.9"
    platforms: [linux/amd64, linux/arm64]
  cuda-13.1:
    image: nvidia/cuda:13.1.0-runtime-ubuntu24.04
    cuda: 13.1
    platforms: [linux/amd64]
  debian-forky:
    image: debian:forky-slim
    platforms: [linux/amd64, linux/arm64]
flavors:
  cuda:
    source: release-tarball
    upstreams: [cuda-12.9, cuda-13.1]
    releases: [b9159, b9000]
    binary_cuda:
      cuda-12.9: "12.8"
      cuda-13.1: "13.0"
    tag: "{release}-cuda-{cuda}"
  cpu:
    source: debian-package
    upstreams: [debian-forky]
    releases: [b11669]
    tag: "{release}-cpu"
"""


def broken(old: str, new: str) -> str:
    """VALID with one exact piece of text replaced (it must be there)."""
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def request_for(path: Path, filters: Sequence[str] = (), overrides: Overrides | None = None, **kwargs: Any) -> Request:
    """A checked task request for a matrix file, as the tasks make one."""
    return Request(path.parent, Selection(path, tuple(filters), overrides or Overrides()), **kwargs)


def planned(request: Request, fetch: Fetcher) -> Plan:
    """The plan of a request, its matrix read from its file as the tasks read it."""
    return make_plan(load_matrix(request.selection.matrix_file), request, fetch)


def selected(selection: Selection) -> tuple[Target, ...]:
    """The targets a selection selects, its matrix read from its file as the tasks read it."""
    return select_targets(load_matrix(selection.matrix_file), selection)[1]


def no_fetch(repository: str, tag: str) -> Release:
    raise AssertionError(f"looked up {repository} {tag}, but this plan needs no release lookup")
