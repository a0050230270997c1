"""What a model download needs to know, as pure functions: the hub's answers read, the file a
`org/repo[:quant]` means (as llama-server's own `-hf` picks it), the cache layouts (the hub's,
which llama-server uses, and the flat one of older llama.cpp builds, which the reference image's
/workspace/llama.cpp holds). No I/O; aria2's input and progress are aria2.py's.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# llama-server sends a token only when it looks like one (common/hf-cache.cpp is_valid_hf_token).
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{34,253}")
SPLIT = re.compile(r"(.+)-([0-9]{5})-of-([0-9]{5})", re.IGNORECASE)
QUANT_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama-server's choice when no quant is named
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")


class HubError(Exception):
    """The hub's answer cannot be used: one line saying what and which repo."""


@dataclass(frozen=True)
class RepoFile:
    """A file of a repo at one commit, as the hub's tree lists it."""

    path: str
    size: int
    oid: str  # the blob name in the cache: the LFS sha256 for large files, else the git oid
    sha256: str | None = None  # LFS files only: what the downloaded bytes must hash to

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def parse_refs(body: Any, repo: str) -> str:
    """The commit of branch `main` (else of the first branch) from /api/models/<repo>/refs."""
    branches = body.get("branches") if isinstance(body, dict) else None
    if not isinstance(branches, list):
        raise HubError(f"the hub's refs of {repo} list no branches")
    commits = [
        (str(branch.get("name")), str(branch.get("targetCommit")))
        for branch in branches
        if isinstance(branch, dict) and COMMIT.fullmatch(str(branch.get("targetCommit", "")))
    ]
    for name, commit in commits:
        if name == "main":
            return commit
    if commits:
        return commits[0][1]
    raise HubError(f"the hub's refs of {repo} name no commit")


def safe_path(path: str) -> bool:
    """A repo path that stays inside the snapshot folder."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and "\\" not in path


def parse_tree(body: Any) -> list[RepoFile]:
    """The files of /api/models/<repo>/tree/<commit>?recursive=true, in the hub's order."""
    files = []
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict) or item.get("type") != "file" or not safe_path(str(item.get("path", ""))):
            continue
        lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else None
        sha256 = str(lfs.get("oid", "")) if lfs else ""
        oid = sha256 if SHA256.fullmatch(sha256) else str(item.get("oid", ""))
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", oid):
            continue
        size = lfs.get("size", item.get("size")) if lfs else item.get("size")
        files.append(
            RepoFile(
                str(item["path"]),
                int(size) if isinstance(size, int) else -1,
                oid,
                sha256 if SHA256.fullmatch(sha256) else None,
            )
        )
    return files


# ---- which files `org/repo[:quant]` means (llama-server's common/download.cpp) ---------------


@dataclass(frozen=True)
class SplitInfo:
    prefix: str
    tag: str
    index: int
    count: int


def split_info(path: str) -> SplitInfo | None:
    """A GGUF's split part (`name-00001-of-00003.gguf`) and quant tag; None if not a .gguf."""
    if not path.endswith(".gguf"):
        return None
    prefix = path.removesuffix(".gguf")
    index = count = 1
    match = SPLIT.fullmatch(prefix)
    if match:
        prefix, index, count = match.group(1), int(match.group(2)), int(match.group(3))
    tag = QUANT_TAG.search(prefix)
    return SplitInfo(prefix, tag.group(1).upper() if tag else "", index, count)


def is_model(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".gguf") and not any(word in name for word in NOT_MODELS)


def first_part(file: RepoFile) -> bool:
    info = split_info(file.path)
    return info is not None and (info.count <= 1 or info.index == 1)


def pick_model(files: Sequence[RepoFile], tag: str) -> RepoFile | None:
    """The model file: the first whose name holds the quant (default Q4_K_M, then Q8_0), else,
    with no quant named, the first GGUF model; the first part of a split model."""
    for wanted in [tag] if tag else DEFAULT_TAGS:
        pattern = re.compile(re.escape(wanted) + r"[.-]", re.IGNORECASE)
        for file in files:
            if is_model(file.path) and pattern.search(file.path) and first_part(file):
                return file
    if not tag:
        for file in files:
            if is_model(file.path) and first_part(file):
                return file
    return None


def split_parts(files: Sequence[RepoFile], primary: RepoFile) -> list[RepoFile]:
    info = split_info(primary.path)
    if info is None or info.count <= 1:
        return [primary]
    parts = [f for f in files if (s := split_info(f.path)) and s.count == info.count and s.prefix == info.prefix]
    return sorted(parts, key=lambda f: f.path)


def quant_bits(path: str) -> int:
    info = split_info(path)
    digits = re.search(r"\d+", info.tag) if info else None
    return int(digits.group()) if digits else 0


