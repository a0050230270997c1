"""The host's CA bundle for pip, if it has one (I/O edge): image builds reach PyPI over HTTPS
with it when the host sits behind an inspecting proxy. Where none is configured, builds use pip's
own certificates, as in production."""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path


def pip_config_files(environ: Mapping[str, str], home: Path) -> list[Path]:
    """pip's configuration files, lowest precedence first (pip's documented order)."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d]
    files.append(Path("/etc/pip.conf"))
    files += [home / ".pip" / "pip.conf", Path(environ.get("XDG_CONFIG_HOME", home / ".config")) / "pip" / "pip.conf"]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


def pip_cert(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str | None:
    """PIP_CERT, else the `cert` of pip's configuration; only when that file exists."""
    env = os.environ if environ is None else environ
    cert = env.get("PIP_CERT")
    if not cert:
        for path in pip_config_files(env, home or Path.home()):
            parser = configparser.ConfigParser()
            try:
                parser.read(path, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError):
                continue
            for section in ("global", "install", "download"):
                if parser.has_option(section, "cert"):
                    cert = parser.get(section, "cert")
    return cert if cert and Path(cert).is_file() else None
