"""Files the tasks read and write (I/O edge): the matrix file, and the files an option names."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import MatrixError, Problem, UsageError
from ..core.matrix import Matrix, matrix_from_bytes


def load_matrix(path: Path | str) -> Matrix:
    """Read and validate a matrix file. Any bytes give a Matrix or a MatrixError, never a crash."""
    path = Path(path)
    display = display_name(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MatrixError(
            [Problem(display, 1, "", f"cannot read the file: {exc.strerror}", "pass an existing matrix file")]
        ) from None
    return matrix_from_bytes(data, display)


def display_name(path: Path) -> str:
    """The path as problems name it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def writable_file(flag: str, path: Path) -> Path:
    """Checked before anything runs: an --output whose folder is missing fails first."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name a file")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{flag} {path}: folder {path.parent} is not writable")
    return path


def write_file(flag: str, path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write it ({exc.strerror})") from None
