"""The worker's settings, from the environment the platform gives a serverless instance.

Vast's engine starts a serverless instance with REPORT_ADDR (where the worker reports and fetches
the engine's public key), MASTER_TOKEN (the worker's credential in its reports), CONTAINER_ID,
PUBLIC_IPADDR and VAST_TCP_PORT_<WORKER_PORT> (the public address the engine sends requests to).
A missing or malformed one is a `SettingsError` naming every problem, never a traceback from
the library. With UNSECURED=true (local testing: no engine, no signatures) each missing one gets
a local stand-in value, which `Settings.defaults` lists for the log.

Stdlib only, pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_PORT = 3000
# UNSECURED=true without an engine: reports go to a local port nothing listens on (the discard
# port), so the library's report loop is refused at once instead of waiting on a timeout.
UNSECURED_REPORT_ADDR = "http://127.0.0.1:9"
LOG_LEVELS = ("debug", "info", "warning", "error")
TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off", ""})


class SettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    port: int  # WORKER_PORT: where the worker listens (all addresses)
    session_port: int  # WORKER_HTTP_PORT (WORKER_PORT + 1): the library's plain-HTTP /session/end listener
    use_ssl: bool  # USE_SSL: TLS with the instance's certificate (/etc/instance.crt)
    unsecured: bool  # UNSECURED: requests are not checked against the engine's signature
    report_addr: str
    container_id: int
    public_ip: str
    public_port: int
    log_level: str
    defaults: tuple[str, ...] = field(default=())  # what UNSECURED filled in, "NAME=value"

    @property
    def url(self) -> str:
        """The address the engine is told to send requests to (what the signature covers)."""
        host = f"[{self.public_ip}]" if ":" in self.public_ip else self.public_ip
        return f"http{'s' if self.use_ssl else ''}://{host}:{self.public_port}"

    def library_environment(self, master_token: str) -> dict[str, str]:
        """The variables the library reads, in the spellings it understands (it takes USE_SSL
        only as lowercase "true", and UNSECURED through distutils' strtobool)."""
        return {
            "WORKER_PORT": str(self.port),
            "WORKER_HTTP_PORT": str(self.session_port),
            "USE_SSL": "true" if self.use_ssl else "false",
            "UNSECURED": "true" if self.unsecured else "false",
            "REPORT_ADDR": self.report_addr,
            "MASTER_TOKEN": master_token,
            "CONTAINER_ID": str(self.container_id),
            "PUBLIC_IPADDR": self.public_ip,
            f"VAST_TCP_PORT_{self.port}": str(self.public_port),
        }


def flag(env: Mapping[str, str], name: str, problems: list[str]) -> bool:
    value = env.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value not in FALSE:
        problems.append(f"{name}={env.get(name, '')!r} is neither true nor false")
    return False


def port(env: Mapping[str, str], name: str, default: int | None, problems: list[str]) -> int:
    text = env.get(name, "").strip()
    if not text and default is not None:
        return default
    if not text:
        problems.append(f"{name} is not set")
        return 0
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        problems.append(f"{name}={text!r} is not a port (1-65535)")
        return 0
    return int(text)


def report_addresses_problem(value: str) -> str | None:
    """REPORT_ADDR: one http(s) URL, or several separated by commas (the library tries each)."""
    for address in value.split(","):
        parts = urlsplit(address.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            return f"REPORT_ADDR={value!r} is not an http(s) URL (or a comma-separated list of them)"
    return None


def settings_from(env: Mapping[str, str]) -> Settings:
    """The worker's settings; SettingsError with every problem at once."""
    problems: list[str] = []
    defaults: list[str] = []
    unsecured = flag(env, "UNSECURED", problems)
    use_ssl = flag(env, "USE_SSL", problems)
    worker_port = port(env, "WORKER_PORT", DEFAULT_PORT, problems)
    session_port = port(env, "WORKER_HTTP_PORT", worker_port + 1 if worker_port < 65535 else 0, problems)

    def platform(name: str, local: str) -> str:
        value = env.get(name, "").strip()
        if value:
            return value
        if unsecured:
            defaults.append(f"{name}={local}")
            return local
        problems.append(f"{name} is not set (the platform sets it on a serverless instance)")
        return ""

    report_addr = platform("REPORT_ADDR", UNSECURED_REPORT_ADDR)
    if report_addr:
        problem = report_addresses_problem(report_addr)
        if problem:
            problems.append(problem)
    if not env.get("MASTER_TOKEN", "").strip():
        if unsecured:
            defaults.append("MASTER_TOKEN=(empty)")
        else:
            problems.append("MASTER_TOKEN is not set (the platform sets it on a serverless instance)")
    container = platform("CONTAINER_ID", "0")
    if container and not container.isdigit():
        problems.append(f"CONTAINER_ID={container!r} is not a number")
    public_ip = platform("PUBLIC_IPADDR", "127.0.0.1")
    public_port_name = f"VAST_TCP_PORT_{worker_port or DEFAULT_PORT}"
    public_port_text = platform(public_port_name, str(worker_port or DEFAULT_PORT))
    public_port = 0
    if public_port_text:
        public_port = port({public_port_name: public_port_text}, public_port_name, None, problems)
    level = env.get("WORKER_LOG_LEVEL", "").strip().lower() or "info"
    if level not in LOG_LEVELS:
        problems.append(f"WORKER_LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}")
        level = "info"
    if problems:
        raise SettingsError(problems)
    return Settings(
        port=worker_port,
        session_port=session_port,
        use_ssl=use_ssl,
        unsecured=unsecured,
        report_addr=report_addr,
        container_id=int(container),
        public_ip=public_ip,
        public_port=public_port,
        log_level=level,
        defaults=tuple(defaults),
    )
