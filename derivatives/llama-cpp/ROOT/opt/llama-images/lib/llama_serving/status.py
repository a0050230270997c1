"""What the llama launcher says about llama-server: one typed record, its one owner.

The launcher (service.py `set_status`) writes it; the portal's part (portal_part.py) and the
serverless worker (llama_worker) read it. Written twice by `write`: the line people read
(STATUS_FILE: the proxy's 503, the health check, the portal's services list) and the same
status as a record for programs (STATUS_RECORD_FILE, JSON). Nobody parses the line.

Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_runtime.files import write_atomically

from .paths import STATUS_FILE, STATUS_RECORD_FILE

# What the launcher can say, in the order a start goes through them; "" while it has said nothing.
STATES = ("starting", "downloading", "loading", "serving", "retrying", "failed", "stopped", "no-model")
# States after which llama-server will not serve without someone's help.
GIVEN_UP = frozenset({"failed", "no-model"})
LINE_LIMIT = 300


@dataclass(frozen=True)
class Download:
    """A download under way: the file (and how many more), its share done, how fast."""

    file: str
    percent: int
    rate: str = ""  # "310 MB/s"; "" when unknown

    @property
    def line(self) -> str:
        return f"downloading {self.file} {self.percent}%" + (f" ({self.rate})" if self.rate else "")

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "percent": self.percent, "rate": self.rate}


@dataclass(frozen=True)
class Status:
    state: str  # one of STATES; "" unknown (nothing written yet, or a record that is not one)
    detail: str  # the line people read, the CPU-fallback warning included
    updated: float = 0.0  # time.time() when written
    download: Download | None = None  # while state is "downloading" and the launcher knows how far

    @property
    def serving(self) -> bool:
        return self.state == "serving"

    @property
    def given_up(self) -> bool:
        return self.state in GIVEN_UP

    def to_json(self) -> dict[str, Any]:
        download = self.download.to_json() if self.download else None
        return {"state": self.state, "detail": self.detail, "updated": self.updated, "download": download}


def state_of(line: str) -> str:
    """The state one of the launcher's own lines (before any warning) says: the launcher names
    its lines' states here, where it words them (service.py, watch.py, download.py)."""
    prefixes = (
        ("failed: ", "failed"),
        ("serving", "serving"),
        ("loading", "loading"),
        ("downloading", "downloading"),
        ("checking", "downloading"),
        ("retrying", "retrying"),
        ("stopped", "stopped"),
        ("no model configured", "no-model"),
    )
    return next((state for prefix, state in prefixes if line.startswith(prefix)), "starting")


def shown_line(warning: str, line: str) -> str:
    """A status line with the CPU-fallback warning: in front, except that a failure still starts
    with "failed:" (the health check tells a failure by that start)."""
    if line.startswith("failed: "):
        return f"failed: {warning}{line.removeprefix('failed: ')}"
    return f"{warning}{line}"


def status(said: str | Download, warning: str = "", now: float | None = None) -> Status:
    """The record of what the launcher says: a line of its own, or a download's progress."""
    line = said.line if isinstance(said, Download) else said
    state = "downloading" if isinstance(said, Download) else state_of(line)
    detail = shown_line(warning, line).replace("\n", " ")[:LINE_LIMIT]
    download = said if isinstance(said, Download) else None
    return Status(state, detail, time.time() if now is None else now, download)


def write(record: Status, line_file: Path = STATUS_FILE, record_file: Path = STATUS_RECORD_FILE) -> None:
    """The line, then the record; a file that cannot be written is left as it was."""
    with contextlib.suppress(OSError):
        write_atomically(line_file, record.detail + "\n")
    with contextlib.suppress(OSError):
        write_atomically(record_file, json.dumps(record.to_json()) + "\n")


def parse(text: str) -> Status:
    try:
        data = json.loads(text)
    except ValueError:
        return Status("", "the launcher's status record is not JSON")
    if not isinstance(data, dict):
        return Status("", "the launcher's status record is not an object")
    state = data.get("state")
    download = data.get("download")
    progress = None
    if isinstance(download, dict) and isinstance(download.get("percent"), int):
        progress = Download(str(download.get("file") or ""), int(download["percent"]), str(download.get("rate") or ""))
    updated = data.get("updated")
    return Status(
        state if state in STATES else "",
        str(data.get("detail") or ""),
        float(updated) if isinstance(updated, (int, float)) else 0.0,
        progress,
    )


def read(path: Path = STATUS_RECORD_FILE) -> Status:
    """The launcher's status now; state "" while it has written none."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError:
        return Status("", "the launcher has not reported yet")


def read_line(path: Path = STATUS_FILE) -> str | None:
    """The line people read (the boot step writes the first one, before any record)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
