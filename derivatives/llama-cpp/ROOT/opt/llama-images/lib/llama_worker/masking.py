"""Secrets out of the worker's log: the library logs through Python's logging, and at debug
level its reports show the MASTER_TOKEN cut to its first seven characters. Stdlib only."""

from __future__ import annotations

import logging
from collections.abc import Iterable

SHOWN = "***"


def forms(secret: str) -> list[str]:
    """The ways a secret can appear: whole, and as the library shortens it (7 characters + "...")."""
    if not secret:
        return []
    found = [secret]
    if len(secret) > 12:
        found.append(secret[:7] + "...")
    return found


class MaskSecrets(logging.Filter):
    """Replaces every form of the secrets in each record's message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.masked = sorted({form for secret in secrets for form in forms(secret)}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.masked:
            return True
        message = record.getMessage()
        masked = message
        for form in self.masked:
            masked = masked.replace(form, SHOWN)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def mask_root_handlers(secrets: Iterable[str]) -> None:
    """Every handler of the root logger (where the library's records go) masks the secrets."""
    masking = MaskSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(masking)
