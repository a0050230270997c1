"""The "download all logs" archive: one zip of the boot log (with the packages step), provisioning, every
program's log (rotated copies included) and the status lines, with every secret the container
knows masked, as everywhere else.

Stdlib only.
"""

from __future__ import annotations

import re
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from llama_runtime import paths

MASK = "***"
# Values of variables named like this are masked wherever they appear (a provisioning script
# may print what it was given); short values would mask ordinary words.
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|APIKEY|CREDENTIAL|PRIVATE", re.I)
MIN_NAMED_SECRET = 8
MIN_SECRET = 3
CHUNK = 64 * 1024


def url_secrets(value: str) -> list[str]:
    """A URL's password and query string (signed URLs carry tokens there)."""
    if not re.match(r"https?://", value.strip(), re.I):
        return []
    parts = urlsplit(value.strip())
    return [part for part in (parts.password, parts.query) if part]


def secrets_in(env: Mapping[str, str], tokens: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """Every secret value the logs must not show: the access tokens, LLAMA_API_KEY's keys,
    variables named like secrets, credentials in URLs the container was given, and `extra`
    (llama's own list: keys and tokens given in LLAMA_ARGS)."""
    found = [*tokens, *extra]
    for name, value in env.items():
        if name == "LLAMA_API_KEY":
            found += [key.strip() for key in value.split(",")]
        elif SECRET_NAME.search(name) and len(value) >= MIN_NAMED_SECRET:
            found.append(value)
        found += url_secrets(value)
    return sorted({s for s in found if len(s) >= MIN_SECRET}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (longest first) replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


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
