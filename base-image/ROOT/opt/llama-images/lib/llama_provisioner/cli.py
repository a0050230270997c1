"""`provisioner [MANIFEST | URL] [--dry-run] [--force]`: the reference image's command, on PATH
in /opt/instance-tools/bin. Without a manifest it runs PROVISIONING_SCRIPT alone (when set).

`provisioner --boot` is what the image's "provisioning" program runs at every boot, as the
reference's boot step does: PROVISIONING_MANIFEST (a path or an http(s) URL), else the baked
/provisioning.yaml, then PROVISIONING_SCRIPT as the last phase; skipped once it succeeded
(/.provisioning_complete); /.provisioning while it runs, /.provisioning_failed after a failure
(the next boot tries again); a one-line status for the portal.

I/O edge: reads the environment and files, then runs runner.provision. Stdlib and PyYAML.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llama_runtime import environment, paths

from . import fetch, plan
from .load import ManifestError, load, with_overrides
from .model import Manifest, OnFailure
from .output import Output, known_secrets
from .runner import CONFIG_REFUSED, Run, provision
from .state import State, state_dir

MANIFEST_VARIABLE = "PROVISIONING_MANIFEST"
SCRIPT_VARIABLE = "PROVISIONING_SCRIPT"
PROVISIONING_LOG_VARIABLE = "LLAMA_IMAGES_PROVISIONING_LOG"  # where the program's output already goes
MANIFEST_DOWNLOAD_ATTEMPTS = 5
INVALID = 2


def token_file_secrets() -> list[str]:
    try:
        return [paths.TOKEN_FILE.read_text(encoding="utf-8").strip()]
    except OSError:
        return []


def resolve_source(source: str, out: Output, sleep: Callable[[float], None]) -> tuple[Path | None, str]:
    """(the manifest file, how it is shown); a URL is fetched to /provisioning.yaml first, with
    bounded retries, and never shown (its query may sign it)."""
    if not source.lower().startswith(("http://", "https://")):
        return Path(source), source
    shown = f"{plan.masked_url(source)} (saved as {paths.BAKED_MANIFEST})"
    delay, problem = 2.0, ""
    for attempt in range(1, MANIFEST_DOWNLOAD_ATTEMPTS + 1):
        try:
            request = urllib.request.Request(source, headers={"User-Agent": "llama-images-provisioner"})
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read()
            temporary = paths.BAKED_MANIFEST.with_name(f".{paths.BAKED_MANIFEST.name}.tmp")
            temporary.write_bytes(data)
            temporary.chmod(0o644)
            temporary.replace(paths.BAKED_MANIFEST)
            out.say(f"manifest downloaded: {len(data)} bytes, saved as {paths.BAKED_MANIFEST}")
            return paths.BAKED_MANIFEST, shown
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = str(getattr(reason, "strerror", None) or reason)
        if attempt < MANIFEST_DOWNLOAD_ATTEMPTS:
            sleep(delay)
            delay *= 2
    out.say(f"the manifest could not be downloaded ({out.masked(problem)}): {shown}")
    return None, shown


def read_manifest(path: Path, shown: str, env: dict[str, str], out: Output) -> Manifest | None:
    """The manifest, or None after printing every problem (file, line, key, fix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        out.say(f"{path}: not UTF-8 text; a manifest is a YAML file")
        return None
    except OSError as exc:
        out.say(f"{path}: cannot be read ({exc.strerror})")
        return None
    try:
        manifest, warnings = load(text, str(path), env)
    except ManifestError as exc:
        out.say(str(exc))
        return None
    for warning in warnings:
        out.say(str(warning))
    out.say(f"manifest: {shown}")
    return manifest


def build_run(manifest: Manifest, shown: str, env: dict[str, str], out: Output, args: argparse.Namespace) -> Run | None:
    manifest, problems = with_overrides(manifest, env)
    for problem in problems:
        out.say(problem)
    directory, unused = state_dir(env)
    if unused:
        out.say(unused)
    try:
        downloader = fetch.choose(env=env)
    except fetch.FetchError as exc:
        out.say(str(exc))
        return None
    if manifest.settings.log_file and not same_file(manifest.settings.log_file, env.get(PROVISIONING_LOG_VARIABLE, "")):
        out.log_file = Path(manifest.settings.log_file)
    return Run(manifest, shown, env, out, State(directory), downloader, dry_run=args.dry_run, force=args.force)


def same_file(one: str, other: str) -> bool:
    return bool(other) and os.path.realpath(one) == os.path.realpath(other)


def by_hand(args: argparse.Namespace, env: dict[str, str], out: Output) -> int:
    if args.manifest is None:
        if not env.get(SCRIPT_VARIABLE):
            out.say(f"no manifest given and {SCRIPT_VARIABLE} is not set: nothing to do")
            return 0
        manifest, shown = Manifest(), "(PROVISIONING_SCRIPT alone)"
    else:
        path, shown = resolve_source(args.manifest, out, time.sleep)
        if path is None:
            return 1
        found = read_manifest(path, shown, env, out)
        if found is None:
            return INVALID
        manifest = found
    run = build_run(manifest, shown, env, out, args)
    return INVALID if run is None else provision(run)


def mark(path: Path, present: bool) -> str | None:
    """Create or remove a marker; the reason when it cannot be."""
    try:
        if present:
            path.touch()
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def at_boot(args: argparse.Namespace, env: dict[str, str], out: Output) -> int:
    """The boot's provisioning: the manifest PROVISIONING_MANIFEST names, else the baked one, and
    PROVISIONING_SCRIPT; once, until it succeeds."""
    if paths.PROVISIONING_COMPLETE.exists():
        out.status(f"done on an earlier boot ({paths.PROVISIONING_COMPLETE})")
        mark(paths.PROVISIONING_MARKER, False)
        return 0
    source = env.get(MANIFEST_VARIABLE, "").strip() or (
        str(paths.BAKED_MANIFEST) if paths.BAKED_MANIFEST.is_file() else ""
    )
    script = env.get(SCRIPT_VARIABLE, "").strip()
    if not source and not script:
        out.status("not configured")
        mark(paths.PROVISIONING_MARKER, False)
        return 0
    mark(paths.PROVISIONING_MARKER, True)
    try:
        outcome = provision_at_boot(args, env, out, source, script)
    finally:
        mark(paths.PROVISIONING_MARKER, False)
    return outcome


def provision_at_boot(args: argparse.Namespace, env: dict[str, str], out: Output, source: str, script: str) -> int:
    if source:
        out.status(f"running: reading the manifest ({MANIFEST_VARIABLE if env.get(MANIFEST_VARIABLE) else source})")
        path, shown = resolve_source(source, out, time.sleep)
        manifest = read_manifest(path, shown, env, out) if path is not None else None
        if manifest is None:
            why = "could not be downloaded" if path is None else "has problems (see provisioning.log)"
            out.status(f"failed: the manifest {why}; fix it, then restart the container")
            mark(paths.PROVISIONING_FAILED, True)
            return INVALID
    else:
        # PROVISIONING_SCRIPT alone: one attempt per boot, as before the manifest existed.
        manifest, shown = Manifest(on_failure=OnFailure(max_retries=0)), "(PROVISIONING_SCRIPT alone)"
    if (
        not manifest.has_work
        and not script
        and not any(
            env.get(name)
            for name in (
                "PROVISIONING_DOWNLOADS",
                "PROVISIONING_GIT_REPOS",
                "PROVISIONING_APT",
                "PROVISIONING_PIP",
                "PROVISIONING_CONDA",
                "PROVISIONING_POST_COMMANDS",
            )
        )
    ):
        out.status("not configured")
        return 0
    run = build_run(manifest, shown, env, out, args)
    if run is None:
        out.status("failed: the downloader declaration cannot be used (see provisioning.log)")
        mark(paths.PROVISIONING_FAILED, True)
        return INVALID
    run.script_status = out.status
    outcome = provision(run)
    if outcome == 0:
        mark(paths.PROVISIONING_FAILED, False)
        problem = mark(paths.PROVISIONING_COMPLETE, True)
        out.status("done" if problem is None else f"done (not recorded: {problem}, so it runs again next boot)")
        return 0
    mark(paths.PROVISIONING_FAILED, True)
    cause = run.failure_cause or "see provisioning.log"
    out.status(f"failed: {cause}; retried on the next boot" if outcome != CONFIG_REFUSED else f"failed: {cause}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description="Provision this container from a manifest (the reference image's format, version 1): files, "
        "apt/pip/conda packages, git repos, verified downloads, services, commands, then PROVISIONING_SCRIPT.",
    )
    parser.add_argument(
        "manifest", nargs="?", help="a manifest file or an http(s) URL (optional with PROVISIONING_SCRIPT)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    parser.add_argument("--force", action="store_true", help="forget which phases succeeded and run every one")
    parser.add_argument("--boot", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if not env.get("LLAMA_IMAGES_SETTINGS_READ"):
        environment.apply(env, environment.read(env))  # what /etc/environment and ${WORKSPACE}/.env set
    out = Output(
        known_secrets(env, token_file_secrets()), status_file=paths.PROVISIONING_STATUS_FILE if args.boot else None
    )
    with contextlib.suppress(KeyboardInterrupt):
        return at_boot(args, env, out) if args.boot else by_hand(args, env, out)
    return 130


if __name__ == "__main__":
    sys.exit(main())
