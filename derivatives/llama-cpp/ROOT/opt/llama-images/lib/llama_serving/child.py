"""One child process, supervised alike for aria2 (the download phase, download.py) and for
llama-server (watch.py): started with its environment and a parent-death signal, its output copied
to a sink line by line as it comes, looked at twice a second until it ends, a stall (no progress
for N seconds) or a stop ending it gently (SIGTERM) then firmly (SIGKILL).

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import pty
import shutil
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

LOOK_SECONDS = 0.5  # how often a running child is looked at
READ_BYTES = 65536


def die_with_parent() -> list[str]:
    """A prefix that makes a child end when this program dies without stopping it (SIGKILL):
    util-linux's setpriv sets the parent-death signal, then runs it in the same process."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def open_terminal() -> tuple[int, int]:
    """(read end, write end) for a child's output: a pseudo-terminal, because llama-server draws
    download progress only on a terminal; a pipe where no terminal can be had, or set up (an arm64
    image under qemu's emulation answers the terminal's settings with ENOSYS)."""
    try:
        reader, writer = pty.openpty()
    except OSError:
        return os.pipe()
    try:
        attributes = termios.tcgetattr(writer)
        attributes[1] &= ~termios.OPOST  # no "\n" -> "\r\n"
        termios.tcsetattr(writer, termios.TCSANOW, attributes)
    except termios.error:
        os.close(reader)
        os.close(writer)
        return os.pipe()
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    return reader, writer


def split_lines(text: str) -> tuple[list[str], str]:
    """(the whole lines of `text`, the unfinished rest)."""
    *lines, rest = text.split("\n")
    return lines, rest


def nothing() -> None:
    pass


class Stall:
    """When a child last made progress: it has stalled after more than `seconds` without any."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def moved(self) -> None:
        with self.lock:
            self.last = time.monotonic()

    def stalled(self) -> bool:
        with self.lock:
            return time.monotonic() - self.last > self.seconds


class Child:
    """A started child and the thread that copies its output."""

    def __init__(self, process: subprocess.Popen[bytes], copier: threading.Thread) -> None:
        self.process = process
        self.copier = copier

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        take: Callable[[str], None],
        *,
        read: Callable[[], None] = nothing,
        ended: Callable[[], None] = nothing,
        split: Callable[[str], tuple[list[str], str]] = split_lines,
        terminal: bool = False,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        account: Mapping[str, Any] | None = None,
    ) -> Child:
        """The command started (OSError if it cannot be), its output and errors handed to `take`
        one line (`split`'s segment) at a time, `read` after each read, `ended` after the last.
        `terminal`: on a pseudo-terminal; `stdin`: a pipe for `send`; `account`: Popen's user,
        group and extra_groups."""
        reader, writer = open_terminal() if terminal else os.pipe()
        try:
            process = subprocess.Popen(
                [*die_with_parent(), *command],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=writer,
                stderr=writer,
                env=env,
                cwd=cwd,
                **(account or {}),
            )
        except OSError:
            os.close(reader)
            os.close(writer)
            raise
        os.close(writer)
        copier = threading.Thread(target=copy, args=(reader, take, read, ended, split), daemon=True)
        copier.start()
        return cls(process, copier)

    def send(self, text: str) -> None:
        """`text` on the child's stdin, which is then closed (a child that ended early: nothing)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.close()
        except OSError:
            pass

    def supervise(
        self,
        stopping: threading.Event,
        look: Callable[[], str],
        *,
        stop_grace: Callable[[], float],
        stall_grace: float,
        interval: Callable[[], float] = lambda: LOOK_SECONDS,
    ) -> str:
        """Until the child ends, `look` every `interval` seconds; a stop ends it with `stop_grace()`
        seconds to go, a stall `look` reports (its cause; "" while it moves) with `stall_grace`.
        The stall's cause, "" when there was none."""
        while True:
            try:
                self.process.wait(timeout=interval())
                return ""
            except subprocess.TimeoutExpired:
                pass
            if stopping.is_set():
                self.end(stop_grace())
                return ""
            stalled = look()
            if stalled:
                self.end(stall_grace)
                return stalled

    def end(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (at once when `grace` is not positive)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()

    def finish(self, seconds: float = 5.0) -> int:
        """The ended child's exit status (negative: the signal), its output copied (`seconds` at most)."""
        code = self.process.wait()
        self.copier.join(timeout=seconds)
        return code


def copy(
    reader: int,
    take: Callable[[str], None],
    read: Callable[[], None],
    ended: Callable[[], None],
    split: Callable[[str], tuple[list[str], str]],
) -> None:
    """A child's output, as it comes, to `take`: the copier thread's work."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        try:
            chunk = os.read(reader, READ_BYTES)
        except OSError:  # EIO: every writer has closed the terminal
            chunk = b""
        if not chunk:
            break
        segments, pending = split(pending + decoder.decode(chunk))
        for segment in segments:
            take(segment)
        read()
    pending += decoder.decode(b"", final=True)
    if pending:
        take(pending)
    ended()
    os.close(reader)
