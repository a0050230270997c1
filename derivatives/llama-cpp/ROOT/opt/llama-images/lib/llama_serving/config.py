"""What llama-server is started with, decided from the environment. Pure functions: no I/O.

The inputs are the container's environment (LLAMA_MODEL, LLAMA_MODELS_DIR, LLAMA_ARGS, ...)
and the service declaration's defaults; the output is a `Plan`: the model sources, the
argument list, the secrets that travel in llama-server's environment instead of its arguments,
where it listens, and the retry policy. A value that can never work raises `ConfigError` with
one line that names the variable and says how to fix it.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_ATTEMPTS = 3  # llama-server starts before giving up (FATAL)
DEFAULT_RETRY_DELAY = 5.0  # seconds before the second start; doubles for each further one
DEFAULT_STALL_TIMEOUT = 300.0  # seconds without download progress before a start is abandoned
DEFAULT_MODELS_MAX = 1  # router mode: models loaded at once (one GPU's memory, predictably)
DEFAULT_CACHE = "/workspace/.cache/llama"  # LLAMA_CACHE unset (the image sets it to this)
DEFAULT_ENDPOINT = "https://huggingface.co/"  # what llama-server asks without MODEL_ENDPOINT/HF_ENDPOINT
DEFAULT_CONNECTIONS = 16  # per file; aria2 opens at most 16 to one server
MAX_CONNECTIONS = 16
DEFAULT_WORKSPACE = "/workspace"

# Options whose value is a secret: it goes into llama-server's environment (which it reads
# itself), never into its arguments (visible in `ps`) or the log.
SECRET_OPTIONS = {"--api-key": "LLAMA_API_KEY", "-hft": "HF_TOKEN", "--hf-token": "HF_TOKEN"}
# Options and llama-server's own variables that name a model: LLAMA_ARGS may configure it alone.
MODEL_OPTIONS = frozenset(
    {"-m", "--model", "-hf", "-hfr", "--hf-repo", "-mu", "--model-url", "-dr", "--docker-repo"}
    | {"--models-dir", "--models-preset"}
)
# llama-server runs in a directory users do not write (paths.SERVER_DIRECTORY: ggml loads
# libggml-*.so from its working directory); a relative path keeps meaning ${WORKSPACE}/<path>, as
# in the reference image, which started it there. These options and variables name files.
PATH_OPTIONS = frozenset(
    {"-m", "--model", "-mm", "--mmproj", "-md", "--model-draft", "-mv", "--model-vocoder", "--lora"}
    | {"--lora-scaled", "--control-vector", "--control-vector-scaled", "--chat-template-file", "--grammar-file"}
    | {"-jf", "--json-schema-file", "--path", "--api-key-file", "--ssl-key-file", "--ssl-cert-file"}
    | {"--slot-save-path", "--log-file", "-f", "--file", "-bf", "--binary-file", "--models-dir", "--models-preset"}
    | {"-lcs", "--lookup-cache-static", "-lcd", "--lookup-cache-dynamic"}
)
PATH_VARIABLES = (
    "LLAMA_ARG_MODEL",
    "LLAMA_ARG_MODELS_DIR",
    "LLAMA_ARG_MODELS_PRESET",
    "LLAMA_ARG_MMPROJ",
    "LLAMA_ARG_MODEL_DRAFT",
    "LLAMA_ARG_CHAT_TEMPLATE_FILE",
)
URL_VARIABLE = "LLAMA_ARG_MODEL_URL"  # llama-server's own variable for -mu/--model-url
MODEL_VARIABLES = (
    "LLAMA_ARG_MODEL",
    "LLAMA_ARG_HF_REPO",
    "LLAMA_ARG_MODEL_URL",
    "LLAMA_ARG_DOCKER_REPO",
    "LLAMA_ARG_MODELS_DIR",
    "LLAMA_ARG_MODELS_PRESET",
)

# The portal's model panel reads llama-server's /metrics and /slots (behind the proxy's token, like
# every path on its port): on by default, unless LLAMA_ARGS or llama-server's own variable for the
# endpoint says otherwise (--metrics has no negation: LLAMA_ARG_ENDPOINT_METRICS=0 turns it off).
MONITORING = (
    ("--metrics", ("--metrics",), "LLAMA_ARG_ENDPOINT_METRICS"),
    ("--slots", ("--slots", "--no-slots"), "LLAMA_ARG_ENDPOINT_SLOTS"),
)
# LLAMA_ARGS options that make llama-server download by itself (a draft or vocoder repo, a URL);
# without any, it is started --offline once the launcher has put the model in the cache.
DOWNLOAD_OPTION = re.compile(r"--?(hf[a-z]*|hf-repo[a-z-]*|[a-z-]*-url|mu|dr|docker-repo)")
OFFLINE_SAFE_OPTIONS = frozenset({"-hff", "--hf-file"})  # a file of the launcher's repo
HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?")
HOSTS = re.compile(r"[A-Za-z0-9.:\[\]_-]+(,[A-Za-z0-9.:\[\]_-]+)*")
# `--option=value` and `-o=value` (short options too: `-hft=TOKEN` is a secret option).
OPTION_WITH_VALUE = re.compile(r"(--?[A-Za-z0-9][A-Za-z0-9-]*)=(.*)", re.DOTALL)


class ConfigError(Exception):
    """A setting that can never work: one line naming the variable and the fix."""


@dataclass(frozen=True)
class ModelSource:
    """One model: a Hugging Face repo (`-hf`), a file in the container, or an http(s) URL."""

    kind: Literal["hf", "file", "url"]
    value: str

    @property
    def name(self) -> str:
        """How clients name it in router mode (the `model` of a request)."""
        if self.kind == "hf":
            return self.value
        return PurePosixPath(urlsplit(self.value).path if self.kind == "url" else self.value).stem

    def shown(self) -> str:
        return mask_url(self.value) if self.kind == "url" else self.value

    def download_path(self, cache: str) -> str:
        """Where a URL's file is kept: under the cache, one file per URL."""
        basename = PurePosixPath(urlsplit(self.value).path).name or "model.gguf"
        if not basename.endswith(".gguf"):
            basename += ".gguf"
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:12]
        return f"{cache.rstrip('/')}/url/{digest}-{basename}"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    host_in_args: bool
    port_in_args: bool

    @property
    def reach_host(self) -> str:
        """Where the proxy and the health checks connect to llama-server."""
        hosts = [h.strip() for h in self.host.split(",") if h.strip()]
        if not hosts or {"127.0.0.1", "0.0.0.0", "localhost"} & set(hosts):
            return DEFAULT_HOST
        if {"::", "[::]", "::1", "[::1]"} & set(hosts):
            return "::1"
        return hosts[0]

    @property
    def exposed(self) -> tuple[str, ...]:
        """The addresses llama-server listens on beyond loopback: reachable without the proxy's token."""
        hosts = [h.strip() for h in self.host.split(",") if h.strip()]
        loopback = {"localhost", "::1", "[::1]"}
        return tuple(h for h in hosts if h not in loopback and not h.startswith("127."))


