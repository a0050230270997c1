"""The "download all logs" archive: one zip of the boot log (with the packages step), provisioning, every
program's log (rotated copies included) and the status lines, with every secret the container
knows masked, as everywhere else.

Stdlib only.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from llama_runtime import paths
from llama_runtime.secrets import MASK, mask, secrets_in, url_secrets

__all__ = ["MASK", "archive_chunks", "mask", "members", "secrets_in", "url_secrets"]

CHUNK = 64 * 1024


def members(log_dir: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) for each log: boot.log, provisioning.log and Supervisor's
    program logs, with their rotated copies (.1)."""
    found = [
        (path.name, path)
        for log in (paths.BOOT_LOG, paths.PROVISIONING_LOG)
        for path in sorted(log_dir.glob(f"{log}*"))
    ]
    programs = log_dir / paths.PROGRAM_LOGS
    found += [(f"{paths.PROGRAM_LOGS}/{path.name}", path) for path in sorted(programs.glob("*.log*"))]
    return [(name, path) for name, path in found if path.is_file()]


def write_zip(
    target: IO[bytes], files: Iterable[tuple[str, Path]], texts: Mapping[str, str], secrets: list[str]
) -> None:
    """The archive: each file and each extra text, masked, under logs/."""
    stamp = time.gmtime()[:6]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            try:
                text = path.read_bytes().decode(errors="replace")
            except OSError as exc:
                text = f"(could not be read: {exc.strerror})\n"
            archive.writestr(zipfile.ZipInfo(f"logs/{name}", stamp), mask(text, secrets), zipfile.ZIP_DEFLATED)
        for name, text in texts.items():
            archive.writestr(zipfile.ZipInfo(f"logs/{name}", stamp), mask(text, secrets), zipfile.ZIP_DEFLATED)


def archive_chunks(files: Iterable[tuple[str, Path]], texts: Mapping[str, str], secrets: list[str]) -> Iterator[bytes]:
    """The zip, built in a temporary file (program logs reach tens of MB), then read back in chunks."""
    with tempfile.TemporaryFile() as spool:
        write_zip(spool, files, texts, secrets)
        spool.seek(0)
        while chunk := spool.read(CHUNK):
            yield chunk
