"""aria2, the downloader of the launcher and of `llama-serving fetch`, as pure functions: the
input file it reads on stdin (URIs, per-download options, headers that may hold a token), its
arguments, its control file's pieces done, and its progress and errors read back. No I/O.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .status import Download

INCOMPLETE = ".incomplete"  # a download in progress; aria2 keeps its state beside it (.aria2)
MIB = 1 << 20

# What aria2c's exit statuses mean, in the words a user reads after "download failed: ".
EXIT_MEANINGS = {
    2: "timed out",
    3: "not found",
    6: "network problem",
    8: "the server cannot resume the download",
    9: "not enough disk space",
    19: "the host name does not resolve",
    22: "unexpected HTTP answer",
    24: "authorization failed",
}


@dataclass(frozen=True)
class Transfer:
    """One file for aria2: from `uri` to `directory/out`, checked against `sha256` when known."""

    uri: str
    directory: str
    out: str
    size: int
    shown: str  # the file's name in progress lines
    sha256: str | None = None
    headers: tuple[str, ...] = ()  # may hold a token: only ever in aria2's input, never its arguments
    connections: int = 16

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.out}"

    @property
    def chunk(self) -> int:
        """Bytes each ranged request asks for: enough requests to keep every connection busy and
        the pieces in flight a small window behind which the sha256 follows, few enough that a
        request's round trip is a small share of it (1-32 MiB)."""
        return min(max(self.size // (4 * self.connections), MIB), 32 * MIB) if self.size > 0 else MIB


def input_text(transfers: Sequence[Transfer]) -> str:
    """aria2's input file (read from its stdin): URIs and per-download options, secrets included."""
    lines = []
    for transfer in transfers:
        for text in (transfer.uri, transfer.directory, transfer.out, *transfer.headers):
            if "\n" in text or "\r" in text:
                raise ValueError("a download option holds a line break")
        lines.append(transfer.uri)
        options = {
            "dir": transfer.directory,
            "out": transfer.out,
            "split": str(transfer.connections),
            "max-connection-per-server": str(transfer.connections),
            "min-split-size": str(transfer.chunk),
        }
        lines += [f"  {key}={value}" for key, value in options.items()]
        lines += [f"  header={header}" for header in transfer.headers]
    return "\n".join(lines) + "\n"


OPTIONS = (
    "--input-file=-",
    "--no-conf=true",
    "--continue=true",  # with the control file (.aria2) beside it: resume where it stopped
    "--always-resume=false",  # a server that cannot resume: start that file again
    "--max-resume-failure-tries=0",
    "--allow-overwrite=false",
    "--auto-file-renaming=false",
    "--file-allocation=none",
    "--auto-save-interval=2",  # the control file, so a killed download resumes
    # Pieces in file order, so the sha256 follows the download (completed_prefix) instead of
    # reading the whole file again after it.
    "--stream-piece-selector=inorder",
    "--disk-cache=0",  # what the control file records as done is in the file already
    "--max-tries=5",
    "--retry-wait=2",
    "--connect-timeout=30",
    "--timeout=60",
    "--summary-interval=1",  # progress, read back by Progress
    "--show-console-readout=false",
    "--human-readable=false",
    "--download-result=hide",
    "--console-log-level=error",
    "--enable-color=false",
)


def command(transfers: Sequence[Transfer], parent_pid: int) -> list[str]:
    """aria2c's arguments: no URI, header or checksum (those come on stdin)."""
    return ["aria2c", *OPTIONS, f"--max-concurrent-downloads={max(len(transfers), 1)}",
            f"--stop-with-process={parent_pid}"]  # fmt: skip


def completed_prefix(control: bytes) -> int | None:
    """How many bytes from the start of a file aria2's control file (`<file>.aria2`, written every
    --auto-save-interval) records as done: the pieces before the first missing one. None if it
    cannot be read (cut short, another format)."""
    try:
        version = struct.unpack_from(">H", control, 0)[0]
        order = ">" if version == 1 else "<" if version == 0 else ""
        if not order:
            return None
        info_hash_length = struct.unpack_from(order + "I", control, 6)[0]
        offset = 10 + info_hash_length
        piece, total, _, bitfield_length = struct.unpack_from(order + "IQQI", control, offset)
        bitfield = control[offset + 24 : offset + 24 + bitfield_length]
    except struct.error:
        return None
    if len(bitfield) != bitfield_length or piece <= 0:
        return None
    done = 0
    for byte in bitfield:
        if byte != 0xFF:
            done += 8 - (byte ^ 0xFF).bit_length()  # the leading ones: the pieces before a gap
            break
        done += 8
    return min(done * int(piece), int(total))


# "[#2089b0 400000000B/1200000000B(33%) CN:16 DL:115000000B ETA:7s]" then "FILE: /path"
SUMMARY_ENTRY = re.compile(
    r"\[#(?P<gid>[0-9a-f]+) (?P<done>\d+)B/(?P<total>\d+)B(?:\(\d+%\))?(?: CN:\d+)?(?: DL:(?P<rate>\d+)B)?"
)
ERROR_CODE = re.compile(r"errorCode=(\d+)\s+(.*)")


@dataclass
class Progress:
    """What aria2 said about each file (by path): bytes done, and bytes per second now."""

    done: dict[str, int] = field(default_factory=dict)
    rate: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _pending: tuple[int, int] | None = None

    def read(self, line: str) -> None:
        line = line.strip()
        entry = SUMMARY_ENTRY.match(line)
        if entry:
            self._pending = (int(entry.group("done")), int(entry.group("rate") or 0))
            return
        if line.startswith("FILE: ") and self._pending is not None:
            path = line.removeprefix("FILE: ")
            self.done[path], self.rate[path] = self._pending
            self._pending = None
            return
        if "[ERROR]" in line or "errorCode=" in line or line.startswith("Exception:"):
            self.errors.append(line)
            del self.errors[:-20]

    def cause(self) -> str:
        """The most telling error aria2 printed: its last `errorCode=N message`, else its last error."""
        for line in reversed(self.errors):
            found = ERROR_CODE.search(line)
            if found:
                return found.group(2).strip()
        if self.errors:
            return re.sub(r"^\S+ \S+ \[ERROR\]\s*", "", self.errors[-1])
        return ""


def human_rate(per_second: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if per_second >= scale:
            return (
                f"{per_second / scale:.0f} {unit}" if per_second >= 10 * scale else f"{per_second / scale:.1f} {unit}"
            )
    return f"{per_second:.0f} B/s"


def progress(transfers: Sequence[Transfer], done: Mapping[str, int], rate: float) -> Download:
    """The first file's name (and how many more), the share of all bytes done, the speed: what
    the status record says while aria2 downloads (its line: `downloading <file> 42% (310 MB/s)`)."""
    total = sum(max(t.size, 0) for t in transfers)
    got = sum(min(done.get(t.path, 0), max(t.size, 0)) for t in transfers)
    percent = int(100 * got / total) if total > 0 else 0
    name = transfers[0].shown if transfers else "model"
    if len(transfers) > 1:
        name += f" and {len(transfers) - 1} more"
    return Download(name, min(percent, 100), human_rate(rate))