@dataclass(frozen=True)
class Retries:
    attempts: int = DEFAULT_ATTEMPTS
    delay: float = DEFAULT_RETRY_DELAY
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

    def delay_after(self, failed: int) -> float:
        """Seconds to wait after the `failed`-th failed start (1, 2, ...): doubling."""
        return float(self.delay * 2 ** (failed - 1))


@dataclass(frozen=True)
class Plan:
    sources: tuple[ModelSource, ...]
    models_dir: str | None
    models_max: int
    args: tuple[str, ...]  # LLAMA_ARGS, split, secrets taken out
    listen: Listen
    secrets: Mapping[str, str] = field(default_factory=dict)  # variable -> value for llama-server
    cache: str = DEFAULT_CACHE
    retries: Retries = Retries()
    monitoring: tuple[str, ...] = ()  # --metrics, --slots: added unless LLAMA_ARGS decides
    connections: int = DEFAULT_CONNECTIONS  # 0: llama-server downloads by itself
    endpoint: str = DEFAULT_ENDPOINT
    other_caches: tuple[str, ...] = ()  # caches on the volume models are linked in from
    path_variables: Mapping[str, str] = field(default_factory=dict)  # PATH_VARIABLES made absolute

    @property
    def args_download(self) -> bool:
        """LLAMA_ARGS make llama-server download something besides the model (a draft model)."""
        return any(DOWNLOAD_OPTION.fullmatch(w) and w not in OFFLINE_SAFE_OPTIONS for w in self.args)

    @property
    def downloads(self) -> bool:
        """The launcher downloads models before llama-server starts (llama_serving.download)."""
        return self.connections > 0 and any(source.kind in ("hf", "url") for source in self.sources)

    @property
    def router(self) -> bool:
        """Several models in one llama-server: its router mode."""
        return self.models_dir is not None or len(self.sources) > 1

    @property
    def model_name(self) -> str:
        if self.router:
            return "models (router mode)"
        if self.sources:
            return self.sources[0].shown()
        return "the model named in LLAMA_ARGS"

    def command(self, preset: str | None = None, hf_file: str | None = None, offline: bool = False) -> list[str]:
        """llama-server's arguments; `preset` is the models file written for router mode, `hf_file`
        the repo's file the download chose, `offline` when llama-server must not ask the hub (the
        launcher has the model in the cache, or the hub failed and the cache serves)."""
        command = ["llama-server"]
        if not self.listen.host_in_args:
            command += ["--host", self.listen.host]
        if not self.listen.port_in_args:
            command += ["--port", str(self.listen.port)]
        if self.router:
            command += ["--models-max", str(self.models_max)]
            if self.models_dir is not None:
                command += ["--models-dir", self.models_dir]
            if self.sources and preset is not None:
                command += ["--models-preset", preset]
        elif self.sources:
            command += model_arguments(self.sources[0], self.cache, hf_file)
        if offline:
            command.append("--offline")
        return [*command, *self.monitoring, *self.args]

    def preset(self) -> str:
        """Router mode: llama-server's models file (INI), one section per LLAMA_MODEL entry."""
        sections = []
        for source in self.sources:
            if source.kind == "hf":
                keys = {"hf-repo": source.value}
            elif source.kind == "file":
                keys = {"model": source.value}
            elif self.downloads:  # downloaded before the router starts: it needs only the file
                keys = {"model": source.download_path(self.cache)}
            else:
                keys = {"model-url": source.value, "model": source.download_path(self.cache)}
            sections.append(f"[{source.name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()))
        return "\n".join(sections)

    def environment(self) -> dict[str, str]:
        """What llama-server gets in its environment besides ours: the secrets, and a model's URL."""
        env = {**self.path_variables, **self.secrets}
        if not self.router and not self.downloads and self.sources and self.sources[0].kind == "url":
            env[URL_VARIABLE] = self.sources[0].value
        return env

    def secret_values(self) -> list[str]:
        """Every secret the log must not show: keys, tokens, URL passwords and queries."""
        values = []
        for name, value in self.secrets.items():
            values += [v.strip() for v in value.split(",")] if name == "LLAMA_API_KEY" else [value]
        for source in self.sources:
            if source.kind == "url":
                parts = urlsplit(source.value)
                values += [v for v in (parts.password, parts.query) if v]
        return [v for v in values if len(v) >= 3]


def model_arguments(source: ModelSource, cache: str, hf_file: str | None = None) -> list[str]:
    if source.kind == "hf":
        return ["-hf", source.value, *(["-hff", hf_file] if hf_file else [])]
    if source.kind == "file":
        return ["-m", source.value]
    # The URL travels in the environment (URL_VARIABLE), as a URL may carry credentials. The
    # bundled llama-server needs -m with it (a URL alone starts an empty router): the file goes
    # there, and a later start with the server unreachable uses it.
    return ["-m", source.download_path(cache)]


def split_args(text: str, variable: str = "LLAMA_ARGS") -> list[str]:
    """Split like a POSIX shell splits words (quotes and backslashes), executing nothing;
    `--option=value` becomes `--option value` and `-o=value` becomes `-o value` (the bundled
    llama-server knows only that form, and a secret option's value is then taken out)."""
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise ConfigError(
            f'{variable}: {str(exc).lower()}: close the quote; quote a value with spaces like --alias "my model"'
        ) from None
    split: list[str] = []
    for word in words:
        match = OPTION_WITH_VALUE.fullmatch(word)
        split += [match.group(1), match.group(2)] if match else [word]
    return split


def absolute(path: str, workspace: str) -> str:
    """A relative path as ${WORKSPACE}/<path> (llama-server does not run there); others as given."""
    if not path or path.startswith(("/", "~")) or "://" in path:
        return path
    return posixpath.normpath(posixpath.join(workspace, path))


def absolute_arguments(args: Sequence[str], workspace: str) -> list[str]:
    """LLAMA_ARGS with the values of PATH_OPTIONS made absolute."""
    found: list[str] = []
    for index, word in enumerate(args):
        found.append(absolute(word, workspace) if index and args[index - 1] in PATH_OPTIONS else word)
    return found


def take_secrets(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The arguments without secret options, and those secrets by environment variable."""
    rest: list[str] = []
    secrets: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word in SECRET_OPTIONS:
            value = next(words, None)
            if value is None:
                raise ConfigError(f"LLAMA_ARGS: {word} needs a value")
            secrets[SECRET_OPTIONS[word]] = value
        else:
            rest.append(word)
    return rest, secrets


def option_value(args: Sequence[str], *names: str) -> str | None:
    """The value of the last occurrence of an option (llama-server lets the last one win)."""
    value = None
    for index, word in enumerate(args):
        if word in names:
            if index + 1 >= len(args):
                raise ConfigError(f"LLAMA_ARGS: {word} needs a value")
            value = args[index + 1]
    return value


def parse_port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{where}: {text!r} is not a port number (1-65535)")
    return int(text)


def listen_from(args: Sequence[str], env: Mapping[str, str], default_port: int, taken: Mapping[int, str]) -> Listen:
    host_arg = option_value(args, "--host")
    port_arg = option_value(args, "--port")
    host = host_arg or env.get("LLAMA_ARG_HOST", "").strip() or DEFAULT_HOST
    if port_arg is not None:
        port = parse_port(port_arg, "LLAMA_ARGS --port")
    elif env.get("LLAMA_ARG_PORT", "").strip():
        port = parse_port(env["LLAMA_ARG_PORT"].strip(), "LLAMA_ARG_PORT")
    else:
        port = default_port
    if port in taken:
        raise ConfigError(f"LLAMA_ARGS: port {port} is taken by {taken[port]}; choose another --port")
    if any(h.strip().endswith(".sock") for h in host.split(",")):
        raise ConfigError("LLAMA_ARGS: --host with a UNIX socket: the proxy reaches llama-server over TCP only")
    if not HOSTS.fullmatch(host):
        raise ConfigError(f"LLAMA_ARGS: --host {host!r} is not a list of addresses or host names")
    return Listen(host, port, host_arg is not None, port_arg is not None)


def classify(entry: str) -> ModelSource:
    if re.match(r"https?://", entry, re.IGNORECASE):
        if not urlsplit(entry).netloc:
            raise ConfigError(f"LLAMA_MODEL={entry!r}: a URL needs a host")
        return ModelSource("url", entry)
    if "://" not in entry and (entry.startswith(("/", "./", "../", "~")) or entry.lower().endswith(".gguf")):
        return ModelSource("file", entry)
    if HF_REPO.fullmatch(entry):
        return ModelSource("hf", entry)
    raise ConfigError(
        f"LLAMA_MODEL={entry!r} is not a .gguf path, an http(s) URL or a Hugging Face repo org/repo[:quant]"
    )


def model_sources(value: str) -> tuple[ModelSource, ...]:
    """LLAMA_MODEL: one model, or several separated by commas (or newlines)."""
    entries = [entry.strip() for entry in re.split(r"[,\n]", value) if entry.strip()]
    sources = tuple(classify(entry) for entry in entries)
    names = [source.name for source in sources]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"LLAMA_MODEL: two models would both be named {name!r}; list each model once")
    return sources


def monitoring_options(args: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """The endpoints the portal reads, for each that LLAMA_ARGS and the environment leave unset."""
    return tuple(
        option
        for option, given, variable in MONITORING
        if not any(word in given for word in args) and not env.get(variable, "").strip()
    )


def number(env: Mapping[str, str], name: str, default: float, minimum: float, integer: bool = False) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={text!r} is not {kind} >= {minimum:g}")
    return value


def make_plan(env: Mapping[str, str], default_port: int, taken_ports: Mapping[int, str] | None = None) -> Plan | None:
    """The plan for this environment, or None when no model is configured anywhere."""
    workspace = env.get("WORKSPACE", "").strip() or DEFAULT_WORKSPACE
    args, arg_secrets = take_secrets(split_args(env.get("LLAMA_ARGS", "")))
    args = absolute_arguments(args, workspace)
    secrets = {name: env[name] for name in ("LLAMA_API_KEY", "HF_TOKEN") if env.get(name, "")}
    secrets.update(arg_secrets)  # LLAMA_ARGS come last and win, as everywhere else
    sources = tuple(
        replace(source, value=absolute(source.value, workspace)) if source.kind == "file" else source
        for source in model_sources(env.get("LLAMA_MODEL", ""))
    )
    models_dir = absolute(env.get("LLAMA_MODELS_DIR", "").strip(), workspace) or None
    model_elsewhere = any(word in MODEL_OPTIONS for word in args) or any(env.get(v) for v in MODEL_VARIABLES)
    if not sources and models_dir is None and not model_elsewhere:
        return None
    connections = int(number(env, "LLAMA_DOWNLOAD_CONNECTIONS", DEFAULT_CONNECTIONS, 0, integer=True))
    if connections > MAX_CONNECTIONS:
        raise ConfigError(
            f"LLAMA_DOWNLOAD_CONNECTIONS={connections} is more than {MAX_CONNECTIONS} (aria2's most per server); "
            "choose 1-16, or 0 to leave downloads to llama-server"
        )
    if connections == 0 and (models_dir is not None or len(sources) > 1):
        for source in sources:
            parts = urlsplit(source.value) if source.kind == "url" else None
            if parts is not None and (parts.password or parts.query):
                # The router hands each model's settings to the process serving it as arguments.
                raise ConfigError(
                    f"LLAMA_MODEL: {mask_url(source.value)} carries credentials, and in router mode "
                    "llama-server passes a model's URL on a command line (visible in ps); download it "
                    "into LLAMA_MODELS_DIR, or serve it alone"
                )
    cache = absolute(env.get("LLAMA_CACHE", "").strip(), workspace) or DEFAULT_CACHE
    retries = Retries(
        attempts=int(number(env, "LLAMA_START_ATTEMPTS", DEFAULT_ATTEMPTS, 1, integer=True)),
        delay=number(env, "LLAMA_RETRY_DELAY", DEFAULT_RETRY_DELAY, 0),
        stall_timeout=number(env, "LLAMA_STALL_TIMEOUT", DEFAULT_STALL_TIMEOUT, 1),
    )
    return Plan(
        sources=sources,
        models_dir=models_dir,
        models_max=int(number(env, "LLAMA_MODELS_MAX", DEFAULT_MODELS_MAX, 0, integer=True)),
        args=tuple(args),
        listen=listen_from(args, env, default_port, taken_ports or {}),
        secrets=secrets,
        cache=cache,
        retries=retries,
        monitoring=monitoring_options(args, env),
        connections=connections,
        endpoint=hub_endpoint(env),
        other_caches=other_caches(env, cache),
        path_variables={
            name: absolute(env[name], workspace)
            for name in PATH_VARIABLES
            if absolute(env.get(name, ""), workspace) != env.get(name, "")
        },
    )


def hub_endpoint(env: Mapping[str, str]) -> str:
    """The hub llama-server would ask (MODEL_ENDPOINT, then HF_ENDPOINT), with a trailing slash."""
    found = env.get("MODEL_ENDPOINT", "").strip() or env.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    return found.rstrip("/") + "/"


def other_caches(env: Mapping[str, str], cache: str) -> tuple[str, ...]:
    """Caches on the volume whose models are linked in rather than downloaded again: the reference
    image's (its llama.cpp builds wrote ${WORKSPACE}/llama.cpp, flat; newer ones $HF_HOME/hub, which
    it sets to ${WORKSPACE}/.hf_home), and the Hugging Face hub cache (`hf download` fills it)."""
    workspace = env.get("WORKSPACE", "").strip() or DEFAULT_WORKSPACE
    hf_home = env.get("HF_HOME", "").strip()
    hub_cache = env.get("HF_HUB_CACHE", "").strip() or (f"{hf_home}/hub" if hf_home else "")
    found = [f"{workspace}/llama.cpp", f"{workspace}/.hf_home/hub", hub_cache]
    own = cache.rstrip("/")
    return tuple(dict.fromkeys(path.rstrip("/") for path in found if path and path.rstrip("/") != own))


def mask_url(url: str) -> str:
    """A URL with its password and query string (signed URLs carry tokens there) hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by ***, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    # llama-server itself logs the tail of its API keys ("api_keys: ****cr3t").
    return re.sub(r"(api_keys: \*+)\S+", r"\1", text)


def shown_command(command: Sequence[str], plan: Plan) -> str:
    """The start line for the log: secrets masked, and which secrets travel in the environment."""
    words = [mask_url(word) if re.match(r"https?://", word) else word for word in command]
    line = mask(shlex.join(words), plan.secret_values())
    shown = [f"{name}=***" if name in plan.secrets else f"{name}={mask_url(value)}"
             for name, value in sorted(plan.environment().items())]  # fmt: skip
    if shown:
        line += f" (environment: {', '.join(shown)})"
    return line
