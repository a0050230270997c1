"""The one declaration of the services: what the proxy, portal, health check and tests read.

Shipped:  /etc/llama-images/services.d/<name>.toml   (base image and derivatives add files)
Runtime:  /run/llama-images/services.d/<name>.toml   (boot steps; replace some keys)
Then:     serverless mode (SERVERLESS=true, the reference image's switch): a service declared
          `serverless = "off"` stops in it unless SERVERLESS_KEEP names it, one declared
          `serverless = "only"` runs only in it (default "on": both). The token proxy, which is
          no declared service, stops like an "off" one (SERVERLESS_KEEP=proxy keeps it).
Then:     PORTAL_CONFIG  "host:external:internal:path:Label|..." (the reference image's format),
          outside serverless mode (in it, as in the reference image, PORTAL_CONFIG is not read):
          when set, it decides what runs, as in the reference image. Each entry is the declared
          service with its label (any case), else the one on its internal port when its host is
          this machine; an entry naming none adds a service the proxy publishes; an entry whose
          external and internal ports are equal is a portal link only. A declared service no
          entry names still runs, on its declared ports, when an entry's label contains its
          search term (the reference image's habit: "Jupyter Terminal" starts Jupyter); the
          reference looks for the term anywhere in the config, this image in labels only, and
          says so when a host or path alone mentions it. Any other declared service is off.
          Conflicts (two entries for one service, one external port or one label): the later
          entry wins, and both are named in the log.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import paths

NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# Key -> (type, required). `name` must equal the file's stem.
KEYS: dict[str, tuple[type, bool]] = {
    "name": (str, True),
    "label": (str, True),
    "external_port": (int, True),
    "internal_port": (int, True),
    "path": (str, True),
    "program": (str, False),
    "health_path": (str, False),
    "essential": (bool, False),
    "enabled_by": (str, False),
    "host": (str, False),
    "files": (list, False),
    "search_term": (str, False),
    "openai_path": (str, False),
    "token_scheme": (str, False),
    "serverless": (str, False),
    "proxied": (bool, False),
    "portal_part": (str, False),
}
TOKEN_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
# A Python module, by its dotted name (the portal imports it: llama_portal/parts.py).
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Serverless mode (SERVERLESS=true): which services a serverless instance runs.
SERVERLESS_VARIABLE = "SERVERLESS"
SERVERLESS_KEEP_VARIABLE = "SERVERLESS_KEEP"
SERVERLESS_VALUES = ("on", "off", "only")  # runs in both modes / stops in serverless mode / runs only in it
# The token proxy's Supervisor programs (Caddy and its login verifier): no declared service, so
# serverless mode stops them as it stops an "off" service, by this name.
PROXY = "proxy"
PROXY_PROGRAMS = ("proxy", "auth")


def env_flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """A yes/no variable: a switch that is on by default goes off only for false/0/no/off, one
    that is off by default goes on only for true/1/yes/on (any case); anything else is the default."""
    value = env.get(name, "").strip().lower()
    return value not in {"false", "0", "no", "off"} if default else value in {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class Service:
    name: str
    label: str
    external_port: int
    internal_port: int
    path: str = "/"
    program: str | None = None  # Supervisor program; None for a link-only PORTAL_CONFIG entry
    health_path: str | None = None
    essential: bool = False
    enabled_by: str | None = None  # env var that turns the service off when "false"
    host: str = "127.0.0.1"  # where the proxy reaches it
    files: tuple[str, ...] = ()  # its files in the image: Supervisor program, start script, boot step
    search_term: str | None = None  # what a PORTAL_CONFIG label must contain to start it (default: label)
    openai_path: str | None = None  # where it answers OpenAI's API (/v1), for tools that look for one
    # It checks a token of its own (`Authorization: <scheme> <token>`, paths.service_token_file):
    # the proxy sends it on the requests it let in; on a port left open the client must bring it.
    token_scheme: str | None = None
    serverless: str = "on"  # in serverless mode: "on" (runs), "off" (stops), "only" (runs only then)
    proxied: bool = True  # False: it listens on its external port itself; the proxy leaves that port alone
    # Its part of the portal: a module of the image that declares it (llama_portal/parts.py).
    portal_part: str | None = None
    enabled: bool = True
    link_only: bool = False  # a PORTAL_CONFIG entry with external == internal: a portal link, not proxied
    off_reason: str = ""  # why it is off (enabled False): shown by the portal and the program's log

    @property
    def term(self) -> str:
        """What a PORTAL_CONFIG entry's label must contain to start it (the reference image's
        exit_portal.sh search term)."""
        return self.search_term or self.label

    @property
    def published(self) -> bool:
        """The proxy listens on its external port."""
        return self.enabled and not self.link_only and self.proxied

    def switched_off(self, reason: str) -> Service:
        return replace(self, enabled=False, off_reason=self.off_reason or reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "external_port": self.external_port,
            "internal_port": self.internal_port,
            "path": self.path,
            "program": self.program,
            "health_path": self.health_path,
            "essential": self.essential,
            "host": self.host,
            "serverless": self.serverless,
            "proxied": self.proxied,
            "enabled": self.enabled,
            "link_only": self.link_only,
            "off_reason": self.off_reason,
            "search_term": self.term,
            "token_scheme": self.token_scheme,
        }


@dataclass(frozen=True)
class Loaded:
    services: tuple[Service, ...]
    problems: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # decisions worth a log line that are no problem

    def by_name(self) -> dict[str, Service]:
        return {s.name: s for s in self.services}


def load_services(
    shipped_dir: Path = paths.SHIPPED_SERVICES_DIR,
    runtime_dir: Path = paths.RUNTIME_SERVICES_DIR,
    environ: Mapping[str, str] | None = None,
) -> Loaded:
    """Every declared service, runtime overrides and PORTAL_CONFIG applied, sorted by external
    port. Bad files or entries are reported in `problems` and skipped; the rest still load."""
    env = dict(environ) if environ is not None else {}
    problems: list[str] = []
    notes: list[str] = []
    services: dict[str, Service] = {}
    for path in sorted(shipped_dir.glob("*.toml")):
        data = read_toml(path, problems)
        if data is None:
            continue
        service = service_from(path, data, problems)
        if service is not None:
            services[service.name] = service
    if runtime_dir.is_dir():
        for path in sorted(runtime_dir.glob("*.toml")):
            if path.stem not in services:
                problems.append(f"{path}: no service {path.stem!r} is declared in {shipped_dir}; ignored")
                continue
            data = read_toml(path, problems)
            if data is not None:
                services[path.stem] = override(path, services[path.stem], data, problems)
    for name, service in services.items():
        if service.enabled_by and not env_flag(env, service.enabled_by, default=True):
            services[name] = service.switched_off(f"{service.enabled_by}={env.get(service.enabled_by, '').strip()}")
    mode = serverless_mode(env)
    problems += keep_problems(mode, [*services, PROXY])
    for name, service in services.items():
        reason = serverless_off_reason(mode, name, service.serverless)
        if reason:
            services[name] = service.switched_off(reason)
    portal_config = env.get("PORTAL_CONFIG", "").strip()
    if portal_config and not mode.serverless:
        services = apply_portal_config(portal_config, services, problems, notes)
    ordered = sorted(services.values(), key=lambda s: (s.external_port, s.name))
    return Loaded(drop_port_clashes(ordered, problems), tuple(problems), tuple(notes))


@dataclass(frozen=True)
class ServerlessMode:
    serverless: bool  # SERVERLESS=true
    keep: frozenset[str] = frozenset()  # what SERVERLESS_KEEP names (service names, "proxy")


def serverless_mode(env: Mapping[str, str]) -> ServerlessMode:
    """SERVERLESS (true/1/yes/on) and SERVERLESS_KEEP (names separated by commas or spaces)."""
    names = re.split(r"[\s,]+", env.get(SERVERLESS_KEEP_VARIABLE, "").strip().lower())
    return ServerlessMode(env_flag(env, SERVERLESS_VARIABLE, default=False), frozenset(n for n in names if n))


def serverless_off_reason(mode: ServerlessMode, name: str, declared: str) -> str | None:
    """Why serverless mode (or its absence) leaves service `name` off, or None when it runs."""
    if mode.serverless and declared == "off" and name not in mode.keep:
        return f"serverless mode ({SERVERLESS_VARIABLE}=true) stops it; {SERVERLESS_KEEP_VARIABLE}={name} keeps it"
    if not mode.serverless and declared == "only":
        return f"it runs only in serverless mode ({SERVERLESS_VARIABLE}=true)"
    return None


def kept_in_serverless_mode(mode: ServerlessMode, name: str, declared: str) -> bool:
    """Whether `name` runs in serverless mode only because SERVERLESS_KEEP keeps it."""
    return mode.serverless and declared == "off" and name in mode.keep


def proxy_off_reason(env: Mapping[str, str]) -> str | None:
    """Why the token proxy (and its login verifier) does not run, or None."""
    return serverless_off_reason(serverless_mode(env), PROXY, "off")


def keep_problems(mode: ServerlessMode, known: list[str]) -> list[str]:
    unknown = sorted(mode.keep - set(known))
    if not unknown:
        return []
    names = ", ".join(repr(n) for n in unknown)
    verb = "is" if len(unknown) == 1 else "are"
    return [f"{SERVERLESS_KEEP_VARIABLE}: {names} {verb} not a service of this image "
            f"(known: {', '.join(sorted(known))}); ignored"]  # fmt: skip


def read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{path}: not readable TOML ({exc}); fix the file")
        return None


def check_values(path: Path, data: Mapping[str, Any], problems: list[str], *, partial: bool) -> dict[str, Any]:
    """The keys of `data` that are known and of the right type; the rest are reported."""
    good: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            problems.append(f"{path}: unknown key {key!r}; known keys: {', '.join(KEYS)}")
            continue
        kind = KEYS[key][0]
        # bool is an int in Python; a port of `true` is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{path}: {key} = {value!r} is not a {kind.__name__}")
            continue
        problem = value_problem(key, value)
        if problem:
            problems.append(f"{path}: {key} = {value!r} {problem}")
            continue
        good[key] = value
    if not partial:
        for key, (_, required) in KEYS.items():
            if required and key not in data:
                problems.append(f"{path}: missing key {key!r}")
    return good


# Keys whose values follow a pattern: (does the value fit?, what to say when it does not).
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: bool(NAME.fullmatch(v)), "is not a service name (lowercase letters, digits, '-', '_')"),
    "token_scheme": (
        lambda v: bool(TOKEN_SCHEME.fullmatch(v)),
        "is not an Authorization scheme (a word such as 'token')",
    ),
    "files": (
        lambda v: all(isinstance(item, str) and item.startswith("/") for item in v),
        "must list paths in the image, each starting with '/'",
    ),
    "portal_part": (
        lambda v: bool(MODULE_NAME.fullmatch(v)),
        "is not a Python module's dotted name (such as 'my_server.portal_part')",
    ),
    "serverless": (lambda v: v in SERVERLESS_VALUES, f"is not one of {', '.join(repr(v) for v in SERVERLESS_VALUES)}"),
}


def value_problem(key: str, value: Any) -> str | None:
    if key.endswith("_port") and not 1 <= value <= 65535:
        return "is not a port (1-65535)"
    if key in {"path", "health_path", "openai_path"} and not str(value).startswith("/"):
        return "must start with '/'"
    fits, problem = VALUE_RULES.get(key, (lambda _v: True, ""))
    return None if fits(value) else problem


def service_from(path: Path, data: Mapping[str, Any], problems: list[str]) -> Service | None:
    before = len(problems)
    good = check_values(path, data, problems, partial=False)
    if len(problems) > before:
        problems.append(f"{path}: service skipped")
        return None
    if good["name"] != path.stem:
        problems.append(f"{path}: name = {good['name']!r} must equal the file name {path.stem!r}; service skipped")
        return None
    return Service(**{**good, "files": tuple(good.get("files", ()))})


def override(path: Path, service: Service, data: Mapping[str, Any], problems: list[str]) -> Service:
    good = check_values(path, data, problems, partial=True)
    good.pop("name", None)
    good.pop("files", None)  # what the image holds, not something a boot step changes
    good.pop("portal_part", None)  # the portal loads the shipped declarations' parts once, at its start
    return replace(service, **good)


@dataclass(frozen=True)
class Entry:
    """One PORTAL_CONFIG entry, as written and where."""

    position: int
    text: str
    host: str
    external_port: int
    internal_port: int
    path: str
    label: str

    def __str__(self) -> str:
        return f"entry {self.position} {self.text!r}"


LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "0.0.0.0", "::"})


def split_entry(entry: str) -> list[str] | None:
    """`host:external:internal:path:Label`, the host may be an IPv6 address in brackets."""
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or entry[close + 1 : close + 2] != ":":
            return None
        parts = [entry[1:close], *entry[close + 2 :].split(":", 3)]
    else:
        parts = entry.split(":", 4)
    return parts if len(parts) == 5 else None


def parse_portal_config(value: str, problems: list[str]) -> list[Entry]:
    """`host:external:internal:path:Label|...` -> entries; a malformed entry is reported and skipped."""
    entries = []
    for position, raw in enumerate(value.split("|"), start=1):
        entry = raw.strip()
        if not entry:
            continue
        parts = split_entry(entry)
        where = f"PORTAL_CONFIG entry {position} {entry!r}"
        if parts is None:
            problems.append(f"{where}: expected host:external_port:internal_port:path:Label; skipped")
            continue
        host, external, internal, path, label = (p.strip() for p in parts)
        ports = []
        for what, text in (("external port", external), ("internal port", internal)):
            if not text.isdigit() or not 1 <= int(text) <= 65535:
                problems.append(f"{where}: {what} {text!r} is not a port (1-65535); skipped")
                break
            ports.append(int(text))
        else:
            if not host or any(c in host for c in " /?#@[]"):
                problems.append(f"{where}: host {host!r} is not a host name; skipped")
            elif not path.startswith("/"):
                problems.append(f"{where}: path {path!r} must start with '/'; skipped")
            elif not label:
                problems.append(f"{where}: the label is empty; skipped")
            else:
                host = "127.0.0.1" if host == "localhost" else host
                entries.append(Entry(position, entry, host, ports[0], ports[1], path, label))
    return entries


def slug(label: str, taken: set[str], external_port: int) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:32]
    if not NAME.fullmatch(name) or name in taken:
        name = f"port-{external_port}"
    return name if name not in taken else f"entry-{external_port}-{len(taken)}"


def entry_service(entry: Entry, declared: dict[str, Service]) -> Service:
    """The declared service the entry names (its label, else its internal port on this machine),
    moved where the entry says; else a service of its own (a link only when both ports agree)."""
    if entry.external_port == entry.internal_port:
        match = None
    else:
        match = next((s for s in declared.values() if s.label.lower() == entry.label.lower()), None)
        if match is None and entry.host in LOCAL_HOSTS:
            match = next((s for s in declared.values() if s.internal_port == entry.internal_port), None)
    if match is not None:
        return replace(
            match,
            host=entry.host,
            external_port=entry.external_port,
            internal_port=entry.internal_port,
            path=entry.path,
            label=entry.label,
        )
    return Service(
        slug(entry.label, set(declared), entry.external_port),
        entry.label,
        entry.external_port,
        entry.internal_port,
        entry.path,
        host=entry.host,
        link_only=entry.external_port == entry.internal_port,
    )


def conflict(earlier: tuple[Entry, Service], later: tuple[Entry, Service], declared: set[str]) -> str | None:
    """Why two entries cannot both be kept, or None."""
    (_, old), (_, new) = earlier, later
    if old.name == new.name and new.name in declared:
        return f"both name service {new.name!r}"
    if old.label.lower() == new.label.lower():
        return f"both have the label {new.label!r}"
    if old.published and new.published and old.external_port == new.external_port:
        return f"both publish external port {new.external_port}"
    return None


def apply_portal_config(
    value: str, services: dict[str, Service], problems: list[str], notes: list[str] | None = None
) -> dict[str, Service]:
    """PORTAL_CONFIG decides what runs: the services its entries name or add, and the declared
    services whose search term an entry's label contains; every other declared service is off.
    Of two conflicting entries, the later is kept."""
    kept: list[tuple[Entry, Service]] = []
    for entry in parse_portal_config(value, problems):
        candidate = (entry, entry_service(entry, services))
        for earlier in list(kept):
            why = conflict(earlier, candidate, set(services))
            if why:
                problems.append(
                    f"PORTAL_CONFIG {earlier[0]} and {entry} {why}: the later entry wins, {earlier[0]} skipped"
                )
                kept.remove(earlier)
        kept.append(candidate)
    result = {name: s.switched_off("not in PORTAL_CONFIG") for name, s in services.items()}
    started_by_term = started_by_label(kept, services, notes if notes is not None else [])
    result.update(started_by_term)
    taken = set(result)
    for _, service in kept:
        if service.name in taken and service.name not in services:
            service = replace(service, name=slug(service.label, taken, service.external_port))
        result[service.name] = service
        taken.add(service.name)
    return result


def started_by_label(
    kept: list[tuple[Entry, Service]], services: dict[str, Service], notes: list[str]
) -> dict[str, Service]:
    """The declared services no entry names whose search term an entry's label contains (any
    case), on their declared ports: the reference image starts such a service. It looks for the
    term anywhere in the config; a term found only in an entry's host or path starts nothing
    here, and the note says so. A declared port an entry publishes stays the entry's."""
    named = {service.name for _, service in kept if service.name in services}
    published = {service.external_port: entry for entry, service in kept if service.published}
    started: dict[str, Service] = {}
    for name, declared in services.items():
        if name in named or not declared.enabled:
            continue
        term = declared.term.lower()
        by_label = [entry for entry, _ in kept if term in entry.label.lower()]
        if by_label:
            clash = published.get(declared.external_port) if declared.program else None
            if clash is not None:
                notes.append(
                    f"PORTAL_CONFIG {by_label[0]} names {declared.term!r} in its label, but {clash} publishes "
                    f"{name}'s port {declared.external_port}: {name} stays off"
                )
                continue
            started[name] = declared
            notes.append(
                f"PORTAL_CONFIG {by_label[0]} names {declared.term!r} in its label: {name} runs on its declared "
                f"port {declared.external_port}, as the reference image starts it"
            )
            continue
        elsewhere = [entry for entry, _ in kept if term in f"{entry.host}:{entry.path}".lower()]
        if elsewhere:
            notes.append(
                f"PORTAL_CONFIG {elsewhere[0]} mentions {declared.term!r} only in its host or path: {name} stays "
                "off (the reference image would start it, finding the name anywhere in the config); put "
                f"{declared.term!r} in an entry's label to start it"
            )
    return started


def drop_port_clashes(services: list[Service], problems: list[str]) -> tuple[Service, ...]:
    """Two declared services on one external port cannot both be published: the first (by port,
    name) wins. (PORTAL_CONFIG's entries have settled their own conflicts by then.)"""
    kept: list[Service] = []
    used: dict[int, str] = {}
    for service in services:
        if service.published and service.external_port in used:
            problems.append(
                f"service {service.name!r}: external port {service.external_port} is already used by "
                f"{used[service.external_port]!r}; {service.name!r} skipped"
            )
            continue
        if service.published:
            used[service.external_port] = service.name
        kept.append(service)
    return tuple(kept)
