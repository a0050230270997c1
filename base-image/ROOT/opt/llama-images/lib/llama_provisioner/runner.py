"""Running a manifest: its phases in order (plan.PHASES), each skipped when its inputs are those of
its last success, the first failing phase ending the attempt; the whole run attempted again
(on_failure.max_retries, retry_delay apart), then the failure action and the webhook. Dry runs
print what would be done and change nothing (no state read or written).

I/O edge: processes, files, HTTP. Stdlib only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import grp
import importlib
import json
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_runtime import paths

from . import fetch, plan
from .load import resolve_conditionals, with_environment
from .model import (
    CondaBlock,
    Download,
    Extension,
    FileWrite,
    GitRepo,
    Manifest,
    PipBlock,
    ServiceSpec,
)
from .output import Output
from .state import State

CONFIG_REFUSED = 78  # a refusal no retry can change (EX_CONFIG): no retries, no failure action
SUPERVISOR_READY_TIMEOUT = 60.0
VAST_URL = "https://console.vast.ai"
USER_AGENT = "llama-images-provisioner"
SCRIPT_DOWNLOAD_ATTEMPTS = 5


class PhaseError(Exception):
    """A phase that failed: one line with the cause."""


class CommandFailed(PhaseError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Run:
    """One provisioning run's settings and edges."""

    manifest: Manifest
    source: str  # as shown (a URL's secrets masked)
    env: dict[str, str]
    out: Output
    state: State
    downloader: fetch.Chosen
    dry_run: bool = False
    force: bool = False
    sleep: Callable[[float], None] = time.sleep
    runtime: str = str(paths.RUNTIME_COMMAND)
    supervisor_ready_timeout: float = SUPERVISOR_READY_TIMEOUT
    script_status: Callable[[str], None] = field(default=lambda text: None)
    failure_note: str = ""  # the last failure: "<phase>: <cause>"
    failure_cause: str = ""  # its cause alone

    def say(self, message: str) -> None:
        self.out.say(message)


# ---- commands -------------------------------------------------------------------------------


def run_command(run: Run, command: Sequence[str] | str, cwd: str | None = None, label: str = "") -> None:
    """A command, its output into the log line by line (masked); PhaseError on a non-zero exit."""
    shown = command if isinstance(command, str) else shlex.join(command)
    run.say(f"running{f' in {cwd}' if cwd else ''}: {shown}")
    try:
        process = subprocess.Popen(
            command, shell=isinstance(command, str), cwd=cwd, env=run.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )  # fmt: skip
    except OSError as exc:
        raise PhaseError(f"{label or shown}: cannot run it ({exc.strerror})") from None
    assert process.stdout is not None
    for line in process.stdout:
        run.out.raw("  " + line)
    if process.wait() != 0:
        raise CommandFailed(f"{label or shown}: exit status {process.returncode}", process.returncode)


# ---- phases -----------------------------------------------------------------------------------


