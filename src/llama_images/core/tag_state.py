"""What a registry said about a tag, read from the error docker prints (pure).

`docker buildx imagetools inspect` exits 1 for every failure and says why only in its last line.
Three answers must be told apart, because each leads somewhere else: the registry says the tag
is absent (a Debian upstream is made here; `--skip-existing` builds it), the registry cannot be
reached (made here too; `--skip-existing` cannot decide), the registry refuses (credentials, rate
limit: a clear error naming the fix). The patterns are docker's own wording, recorded from the
engine (tests/pipeline/test_tag_state.py holds the recorded lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class TagState(Enum):
    PUBLISHED = "published"
    ABSENT = "absent"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Lookup:
    state: TagState
    detail: str = ""  # docker's own last error line (it names the registry, never credentials)


# Checked in this order: a refusal is also a failed request, an absent tag may mention the host.
REFUSED = re.compile(
    r"\b(401|403|429)\b|unauthorized|forbidden|denied|toomanyrequests|too many requests|rate limit"
    r"|authorization failed|authentication required|requested access to the resource is denied",
    re.IGNORECASE,
)
ABSENT = re.compile(r"not found|manifest unknown|name unknown|no such manifest", re.IGNORECASE)
UNREACHABLE = re.compile(
    r"no such host|server misbehaving|connection refused|connection reset|no route to host|network is unreachable"
    r"|i/o timeout|timeout|deadline exceeded|context canceled|tls:|x509:|certificate|http response to https client"
    r"|\beof\b|broken pipe|\b5\d\d\b",
    re.IGNORECASE,
)


def last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no answer"


def classify(returncode: int, stderr: str) -> Lookup:
    """The registry's answer from `docker buildx imagetools inspect`'s exit status and stderr."""
    if returncode == 0:
        return Lookup(TagState.PUBLISHED)
    detail = last_line(stderr)
    for state, pattern in (
        (TagState.REFUSED, REFUSED),
        (TagState.ABSENT, ABSENT),
        (TagState.UNREACHABLE, UNREACHABLE),
    ):
        if pattern.search(detail):
            return Lookup(state, detail)
    return Lookup(TagState.UNKNOWN, detail)


def unreachable_after(seconds: float) -> Lookup:
    """A registry that accepted the connection and never answered."""
    return Lookup(TagState.UNREACHABLE, f"no answer within {seconds:g} seconds")
