"""What a manifest's phases do, decided without doing it: the phases in order, each phase's input
hash (a phase whose inputs hashed the same when it last succeeded is skipped), how each download
is fetched, the install commands, the Supervisor program and start script of each service, and
the lines a dry run prints.

Pure. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import PurePosixPath
from urllib.parse import quote, urlsplit, urlunsplit

from .model import CondaBlock, Download, FileWrite, GitRepo, Manifest, PipBlock, ServiceSpec

# The phases, in the reference's order (its numbering in the comments); extensions run first of
# all, before the tokens are checked, and PROVISIONING_SCRIPT last.
PHASES = (
    "extensions",  # 1b
    "write_files",  # 2b
    "apt",  # 3
    "git",  # 4
    "pip",  # 5
    "conda",  # 5b
    "downloads",  # 6
    "services",  # 7
    "write_files_late",  # 7b
    "post_commands",  # 8
    "provisioning_script",  # 9
)
HUB_HOSTS = ("huggingface.co", "hf.co")
DEFAULT_ENDPOINT = "https://huggingface.co/"
CIVITAI_HOST = "civitai.com"


def digest(phase: str, data: object) -> str:
    """A phase's input hash: its name and its inputs as canonical JSON."""
    text = json.dumps(
        data, sort_keys=True, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)
    )
    return hashlib.sha256(f"{phase}:{text}".encode()).hexdigest()


def phase_inputs(manifest: Manifest, env: Mapping[str, str]) -> dict[str, object]:
    """What each phase's hash covers (a change re-runs the phase on the next run)."""
    settings = manifest.settings
    return {
        "extensions": {
            "extensions": [asdict(e) for e in manifest.extensions],
            # An extension may read PROVISIONING_* variables: a change re-runs it.
            "provisioning_env": {k: v for k, v in sorted(env.items()) if k.startswith("PROVISIONING_")},
        },
        "write_files": manifest.write_files,
        "apt": sorted(manifest.apt_packages),
        "git": sorted(manifest.git_repos, key=lambda r: (r.url, r.dest)),
        "pip": [{"block": b, "venv": b.venv or settings.venv} for b in manifest.pip_packages],
        "conda": [{"block": b, "env": b.env or settings.conda_env} for b in manifest.conda_packages],
        "downloads": sorted((d.url, d.dest, d.sha256) for d in manifest.downloads),
        "services": sorted(manifest.services, key=lambda s: s.name),
        "write_files_late": manifest.write_files_late,
        "post_commands": manifest.post_commands,
        "provisioning_script": env.get("PROVISIONING_SCRIPT", ""),
    }


# ---- downloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    """One download as the downloader is asked for it."""

    kind: str  # "hf-file" (a file of a hub repo), "hf-repo" (every file), "url"
    url: str  # what the manifest says
    dest: str  # a file, a directory ("/" at the end) or "" (the Hugging Face cache)
    repo: str = ""
    revision: str = ""
    path: str = ""
    endpoint: str = DEFAULT_ENDPOINT  # where hub requests go (HF_ENDPOINT)
    token_env: str = ""  # the variable whose token goes with it (only to its own host)
    sha256: str = ""

    @property
    def pool(self) -> str:
        """The reference's two pools: hub downloads and the rest ("wget")."""
        return "HF" if self.kind.startswith("hf") else "wget"

    @property
    def target(self) -> str:
        """Where the file lands (a directory for a repo or an unnamed file; "" for the cache)."""
        if self.kind == "hf-file" and self.dest.endswith("/"):
            return self.dest + PurePosixPath(self.path).name
        return self.dest

    def request(self) -> dict[str, str]:
        """The downloader command's request (JSON on its stdin): no secret in it."""
        return {k: v for k, v in asdict(self).items() if v != ""}


REF_SEPARATORS = re.compile(r"[/\\]")
HUB_FILE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<revision>[^/]+)/(?P<path>.+)")
HUB_REPO = re.compile(r"/(?P<repo>[^/]+/[^/]+?)/?")


def is_hub(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in HUB_HOSTS)


