"""What a model download needs to know, as pure functions: the hub's answers read, the file a
`org/repo[:quant]` means (as llama-server's own `-hf` picks it), the cache layouts (the hub's,
which llama-server uses, and the flat one of older llama.cpp builds, which the reference image's
/workspace/llama.cpp holds), aria2's input and its progress read back. No I/O.

Stdlib only: this runs with the image's own python3 (>= 3.11).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .status import Download

COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# llama-server sends a token only when it looks like one (common/hf-cache.cpp is_valid_hf_token).
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{34,253}")
SPLIT = re.compile(r"(.+)-([0-9]{5})-of-([0-9]{5})", re.IGNORECASE)
QUANT_TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama-server's choice when no quant is named
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
INCOMPLETE = ".incomplete"  # a download in progress; aria2 keeps its state beside it (.aria2)
MIB = 1 << 20


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


# ---- aria2 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """One file for aria2: from `uri` to `directory/out`, checked against `sha256` when known."""

    uri: str
    directory: str
    out: str
    size: int
    shown: str  # the file's name in progress lines
    sha256: str | None = None
    headers: tuple[str, ...] = ()  # may hold a token: only ever in aria2's input, never its arguments
    connections: int = 16

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.out}"

    @property
    def chunk(self) -> int:
        """Bytes each ranged request asks for: enough requests to keep every connection busy and
        the pieces in flight a small window behind which the sha256 follows, few enough that a
        request's round trip is a small share of it (1-32 MiB)."""
        return min(max(self.size // (4 * self.connections), MIB), 32 * MIB) if self.size > 0 else MIB


def aria2_input(transfers: Sequence[Transfer]) -> str:
    """aria2's input file (read from its stdin): URIs and per-download options, secrets included."""
    lines = []
    for transfer in transfers:
        for text in (transfer.uri, transfer.directory, transfer.out, *transfer.headers):
            if "\n" in text or "\r" in text:
                raise ValueError("a download option holds a line break")
        lines.append(transfer.uri)
        options = {
            "dir": transfer.directory,
            "out": transfer.out,
            "split": str(transfer.connections),
            "max-connection-per-server": str(transfer.connections),
            "min-split-size": str(transfer.chunk),
        }
        lines += [f"  {key}={value}" for key, value in options.items()]
        lines += [f"  header={header}" for header in transfer.headers]
    return "\n".join(lines) + "\n"


ARIA2_OPTIONS = (
    "--input-file=-",
    "--no-conf=true",
    "--continue=true",  # with the control file (.aria2) beside it: resume where it stopped
    "--always-resume=false",  # a server that cannot resume: start that file again
    "--max-resume-failure-tries=0",
    "--allow-overwrite=false",
    "--auto-file-renaming=false",
    "--file-allocation=none",
    "--auto-save-interval=2",  # the control file, so a killed download resumes
    # Pieces in file order, so the sha256 follows the download (completed_prefix) instead of
    # reading the whole file again after it.
    "--stream-piece-selector=inorder",
    "--disk-cache=0",  # what the control file records as done is in the file already
    "--max-tries=5",
    "--retry-wait=2",
    "--connect-timeout=30",
    "--timeout=60",
    "--summary-interval=1",  # progress, read back by parse_progress
    "--show-console-readout=false",
    "--human-readable=false",
    "--download-result=hide",
    "--console-log-level=error",
    "--enable-color=false",
)


def aria2_command(transfers: Sequence[Transfer], parent_pid: int) -> list[str]:
    """aria2c's arguments: no URI, header or checksum (those come on stdin)."""
    return ["aria2c", *ARIA2_OPTIONS, f"--max-concurrent-downloads={max(len(transfers), 1)}",
            f"--stop-with-process={parent_pid}"]  # fmt: skip


def completed_prefix(control: bytes) -> int | None:
    """How many bytes from the start of a file aria2's control file (`<file>.aria2`, written every
    --auto-save-interval) records as done: the pieces before the first missing one. None if it
    cannot be read (cut short, another format)."""
    try:
        version = struct.unpack_from(">H", control, 0)[0]
        order = ">" if version == 1 else "<" if version == 0 else ""
        if not order:
            return None
        info_hash_length = struct.unpack_from(order + "I", control, 6)[0]
        offset = 10 + info_hash_length
        piece, total, _, bitfield_length = struct.unpack_from(order + "IQQI", control, offset)
        bitfield = control[offset + 24 : offset + 24 + bitfield_length]
    except struct.error:
        return None
    if len(bitfield) != bitfield_length or piece <= 0:
        return None
    done = 0
    for byte in bitfield:
        if byte != 0xFF:
            done += 8 - (byte ^ 0xFF).bit_length()  # the leading ones: the pieces before a gap
            break
        done += 8
    return min(done * int(piece), int(total))


# "[#2089b0 400000000B/1200000000B(33%) CN:16 DL:115000000B ETA:7s]" then "FILE: /path"
SUMMARY_ENTRY = re.compile(
    r"\[#(?P<gid>[0-9a-f]+) (?P<done>\d+)B/(?P<total>\d+)B(?:\(\d+%\))?(?: CN:\d+)?(?: DL:(?P<rate>\d+)B)?"
)
ERROR_CODE = re.compile(r"errorCode=(\d+)\s+(.*)")


@dataclass
class Progress:
    """What aria2 said about each file (by path): bytes done, and bytes per second now."""

    done: dict[str, int] = field(default_factory=dict)
    rate: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _pending: tuple[int, int] | None = None

    def read(self, line: str) -> None:
        line = line.strip()
        entry = SUMMARY_ENTRY.match(line)
        if entry:
            self._pending = (int(entry.group("done")), int(entry.group("rate") or 0))
            return
        if line.startswith("FILE: ") and self._pending is not None:
            path = line.removeprefix("FILE: ")
            self.done[path], self.rate[path] = self._pending
            self._pending = None
            return
        if "[ERROR]" in line or "errorCode=" in line or line.startswith("Exception:"):
            self.errors.append(line)
            del self.errors[:-20]

    def cause(self) -> str:
        """The most telling error aria2 printed: its last `errorCode=N message`, else its last error."""
        for line in reversed(self.errors):
            found = ERROR_CODE.search(line)
            if found:
                return found.group(2).strip()
        if self.errors:
            return re.sub(r"^\S+ \S+ \[ERROR\]\s*", "", self.errors[-1])
        return ""


def human_rate(per_second: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if per_second >= scale:
            return (
                f"{per_second / scale:.0f} {unit}" if per_second >= 10 * scale else f"{per_second / scale:.1f} {unit}"
            )
    return f"{per_second:.0f} B/s"


def progress(transfers: Sequence[Transfer], done: Mapping[str, int], rate: float) -> Download:
    """The first file's name (and how many more), the share of all bytes done, the speed: what
    the status record says while aria2 downloads (its line: `downloading <file> 42% (310 MB/s)`)."""
    total = sum(max(t.size, 0) for t in transfers)
    got = sum(min(done.get(t.path, 0), max(t.size, 0)) for t in transfers)
    percent = int(100 * got / total) if total > 0 else 0
    name = transfers[0].shown if transfers else "model"
    if len(transfers) > 1:
        name += f" and {len(transfers) - 1} more"
    return Download(name, min(percent, 100), human_rate(rate))


def read_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
