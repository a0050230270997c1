"""Which phases succeeded, and with which inputs: one `<phase>.hash` file per phase in the state
directory (/.provisioner_state, or PROVISIONER_STATE_DIR). `--force` empties it, but only a
directory the provisioner made itself (it leaves a marker in the ones it creates): pointed at any
other directory by mistake, it refuses rather than delete what it did not write.

I/O edge. Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from llama_runtime import paths

MARKER = ".provisioner-state-dir"
# Never a state directory: what --force would then delete.
SYSTEM_DIRECTORIES = frozenset(
    {
        "/",
        "/etc",
        "/usr",
        "/var",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/opt",
        "/root",
        "/home",
        "/boot",
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/tmp",
        "/workspace",
    }
)


def state_dir(env: Mapping[str, str]) -> tuple[Path, str | None]:
    """PROVISIONER_STATE_DIR when it is an absolute path other than a system directory, else the
    default; with the reason when the variable was set and not used."""
    raw = env.get("PROVISIONER_STATE_DIR", "").strip()
    if not raw:
        return paths.PROVISIONER_STATE_DIR, None
    path = os.path.normpath(raw)
    if not Path(path).is_absolute():
        return paths.PROVISIONER_STATE_DIR, "PROVISIONER_STATE_DIR is not an absolute path; using the default"
    if path in SYSTEM_DIRECTORIES:
        return paths.PROVISIONER_STATE_DIR, f"PROVISIONER_STATE_DIR={path} is a system directory; using the default"
    return Path(path), None


class State:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def done(self, phase: str, digest: str) -> bool:
        """The phase last succeeded with these inputs (a link planted at its file is not followed)."""
        try:
            descriptor = os.open(self.directory / f"{phase}.hash", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        with os.fdopen(descriptor, encoding="utf-8") as handle:
            return handle.read().strip() == digest

    def record(self, phase: str, digest: str) -> str | None:
        """Remember the phase's success; the reason when it cannot be (it then runs again)."""
        try:
            self.directory.mkdir(mode=0o700, parents=True)
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            return f"{self.directory} cannot be made ({exc.strerror}): phase {phase} runs again next time"
        if created:
            self._plant(MARKER, "provisioner state directory\n")
        error = self._plant(f"{phase}.hash", digest, replace=True)
        return (
            f"{self.directory}/{phase}.hash not written ({error}): phase {phase} runs again next time"
            if error
            else None
        )

    def _plant(self, name: str, text: str, replace: bool = False) -> str | None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if replace else os.O_EXCL)
        try:
            descriptor = os.open(self.directory / name, flags, 0o600)
        except FileExistsError:
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        return None

    def ours(self) -> bool:
        """Made by the provisioner: its marker is a plain file there, or (a directory from before
        the marker) it holds only phase hashes."""
        try:
            if stat.S_ISREG(os.lstat(self.directory / MARKER).st_mode):
                return True
        except OSError:
            pass
        try:
            entries = [entry.name for entry in self.directory.iterdir()]
        except OSError:
            return False
        return bool(entries) and all(e == MARKER or e.endswith(".hash") for e in entries)

    def clear(self) -> bool:
        """Forget every phase (--force); False when the directory is not the provisioner's."""
        if not self.directory.is_dir():
            return True
        if not self.ours():
            return False
        shutil.rmtree(self.directory)
        return True