def is_civitai(url: str) -> bool:
    """A CivitAI host over https: only then does the CivitAI token go with the request (a URL
    that merely mentions civitai.com in its path or query, or plain http, gets none)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme.lower() == "https" and (host == CIVITAI_HOST or host.endswith("." + CIVITAI_HOST))


def hub_endpoint(env: Mapping[str, str]) -> str:
    """Where hub URLs are fetched from: HF_ENDPOINT (a mirror), else the hub itself."""
    return (env.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT).rstrip("/") + "/"


def classify(download: Download, env: Mapping[str, str], hf_token_env: str, civitai_token_env: str) -> Fetch:
    """How a manifest download is fetched: a hub file or repo (from HF_ENDPOINT, with the hub
    token), else the URL itself (the CivitAI token for CivitAI over https only)."""
    if is_hub(download.url):
        path = urlsplit(download.url).path
        endpoint = hub_endpoint(env)
        found = HUB_FILE.fullmatch(path)
        if found:
            return Fetch("hf-file", download.url, download.dest, found["repo"], found["revision"], found["path"],
                         endpoint, hf_token_env, download.sha256)  # fmt: skip
        found = HUB_REPO.fullmatch(path)
        if found:
            return Fetch("hf-repo", download.url, download.dest, found["repo"], "main", "", endpoint, hf_token_env,
                         download.sha256)  # fmt: skip
    token = civitai_token_env if is_civitai(download.url) else ""
    return Fetch("url", download.url, download.dest, token_env=token, sha256=download.sha256)


def hub_file_url(fetch: Fetch) -> str:
    return f"{fetch.endpoint}{quote(fetch.repo)}/resolve/{quote(fetch.revision)}/{quote(fetch.path)}"


def dedup_downloads(downloads: Sequence[Download]) -> tuple[list[Download], list[tuple[str, str]]]:
    """One download per URL: a later entry for another file becomes a link to the first
    ((source, link) pairs); an exact repeat is dropped. Directories and the cache are kept as
    they are (the file's name is not known yet)."""
    unique: list[Download] = []
    links: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for download in downloads:
        if not download.dest or download.dest.endswith("/"):
            if download not in unique:
                unique.append(download)
            continue
        if download.url not in first:
            first[download.url] = download.dest
            unique.append(download)
        elif first[download.url] != download.dest:
            links.append((first[download.url], download.dest))
    return unique, links


def dedup_repos(repos: Sequence[GitRepo]) -> tuple[list[GitRepo], list[tuple[str, str]]]:
    """One clone per (url, ref) and destination: another (url, ref) wanting a taken destination
    gets `<dest>--<ref>`; the same (url, ref) at another destination becomes a link to the first
    clone, unless it has post_commands of its own (they run in their own clone)."""
    owners: dict[str, tuple[str, str]] = {}
    placed: list[GitRepo] = []
    for repo in repos:
        key = (repo.url, repo.ref)
        if repo.dest in owners and owners[repo.dest] != key:
            suffix = REF_SEPARATORS.sub("-", repo.ref) or "default"
            repo = replace(repo, dest=f"{repo.dest}--{suffix}")
        owners.setdefault(repo.dest, key)
        placed.append(repo)
    unique: list[GitRepo] = []
    links: list[tuple[str, str]] = []
    first: dict[tuple[str, str], int] = {}
    for repo in placed:
        key = (repo.url, repo.ref)
        if key not in first:
            first[key] = len(unique)
            unique.append(repo)
            continue
        primary = unique[first[key]]
        if repo.dest == primary.dest:
            if repo.post_commands and not primary.post_commands:
                unique[first[key]] = replace(primary, post_commands=repo.post_commands)
        elif repo.post_commands:
            unique.append(repo)
        else:
            links.append((primary.dest, repo.dest))
    return unique, links


# ---- installs -------------------------------------------------------------------------------


def apt_commands(packages: Sequence[str]) -> list[list[str]]:
    return [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ]


def pip_python(block: PipBlock, default_venv: str, system_python: str) -> tuple[str, bool]:
    """(the python to install into, whether it is the system's)."""
    venv = block.venv or default_venv or "/venv/main"
    if venv == "system":
        return (f"/usr/bin/python{block.python}" if block.python else system_python), True
    return f"{venv}/bin/python", False


def pip_commands(block: PipBlock, default_venv: str, system_python: str = "python3") -> list[list[str]]:
    """The packages, then each requirements file, with uv or pip; --no-cache always, and
    --break-system-packages (uv also --system) for the system's python, as the reference does."""
    python, system = pip_python(block, default_venv, system_python)
    extra = shlex.split(block.args)
    if block.tool == "uv":
        base = [
            "uv",
            "pip",
            "install",
            "--no-cache",
            "--python",
            python,
            *(["--system", "--break-system-packages"] if system else []),
        ]
    else:
        base = [python, "-m", "pip", "install", "--no-cache-dir", *(["--break-system-packages"] if system else [])]
    commands = [[*base, *extra, *block.packages]] if block.packages else []
    commands += [[*base, "-r", requirement, *extra] for requirement in block.requirements]
    return commands


def venv_command(block: PipBlock, default_venv: str, uv_available: bool) -> list[str] | None:
    """The command that creates the block's venv when it names one (or a python) that may not
    exist yet; None for the system's python and the default venv."""
    venv = block.venv or default_venv
    if venv == "system" or not (block.venv or block.python):
        return None
    if uv_available:
        return ["uv", "venv", *(["--python", block.python] if block.python else []), venv]
    return [f"python{block.python}" if block.python else "python3", "-m", "venv", venv]


def conda_commands(block: CondaBlock, default_env: str, tool: str, env_exists: bool) -> list[list[str]]:
    """`create` when the prefix has no conda-meta yet, then `install` into it."""
    prefix = block.env or default_env
    commands = []
    if prefix and not env_exists:
        commands.append([tool, "create", "-y", "-p", prefix, *([f"python={block.python}"] if block.python else [])])
    channels = [part for channel in block.channels for part in ("-c", channel)]
    commands.append([tool, "install", "-y", *(["-p", prefix] if prefix else []), *channels,
                     *shlex.split(block.args), *block.packages])  # fmt: skip
    return commands


def git_commands(repo: GitRepo, exists: bool) -> list[list[str]]:
    if exists:
        commands = [["git", "-C", repo.dest, "pull"]] if repo.pull_if_exists else []
    else:
        commands = [["git", "clone", *(["--recursive"] if repo.recursive else []), repo.url, repo.dest]]
    if repo.ref and (commands or not exists):
        commands.append(["git", "-C", repo.dest, "checkout", repo.ref])
    return commands


def file_mode(write: FileWrite) -> int:
    return int(write.permissions, 8)


# ---- services -------------------------------------------------------------------------------

SERVICE_SCRIPT_DIR = "/opt/supervisor-scripts"
SERVICE_CONF_DIR = "/etc/supervisor/conf.d"


def service_paths(service: ServiceSpec) -> tuple[str, str]:
    return f"{SERVICE_SCRIPT_DIR}/{service.name}.sh", f"{SERVICE_CONF_DIR}/{service.name}.conf"


def double_quoted(value: str) -> str:
    """`value` inside double quotes in bash, nothing in it expanded."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def service_script(service: ServiceSpec, source: str, runtime: str, marker: str) -> str:
    """The service's start script: the settings files applied (as for every program), skipped
    under SERVERLESS=true and when no PORTAL_CONFIG label contains its search term (when it
    has one), waiting while provisioning runs, its environment, pre_commands, then `command`
    in place of the shell (the process Supervisor watches)."""
    name = service.name
    lines = [
        "#!/usr/bin/env bash",
        f"# Supervisor program {name!r}, written by the provisioner from {source}: the manifest's",
        "# `services` entry decides it (a changed entry rewrites this file).",
        "if [[ -z ${LLAMA_IMAGES_SETTINGS_READ:-} ]]; then",
        f'    exec {runtime} run -- "$0" "$@"',
        "fi",
    ]
    if service.skip_on_serverless:
        lines += [
            "if [[ ${SERVERLESS,,} == true ]]; then",
            f'    echo "[{name}] not started: SERVERLESS=true"',
            "    sleep 6",
            "    exit 0",
            "fi",
        ]
    if service.portal_search_term:
        term = double_quoted(service.portal_search_term)
        lines += [
            f"if ! {runtime} portal-has {term}; then",
            f'    echo "[{name}] not started: no PORTAL_CONFIG label contains" {term}',
            "    sleep 6",
            "    exit 0",
            "fi",
        ]
    if service.venv and service.venv != "system":
        venv = shlex.quote(service.venv)
        lines += [f"if [[ -f {venv}/bin/activate ]]; then", f"    source {venv}/bin/activate", "fi"]
    if service.wait_for_provisioning:
        lines += [
            f"while [[ -e {marker} ]]; do",
            f'    echo "[{name}] waiting for provisioning to finish ({marker})"',
            "    sleep 5",
            "done",
        ]
    lines += [f"export {key}={double_quoted(value)}" for key, value in service.environment]
    if service.workdir:
        lines.append(f"cd {shlex.quote(service.workdir)} || exit 1")
    lines += list(service.pre_commands)
    lines.append(service.command)  # last: the process Supervisor watches (with its group)
    return "\n".join(lines) + "\n"


def service_conf(service: ServiceSpec, script: str, log_dir_variable: str) -> str:
    """Its Supervisor program: a clean exit 0 (skipped) stays down, a crash is restarted, and a
    start counts after 5 s, as for the image's own programs."""
    return "\n".join([
        f"; Written by the provisioner (manifest service {service.name!r}).",
        f"[program:{service.name}]",
        f"command={script}",
        "priority=100",
        "autostart=true",
        "autorestart=unexpected",
        "exitcodes=0",
        "startsecs=5",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=10",
        f"stdout_logfile=%(ENV_{log_dir_variable})s/%(program_name)s.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=1",
        "redirect_stderr=true",
    ]) + "\n"  # fmt: skip


# ---- what is shown ----------------------------------------------------------------------------


def masked_url(url: str) -> str:
    """A URL with its password and query string (signed URLs carry tokens there) hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


def shown_source(source: str) -> str:
    return masked_url(source) if re.match(r"https?://", source, re.I) else source


def dry_run_download(fetch: Fetch, downloader: str) -> str:
    """The reference's dry-run line for a download (its pools: HF and wget), and the downloader."""
    where = fetch.target or "the Hugging Face cache"
    if fetch.kind == "hf-file":
        what = f"{fetch.repo}/{fetch.path}@{fetch.revision}"
    elif fetch.kind == "hf-repo":
        what = f"repo {fetch.repo}"
    else:
        what = masked_url(fetch.url)
    checked = f", sha256 {fetch.sha256[:12]}..." if fetch.sha256 else ""
    return f"[DRY RUN] Would download {fetch.pool} {what} -> {where} (with {downloader}{checked})"
