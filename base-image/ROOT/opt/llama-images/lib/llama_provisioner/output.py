"""The provisioner's log and status line. Every line is masked first: tokens, keys, passwords,
URL credentials and signed queries never reach the output, the log file or the status line (a
manifest's `${HF_TOKEN}` is expanded into its strings, and a command may print what it got).

Stdlib only.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from llama_runtime.secrets import mask, secrets_in

TAG = "provisioner"


def known_secrets(env: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    """Every secret value in the environment (and `extra`, e.g. the access token's file)."""
    return secrets_in(env, [value for value in extra if value])


class Output:
    """Lines to stdout (the provisioning program's log) and, when set, to a log file too."""

    def __init__(
        self,
        secrets: Iterable[str],
        log_file: Path | None = None,
        status_file: Path | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)
        self.log_file = log_file
        self.status_file = status_file
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.log_problem: str | None = None

    def masked(self, text: str) -> str:
        return mask(text, self.secrets)

    def raw(self, line: str) -> None:
        """One line as it is (a command's output), masked."""
        text = self.masked(line.rstrip("\n"))
        with self.lock:
            print(text, file=self.stream, flush=True)
            if self.log_file is not None:
                try:
                    with self.log_file.open("a", encoding="utf-8") as handle:
                        handle.write(text + "\n")
                except OSError as exc:
                    if self.log_problem is None:
                        self.log_problem = f"{self.log_file}: {exc.strerror or exc}"
                        print(f"[{TAG}] cannot write the log file {self.log_problem}", file=self.stream, flush=True)

    def say(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self.raw(f"[{TAG}] {line}")

    def status(self, text: str) -> None:
        """The one-line status the portal shows (/api/boot)."""
        if self.status_file is None:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            self.status_file.write_text(self.masked(text) + "\n", encoding="utf-8")
        except OSError:
            pass
