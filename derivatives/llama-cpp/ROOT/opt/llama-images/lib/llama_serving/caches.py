"""Models already on the volume: our cache (the hub's layout, which llama-server writes too), and
other caches whose files are linked in instead of downloaded again once their sha256 is checked:
the reference image's (its older llama.cpp builds' flat layout in ${WORKSPACE}/llama.cpp, its
newer ones' hub layout in $HF_HOME/hub) and the Hugging Face hub cache. With the hub unreachable,
what the cache holds is served as it is.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from . import hub
from .download_types import Settings, Ui
from .hub import HubError, RepoCache, RepoFile

# Marks a snapshot made offline from a cache that records no commit (the flat layout).
LOCAL_COMMIT = "0" * 40


def whole(path: Path, size: int) -> bool:
    with contextlib.suppress(OSError):
        return path.is_file() and (size < 0 or path.stat().st_size == size)
    return False


def in_cache(cache: RepoCache, file: RepoFile, commit: str) -> bool:
    """The blob is there, whole (a blob only ever enters the cache checked); or the snapshot holds
    the file itself, as llama-server writes it where it cannot make links."""
    entry = Path(cache.snapshot(commit, file.path))
    return whole(Path(cache.blob(file.oid)), file.size) or (not entry.is_symlink() and whole(entry, file.size))


def link_snapshot(cache: RepoCache, commit: str, file: RepoFile) -> None:
    """snapshots/<commit>/<path> -> ../../blobs/<oid>, as llama-server and huggingface_hub write it."""
    entry = Path(cache.snapshot(commit, file.path))
    entry.parent.mkdir(parents=True, exist_ok=True)
    target = cache.link_target(file.path, file.oid)
    if (entry.is_symlink() and str(entry.readlink()) == target) or (not entry.is_symlink() and whole(entry, file.size)):
        return
    temporary = entry.with_name(f".{entry.name}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(entry)


def write_text(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(target)


# ---- the cache when the hub cannot be asked ----------------------------------------------------


def serve_cached(repo: str, tag: str, settings: Settings, ui: Ui) -> str | None:
    """The model's path if the cache can serve it as it is, after linking in a copy from another
    cache when ours has none."""
    ours = cached_choice(settings.cache, repo, tag, settings)
    if ours is not None:
        return ours
    for other in settings.other_caches:
        path = import_hub_layout(other, repo, tag, settings, ui) or import_flat_layout(other, repo, tag, settings, ui)
        if path is not None:
            return path
    return None


def snapshot_files(cache: str, repo: str) -> tuple[str, list[RepoFile]] | None:
    """(commit, files) of the snapshot refs/ names in a hub-layout cache, files that exist."""
    repo_cache = RepoCache(cache, repo)
    refs = Path(repo_cache.ref()).parent
    commit = ""
    with contextlib.suppress(OSError):
        names = sorted(refs.iterdir(), key=lambda p: p.name != "main")
        for ref in names:
            text = ref.read_text(encoding="utf-8").strip()
            if hub.COMMIT.fullmatch(text) and Path(repo_cache.snapshot(text)).is_dir():
                commit = text
                break
    if not commit:
        return None
    root = Path(repo_cache.snapshot(commit))
    files = []
    for entry in sorted(root.rglob("*")):
        if entry.is_file():  # follows the link: a dangling one is no file
            target = entry.resolve()
            files.append(RepoFile(entry.relative_to(root).as_posix(), target.stat().st_size, target.name))
    return commit, files


def cached_choice(cache: str, repo: str, tag: str, settings: Settings) -> str | None:
    found = snapshot_files(cache, repo)
    if found is None:
        return None
    try:
        chosen = hub.choose_files(found[1], repo, tag, settings.hf_file, mmproj=False)
    except HubError:
        return None
    return chosen[0].path


def verified(path: Path, sha256: str | None, ui: Ui) -> bool:
    """Whether a file found in another cache hashes to what the hub publishes for it."""
    if sha256 is None:
        return True
    if sha256_of(path, ui) != sha256:
        ui.log(f"{path}: sha256 differs from the hub's {sha256}: not used")
        return False
    return True


def sha256_of(path: Path, ui: Ui) -> str | None:
    """The file's sha256 (None if the program is stopped meanwhile)."""
    ui.status(f"checking {path.name}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            if ui.stopping.is_set():
                return None
    return digest.hexdigest()


def link_blob(source: Path, blob: Path) -> None:
    """The blob as a hard link to a file found elsewhere on the volume (no copy, and the other
    cache keeps working); a symbolic link where a hard one cannot be made."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    temporary = blob.with_name(f"{blob.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        temporary.symlink_to(source.resolve())
    temporary.replace(blob)


def candidates(other: str, repo: str, file: RepoFile) -> list[Path]:
    """Where another cache would hold the file: the hub layout's blob, the flat layout's name."""
    found = [Path(RepoCache(other, repo).blob(file.oid)), Path(other) / hub.flat_name(repo, file.path)]
    return [path for path in found if path.is_file() and (file.size < 0 or path.stat().st_size == file.size)]


def adopt(cache: RepoCache, file: RepoFile, repo: str, settings: Settings, ui: Ui) -> bool:
    """The file linked in from another cache on the volume, if one holds it with the right sha256."""
    for other in settings.other_caches:
        for path in candidates(other, repo, file):
            if verified(path, file.sha256, ui):
                link_blob(path, Path(cache.blob(file.oid)))
                ui.log(f"{repo}: {file.path} found in {path}: linked into the cache, not downloaded")
                return True
    return False


def import_hub_layout(other: str, repo: str, tag: str, settings: Settings, ui: Ui) -> str | None:
    """A repo in another hub-layout cache (the reference's $HF_HOME/hub) linked into ours."""
    found = snapshot_files(other, repo)
    if found is None:
        return None
    commit, files = found
    try:
        chosen = hub.choose_files(files, repo, tag, settings.hf_file, settings.mmproj)
    except HubError:
        return None
    cache = RepoCache(settings.cache, repo)
    snapshot = Path(RepoCache(other, repo).snapshot(commit))
    for file in chosen:
        source = (snapshot / file.path).resolve()
        sha256 = file.oid if hub.SHA256.fullmatch(file.oid) else None  # an LFS blob is named by it
        if not verified(source, sha256, ui):
            return None
        link_blob(source, Path(cache.blob(file.oid)))
        link_snapshot(cache, commit, file)
    write_text(cache.ref(), commit)
    ui.log(f"{repo}: linked in from {other} (hub layout)")
    return chosen[0].path


def import_flat_layout(other: str, repo: str, tag: str, settings: Settings, ui: Ui) -> str | None:
    """A repo in the flat layout of older llama.cpp builds (the reference's /workspace/llama.cpp:
    <org>_<repo>_<file> beside manifest=<org>=<repo>=<tag>.json) linked into ours."""
    folder = Path(other)
    prefix = hub.flat_name(repo, "")
    files: list[RepoFile] = []
    with contextlib.suppress(OSError):
        for manifest in sorted(folder.glob("manifest=*.json")):
            named = hub.flat_manifest_repo(manifest.name)
            if named is None or named[0].replace("/", "_") != repo.replace("/", "_"):
                continue
            if named[1] in (tag or "latest", tag.upper() if tag else "latest"):
                body = hub.read_json(manifest.read_text(encoding="utf-8", errors="replace"))
                files = [f for f in hub.flat_manifest_files(body) if (folder / hub.flat_name(repo, f.path)).is_file()]
                break
        if not files:  # no manifest: the files the folder holds for this repo, by name
            for path in sorted(folder.glob(f"{prefix}*.gguf")):
                files.append(RepoFile(path.name.removeprefix(prefix), path.stat().st_size, ""))
    if not files:
        return None
    try:
        chosen = hub.choose_files(files, repo, tag, settings.hf_file, settings.mmproj)
    except HubError:
        return None
    cache = RepoCache(settings.cache, repo)
    imported = []
    for file in chosen:
        source = folder / hub.flat_name(repo, file.path)
        sha256 = file.sha256 if file.sha256 and verified(source, file.sha256, ui) else sha256_of(source, ui)
        if sha256 is None:
            return None
        link_blob(source, Path(cache.blob(sha256)))
        imported.append(RepoFile(file.path, file.size, sha256, sha256))
    for file in imported:
        link_snapshot(cache, LOCAL_COMMIT, file)
    write_text(cache.ref(), LOCAL_COMMIT)
    ui.log(f"{repo}: linked in from {other} (the flat layout of older llama.cpp builds)")
    return imported[0].path
