"""Settings a user changes on a running machine: /etc/environment, then ${WORKSPACE}/.env, read
each time a program starts (the reference image's habit: `echo 'LLAMA_MODEL=...' >>
/etc/environment && supervisorctl restart llama`).

The files are read as data, never executed: `NAME=value`, `export NAME=value`, values in
double or single quotes (which may span lines), `#` comments. `$HOME`, `$(...)` and backticks
stay as written. The access token's variables are kept apart: only the proxy's render reads
them, no service's environment ever holds them.

Boot's CUDA forward-compatibility decision (paths.CUDA_COMPAT_FILE: the compat library
directory, or nothing) is applied after the files: the directory stays first on
LD_LIBRARY_PATH whatever a file sets (`env >> /etc/environment` writes one), as the shells'
profile script (/etc/profile.d/llama-images-cuda-compat.sh) keeps it for `docker exec` and SSH.

Stdlib only: this runs with the image's own python3 (>= 3.11) and the portal's environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

SYSTEM_FILE = Path("/etc/environment")
WORKSPACE_DEFAULT = "/workspace"
TOKEN_VARIABLES = ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LIBRARY_PATH = "LD_LIBRARY_PATH"


@dataclass(frozen=True)
class Settings:
    values: dict[str, str]  # what the files set, token variables left out
    credentials: dict[str, str]  # token variables the files set
    problems: tuple[str, ...] = field(default=())
    files: tuple[Path, ...] = field(default=())  # the files that were read


def parse(text: str, where: str) -> tuple[dict[str, str], list[str]]:
    """`NAME=value` lines -> values; a line that cannot be read is reported (`where:LINE: ...`,
    never with its value: it may be a secret) and skipped."""
    values: dict[str, str] = {}
    problems: list[str] = []
    position = 0
    while position < len(text):
        end = line_end(text, position)
        line_number = text.count("\n", 0, position) + 1
        raw = text[position:end]
        line = raw.strip()
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        name, equals, _ = line.partition("=")
        if not line or line.startswith("#"):
            position = end + 1
            continue
        if not equals or not NAME.fullmatch(name):
            shown = name if NAME.fullmatch(name) else "this line"
            problems.append(f"{where}:{line_number}: {shown}: expected NAME=value; line skipped")
            position = end + 1
            continue
        value, consumed, problem = read_value(text, position + raw.index("=") + 1)
        rest_end = line_end(text, consumed)
        rest = text[consumed:rest_end].strip()
        if problem is None and rest and not rest.startswith("#"):
            problem = 'a value with spaces must be quoted (NAME="a b")'
        if problem is not None:
            problems.append(f"{where}:{line_number}: {name}: {problem}; line skipped")
        else:
            values[name] = value
        position = rest_end + 1
    return values, problems


def read_value(text: str, start: int) -> tuple[str, int, str | None]:
    """One shell word from `start`: quoted and unquoted parts joined, nothing expanded. Returns
    the value, where it ended, and a problem (an unterminated quote) or None."""
    out: list[str] = []
    i = start
    while i < len(text) and text[i] not in " \t\n":
        char = text[i]
        if char == "'":
            close = text.find("'", i + 1)
            if close < 0:
                return "", line_end(text, start), "a single quote is never closed"
            out.append(text[i + 1 : close])
            i = close + 1
        elif char == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                # Inside double quotes a backslash keeps only $ ` " \ and a newline special.
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
                    if text[i + 1] != "\n":
                        out.append(text[i + 1])
                    i += 2
                    continue
                out.append(text[i])
                i += 1
            if i >= len(text):
                return "", line_end(text, start), "a double quote is never closed"
            i += 1
        elif char == "\\" and i + 1 < len(text):
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out), i, None


def line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def read(env: Mapping[str, str], system_file: Path | None = None) -> Settings:
    """/etc/environment, then ${WORKSPACE:-/workspace}/.env (WORKSPACE as the first file leaves
    it); later values win. A missing file is no problem."""
    values: dict[str, str] = {}
    problems: list[str] = []
    files: list[Path] = []
    for path in (system_file or SYSTEM_FILE, None):
        if path is None:
            workspace = values.get("WORKSPACE") or env.get("WORKSPACE") or WORKSPACE_DEFAULT
            path = Path(workspace) / ".env"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: not readable ({exc.strerror}); its settings are not applied")
            continue
        files.append(path)
        found, found_problems = parse(text, str(path))
        values.update(found)
        problems += found_problems
    credentials = {name: values.pop(name) for name in TOKEN_VARIABLES if name in values}
    return Settings(values, credentials, tuple(problems), tuple(files))


def apply(env: MutableMapping[str, str], settings: Settings) -> list[str]:
    """Put the files' values into `env` (the token variables never), then boot's CUDA
    forward-compatibility decision; the names the files changed."""
    changed = sorted(name for name, value in settings.values.items() if env.get(name) != value)
    env.update(settings.values)
    for name in TOKEN_VARIABLES:
        env.pop(name, None)
    directory = compat_directory()
    if directory:
        env[LIBRARY_PATH] = compat_first(env.get(LIBRARY_PATH, ""), directory)
    return changed


def compat_directory() -> str:
    """The compat library directory boot chose (`llama-runtime cuda-compat`), or "" (none, a
    CPU image, or not decided yet)."""
    try:
        text = paths.CUDA_COMPAT_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return text if text.startswith("/") and not any(c in text for c in ":\n") else ""


def compat_first(library_path: str, directory: str) -> str:
    """`library_path` with `directory` first (and nowhere else)."""
    return ":".join([directory, *(entry for entry in library_path.split(":") if entry and entry != directory)])


def compat_note(settings: Settings) -> str | None:
    """What to log when a settings file's LD_LIBRARY_PATH leaves out the compat libraries."""
    directory = compat_directory()
    value = settings.values.get(LIBRARY_PATH)
    if not directory or value is None or value.split(":")[0] == directory:
        return None
    files = " and ".join(str(f) for f in settings.files)
    return (
        f"{LIBRARY_PATH} from {files} leaves out {directory}, the CUDA forward-compatibility libraries boot chose "
        f"({paths.CUDA_COMPAT_FILE}): they stay first; DISABLE_FORWARD_COMPAT=true (and a restart of the "
        "container) turns them off"
    )


def apply_to_process(tag: str, system_file: Path | None = None) -> Settings:
    """At a program's start: the files' settings into this process's environment (and so into
    whatever it starts), with one log line naming what changed (names only, never values) and
    one per problem."""
    settings = read(os.environ, system_file)
    changed = apply(os.environ, settings)
    for problem in settings.problems:
        print(f"[{tag}] ERROR: {problem}", flush=True)
    if changed:
        files = " and ".join(str(f) for f in settings.files)
        print(f"[{tag}] settings from {files}: {', '.join(changed)}", flush=True)
    note = compat_note(settings)
    if note:
        print(f"[{tag}] WARNING: {note}", flush=True)
    return settings