def write_files(run: Run, files: Sequence[FileWrite]) -> None:
    for item in files:
        mode = plan.file_mode(item)
        if run.dry_run:
            preview = item.content[:80] + ("..." if len(item.content) > 80 else "")
            run.say(f"[DRY RUN] Would write {item.path} (mode {item.permissions}, owner {item.owner or 'root'}): "
                    f"{preview!r}")  # fmt: skip
            continue
        path = Path(item.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(item.content, encoding="utf-8")
            path.chmod(mode)
        except OSError as exc:
            raise PhaseError(f"{item.path}: not written ({exc.strerror or exc})") from None
        if item.owner:
            user, _, group = item.owner.partition(":")
            try:
                account = pwd.getpwnam(user)
                os.chown(path, account.pw_uid, grp.getgrnam(group).gr_gid if group else account.pw_gid)
            except (LookupError, OSError) as exc:
                run.say(f"{item.path}: written, but its owner is not {item.owner} ({exc})")
                continue
        run.say(f"wrote {item.path} (mode {item.permissions}{f', owner {item.owner}' if item.owner else ''})")


def apt(run: Run, packages: Sequence[str]) -> None:
    if not packages:
        return
    if run.dry_run:
        run.say(f"[DRY RUN] Would install apt packages: {', '.join(packages)}")
        return
    env_before = run.env.get("DEBIAN_FRONTEND")
    run.env["DEBIAN_FRONTEND"] = "noninteractive"
    try:
        for command in plan.apt_commands(packages):
            run_command(run, command, label="apt-get")
    finally:
        if env_before is None:
            run.env.pop("DEBIAN_FRONTEND", None)


def git(run: Run, repos: Sequence[GitRepo]) -> None:
    unique, links = plan.dedup_repos(repos)
    if run.dry_run:
        for repo in unique:
            run.say(f"[DRY RUN] Would clone {plan.masked_url(repo.url)} -> {repo.dest}"
                    f"{f' (ref {repo.ref})' if repo.ref else ''}")  # fmt: skip
            for command in repo.post_commands:
                run.say(f"[DRY RUN] Would run in {repo.dest}: {command}")
        for source, link in links:
            run.say(f"[DRY RUN] Would link {link} -> {source}")
        return

    def clone(repo: GitRepo) -> None:
        commands = plan.git_commands(repo, Path(repo.dest).is_dir())
        if not commands:
            run.say(f"{repo.dest} exists: left as it is (pull_if_exists: false)")
        for command in commands:
            run_command(run, command, label=f"git ({repo.dest})")

    failures = parallel(clone, unique, 4)
    if failures:
        raise PhaseError("; ".join(failures))
    # After every clone, one repo at a time (two installs into one venv must not race).
    for repo in unique:
        for command in repo.post_commands:
            run_command(run, command, cwd=repo.dest, label=f"post command in {repo.dest}")
    make_links(run, links)


def parallel(work: Callable[[Any], None], items: Sequence[Any], workers: int) -> list[str]:
    """`work` for each item, `workers` at a time; the causes of those that failed."""
    if not items:
        return []
    failures: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for future in [pool.submit(work, item) for item in items]:
            try:
                future.result()
            except (PhaseError, fetch.FetchError) as exc:
                failures.append(str(exc))
    return failures


def make_links(run: Run, links: Sequence[tuple[str, str]]) -> None:
    for source, link in links:
        path = Path(link)
        if path.exists() or path.is_symlink():
            continue
        if not Path(source).exists():
            run.say(f"{link}: not linked, {source} is missing")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(source)
        run.say(f"linked {link} -> {source}")


def pip(run: Run, blocks: Sequence[PipBlock]) -> None:
    system_python = shutil.which("python3", path=run.env.get("PATH")) or "python3"
    for block in blocks:
        commands = plan.pip_commands(block, run.manifest.settings.venv, system_python)
        if run.dry_run:
            for command in commands:
                run.say(f"[DRY RUN] Would run: {shlex.join(command)}")
            continue
        create = plan.venv_command(
            block, run.manifest.settings.venv, shutil.which("uv", path=run.env.get("PATH")) is not None
        )
        venv = block.venv or run.manifest.settings.venv
        if create is not None and not Path(venv, "bin", "python").is_file():
            run_command(run, create, label=f"creating {venv}")
        for command in commands:
            run_command(run, command, label="pip install")


def conda(run: Run, blocks: Sequence[CondaBlock]) -> None:
    if not blocks:
        return
    tool = next((t for t in ("/opt/miniforge3/bin/mamba", "/opt/miniforge3/bin/conda") if os.access(t, os.X_OK)), None)
    tool = tool or shutil.which("mamba", path=run.env.get("PATH")) or shutil.which("conda", path=run.env.get("PATH"))
    for block in blocks:
        prefix = block.env or run.manifest.settings.conda_env
        commands = plan.conda_commands(block, run.manifest.settings.conda_env, tool or "conda",
                                       Path(prefix, "conda-meta").is_dir())  # fmt: skip
        if run.dry_run:
            for command in commands:
                run.say(f"[DRY RUN] Would run: {shlex.join(command)}")
            continue
        if tool is None:
            raise PhaseError("conda_packages: this image has no conda or mamba; install Miniforge first (post_commands "
                             "cannot: this phase comes before them), or use pip_packages")  # fmt: skip
        for command in commands:
            run_command(run, command, label="conda")


def downloads(run: Run, items: Sequence[Download]) -> None:
    unique, links = plan.dedup_downloads(items)
    auth = run.manifest.auth
    fetches = [plan.classify(d, run.env, auth.huggingface_token_env, auth.civitai_token_env) for d in unique]
    if run.dry_run:
        for item in fetches:
            run.say(plan.dry_run_download(item, run.downloader.name))
        for source, link in links:
            run.say(f"[DRY RUN] Would link {link} -> {source}")
        return
    retry = run.manifest.settings.retry

    def one(item: plan.Fetch) -> None:
        shown = plan.masked_url(item.url)
        with fetch.locked(item.target):
            if item.target and not item.target.endswith("/") and Path(item.target).exists():
                run.say(f"{item.target} is there already: {shown} not downloaded")
                return
            delays = retry.delays()
            for attempt in range(1, retry.max_attempts + 1):
                run.say(f"downloading {shown} -> {item.target or 'the Hugging Face cache'} "
                        f"(attempt {attempt}/{retry.max_attempts}, {run.downloader.name})")  # fmt: skip
                try:
                    run.downloader.run(item, run.out)
                    return
                except fetch.FetchError as exc:
                    if attempt == retry.max_attempts:
                        raise fetch.FetchError(f"{shown}: {exc}") from None
                    run.say(f"{shown}: {exc}; trying again in {delays[attempt - 1]:g} s")
                    run.sleep(delays[attempt - 1])

    pools = run.manifest.settings.concurrency
    failures = parallel(one, [f for f in fetches if f.pool == "HF"], pools.hf_downloads)
    if not failures:
        failures = parallel(one, [f for f in fetches if f.pool == "wget"], pools.wget_downloads)
    if failures:
        raise PhaseError("; ".join(failures))
    make_links(run, links)


def services(run: Run, specs: Sequence[ServiceSpec]) -> None:
    if not specs:
        return
    for spec in specs:
        script, conf = plan.service_paths(spec)
        script_text = plan.service_script(spec, run.source, run.runtime, str(paths.PROVISIONING_MARKER))
        conf_text = plan.service_conf(spec, script, paths.PROGRAM_LOG_DIR_VARIABLE)
        if run.dry_run:
            run.say(f"[DRY RUN] Would write the start script {script}:\n{script_text}")
            run.say(f"[DRY RUN] Would write the Supervisor program {conf}:\n{conf_text}")
            continue
        try:
            Path(script).parent.mkdir(parents=True, exist_ok=True)
            Path(script).write_text(script_text, encoding="utf-8")
            Path(script).chmod(0o755)
            Path(conf).parent.mkdir(parents=True, exist_ok=True)
            Path(conf).write_text(conf_text, encoding="utf-8")
        except OSError as exc:
            raise PhaseError(f"service {spec.name}: its files cannot be written ({exc.strerror or exc})") from None
        run.say(f"service {spec.name}: wrote {script} and {conf}")
    if run.dry_run:
        return
    wait_for_supervisor(run)
    for command in (["supervisorctl", "reread"], ["supervisorctl", "update"]):
        try:
            run_command(run, command, label=" ".join(command))
        except PhaseError as exc:  # another program's bad file: ours are checked one by one below
            run.say(f"{exc}; checking this manifest's services one by one")
    missing = [spec.name for spec in specs if not registered(run, spec.name)]
    if missing:
        raise PhaseError(f"Supervisor did not take up {', '.join(missing)}: their files are written but they would "
                         "never start; see `supervisorctl reread` above")  # fmt: skip
    run.say(f"services registered with Supervisor: {', '.join(spec.name for spec in specs)}")


def supervisorctl(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, env=run.env, check=False)


def wait_for_supervisor(run: Run) -> None:
    """supervisord answering on its socket (0 or 3: some programs not running), or PhaseError."""
    deadline = time.monotonic() + run.supervisor_ready_timeout
    while True:
        try:
            code = supervisorctl(run, "status").returncode
        except OSError as exc:
            raise PhaseError(f"supervisorctl cannot run ({exc.strerror}): services cannot be registered") from None
        if code in (0, 3):
            return
        if time.monotonic() >= deadline:
            raise PhaseError(f"supervisord did not answer within {run.supervisor_ready_timeout:g} s "
                             f"(supervisorctl exit {code}): services cannot be registered")  # fmt: skip
        time.sleep(1)


def registered(run: Run, name: str) -> bool:
    answer = supervisorctl(run, "status", name)
    return "no such process" not in (answer.stdout + answer.stderr).lower()


def post_commands(run: Run, commands: Sequence[str]) -> None:
    for command in commands:
        if run.dry_run:
            run.say(f"[DRY RUN] Would run: {command}")
            continue
        run_command(run, command, label="post command")


# ---- PROVISIONING_SCRIPT ----------------------------------------------------------------------


def provisioning_script(run: Run, value: str) -> None:
    """PROVISIONING_SCRIPT: a file in the container, or an http(s) URL fetched (bounded retries)
    to /provisioning.sh; run with bash. The URL may carry credentials: it is never shown."""
    if not value:
        return
    is_url = value.lower().startswith(("http://", "https://"))
    if run.dry_run:
        what = "the script PROVISIONING_SCRIPT's URL names" if is_url else value
        run.say(f"[DRY RUN] Would download and run {what}" if is_url else f"[DRY RUN] Would run {what}")
        return
    if is_url:
        run.script_status("running: downloading PROVISIONING_SCRIPT")
        script = paths.DOWNLOADED_SCRIPT
        problem = download_script(run, value, script)
        if problem:
            raise PhaseError(f"PROVISIONING_SCRIPT could not be downloaded ({problem})")
        name = "the downloaded PROVISIONING_SCRIPT"
    elif Path(value).is_file():
        script, name = Path(value), Path(value).name
    else:
        raise PhaseError(f"PROVISIONING_SCRIPT={value} is neither an http(s) URL nor a file in the container")
    run.script_status(f"running {name}")
    run.say(f"running {name}")
    try:
        run_command(run, ["bash", str(script)], label=name)
    except CommandFailed as exc:
        raise PhaseError(f"the script exited with status {exc.status}") from None


def download_script(run: Run, url: str, target: Path) -> str | None:
    """The script at `target` (line ends made Unix), or why not."""
    problem = ""
    delay = 2.0
    for attempt in range(1, SCRIPT_DOWNLOAD_ATTEMPTS + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.write_bytes(data.replace(b"\r\n", b"\n"))
            temporary.chmod(0o755)
            temporary.replace(target)
            return None
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                return problem
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = str(getattr(reason, "strerror", None) or reason)
        if attempt < SCRIPT_DOWNLOAD_ATTEMPTS:
            run.sleep(delay)
            delay *= 2
    return problem


# ---- extensions -------------------------------------------------------------------------------


@dataclass
class Additions:
    """What an extension may append to (lists of this package's model values, or mappings)."""

    write_files: list[Any] = field(default_factory=list)
    apt_packages: list[Any] = field(default_factory=list)
    git_repos: list[Any] = field(default_factory=list)
    pip_packages: list[Any] = field(default_factory=list)
    conda_packages: list[Any] = field(default_factory=list)
    downloads: list[Any] = field(default_factory=list)
    services: list[Any] = field(default_factory=list)
    write_files_late: list[Any] = field(default_factory=list)
    post_commands: list[Any] = field(default_factory=list)


@dataclass
class ExtensionContext:
    manifest: Additions
    log: logging.Logger
    environment: Mapping[str, str]


KINDS: dict[str, type[Any] | None] = {
    "write_files": FileWrite, "apt_packages": None, "git_repos": GitRepo, "pip_packages": PipBlock,
    "conda_packages": CondaBlock, "downloads": Download, "services": ServiceSpec, "write_files_late": FileWrite,
    "post_commands": None,
}  # fmt: skip


def as_value(kind: type[Any] | None, item: Any, where: str) -> Any:
    if kind is None:
        if isinstance(item, str):
            return item
        raise PhaseError(f"{where}: {item!r} is not a string")
    if isinstance(item, kind):
        return item
    if isinstance(item, Mapping):
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}
        if kind is ServiceSpec and isinstance(values.get("environment"), Mapping):
            values["environment"] = tuple(values["environment"].items())
        try:
            return kind(**values)
        except TypeError as exc:
            raise PhaseError(f"{where}: {exc}") from None
    raise PhaseError(f"{where}: {type(item).__name__} is neither a {kind.__name__} nor a mapping")


def extensions(run: Run, items: Sequence[Extension]) -> Manifest:
    """Each enabled extension's `run(config, context, dry_run)`, which appends to the manifest's
    lists; the manifest with what they appended. Skipped in a dry run (its additions are then
    not shown)."""
    additions = Additions()
    for item in items:
        if not item.enabled:
            run.say(f"extension {item.module}: disabled")
            continue
        if run.dry_run:
            run.say(f"[DRY RUN] Would run extension {item.module} with config {json.dumps(item.config)}")
            continue
        try:
            module = importlib.import_module(item.module)
        except ImportError as exc:
            raise PhaseError(
                f"extension {item.module} cannot be imported ({exc}); put it under /opt/instance-tools/lib"
            ) from None
        entry = getattr(module, "run", None)
        if not callable(entry):
            raise PhaseError(f"extension {item.module} has no run(config, context, dry_run) function")
        context = ExtensionContext(additions, logging.getLogger(f"provisioner.{item.module}"), dict(run.env))
        try:
            entry(config=item.config, context=context, dry_run=run.dry_run)
        except Exception as exc:  # an extension's own failure ends the run before anything is installed
            raise PhaseError(f"extension {item.module} failed: {exc}") from None
        run.say(f"extension {item.module}: done")
    found = {}
    for name, kind in KINDS.items():
        found[name] = tuple(
            as_value(kind, value, f"extension addition to {name}") for value in getattr(additions, name)
        )
    return run.manifest.appended(**found)


# ---- tokens -----------------------------------------------------------------------------------


def token_valid(url: str, token: str, user_agent: str = USER_AGENT) -> bool:
    """The service accepts the token (a 200 to an authenticated request); anything else is no."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_tokens(run: Run) -> dict[str, bool]:
    """hf_token_valid and civitai_token_valid, asked of the hub (HF_ENDPOINT) and CivitAI; no
    token: false without asking."""
    auth = run.manifest.auth
    hub_token = run.env.get(auth.huggingface_token_env, "")
    civitai_token = run.env.get(auth.civitai_token_env, "")
    found = {
        "hf_token_valid": bool(hub_token) and token_valid(f"{plan.hub_endpoint(run.env)}api/whoami-v2", hub_token),
        # CivitAI's firewall turns away urllib's own User-Agent before it reads the token.
        "civitai_token_valid": bool(civitai_token)
        and token_valid(
            "https://civitai.com/api/v1/models?hidden=1&limit=1",
            civitai_token,
            "Mozilla/5.0 (llama-images provisioner)",
        ),
    }
    for name, valid in found.items():
        variable = auth.huggingface_token_env if name.startswith("hf") else auth.civitai_token_env
        state = "valid" if valid else ("not set" if not run.env.get(variable) else "not accepted")
        run.say(f"{name}: {str(valid).lower()} ({variable} {state})")
    return found


# ---- one attempt, and the whole run -----------------------------------------------------------


def attempt(run: Run) -> int:
    """One pass over the phases: 0 when all succeeded, 1 at the first failure."""
    manifest = run.manifest
    inputs = plan.phase_inputs(manifest, run.env)

    def phase(name: str, inputs_of: object, work: Callable[[], None]) -> bool:
        digest = plan.digest(name, inputs_of)
        if not run.dry_run and run.state.done(name, digest):
            run.say(f"--- {name}: unchanged since it last succeeded, skipped")
            return True
        run.say(f"--- {name}")
        run.script_status(f"running: {name}")
        try:
            work()
        except (PhaseError, fetch.FetchError) as exc:
            run.say(f"FAILED: {name}: {exc}")
            run.failure_note = f"{name}: {exc}"
            run.failure_cause = str(exc) if name == "provisioning_script" else run.failure_note
            return False
        if not run.dry_run:
            problem = run.state.record(name, digest)
            if problem:
                run.say(problem)
        return True

    extended = manifest

    def run_extensions() -> None:
        nonlocal extended
        extended = extensions(run, manifest.extensions)

    if not phase("extensions", inputs["extensions"], run_extensions):
        return 1
    valid = check_tokens(run) if manifest.conditional_downloads else {}
    resolved, notes = resolve_conditionals(extended, valid)
    resolved, more = with_environment(resolved, run.env)
    for note in [*notes, *more]:
        run.say(note)
    run.manifest = resolved
    inputs = plan.phase_inputs(resolved, run.env)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("write_files", lambda: write_files(run, resolved.write_files)),
        ("apt", lambda: apt(run, resolved.apt_packages)),
        ("git", lambda: git(run, resolved.git_repos)),
        ("pip", lambda: pip(run, resolved.pip_packages)),
        ("conda", lambda: conda(run, resolved.conda_packages)),
        ("downloads", lambda: downloads(run, resolved.downloads)),
        ("services", lambda: services(run, resolved.services)),
        ("write_files_late", lambda: write_files(run, resolved.write_files_late)),
        ("post_commands", lambda: post_commands(run, resolved.post_commands)),
        ("provisioning_script", lambda: provisioning_script(run, run.env.get("PROVISIONING_SCRIPT", ""))),
    ]
    try:
        for name, work in steps:
            if name == "provisioning_script" and not run.env.get("PROVISIONING_SCRIPT"):
                continue
            if not phase(name, inputs[name], work):
                return 1
    finally:
        run.manifest = manifest
    return 0


def provision(run: Run) -> int:
    """Every attempt the manifest allows, then the failure action; 0 when an attempt succeeded."""
    if run.force and not run.dry_run:
        if not run.state.clear():
            run.say(f"--force refused: {run.state.directory} holds files the provisioner did not write, so it did not "
                    "make it; remove them, point PROVISIONER_STATE_DIR elsewhere, or leave out --force")  # fmt: skip
            return CONFIG_REFUSED
        run.say(f"--force: forgot which phases succeeded ({run.state.directory})")
    if run.dry_run:
        run.say("=== DRY RUN: nothing is changed ===")
        return attempt(run)
    failure = run.manifest.on_failure
    for number in range(1, failure.attempts + 1):
        if attempt(run) == 0:
            run.say("provisioning complete")
            if failure.webhook_on_success:
                webhook(run, "success", "")
            return 0
        if number < failure.attempts:
            run.say(f"attempt {number}/{failure.attempts} failed; the next in {failure.retry_delay:g} s")
            run.sleep(failure.retry_delay)
    run.say(f"provisioning failed after {failure.attempts} attempt(s): {run.failure_note}")
    act_on_failure(run)
    return 1


def webhook(run: Run, action: str, error: str) -> None:
    """POST the outcome to the webhook (the URL is a secret: never shown)."""
    url = run.manifest.on_failure.webhook
    if not url:
        return
    outcome = {
        "action": action,
        "manifest": run.source,
        "error": run.out.masked(error),
        "container_id": run.env.get("CONTAINER_ID", ""),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    body = json.dumps(outcome).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json",
                                                                            "User-Agent": USER_AGENT})  # fmt: skip
    send(run, request, "webhook", 10, refused="answered {}")


def act_on_failure(run: Run) -> None:
    failure = run.manifest.on_failure
    webhook(run, failure.action, f"provisioning failed after {failure.attempts} attempt(s): {run.failure_note}")
    if failure.action == "continue":
        return
    if failure.action == "stop":
        if paths.PROVISIONER_STOPPED.exists():
            run.say(f"on_failure stop: stopped once already ({paths.PROVISIONER_STOPPED}); not again (no restart loop)")
            return
        with contextlib.suppress(OSError):
            paths.PROVISIONER_STOPPED.touch()
    instance_action(run, failure.action)


def instance_action(run: Run, action: str) -> None:
    """Stop or destroy this instance through the marketplace's API (the key in a header, never
    in a process's arguments)."""
    container, key = run.env.get("CONTAINER_ID", ""), run.env.get("CONTAINER_API_KEY", "")
    if not container or not key:
        missing = " and ".join(n for n, v in (("CONTAINER_ID", container), ("CONTAINER_API_KEY", key)) if not v)
        run.say(f"on_failure {action}: {missing} not set, so the instance cannot be told to {action}")
        return
    base = run.env.get("PROVISIONER_VAST_URL", "").strip() or VAST_URL
    url = f"{base.rstrip('/')}/api/v0/instances/{container}/"
    body = json.dumps({"state": "stopped"} if action == "stop" else {}).encode()
    request = urllib.request.Request(url, data=body, method="PUT" if action == "stop" else "DELETE",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                              "User-Agent": USER_AGENT})  # fmt: skip
    run.say(f"on_failure {action}: asking the marketplace to {action} instance {container}")
    send(run, request, f"on_failure {action}", 30, refused="refused ({})")


def send(run: Run, request: urllib.request.Request, what: str, timeout: float, *, refused: str) -> None:
    """One request whose answer is only reported: `what: answered 200`, an error status as
    `refused` says (`"refused ({})"`), `what: not reached (...)` with the reason masked (a URL may
    hold a secret)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            run.say(f"{what}: answered {response.status}")
    except urllib.error.HTTPError as exc:
        run.say(f"{what}: {refused.format(exc.code)}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        run.say(f"{what}: not reached ({run.out.masked(str(getattr(exc, 'reason', exc)))})")
