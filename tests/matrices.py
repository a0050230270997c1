"""Matrix texts for tests: a small valid one, and ways to break it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_images.options import Selection
from llama_images.plan import Request
from llama_images.releases import Release
from llama_images.targets import Overrides

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


def no_fetch(repository: str, tag: str) -> Release:
    raise AssertionError(f"looked up {repository} {tag}, but this plan needs no release lookup")
