"""What the measurements share (I/O edge): processes, the machine, checkout copies, bake files
and builds through the project's own bake command, upstreams made for a run, image layers,
containers of the CPU image, and the image measured. The measurements: builds.py (update, matrix,
size), serving.py (boot, load), portal.py, download.py.

Builds that must start from an empty cache stand on an upstream made for this run: the matrix's
CPU upstream plus one layer naming the run. Every cache key above it is new, so nothing from
earlier builds is reused, while the builds of one measurement share what they make (as builds
in sequence on one engine do). Nothing is pruned: the engine's own garbage collection reclaims
that cache. Every image this module makes is tagged under the benchmark's namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from llama_images.edges import buildx

from . import layers as layer_math

ARCHITECTURE = "amd64"
PLATFORM = f"linux/{ARCHITECTURE}"
CPU_FLAVOR = "cpu"
EXTERNAL_PORT = 8000  # llama's external port (services.d/llama.toml), the proxy's side
SMALL_BLOB = 4 << 20  # OCI documents (index, manifests, configs) are far smaller

UPSTREAM_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
ARG RUN_ID
RUN echo "${RUN_ID}" > /etc/llama-images-bench-run
"""


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and shows its output's end."""


@dataclass
class Context:
    root: Path  # the checkout being measured
    work: Path  # build/bench: logs, checkout copies, the model
    namespace: str
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    log: Callable[[str], None] = print
    created_images: list[str] = field(default_factory=list)

    def ref(self, repository: str, tag: str) -> str:
        return f"docker.io/{self.namespace}/{repository}:{tag}"


# ---- processes ---------------------------------------------------------------------------


def run(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    input_text: str | None = None,
    log_file: Path | None = None,
    timeout: float = 3600,
) -> str:
    """Run a command; its output goes to `log_file` when given. Raises BenchError on failure."""
    result = subprocess.run(
        list(command), cwd=cwd, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(command[:4])} ... failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    return result.stdout


