"""A provisioning manifest, in the reference image's format (version 1): what to install, clone,
download, write, register and run, and how to retry and fail. Frozen values; load.py reads them
from YAML, plan.py decides from them.

Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

FAILURE_ACTIONS = ("continue", "stop", "destroy")
CONDITIONS = ("hf_token_valid", "civitai_token_valid")
PIP_TOOLS = ("uv", "pip")
ENV_MERGE_TARGETS = ("downloads",)


@dataclass(frozen=True)
class Retry:
    """A download's attempts: max_attempts in all, waiting initial_delay, then times multiplier."""

    max_attempts: int = 5
    initial_delay: float = 2.0
    backoff_multiplier: float = 2.0

    def delays(self) -> list[float]:
        """The waits between attempts: max_attempts - 1 of them."""
        return [self.initial_delay * self.backoff_multiplier**n for n in range(max(self.max_attempts - 1, 0))]


@dataclass(frozen=True)
class Concurrency:
    hf_downloads: int = 3
    wget_downloads: int = 5


@dataclass(frozen=True)
class Settings:
    venv: str = "/venv/main"
    conda_env: str = "/venv/main"
    # Empty: the log goes to the output only (the provisioning program's log, provisioning.log).
    log_file: str = ""
    concurrency: Concurrency = Concurrency()
    retry: Retry = Retry()


@dataclass(frozen=True)
class Auth:
    huggingface_token_env: str = "HF_TOKEN"
    civitai_token_env: str = "CIVITAI_TOKEN"


@dataclass(frozen=True)
class OnFailure:
    action: str = "continue"
    max_retries: int = 3  # attempts of the whole run before the action (0: one attempt)
    retry_delay: float = 30.0
    webhook: str = ""
    webhook_on_success: bool = False

    @property
    def attempts(self) -> int:
        return max(self.max_retries, 1)


@dataclass(frozen=True)
class FileWrite:
    path: str
    content: str = ""
    permissions: str = "0644"
    owner: str = ""


@dataclass(frozen=True)
class PipBlock:
    packages: tuple[str, ...] = ()
    tool: str = "uv"
    args: str = ""
    requirements: tuple[str, ...] = ()
    venv: str = ""  # "" = settings.venv; "system" = the system's python
    python: str = ""


@dataclass(frozen=True)
class CondaBlock:
    packages: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    args: str = ""
    env: str = ""  # "" = settings.conda_env
    python: str = ""


@dataclass(frozen=True)
class GitRepo:
    url: str
    dest: str
    ref: str = ""
    recursive: bool = True
    pull_if_exists: bool = False
    post_commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Download:
    url: str
    dest: str = ""  # "" = the Hugging Face cache (hub URLs); a trailing "/" = a directory
    sha256: str = ""  # this image's addition: the file must have this sha256


@dataclass(frozen=True)
class ConditionalDownloads:
    when: str
    downloads: tuple[Download, ...] = ()
    else_downloads: tuple[Download, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: str
    portal_search_term: str = ""
    skip_on_serverless: bool = True
    venv: str = "/venv/main"
    workdir: str = ""
    pre_commands: tuple[str, ...] = ()
    wait_for_provisioning: bool = True
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Extension:
    module: str
    config: dict[str, Any] = field(default_factory=dict, hash=False)
    enabled: bool = True


# The sections an extension may append to, in the order they run.
LIST_SECTIONS = (
    "write_files",
    "apt_packages",
    "git_repos",
    "pip_packages",
    "conda_packages",
    "downloads",
    "services",
    "write_files_late",
    "post_commands",
)


@dataclass(frozen=True)
class Manifest:
    version: int = 1
    settings: Settings = Settings()
    auth: Auth = Auth()
    on_failure: OnFailure = OnFailure()
    extensions: tuple[Extension, ...] = ()
    conditional_downloads: tuple[ConditionalDownloads, ...] = ()
    env_merge: tuple[tuple[str, str], ...] = ()
    write_files: tuple[FileWrite, ...] = ()
    apt_packages: tuple[str, ...] = ()
    git_repos: tuple[GitRepo, ...] = ()
    pip_packages: tuple[PipBlock, ...] = ()
    conda_packages: tuple[CondaBlock, ...] = ()
    downloads: tuple[Download, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    write_files_late: tuple[FileWrite, ...] = ()
    post_commands: tuple[str, ...] = ()

    def appended(self, **sections: tuple[Any, ...]) -> Manifest:
        """This manifest with items appended to list sections (extensions, conventions)."""
        changes: dict[str, Any] = {name: (*getattr(self, name), *items) for name, items in sections.items()}
        return replace(self, **changes)

    @property
    def has_work(self) -> bool:
        """Anything to do besides PROVISIONING_SCRIPT (conditional downloads and extensions count)."""
        names = [*LIST_SECTIONS, "conditional_downloads", "extensions"]
        return any(getattr(self, name) for name in names)


SECTIONS = tuple(f.name for f in fields(Manifest))