def pick_mmproj(files: Sequence[RepoFile], model_path: str) -> RepoFile | None:
    """The multimodal projector llama-server adds to a model: in the deepest folder shared with
    the model, of the closest quantization."""
    model_dir = PurePosixPath(model_path).parent.parts
    bits = quant_bits(model_path)
    best: tuple[int, int] | None = None
    chosen = None
    for file in files:
        if not file.path.endswith(".gguf") or "mmproj" not in file.path:
            continue
        folder = PurePosixPath(file.path).parent.parts
        if folder != model_dir[: len(folder)]:
            continue
        score = (-len(folder), abs(quant_bits(file.path) - bits))
        if best is None or score < best:
            best, chosen = score, file
    return chosen


def gguf_names(files: Iterable[RepoFile]) -> str:
    names = [f.path for f in files if f.path.endswith(".gguf")]
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return shown or "none"


def choose_files(
    files: Sequence[RepoFile], repo: str, tag: str, hf_file: str | None = None, mmproj: bool = True
) -> list[RepoFile]:
    """What `-hf repo[:tag]` downloads: the model (all its parts) and its mmproj."""
    if hf_file:
        primary = next((f for f in files if f.path.lower() == hf_file.lower()), None)
        if primary is None:
            raise HubError(f"{repo} has no file {hf_file!r} (--hf-file); its GGUF files: {gguf_names(files)}")
    else:
        primary = pick_model(files, tag)
        if primary is None:
            wanted = f"with quant {tag!r} " if tag else ""
            raise HubError(f"{repo} has no GGUF model {wanted}(its GGUF files: {gguf_names(files)})")
    chosen = split_parts(files, primary)
    projector = pick_mmproj(files, primary.path) if mmproj else None
    if projector is not None:
        chosen.append(projector)
    return chosen


def split_repo(value: str) -> tuple[str, str]:
    """`org/repo[:quant]` -> (org/repo, quant)."""
    repo, _, tag = value.partition(":")
    return repo, tag


# ---- cache layouts -------------------------------------------------------------------------


def repo_folder(repo: str) -> str:
    """The hub cache's folder of a repo: models--org--repo (llama-server, huggingface_hub)."""
    return "models--" + repo.replace("/", "--")


@dataclass(frozen=True)
class RepoCache:
    """One repo in a hub-layout cache: blobs/<oid>, snapshots/<commit>/<path> -> ../../blobs/<oid>,
    refs/main holding the commit."""

    cache: str
    repo: str

    @property
    def root(self) -> str:
        return f"{self.cache.rstrip('/')}/{repo_folder(self.repo)}"

    def blob(self, oid: str) -> str:
        return f"{self.root}/blobs/{oid}"

    def snapshot(self, commit: str, path: str = "") -> str:
        return f"{self.root}/snapshots/{commit}" + (f"/{path}" if path else "")

    def ref(self, name: str = "main") -> str:
        return f"{self.root}/refs/{name}"

    def link_target(self, path: str, oid: str) -> str:
        """The relative symlink from a snapshot entry to its blob, as the hub's clients write it."""
        # Up from the entry's folder: the path's own folders, the commit folder, snapshots/.
        return "../" * (len(PurePosixPath(path).parts) + 1) + f"blobs/{oid}"


def flat_name(repo: str, path: str) -> str:
    """Where llama.cpp builds before the hub layout kept a repo's file: <org>_<repo>_<path>, every
    '/' a '_' (in LLAMA_CACHE, else ~/.cache/llama.cpp: the reference's /workspace/llama.cpp)."""
    return f"{repo}_{path}".replace("/", "_")


FLAT_MANIFEST = re.compile(r"manifest=(?P<repo>.+)=(?P<tag>[^=]*)\.json")


def flat_manifest_repo(name: str) -> tuple[str, str] | None:
    """(repo, tag) of a flat cache's manifest file: manifest=org=repo=tag.json (the last builds
    of that layout) or manifest=org_repo=tag.json (earlier ones, where org_repo is ambiguous)."""
    match = FLAT_MANIFEST.fullmatch(name)
    if match is None:
        return None
    return match.group("repo").replace("=", "/"), match.group("tag")


def flat_manifest_files(body: Any) -> list[RepoFile]:
    """The model and projector a flat cache's manifest names (ggufFile, mmprojFile)."""
    files = []
    for key in ("ggufFile", "mmprojFile"):
        node = body.get(key) if isinstance(body, dict) else None
        if isinstance(node, dict) and safe_path(str(node.get("rfilename", ""))):
            found = node.get("lfs")
            lfs: dict[str, Any] = found if isinstance(found, dict) else {}
            sha256 = str(lfs.get("sha256", ""))
            size = lfs.get("size", node.get("size", -1))
            known = sha256 if SHA256.fullmatch(sha256) else None
            files.append(RepoFile(str(node["rfilename"]), size if isinstance(size, int) else -1, sha256, known))
    return files


def read_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
