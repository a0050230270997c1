"""What the checkout is (I/O edge): its git revision and its repository's web address."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from pathlib import Path


def git_revision(root: Path) -> str:
    """HEAD of the checkout at `root`, with "-dirty" when it has changes (untracked files too)."""
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, check=False, capture_output=True, text=True)
    revision = result.stdout.strip()
    return f"{revision}-dirty" if dirty.stdout.strip() else revision


def source_url(root: Path) -> str | None:
    """The repository's web address: GitHub Actions names it; elsewhere the `origin` remote."""
    if os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{os.environ['GITHUB_REPOSITORY']}"
    result = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=root, check=False, capture_output=True, text=True
    )
    remote = result.stdout.strip()
    if result.returncode != 0 or not remote:
        return None
    scp_like = re.fullmatch(r"git@([^:]+):(.+?)(?:\.git)?", remote)
    if scp_like:
        return f"https://{scp_like.group(1)}/{scp_like.group(2)}"
    if remote.startswith("https://"):
        # Never a token that a remote URL may carry (https://user:token@host/...).
        return re.sub(r"^https://[^@/]*@", "https://", remote).removesuffix(".git")
    return None


def run_url() -> str | None:
    """The GitHub Actions run's page, when running in one."""
    if os.environ.get("GITHUB_REPOSITORY") and os.environ.get("GITHUB_RUN_ID"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
    return None


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