def timed(action: Callable[[], Any]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


# ---- the machine -------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> dict[str, Any]:
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    buildx_version = subprocess.run(
        ["docker", "buildx", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "engine": engine,
        "buildx": buildx_version,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_before": load_average(),
    }


# ---- checkouts, matrices, bake files -------------------------------------------------------


def copy_checkout(root: Path, destination: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) in a folder the benchmark may edit."""
    shutil.rmtree(destination, ignore_errors=True)
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root)
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def cpu_upstream(root: Path) -> tuple[str, str]:
    """(name, image) of the upstream the matrix's CPU flavor is built on."""
    document = yaml.safe_load((root / "matrix.yaml").read_text(encoding="utf-8"))
    name = document["flavors"][CPU_FLAVOR]["upstreams"][0]
    return name, document["upstreams"][name]["image"]


def bench_matrix(root: Path, upstream_image: str, targets: int) -> str:
    """The checkout's matrix narrowed to its CPU flavor on `upstream_image` (amd64), with
    `targets` CPU targets on that one base: the flavor, and copies of it that differ in tag."""
    document = yaml.safe_load((root / "matrix.yaml").read_text(encoding="utf-8"))
    cpu = dict(document["flavors"][CPU_FLAVOR])
    upstream_name = cpu["upstreams"][0]
    document["upstreams"] = {upstream_name: {"image": upstream_image, "platforms": [PLATFORM]}}
    flavors = {CPU_FLAVOR: cpu}
    for number in range(2, targets + 1):
        flavors[f"{CPU_FLAVOR}{number}"] = {**cpu, "tag": "{release}-{flavor}"}
    document["flavors"] = flavors
    document["default_targets"] = [f"{name}/*" for name in flavors]
    return yaml.safe_dump(document, sort_keys=False)


def render_bake(ctx: Context, checkout: Path, namespace: str, log_file: Path) -> dict[str, Any]:
    """The bake file `invoke build` builds, rendered by the checkout's own `invoke bake`."""
    text = run(
        [sys.executable, "-m", "invoke", "bake", "--print", "--namespace", namespace], cwd=checkout, log_file=log_file
    )
    bake: dict[str, Any] = json.loads(text)
    return bake


def run_bake(checkout: Path, bake: Mapping[str, Any], log_file: Path) -> float:
    """`docker buildx bake` as `invoke build` runs it (buildx.bake_command, --load), timed."""
    command = buildx.bake_command(load=True, push=False, reads=buildx.secret_files(bake))
    return timed(lambda: run(command, cwd=checkout, input_text=json.dumps(bake), log_file=log_file))


def build_from_stdin(image: str, dockerfile: str, build_args: Mapping[str, str], log_file: Path) -> None:
    """Build a small helper image from a Dockerfile given as text (no context) into the engine."""
    args = [item for name, value in build_args.items() for item in ("--build-arg", f"{name}={value}")]
    run(
        ["docker", "buildx", "build", "--load", "--quiet", "--platform", PLATFORM, *args, "--tag", image, "-"],
        input_text=dockerfile,
        log_file=log_file,
    )


def image_target(bake: Mapping[str, Any], flavor: str = CPU_FLAVOR) -> tuple[str, str]:
    """(bake name, image reference) of the flavor's first image target."""
    name = bake["group"][flavor]["targets"][0]
    return name, bake["target"][name]["tags"][0]


def make_upstream(ctx: Context, purpose: str) -> str:
    """The CPU upstream plus one layer naming this run and purpose: an empty cache above it."""
    _, source = cpu_upstream(ctx.root)
    image = ctx.ref("bench-upstream", f"{purpose}-{ctx.run_id}")
    build_from_stdin(
        image,
        UPSTREAM_DOCKERFILE,
        {"UPSTREAM_IMAGE": source, "RUN_ID": f"{ctx.run_id}-{purpose}"},
        ctx.work / "logs" / "upstreams.log",
    )
    ctx.created_images.append(image)
    return image


def ensure_upstream(ctx: Context) -> None:
    """The matrix's CPU upstream, made the way `invoke build` makes it where it cannot be pulled."""
    from llama_images.edges import upstream_images
    from llama_images.edges.files import load_matrix

    matrix = load_matrix(ctx.root / "matrix.yaml")
    name, _ = cpu_upstream(ctx.root)
    upstream_images.ensure_upstreams({name: matrix.upstreams[name]}, log=ctx.log)


# ---- image layers ----------------------------------------------------------------------------


def saved_layers(image: str, uncompressed: bool = False) -> list[layer_math.Layer]:
    """The image's layers as a registry would serve them (`docker save`'s OCI layout, read as a
    stream: only the small JSON documents are kept; layers are only counted)."""
    process = subprocess.Popen(
        ["docker", "save", "--platform", PLATFORM, image], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    documents: dict[str, bytes] = {}
    unpacked: dict[str, int] = {}
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                name = member.name.removeprefix("./")
                digest = "sha256:" + name.removeprefix("blobs/sha256/") if name.startswith("blobs/sha256/") else name
                if member.size <= SMALL_BLOB:
                    documents[digest] = handle.read()
                if uncompressed:
                    unpacked[digest] = unpacked_size(handle, documents.get(digest))
    finally:
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        process.wait()
    if process.returncode != 0:
        raise BenchError(f"docker save {image} failed: {stderr[-2000:]}")

    def blob(digest: str) -> Mapping[str, Any]:
        found: Mapping[str, Any] = json.loads(documents[digest])
        return found

    manifest = layer_math.platform_manifest(json.loads(documents["index.json"]), blob, ARCHITECTURE)
    found = layer_math.image_layers(manifest, blob(manifest["config"]["digest"]))
    return layer_math.with_uncompressed(found, unpacked) if uncompressed else found


def unpacked_size(handle: IO[bytes], kept: bytes | None) -> int:
    """Bytes of a layer once unpacked: gzip streams are decompressed and counted, plain tars counted."""
    chunks: Iterator[bytes] = iter([kept]) if kept is not None else iter(lambda: handle.read(1 << 20), b"")
    first = next(chunks, b"")
    if not first.startswith(b"\x1f\x8b"):
        return len(first) + sum(len(chunk) for chunk in chunks)
    inflate = zlib.decompressobj(wbits=31)
    total = len(inflate.decompress(first))
    for chunk in chunks:
        total += len(inflate.decompress(chunk))
    return total + len(inflate.flush())


# ---- containers ------------------------------------------------------------------------------


@contextlib.contextmanager
def container(command: Sequence[str]) -> Iterator[str]:
    """`docker run -d ...` -> its id; removed afterwards."""
    identifier = run(["docker", "run", "-d", *command]).strip()
    try:
        yield identifier
    finally:
        subprocess.run(["docker", "rm", "-f", identifier], capture_output=True, check=False)


def published_port(identifier: str, port: int) -> int:
    for _ in range(200):
        found = subprocess.run(
            ["docker", "port", identifier, f"{port}/tcp"], capture_output=True, text=True, check=False
        ).stdout.split()
        if found:
            return int(found[0].rsplit(":", 1)[1])
        time.sleep(0.01)
    raise BenchError(f"container {identifier[:12]} published no port for {port}")


def health_status(port: int, token: str | None, timeout: float = 1.0) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/health", headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def tiny_model(ctx: Context) -> Path:
    """The tests' tiny GGUF model (tests/support/tiny_gguf.py), written once per run."""
    return random_model(ctx, "tiny", {})


def random_model(ctx: Context, name: str, sizes: Mapping[str, int]) -> Path:
    """A random llama-architecture GGUF from the tests' generator (tests/support/tiny_gguf.py) at
    the given sizes (`n-embd`, `n-ff`, `n-blocks`), written once into build/bench/models."""
    model = ctx.work / "models" / f"{name}.gguf"
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        options = [part for option, value in sizes.items() for part in (f"--{option}", str(value))]
        run([sys.executable, "-m", "tests.support.tiny_gguf", str(model), *options], cwd=ctx.root)
    return model


# ---- the image measured by 3-6 -----------------------------------------------------------------


def build_image(ctx: Context) -> str:
    """The CPU image as `invoke build` makes it from this checkout (amd64), in the bench namespace."""
    logs = ctx.work / "logs" / "build.log"
    run(
        [
            sys.executable,
            "-m",
            "invoke",
            "build",
            "--filter",
            f"{CPU_FLAVOR}/*",
            "--platform",
            PLATFORM,
            "--namespace",
            ctx.namespace,
        ],
        cwd=ctx.root,
        log_file=logs,
    )
    bake = render_bake(ctx, ctx.root, ctx.namespace, logs)
    return image_target(bake)[1]


def cleanup(ctx: Context) -> None:
    """Remove the images made for this run only (not the kept loader, minimal and measured images)."""
    if ctx.created_images:
        subprocess.run(
            ["docker", "image", "rm", "-f", *dict.fromkeys(ctx.created_images)], capture_output=True, check=False
        )
