"""Log files: copy them to the container's stdout as they grow (`docker logs`), and read their
tail for the portal with carriage-return progress bars collapsed to their last state."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO


def log_dir() -> Path:
    return Path(os.environ.get("LLAMA_IMAGES_LOG_DIR", "/var/log"))


def followed_files(directory: Path) -> list[Path]:
    return [*sorted((directory / "supervisor").glob("*.log")), directory / "provisioning.log"]


def boot_offsets(path: Path = Path("/run/llama-images/boot/log-offsets")) -> dict[Path, int]:
    """Sizes of the log files when boot started Supervisor (written by boot.sh)."""
    found = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            size, _, name = line.partition("\t")
            if size.isdigit() and name:
                found[Path(name)] = int(size)
    except OSError:
        pass
    return found


def follow(
    paths: Iterable[Path] | None = None,
    out: TextIO = sys.stdout,
    poll: float = 0.3,
    start: dict[Path, int] | None = None,
) -> None:
    """Print each new line of every file, prefixed with its name, from where it stood when
    this boot began (`start`; earlier lines were shown by an earlier boot), forever."""
    starts = boot_offsets() if start is None else start
    offsets: dict[Path, tuple[int, int]] = {}  # path -> (inode, offset)
    while True:
        current = list(paths) if paths is not None else followed_files(log_dir())
        for path in current:
            try:
                stat = path.stat()
            except OSError:
                continue
            inode, offset = offsets.get(path, (stat.st_ino, starts.get(path, 0)))
            if inode != stat.st_ino or stat.st_size < offset:
                inode, offset = stat.st_ino, 0  # rotated or truncated
            if stat.st_size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
                complete = data.rfind(b"\n") + 1
                if complete:
                    name = path.stem
                    for line in data[:complete].decode(errors="replace").splitlines():
                        out.write(f"{name} | {line}\n")
                    out.flush()
                    offset += complete
            offsets[path] = (inode, offset)
        time.sleep(poll)


def render_progress(text: str) -> str:
    r"""What a terminal shows: within a line, a carriage return starts over, so a progress bar
    written as 'a\r b\r c' is its last state 'c', not three lines."""
    lines = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def tail(path: Path, max_bytes: int = 64 * 1024) -> str:
    """The end of a log file as a terminal would show it."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]  # drop the partial first line
    return render_progress(text)
