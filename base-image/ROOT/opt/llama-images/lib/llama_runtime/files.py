"""Writing the runtime's files whole: a reader sees the old file or the new one, never a part.

Stdlib only: this runs with the image's own python3 (>= 3.11) and the portal's environment.
"""

from __future__ import annotations

import os
from pathlib import Path


def temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_atomically(path: Path, text: str) -> None:
    """`text` as `path`'s whole content, through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_for(path)
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_private(path: Path, text: str) -> None:
    """Like write_atomically, for a file only its owner may read (0600 from its creation on). A
    temporary left by an earlier run is removed first: reopened, it would keep its mode, possibly
    wider, and a link planted there would be followed. A directory it creates is the owner's only
    (an existing one keeps its mode: /run/llama-images holds status files others read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = temporary_for(path)
    temporary.unlink(missing_ok=True)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    temporary.replace(path)
