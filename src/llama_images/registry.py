"""Asking a registry whether a tag is already published (I/O edge)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from .targets import BaseTarget, ImageTarget, Target


def tag_exists(image: str) -> bool:
    result = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", image], check=False, capture_output=True, timeout=120
    )
    return result.returncode == 0


def unpublished(targets: Sequence[Target], exists: Callable[[str], bool] = tag_exists) -> tuple[Target, ...]:
    """The image targets whose tag the registry lacks, with the bases they need.

    Bases are always rebuilt with what needs them (they are cheap from cache) and never alone.
    """
    images = [t for t in targets if isinstance(t, ImageTarget) and not exists(t.image)]
    needed_bases = {t.base.id for t in images}
    return tuple(t for t in targets if (isinstance(t, BaseTarget) and t.id in needed_bases) or t in images)
