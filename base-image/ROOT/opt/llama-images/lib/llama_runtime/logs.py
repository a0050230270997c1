"""Log files: each program logs to `portal/<program>.log` in the log directory (the reference
image's layout: what the portal tails, progress bars and colours as written). `follow` copies
every new line, progress bars collapsed to their last state and terminal escapes removed, to the
container's stdout (`docker logs`) and to the program's clean copy `<program>.log` beside the
`portal/` folder (/var/log/llama.log). A program may also keep a detail log,
`portal/<program>.detail.log`: in the file logs (and the portal's archive) only, never copied to
`docker logs`. Every file here has a size cap: Supervisor rotates the program logs
(`stdout_logfile_maxbytes`), and the clean copies and detail logs are rotated like them, one
older file kept (`RotatingFile`)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from . import paths

# A clean copy that grows past this is moved to `<program>.log.1` (one kept, as Supervisor keeps
# one backup of the log it copies).
CLEAN_COPY_MAX_BYTES = 20 * 1024 * 1024
DETAIL_SUFFIX = ".detail.log"
# CSI sequences (colours, cursor moves, erase) and two-character escapes.
TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def log_dir() -> Path:
    return Path(os.environ.get(paths.LOG_DIR_VARIABLE, paths.SYSTEM_LOG_DIR))


def program_log(program: str, directory: Path | None = None) -> Path:
    """The file Supervisor writes program `program`'s output to."""
    return (directory or log_dir()) / paths.PROGRAM_LOGS / f"{program}.log"


def detail_log(program: str, directory: Path | None = None) -> Path:
    """Where program `program` keeps the detail that `docker logs` does not get."""
    return (directory or log_dir()) / paths.PROGRAM_LOGS / f"{program}{DETAIL_SUFFIX}"


def clean_copy(path: Path) -> Path:
    """`<dir>/portal/llama.log` -> `<dir>/llama.log`."""
    return path.parent.parent / path.name


def followed_files(directory: Path) -> list[Path]:
    """The program logs copied to `docker logs`: each program's, not its detail log."""
    return sorted(p for p in (directory / paths.PROGRAM_LOGS).glob("*.log") if not p.name.endswith(DETAIL_SUFFIX))


def boot_offsets(path: Path = paths.LOG_OFFSETS_FILE) -> dict[Path, int]:
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


def clean_line(line: str) -> str:
    """A line as a terminal would leave it, without colours: what the clean copy holds."""
    return TERMINAL_ESCAPE.sub("", render_progress(line))


@dataclass
class Follower:
    """Where each followed file was read up to; `start` gives the offsets this boot began at
    (earlier lines were copied by an earlier boot)."""

    out: TextIO
    start: dict[Path, int] = field(default_factory=dict)
    offsets: dict[Path, tuple[int, int]] = field(default_factory=dict)  # path -> (inode, offset)
    unwritable: set[Path] = field(default_factory=set)

    def copy_new_lines(self, paths: Iterable[Path]) -> None:
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            if path not in self.offsets:
                self.append_clean(clean_copy(path), [])  # the copy exists as soon as the log does
            inode, offset = self.offsets.get(path, (stat.st_ino, self.start.get(path, 0)))
            if inode != stat.st_ino or stat.st_size < offset:
                inode, offset = stat.st_ino, 0  # rotated or truncated
            if stat.st_size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
                complete = data.rfind(b"\n") + 1
                if complete:
                    # Split on newlines only: a carriage return is a progress bar's redraw, not a line.
                    text = data[:complete].decode(errors="replace")
                    lines = [clean_line(line) for line in text.split("\n")[:-1]]
                    name = path.stem
                    self.out.write("".join(f"{name} | {line}\n" for line in lines))
                    self.out.flush()
                    self.append_clean(clean_copy(path), lines)
                    offset += complete
            self.offsets[path] = (inode, offset)

    def append_clean(self, path: Path, lines: list[str]) -> None:
        try:
            with path.open("a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in lines))
                size = handle.tell()
            if size > CLEAN_COPY_MAX_BYTES:
                rotate(path)
            self.unwritable.discard(path)
        except OSError as exc:
            if path not in self.unwritable:  # said once, not for every line
                self.unwritable.add(path)
                self.out.write(f"logs | cannot write the clean copy {path}: {exc.strerror}\n")
                self.out.flush()


def rotate(path: Path) -> None:
    """`path` becomes `path.1` (replacing the older one): a new file starts at the next write."""
    path.replace(path.with_name(path.name + ".1"))


class RotatingFile:
    """A log file written line by line that never grows past `max_bytes`: it is then moved to
    `<name>.1` (one older file kept) and started afresh. Lines are buffered; `flush` writes them.
    A file that cannot be written is left alone (`problem` says why, once)."""

    def __init__(self, path: Path, max_bytes: int = CLEAN_COPY_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.handle: BinaryIO | None = None
        self.size = 0
        self.problem = ""

    def write(self, line: str) -> None:
        if self.problem:
            return
        data = (line + "\n").encode(errors="replace")
        try:
            if self.handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.handle = self.path.open("ab")
                self.size = self.handle.seek(0, os.SEEK_END)
            self.handle.write(data)
            self.size += len(data)
            if self.size > self.max_bytes:
                self.close()
                rotate(self.path)
        except OSError as exc:
            self.problem = f"cannot write {self.path}: {exc.strerror or exc}"
            self.close()

    def flush(self) -> None:
        if self.handle is not None:
            try:
                self.handle.flush()
            except OSError as exc:
                self.problem = f"cannot write {self.path}: {exc.strerror or exc}"
                self.close()

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


def follow(
    paths: Iterable[Path] | None = None,
    out: TextIO = sys.stdout,
    poll: float = 0.3,
    start: dict[Path, int] | None = None,
) -> None:
    """Copy each new line of every program's log, prefixed with its name, to `out` and to its
    clean copy, from where it stood when this boot began, forever."""
    follower = Follower(out, boot_offsets() if start is None else start)
    while True:
        follower.copy_new_lines(list(paths) if paths is not None else followed_files(log_dir()))
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
