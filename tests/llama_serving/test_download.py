"""The llama launcher's download phase (llama_serving.download) with the real aria2c against the
loopback fake hub: several connections per file, split models side by side, sha256 checked,
resumed after a kill, gated repos, a server without ranges, the hub's CDN redirect, and models
found in other caches (the reference image's layouts) served with the hub unreachable.

The choice of files (llama-server's `-hf` rules) and aria2's progress are tested as pure functions.
The container tests (tests/container/llama/test_download.py) run the same through the image.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from llama_serving import aria2, caches, download, hub, status
from llama_serving.config import Plan, make_plan
from llama_serving.download_types import DownloadError, Prepared, Ui
from llama_serving.hub import RepoFile

from tests.conftest import require_host_tools
from tests.support.fake_hf_hub import FakeHub, Fault

REPO = "org/repo-GGUF"
TOKEN = "hf_" + "G4t3d" * 7
MB = 1_000_000

require_host_tools(("aria2c",), "aria2")  # the image's downloader, run here against the fake hub


def gguf(size: int, seed: int = 0) -> bytes:
    """Bytes that start like a GGUF file; distinct per seed."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048
    body = (block * (size // len(block) + 1))[: size - 4]
    return b"GGUF" + body


@dataclass
class Recorder:
    """The phase's Ui: status and log lines kept, the aria2 process seen."""

    statuses: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    processes: list[Any] = field(default_factory=list)
    command_lines: list[str] = field(default_factory=list)

    def ui(self) -> Ui:
        return Ui(self.status, self.logs.append, self.stopping, self.register, log_seconds=0.5)

    def status(self, said: str | status.Download) -> None:
        """Each status as its line (a download's progress is a record: its line is what people read)."""
        self.statuses.append(said.line if isinstance(said, status.Download) else said)

    def register(self, process: Any) -> None:
        if process is not None:
            self.processes.append(process)
            time.sleep(0.2)
            self.command_lines.append(Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace"))


def make(cache: Path, endpoint: str, **env: str) -> Plan:
    """The plan for LLAMA_MODEL (default the repo) with the cache and a workspace around it."""
    workspace = cache.parent.parent if cache.parent.name.startswith(".") else cache.parent
    settings = {"LLAMA_MODEL": REPO, "LLAMA_CACHE": str(cache), "HF_ENDPOINT": endpoint, "WORKSPACE": str(workspace)}
    found = make_plan({**settings, **env}, 18000)
    assert found is not None
    return found


def prepare(plan: Plan, recorder: Recorder | None = None) -> Prepared:
    recorder = recorder or Recorder()
    return download.prepare(plan, download.settings_from(plan, {}), recorder.ui())


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with FakeHub() as started:
        yield started


def blob(cache: Path, data: bytes) -> Path:
    return cache / "models--org--repo-GGUF" / "blobs" / hashlib.sha256(data).hexdigest()


def snapshot(cache: Path, commit: str, name: str) -> Path:
    return cache / "models--org--repo-GGUF" / "snapshots" / commit / name


# ---- what `org/repo[:quant]` means -------------------------------------------------------------


def files(*paths: str) -> list[RepoFile]:
    return [RepoFile(path, 10, f"{i:064x}", f"{i:064x}") for i, path in enumerate(paths)]


def chosen(listing: list[RepoFile], tag: str = "", **options: Any) -> list[str]:
    return [f.path for f in hub.choose_files(listing, REPO, tag, **options)]


def test_the_default_quant_is_q4_k_m_then_q8_0_then_the_first_model_as_llama_server_picks() -> None:
    assert chosen(files("m-Q8_0.gguf", "m-Q4_K_M.gguf", "README.md")) == ["m-Q4_K_M.gguf"]
    assert chosen(files("m-F16.gguf", "m-Q8_0.gguf")) == ["m-Q8_0.gguf"]
    assert chosen(files("imatrix.gguf", "m-F16.gguf", "m-BF16.gguf")) == ["m-F16.gguf"]
    assert chosen(files("m-Q4_K_M.gguf", "m-q8_0.gguf"), "Q8_0") == ["m-q8_0.gguf"]


def test_a_split_model_is_all_its_parts_and_the_projector_comes_along() -> None:
    listing = files(
        "Q4_K_M/m-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00003-of-00003.gguf",
        "m-Q8_0.gguf",
        "mmproj-m-F16.gguf",
        "mmproj-m-Q8_0.gguf",
    )
    assert chosen(listing) == [
        "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/m-Q4_K_M-00003-of-00003.gguf",
        "mmproj-m-Q8_0.gguf",  # 8 bits are closer to 4 than 16 are
    ]
    assert chosen(listing, "Q8_0")[-1] == "mmproj-m-Q8_0.gguf"
    assert chosen(listing, "Q8_0", mmproj=False) == ["m-Q8_0.gguf"]
    assert chosen(listing, hf_file="M-q8_0.GGUF") == ["m-Q8_0.gguf", "mmproj-m-Q8_0.gguf"]


def test_a_quant_the_repo_lacks_is_refused_with_the_files_it_has() -> None:
    with pytest.raises(hub.HubError, match=r"no GGUF model with quant 'Q2_K' \(its GGUF files: m-Q8_0.gguf\)"):
        hub.choose_files(files("m-Q8_0.gguf"), REPO, "Q2_K")


def test_the_cache_layout_is_the_hubs() -> None:
    cache = hub.RepoCache("/c", "org/r")
    assert cache.blob("ab") == "/c/models--org--r/blobs/ab"
    assert cache.snapshot("c0", "d/f.gguf") == "/c/models--org--r/snapshots/c0/d/f.gguf"
    assert cache.link_target("f.gguf", "ab") == "../../blobs/ab"
    assert cache.link_target("d/f.gguf", "ab") == "../../../blobs/ab"
    assert hub.flat_name("org/r", "d/f.gguf") == "org_r_d_f.gguf"
    assert hub.flat_manifest_repo("manifest=org=r=Q4_K_M.json") == ("org/r", "Q4_K_M")


def test_aria2_progress_is_read_back_and_shown_as_percent_and_speed() -> None:
    progress = aria2.Progress()
    for line in (
        " *** Download Progress Summary as of Wed Dec  2 00:07:15 2026 *** ",
        "[#0001f0 30000000B/100000000B(30%) CN:16 DL:310000000B ETA:1s]",
        "FILE: /c/blobs/a.incomplete",
        "12/02 00:07:15 [ERROR] CUID#9 - Download aborted. URI=http://h/x?X-Amz-Signature=s",
        "  -> [HttpResponse.cc:81] errorCode=8 Invalid range header.",
    ):
        progress.read(line)
    transfer = aria2.Transfer("http://h/x", "/c/blobs", "a.incomplete", 100 * MB, "m.gguf")
    found = aria2.progress([transfer], progress.done, progress.rate["/c/blobs/a.incomplete"])
    assert found == status.Download("m.gguf", 30, "310 MB/s")
    assert found.line == "downloading m.gguf 30% (310 MB/s)"
    assert progress.cause() == "Invalid range header."


def control_file(bits: str, piece: int = 1 << 20, total: int = 10 << 20) -> bytes:
    """aria2's control file (format version 1): no info hash, the bitfield of pieces done."""
    bitfield = int(bits.ljust(-(-len(bits) // 8) * 8, "0"), 2).to_bytes(-(-len(bits) // 8), "big")
    head = struct.pack(">HII", 1, 0, 0) + struct.pack(">IQQI", piece, total, 0, len(bitfield))
    return head + bitfield + struct.pack(">I", 0)


def test_the_sha256_follows_the_pieces_aria2_records_as_done_in_order() -> None:
    assert aria2.completed_prefix(control_file("1110100000")) == 3 << 20
    assert aria2.completed_prefix(control_file("1111111111111111")) == 10 << 20  # at most the file
    assert aria2.completed_prefix(control_file("0111")) == 0
    assert aria2.completed_prefix(control_file("1111")[:20]) is None  # cut short while written
    assert aria2.completed_prefix(b"\x00\x07garbage") is None


def test_aria2_gets_no_secret_in_its_arguments() -> None:
    transfer = aria2.Transfer("http://h/x", "/c", "a", 1, "a", "f" * 64, ("Authorization: Bearer hf_x",), 16)
    assert "hf_x" not in " ".join(aria2.command([transfer], 1))
    assert "  header=Authorization: Bearer hf_x\n" in aria2.input_text([transfer])
    with pytest.raises(ValueError, match="line break"):
        aria2.input_text([aria2.Transfer("http://h/x\n  dir=/etc", "/c", "a", 1, "a")])


# ---- downloads -----------------------------------------------------------------------------


def test_a_repo_is_fetched_with_many_ranged_connections_into_the_hub_layout(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(6 * MB)
    fake_hub.download_rate = 1 * MB  # per connection: one alone would need 6 s
    repo = fake_hub.add_repo(REPO, {"m-Q8_0.gguf": gguf(MB, 1), "m-Q4_K_M.gguf": data, "README.md": b"# m\n"})
    cache = tmp_path / "cache"
    recorder = Recorder()
    started = time.monotonic()
    prepared = prepare(make(cache, fake_hub.url), recorder)
    took = time.monotonic() - started
    assert prepared.hf_files == {REPO: "m-Q4_K_M.gguf"} and not prepared.offline
    assert blob(cache, data).read_bytes() == data
    link = snapshot(cache, repo.commit, "m-Q4_K_M.gguf")
    assert str(link.readlink()) == f"../../blobs/{hashlib.sha256(data).hexdigest()}" and link.read_bytes() == data
    assert (cache / "models--org--repo-GGUF/refs/main").read_text() == repo.commit
    gets = fake_hub.file_gets("m-Q4_K_M.gguf")
    assert len(gets) >= 6 and all(re.fullmatch(r"bytes=\d+-\d+", r.range or "") for r in gets[1:])
    assert fake_hub.peak_downloads >= 6 and took < 4, (fake_hub.peak_downloads, took)
    assert fake_hub.file_gets("m-Q8_0.gguf") == []  # only the chosen quant
    assert any(re.fullmatch(r"downloading m-Q4_K_M\.gguf \d{1,3}% \(.+/s\)", line) for line in recorder.statuses)
    assert not list((cache / "models--org--repo-GGUF/blobs").glob("*.incomplete*"))


def test_the_sha256_is_taken_while_the_file_downloads(tmp_path: Path) -> None:
    """As far as aria2's control file records pieces done, in order; the rest once it has ended."""
    data = gguf(12 * MB)
    path = tmp_path / "blob.incomplete"
    path.write_bytes(data[: 5 << 20] + bytes(3 << 20))  # 5 pieces of 1 MiB done, then pieces in flight
    Path(f"{path}.aria2").write_bytes(control_file("11111000", total=len(data)))
    following = download.FollowingHash(str(path))
    following.start()
    deadline = time.monotonic() + 10
    while following.hashed < 5 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)
    assert following.hashed == 5 << 20  # not into the pieces still in flight
    path.write_bytes(data)  # aria2 ends: every piece in, the control file removed
    Path(f"{path}.aria2").unlink()
    following.stop()
    assert following.finish() == hashlib.sha256(data).hexdigest()


def test_a_second_start_downloads_nothing(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": gguf(MB)})
    plan = make(tmp_path / "cache", fake_hub.url)
    prepare(plan)
    sent = fake_hub.bytes_sent
    assert prepare(plan).hf_files == {REPO: "m-Q4_K_M.gguf"}
    assert fake_hub.bytes_sent == sent


@pytest.mark.parametrize("linked", [True, False], ids=["blob and link", "file in the snapshot"])
def test_a_cache_llama_server_made_itself_is_used_as_it_is(fake_hub: FakeHub, tmp_path: Path, linked: bool) -> None:
    """llama-server's own -hf writes the same layout (the file itself in the snapshot where it
    cannot make links): nothing is downloaded again."""
    data = gguf(MB)
    repo = fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    cache = tmp_path / "cache"
    entry = snapshot(cache, repo.commit, "m-Q4_K_M.gguf")
    entry.parent.mkdir(parents=True)
    if linked:
        blob(cache, data).parent.mkdir(parents=True)
        blob(cache, data).write_bytes(data)
        entry.symlink_to(f"../../blobs/{hashlib.sha256(data).hexdigest()}")
    else:
        entry.write_bytes(data)
    (cache / "models--org--repo-GGUF/refs").mkdir()
    (cache / "models--org--repo-GGUF/refs/main").write_text(repo.commit)
    assert prepare(make(cache, fake_hub.url)).hf_files == {REPO: "m-Q4_K_M.gguf"}
    assert fake_hub.file_gets() == [] and entry.read_bytes() == data and entry.is_symlink() is linked


def test_a_split_model_downloads_its_parts_side_by_side(fake_hub: FakeHub, tmp_path: Path) -> None:
    parts = {f"m-Q4_K_M-0000{i}-of-00003.gguf": gguf(2 * MB, i) for i in (1, 2, 3)}
    fake_hub.download_rate = MB
    repo = fake_hub.add_repo(REPO, {**parts, "m-Q8_0.gguf": gguf(MB, 9)})
    cache = tmp_path / "cache"
    prepared = prepare(make(cache, fake_hub.url, LLAMA_DOWNLOAD_CONNECTIONS="2"))
    assert prepared.hf_files == {REPO: "m-Q4_K_M-00001-of-00003.gguf"}
    for name, data in parts.items():
        assert snapshot(cache, repo.commit, name).read_bytes() == data
    assert fake_hub.peak_downloads >= 5  # three files at once, two connections each


def test_a_corrupt_download_is_refused_and_never_enters_the_cache(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(2 * MB)
    fake_hub.fault = Fault.CORRUPT
    repo = fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"sha256 mismatch: m-Q4_K_M\.gguf is not what the hub published"):
        prepare(make(cache, fake_hub.url))
    assert not blob(cache, data).exists() and not snapshot(cache, repo.commit, "m-Q4_K_M.gguf").exists()
    assert not list((cache / "models--org--repo-GGUF/blobs").iterdir())  # nothing half-kept to resume
    fake_hub.fault = Fault.NONE
    prepare(make(cache, fake_hub.url))
    assert blob(cache, data).read_bytes() == data


def test_a_killed_download_resumes_where_it_stopped(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(8 * MB)
    fake_hub.download_rate = 250_000
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    cache = tmp_path / "cache"
    plan = make(cache, fake_hub.url, LLAMA_DOWNLOAD_CONNECTIONS="4")
    recorder = Recorder()
    failed: list[Exception] = []

    def first() -> None:
        try:
            prepare(plan, recorder)
        except DownloadError as exc:
            failed.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 30
    while fake_hub.bytes_sent < 3 * MB and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.5)  # past aria2's control-file save
    os.kill(recorder.processes[0].pid, signal.SIGKILL)  # as `docker kill` ends it
    thread.join(30)
    assert failed, "the killed download did not fail"
    time.sleep(1)  # the killed connections' server ends see their broken pipes
    first_sent = fake_hub.bytes_sent
    fake_hub.download_rate = MB
    prepare(plan)
    assert blob(cache, data).read_bytes() == data
    # Only the rest: what the control file recorded as done is not asked for again.
    assert fake_hub.bytes_sent - first_sent < 0.8 * len(data), (first_sent, fake_hub.bytes_sent)


def test_without_range_support_one_connection_fetches_the_whole_file(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(3 * MB)
    fake_hub.ranges = False
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    cache = tmp_path / "cache"
    # A partial file and control file left behind cannot be resumed from this server: ignored.
    blobs = cache / "models--org--repo-GGUF/blobs"
    blobs.mkdir(parents=True)
    partial = blobs / (hashlib.sha256(data).hexdigest() + ".incomplete")
    partial.write_bytes(b"x" * MB)
    Path(f"{partial}.aria2").write_bytes(b"\0" * 64)
    prepare(make(cache, fake_hub.url))
    assert blob(cache, data).read_bytes() == data
    assert fake_hub.peak_downloads == 1 and all(r.range is None for r in fake_hub.file_gets())


def test_a_gated_repo_needs_hf_token_which_stays_out_of_arguments_and_off_the_cdn(tmp_path: Path) -> None:
    data = gguf(2 * MB)
    with FakeHub(cdn=True, download_rate=2 * MB) as gated:
        gated.add_repo(REPO, {"m-Q4_K_M.gguf": data}, token=TOKEN)
        with pytest.raises(DownloadError, match=r"GET failed \(401\): Access to model org/repo-GGUF is restricted.*"
                           r"set HF_TOKEN"):  # fmt: skip
            prepare(make(tmp_path / "cache", gated.url))
        recorder = Recorder()
        prepare(make(tmp_path / "cache", gated.url, HF_TOKEN=TOKEN), recorder)
        hub_requests = [r for r in gated.requests if r.origin == "hub"]
        assert {r.authorization for r in hub_requests} == {None, f"Bearer {TOKEN}"}
        assert all(r.authorization is None for r in gated.requests if r.origin == "cdn")
        assert len(gated.file_gets()) > 1  # ranged GETs on the CDN origin
    assert blob(tmp_path / "cache", data).read_bytes() == data
    assert recorder.command_lines and not any(TOKEN in line for line in recorder.command_lines)
    assert not any(TOKEN in line for line in recorder.logs + recorder.statuses)


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (
            Fault.SERVER_ERROR,
            r"GET failed \(500\): Internal Error \(http://127\.0\.0\.1:\d+/api/models/org/repo-GGUF/refs\)",
        ),
        (Fault.STALL, r"no download progress for 2 s: .*/refs did not answer"),
        (Fault.STALL_DOWNLOAD, r"no download progress for 2 s"),
        (Fault.TRUNCATE, r"download failed"),
    ],
)
def test_a_failing_hub_fails_the_download_with_its_cause(
    fake_hub: FakeHub, tmp_path: Path, fault: Fault, cause: str
) -> None:
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": gguf(2 * MB)})
    fake_hub.fault = fault
    started = time.monotonic()
    with pytest.raises(DownloadError, match=cause):
        prepare(make(tmp_path / "cache", fake_hub.url, LLAMA_STALL_TIMEOUT="2"))
    assert time.monotonic() - started < 60


# ---- the cache when the hub is unreachable, and other caches on the volume -----------------


def test_with_the_hub_unreachable_the_cache_serves(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": gguf(MB)})
    plan = make(tmp_path / "cache", fake_hub.url)
    prepare(plan)
    fake_hub.stop()
    recorder = Recorder()
    prepared = prepare(plan, recorder)
    assert prepared.offline and prepared.hf_files == {REPO: "m-Q4_K_M.gguf"}
    assert any("serving the cached copy (the hub failed: cannot reach" in line for line in recorder.logs)


def test_a_model_not_cached_with_the_hub_unreachable_fails_with_the_cause(fake_hub: FakeHub, tmp_path: Path) -> None:
    url = fake_hub.url
    fake_hub.stop()
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:\d+/api/models/org/repo-GGUF/refs"):
        prepare(make(tmp_path / "cache", url))


def reference_flat_cache(workspace: Path, data: bytes, tag: str = "latest") -> Path:
    """What the reference image's llama.cpp (older builds) left in ${WORKSPACE}/llama.cpp."""
    folder = workspace / "llama.cpp"
    folder.mkdir(parents=True)
    (folder / "org_repo-GGUF_m-Q4_K_M.gguf").write_bytes(data)
    (folder / "org_repo-GGUF_m-Q4_K_M.gguf.etag").write_text('"x"')
    sha = hashlib.sha256(data).hexdigest()
    manifest = f'{{"ggufFile": {{"rfilename": "m-Q4_K_M.gguf", "lfs": {{"sha256": "{sha}", "size": {len(data)}}}}}}}'
    (folder / f"manifest=org=repo-GGUF={tag}.json").write_text(manifest)
    return folder / "org_repo-GGUF_m-Q4_K_M.gguf"


def test_the_reference_images_flat_cache_is_served_with_the_hub_unreachable(tmp_path: Path) -> None:
    data = gguf(MB)
    source = reference_flat_cache(tmp_path, data)
    cache = tmp_path / ".cache/llama"
    prepared = prepare(make(cache, "http://127.0.0.1:9"))  # nothing listens there
    assert prepared.offline and prepared.hf_files == {REPO: "m-Q4_K_M.gguf"}
    served = snapshot(cache, caches.LOCAL_COMMIT, "m-Q4_K_M.gguf")
    assert served.read_bytes() == data and blob(cache, data).stat().st_ino == source.stat().st_ino  # linked
    assert (cache / "models--org--repo-GGUF/refs/main").read_text() == caches.LOCAL_COMMIT


def test_the_reference_images_hub_cache_is_served_with_the_hub_unreachable(fake_hub: FakeHub, tmp_path: Path) -> None:
    """Newer llama.cpp builds in the reference write $HF_HOME/hub, HF_HOME being ${WORKSPACE}/.hf_home."""
    data = gguf(MB)
    repo = fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    prepare(make(tmp_path / ".hf_home/hub", fake_hub.url))  # the same layout llama-server writes there
    fake_hub.stop()
    cache = tmp_path / ".cache/llama"
    prepared = prepare(make(cache, fake_hub.url))
    assert prepared.offline and snapshot(cache, repo.commit, "m-Q4_K_M.gguf").read_bytes() == data


def test_a_copy_in_another_cache_is_linked_in_not_downloaded_once_its_sha256_matches(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    data = gguf(MB)
    repo = fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    reference_flat_cache(tmp_path, data)
    cache = tmp_path / ".cache/llama"
    recorder = Recorder()
    prepare(make(cache, fake_hub.url), recorder)
    assert fake_hub.file_gets() == [] and snapshot(cache, repo.commit, "m-Q4_K_M.gguf").read_bytes() == data
    assert any("linked into the cache, not downloaded" in line for line in recorder.logs)


def test_a_copy_elsewhere_with_another_sha256_is_not_used(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(MB)
    fake_hub.add_repo(REPO, {"m-Q4_K_M.gguf": data})
    stale = bytearray(data)
    stale[-1] ^= 1
    reference_flat_cache(tmp_path, bytes(stale))
    cache = tmp_path / ".cache/llama"
    prepare(make(cache, fake_hub.url))
    assert fake_hub.file_gets() and blob(cache, data).read_bytes() == data


# ---- a URL -------------------------------------------------------------------------------------


def test_a_url_is_fetched_into_the_cache_and_kept_while_its_etag_holds(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = gguf(3 * MB)
    fake_hub.add_repo(REPO, {"m.gguf": data})
    url = f"{fake_hub.url}/{REPO}/resolve/main/m.gguf?signature=s3cret"
    plan = make(tmp_path / "cache", fake_hub.url, LLAMA_MODEL=url)
    recorder = Recorder()
    prepare(plan, recorder)
    (cached,) = (tmp_path / "cache/url").glob("*-m.gguf")
    assert cached.read_bytes() == data
    assert Path(f"{cached}.etag").read_text().strip('"') == hashlib.sha256(data).hexdigest()
    assert len(fake_hub.file_gets()) > 1
    assert not any("s3cret" in line for line in recorder.logs + recorder.statuses + recorder.command_lines)
    sent = fake_hub.bytes_sent
    prepare(plan)
    assert fake_hub.bytes_sent == sent  # same ETag: kept
    fake_hub.stop()
    prepare(plan)  # unreachable: the cached copy
    assert cached.read_bytes() == data


def test_a_url_that_is_not_gguf_is_refused(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, {"page.gguf": b"<html>sign in</html>"})
    plan = make(tmp_path / "cache", fake_hub.url, LLAMA_MODEL=f"{fake_hub.url}/{REPO}/resolve/main/page.gguf")
    with pytest.raises(DownloadError, match="not a GGUF file"):
        prepare(plan)
    assert not list((tmp_path / "cache/url").iterdir())
