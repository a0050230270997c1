"""The runtime's one private-file writer (llama_runtime/files.py), which the token, the session
secret, the proxy's config and llama's models preset are written with."""

from __future__ import annotations

import stat
from pathlib import Path

from llama_runtime import files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_stale_world_readable_temporary_does_not_leak_its_mode_into_the_secret(tmp_path: Path) -> None:
    """What a user met: the runtime's writer reopened a temporary left by an interrupted write
    (O_TRUNC keeps a file's mode), so the token could end up 0644."""
    secret = tmp_path / "secrets" / "token"
    stale = tmp_path / "secrets" / ".token.tmp"
    stale.parent.mkdir()
    stale.write_text("left by an earlier run", encoding="utf-8")
    stale.chmod(0o644)
    files.write_private(secret, "the-secret")
    assert mode(secret) == 0o600 and secret.read_text(encoding="utf-8") == "the-secret"
    assert not stale.exists()


def test_a_link_planted_as_the_temporary_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("someone else's file", encoding="utf-8")
    (tmp_path / ".token.tmp").symlink_to(elsewhere)
    files.write_private(tmp_path / "token", "the-secret")
    assert elsewhere.read_text(encoding="utf-8") == "someone else's file"
    assert mode(tmp_path / "token") == 0o600 and not (tmp_path / "token").is_symlink()


def test_a_directory_it_creates_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    files.write_private(tmp_path / "new" / "secret", "x")
    assert mode(tmp_path / "new") == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    files.write_private(shared / "secret", "x")
    assert mode(shared) == 0o755


def test_a_file_replaced_keeps_no_earlier_mode(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("old", encoding="utf-8")
    secret.chmod(0o644)
    files.write_private(secret, "new")
    assert mode(secret) == 0o600 and secret.read_text(encoding="utf-8") == "new"
