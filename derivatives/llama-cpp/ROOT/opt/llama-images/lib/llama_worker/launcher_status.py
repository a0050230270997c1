"""What the llama launcher says about llama-server: the one place the worker reads it.

The launcher (llama_serving/service.py `set_status`) writes its status line for people and the
same status as a record for programs (llama_serving/paths.py STATUS_RECORD_FILE): {"state",
"detail", "updated"}. When the launcher's status becomes a typed record of its own, this module is
what changes. Stdlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llama_serving.paths import STATUS_RECORD_FILE

# Launcher states after which llama-server will not serve without someone's help.
GIVEN_UP = frozenset({"failed", "no-model"})


@dataclass(frozen=True)
class LauncherStatus:
    state: str  # starting, downloading, loading, serving, retrying, failed, stopped, no-model; "" unknown
    detail: str  # the launcher's status line

    @property
    def serving(self) -> bool:
        return self.state == "serving"

    @property
    def given_up(self) -> bool:
        return self.state in GIVEN_UP


def parse(text: str) -> LauncherStatus:
    try:
        record = json.loads(text)
    except ValueError:
        return LauncherStatus("", "the launcher's status record is not JSON")
    if not isinstance(record, dict):
        return LauncherStatus("", "the launcher's status record is not an object")
    return LauncherStatus(str(record.get("state") or ""), str(record.get("detail") or ""))


def read(path: Path = STATUS_RECORD_FILE) -> LauncherStatus:
    """The launcher's status now; state "" while it has written none."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError:
        return LauncherStatus("", "the launcher has not reported yet")
