"""What the download phase's modules share (download.py runs it, caches.py finds models on the
volume, fetch.py serves the provisioner): its settings, how it talks to its program, what it
found, and its error. Types only, so that each of them imports this and none imports another back.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .status import Download


class DownloadError(Exception):
    """A download that failed: one line with the cause (no secret in it)."""


@dataclass
class Ui:
    """How the phase talks to its program: status and log lines, a stop, the running aria2."""

    status: Callable[[str | Download], None]  # a line, or a download's progress (status.py)
    log: Callable[[str], None]
    stopping: threading.Event
    register: Callable[[subprocess.Popen[bytes] | None], None]
    log_seconds: float = 5.0


@dataclass(frozen=True)
class Settings:
    cache: str
    endpoint: str  # the hub, with a trailing slash
    token: str | None
    connections: int
    stall_timeout: float
    other_caches: tuple[str, ...]
    offline: bool = False  # --offline in LLAMA_ARGS: the cache only
    mmproj: bool = True  # --no-mmproj in LLAMA_ARGS: not the projector
    hf_file: str | None = None  # --hf-file in LLAMA_ARGS


@dataclass
class Prepared:
    """What the phase found: the file each hub repo serves, and whether the hub was unreachable."""

    hf_files: dict[str, str] = field(default_factory=dict)  # LLAMA_MODEL entry -> repo path
    offline: bool = False
