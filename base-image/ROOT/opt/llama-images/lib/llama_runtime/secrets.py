"""Which values are secrets, and text with them masked: what every log the images show (the
portal's views and archive, the provisioner's log) runs through.

Stdlib only: this runs with the image's own python3 and the portal's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

MASK = "***"
# Values of variables named like this are masked wherever they appear (a provisioning script
# may print what it was given); short values would mask ordinary words.
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|APIKEY|CREDENTIAL|PRIVATE", re.I)
MIN_NAMED_SECRET = 8
MIN_SECRET = 3


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
