"""The measurements (I/O edge): builds through the project's own bake file and bake command,
containers of the CPU image, hey in the container's network namespace.

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
import secrets
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
from . import load, report
from .stats import LoadSample, median, summarize

ARCHITECTURE = "amd64"
PLATFORM = f"linux/{ARCHITECTURE}"
CPU_FLAVOR = "cpu"
# The two overlays sit on top of the llama.cpp install (derivatives/llama-cpp/Dockerfile).
LLAMA_AND_OVERLAY_LAYERS = 3
BASE_SCRIPT = "base-image/ROOT/opt/boot/boot.sh"
DERIVATIVE_SCRIPT = "derivatives/llama-cpp/ROOT/opt/supervisor-scripts/llama.sh"
LLAMA_STAGE = "llama-cpu"  # the derivative's install stage of the CPU flavor
EXTERNAL_PORT = 8000  # llama's external port (services.d/llama.toml), the proxy's side
SMALL_BLOB = 4 << 20  # OCI documents (index, manifests, configs) are far smaller

UPSTREAM_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
ARG RUN_ID
RUN echo "${RUN_ID}" > /etc/llama-images-bench-run
"""
# Only Debian's llama-server on the same upstream: the size baseline.
MINIMAL_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends llama.cpp-tools \\
    && apt-get clean \\
    && rm -rf /var/lib/apt/lists/*
"""
LOADER_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hey \\
    && apt-get clean \\
    && rm -rf /var/lib/apt/lists/*
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


# ---- 1. update pull delta --------------------------------------------------------------------


def measure_update(ctx: Context) -> dict[str, Any]:
    logs = ctx.work / "logs" / "update.log"
    checkout = copy_checkout(ctx.root, ctx.work / "checkout-update")
    upstream = make_upstream(ctx, "update")
    (checkout / "matrix.yaml").write_text(bench_matrix(ctx.root, upstream, 1), encoding="utf-8")
    namespace = f"{ctx.namespace}-update"
    bake = render_bake(ctx, checkout, namespace, logs)
    name, image = image_target(bake)
    ctx.created_images += [t for target in bake["target"].values() for t in target.get("tags", [])]
    ctx.log(f"update: cold build of {image} (and its base) from an empty cache ...")
    cold = run_bake(checkout, bake, logs)
    before = saved_layers(image)
    cached = run_bake(checkout, bake, logs)
    ctx.log(f"update: cold {cold:.1f} s, unchanged rebuild {cached:.1f} s")
    steps = []
    allowed = list(range(len(before) - LLAMA_AND_OVERLAY_LAYERS, len(before)))
    changes: list[tuple[str, str, str | None]] = [
        ("base script edit", "script", BASE_SCRIPT),
        ("derivative script edit", "script", DERIVATIVE_SCRIPT),
        ("llama.cpp release bump", "release", None),
    ]
    for label, kind, path in changes:
        built = bake
        if path is not None:
            with (checkout / path).open("a", encoding="utf-8") as script:
                script.write(f"# benchmark edit {ctx.run_id}\n")
        else:
            # The CPU flavor's release is the one Debian carries, so a bump is simulated: the
            # install stage runs again (new package files, new layer) and nothing else changes.
            built = json.loads(json.dumps(bake))
            built["target"][name]["no-cache-filter"] = [LLAMA_STAGE]
        seconds = run_bake(checkout, built, logs)
        after = saved_layers(image)
        delta = layer_math.pull_delta(before, after)
        ctx.log(
            f"update: {label}: {seconds:.1f} s, re-pull {report.human_bytes(delta.bytes)} "
            f"in {len(delta.changed)} layer(s)"
        )
        steps.append(
            {
                "name": label,
                "kind": kind,
                "edited": path,
                "seconds": round(seconds, 2),
                "fraction_of_cold": round(seconds / cold, 4),
                "delta": delta.as_json(),
                "allowed_layers": allowed,
            }
        )
        before = after
    return {
        "image": image,
        "platform": PLATFORM,
        "cold_seconds": round(cold, 2),
        "cached_seconds": round(cached, 2),
        "layers": [layer.as_json() for layer in before],
        "steps": steps,
    }


# ---- 2. matrix build -------------------------------------------------------------------------


def measure_matrix(ctx: Context, targets: int) -> dict[str, Any]:
    checkout = copy_checkout(ctx.root, ctx.work / "checkout-matrix")
    results: dict[str, Any] = {"targets": targets, "platform": PLATFORM}
    for method in ("bake", "sequential"):
        logs = ctx.work / "logs" / f"matrix-{method}.log"
        upstream = make_upstream(ctx, f"matrix-{method}")
        (checkout / "matrix.yaml").write_text(bench_matrix(ctx.root, upstream, targets), encoding="utf-8")
        bake = render_bake(ctx, checkout, f"{ctx.namespace}-matrix-{method}", logs)
        ctx.created_images += [t for target in bake["target"].values() for t in target.get("tags", [])]
        ctx.log(f"matrix: {method}: {len(bake['group']['default']['targets'])} targets from an empty cache ...")
        if method == "bake":
            results["bake_seconds"] = round(run_bake(checkout, bake, logs), 2)
        else:
            commands = sequential_builds(bake, ctx.ref("bench-packages", ctx.run_id))
            ctx.created_images.append(ctx.ref("bench-packages", ctx.run_id))
            results["sequential_builds"] = len(commands)
            started = time.monotonic()
            for command in commands:
                run(command, cwd=checkout, log_file=logs)
            results["sequential_seconds"] = round(time.monotonic() - started, 2)
        ctx.log(f"matrix: {method}: {results[f'{method}_seconds']:.1f} s")
    results["ratio"] = round(results["bake_seconds"] / results["sequential_seconds"], 3)
    return results


def sequential_builds(bake: Mapping[str, Any], packages_tag: str) -> list[list[str]]:
    """One `docker buildx build` per bake target, in dependency order, as README's "Build
    arguments" builds by hand: the base's packages stage as an image, then the base image,
    then each llama.cpp image on that packages image with the base overlay as a named context."""
    targets: Mapping[str, Mapping[str, Any]] = bake["target"]
    produced: dict[str, str] = {}
    commands = []

    def stage(name: str) -> int:  # packages stages (untagged), then bases, then the images on them
        return 0 if "tags" not in targets[name] else 1 if not targets[name].get("contexts") else 2

    order = sorted(targets, key=lambda name: (stage(name), name))
    for name in order:
        target = targets[name]
        tags = list(target.get("tags") or [packages_tag if len(produced) == 0 else f"{packages_tag}-{name}"])
        produced[name] = tags[0]
        context = target["context"]
        command = [
            "docker",
            "buildx",
            "build",
            "--load",
            "--progress",
            "plain",
            "--file",
            f"{context}/{target.get('dockerfile', 'Dockerfile')}",
            "--platform",
            ",".join(target["platforms"]),
        ]
        if target.get("target"):
            command += ["--target", target["target"]]
        for key, value in target.get("args", {}).items():
            command += ["--build-arg", f"{key}={value}"]
        for key, value in target.get("labels", {}).items():
            command += ["--label", f"{key}={value}"]
        for secret in target.get("secret", []):
            command += ["--secret", secret]
        for key, value in target.get("contexts", {}).items():
            if value.startswith("target:"):
                value = f"docker-image://{produced[value.removeprefix('target:')]}"
            command += ["--build-context", f"{key}={value}"]
        for tag in tags:
            command += ["--tag", tag]
        commands.append([*command, context])
    return commands


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
    folder = ctx.work / "models"
    model = folder / "tiny.gguf"
    if not model.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "tests.support.tiny_gguf", str(model)], cwd=ctx.root)
    return model


# ---- 3. boot to healthy ----------------------------------------------------------------------


def boot_once(image: str, models: Path, token: str, bare: bool, timeout: float = 120) -> tuple[float, dict[str, float]]:
    """Seconds from `docker run` to /health answering 200 on the published external port, and
    (image only) when boot reached its phases, read from the log's timestamps."""
    run_args = ["-p", f"127.0.0.1::{EXTERNAL_PORT}", "-v", f"{models}:/models:ro"]
    if bare:
        arguments = [
            *run_args,
            "--entrypoint",
            "llama-server",
            image,
            "-m",
            "/models/tiny.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            str(EXTERNAL_PORT),
        ]
    else:
        arguments = [*run_args, "-e", "LLAMA_MODEL=/models/tiny.gguf", "-e", f"OPEN_BUTTON_TOKEN={token}", image]
    started_wall = time.time()
    started = time.monotonic()
    with container(arguments) as identifier:
        port = published_port(identifier, EXTERNAL_PORT)
        while health_status(port, None if bare else token) != 200:
            if time.monotonic() - started > timeout:
                logs = subprocess.run(["docker", "logs", identifier], capture_output=True, text=True, check=False)
                raise BenchError(
                    f"/health did not answer 200 within {timeout} s:\n{(logs.stdout + logs.stderr)[-2000:]}"
                )
            time.sleep(0.01)
        seconds = time.monotonic() - started
        phases = {} if bare else boot_phases(identifier, started_wall)
    return seconds, phases


PHASE_MARKERS = {
    "boot started": "[boot] ",
    "supervisord started": "supervisord started",
    "llama spawned": "spawned: 'llama'",
}


def boot_phases(identifier: str, started: float) -> dict[str, float]:
    """Seconds after `docker run` at which the container's log first showed each phase."""
    output = subprocess.run(["docker", "logs", "-t", identifier], capture_output=True, text=True, check=False)
    found: dict[str, float] = {}
    for line in (output.stdout + output.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        for phase, marker in PHASE_MARKERS.items():
            if phase not in found and marker in text:
                found[phase] = round(log_time(stamp) - started, 3)
    return found


def log_time(stamp: str) -> float:
    """Docker's RFC 3339 log timestamp (nanoseconds, Z) -> seconds since the epoch."""
    import datetime as dt

    whole, _, fraction = stamp.rstrip("Z").partition(".")
    moment = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def measure_boot(ctx: Context, image: str, runs: int) -> dict[str, Any]:
    models = tiny_model(ctx).parent
    token = secrets.token_urlsafe(18)
    image_seconds: list[float] = []
    bare_seconds: list[float] = []
    phases: dict[str, list[float]] = {}
    boot_once(image, models, token, bare=True)  # warm: image layers unpacked, page cache
    for number in range(runs):
        # Interleaved, alternating which goes first.
        for bare in (number % 2 == 1, number % 2 == 0):
            seconds, found = boot_once(image, models, token, bare)
            (bare_seconds if bare else image_seconds).append(round(seconds, 3))
            for name, value in found.items():
                phases.setdefault(name, []).append(value)
        ctx.log(f"boot: run {number + 1}/{runs}: image {image_seconds[-1]:.2f} s, bare {bare_seconds[-1]:.2f} s")
    image_median, bare_median = median(image_seconds), median(bare_seconds)
    return {
        "image": image,
        "runs": runs,
        "image_seconds": image_seconds,
        "bare_seconds": bare_seconds,
        "image_median_seconds": round(image_median, 3),
        "bare_median_seconds": round(bare_median, 3),
        "added_seconds": round(image_median - bare_median, 3),
        "ratio": round(image_median / bare_median, 3) if bare_median else None,
        "phases": {name: round(median(values), 3) for name, values in phases.items()},
    }


# ---- 4. proxy under load ---------------------------------------------------------------------


def loader_image(ctx: Context) -> str:
    """hey from Debian's packages, on the CPU upstream; built once, kept."""
    image = ctx.ref("bench-load", "hey")
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if present.returncode != 0:
        _, upstream = cpu_upstream(ctx.root)
        build_from_stdin(image, LOADER_DOCKERFILE, {"UPSTREAM_IMAGE": upstream}, ctx.work / "logs" / "loader.log")
    return image


def internal_port(image: str) -> int:
    """llama's internal port as the image declares it (the runtime's own loader)."""
    text = run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "/opt/llama-images/bin/llama-runtime",
            image,
            "services",
            "--field",
            "llama.internal_port",
        ]
    )
    return int(text.strip())


def measure_load(ctx: Context, image: str, repeats: int) -> dict[str, Any]:
    models = tiny_model(ctx).parent
    token = secrets.token_urlsafe(18)
    loader = loader_image(ctx)
    direct_port = internal_port(image)
    paths = {"proxy": f"http://127.0.0.1:{EXTERNAL_PORT}", "direct": f"http://127.0.0.1:{direct_port}"}
    headers = {"Authorization": f"Bearer {token}"}
    samples: dict[tuple[str, int, str], list[LoadSample]] = {}
    server_args = [
        "-v",
        f"{models}:/models:ro",
        "-e",
        "LLAMA_MODEL=/models/tiny.gguf",
        "-e",
        f"OPEN_BUTTON_TOKEN={token}",
        image,
    ]
    with container(server_args) as server:
        wait_serving(server, loader, paths["proxy"], headers)
        with container(["--network", f"container:{server}", "--entrypoint", "sleep", loader, "infinity"]) as client:

            def hey(kind: load.LoadKind, concurrency: int, path: str) -> LoadSample:
                command = load.hey_command(paths[path] + kind.path, kind, concurrency, headers)
                text = run(["docker", "exec", client, *command], timeout=600)
                return load.parse_hey_csv(text, load.request_count(kind, concurrency))

            for kind in load.KINDS:  # warm-up: connections, caches, the model's first evaluation
                for path in paths:
                    hey(kind, 8, path)
            for repeat in range(repeats):
                for kind in load.KINDS:
                    for concurrency in load.CONCURRENCY:
                        order = list(paths) if (repeat + concurrency) % 2 == 0 else list(reversed(paths))
                        for path in order:
                            samples.setdefault((kind.name, concurrency, path), []).append(hey(kind, concurrency, path))
                ctx.log(f"load: round {repeat + 1}/{repeats} done")
    summaries = {key: summarize(found).as_json() for key, found in samples.items()}
    return {"image": image, "repeats": repeats, "tool": "hey (Debian)", "rows": report.load_rows(summaries)}


def wait_serving(server: str, loader: str, proxy_url: str, headers: Mapping[str, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                f"container:{server}",
                loader,
                "hey",
                "-n",
                "1",
                "-c",
                "1",
                "-o",
                "csv",
                *header_args,
                f"{proxy_url}/health",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and ",200," in probe.stdout:
            return
        time.sleep(0.5)
    raise BenchError(f"the container did not serve /health through the proxy within {timeout} s")


# ---- 5. image size ---------------------------------------------------------------------------


def measure_size(ctx: Context, image: str) -> dict[str, Any]:
    _, upstream = cpu_upstream(ctx.root)
    minimal = ctx.ref("minimal-llama-server", upstream.rsplit(":", 1)[-1])
    run(
        [
            "docker",
            "buildx",
            "build",
            "--load",
            "--platform",
            PLATFORM,
            "--build-arg",
            f"UPSTREAM_IMAGE={upstream}",
            "--tag",
            minimal,
            "-",
        ],
        input_text=MINIMAL_DOCKERFILE,
        log_file=ctx.work / "logs" / "size.log",
    )
    measured = {}
    for label, ref in (("image", image), ("minimal", minimal)):
        found = saved_layers(ref, uncompressed=True)
        measured[label] = (ref, found)
    summary: dict[str, dict[str, Any]] = {}
    for label, (ref, found) in measured.items():
        summary[label] = {
            "ref": ref,
            "layers": len(found),
            "compressed_bytes": sum(layer.size for layer in found),
            "uncompressed_bytes": sum(layer.uncompressed or 0 for layer in found),
        }
    image_layers = measured["image"][1]
    return {
        "image": summary["image"],
        "minimal": summary["minimal"],
        "upstream": upstream,
        "ratio_uncompressed": round(
            summary["image"]["uncompressed_bytes"] / summary["minimal"]["uncompressed_bytes"], 3
        ),
        "ratio_compressed": round(summary["image"]["compressed_bytes"] / summary["minimal"]["compressed_bytes"], 3),
        "largest_layers": [layer.as_json() for layer in layer_math.largest(image_layers)],
    }


# ---- 6. cold start: model download ------------------------------------------------------------

DOWNLOAD_REPO = "bench/model-GGUF"
DOWNLOAD_FILE = "bench-Q4_K_M.gguf"  # the quant llama-server's -hf picks by default
DOWNLOAD_WAYS = {"launcher, 16 connections": "16", "llama-server's own -hf": "0"}


def download_model(ctx: Context, size: int) -> Path:
    """The tests' tiny model padded to `size` bytes (it still loads): what the hub serves."""
    model = ctx.work / "models" / "download" / DOWNLOAD_FILE
    if not model.is_file() or model.stat().st_size != size:
        tiny = tiny_model(ctx).read_bytes()
        model.parent.mkdir(parents=True, exist_ok=True)
        with model.open("wb") as handle:
            handle.write(tiny)
            handle.truncate(size)
    return model


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, where containers reach the fake hub."""
    text = run(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"])
    return text.strip()


@contextlib.contextmanager
def fake_hub(ctx: Context, model: Path, rate: int, link_rate: int) -> Iterator[str]:
    """tests/support/fake_hf_hub.py serving the model, capped per connection and/or in all -> its URL."""
    log_file = ctx.work / "logs" / "download-hub.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.support.fake_hf_hub", str(model), "--repo", DOWNLOAD_REPO,
               "--host", bridge_gateway(), "--rate", str(rate), "--link-rate", str(link_rate)]  # fmt: skip
    with log_file.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ctx.root, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "HF_ENDPOINT=" not in log_file.read_text(encoding="utf-8"):
                if process.poll() is not None:
                    raise BenchError(f"the fake hub ended: {log_file.read_text(encoding='utf-8')[-2000:]}")
                time.sleep(0.1)
            first = log_file.read_text(encoding="utf-8").split()
            url = next((word.removeprefix("HF_ENDPOINT=") for word in first if word.startswith("HF_ENDPOINT=")), "")
            if not url:
                raise BenchError("the fake hub did not say where it listens")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def download_once(image: str, endpoint: str, token: str, connections: str, timeout: float = 900) -> float:
    """Seconds from `docker run` (empty cache) to /health 200 through the proxy."""
    arguments = ["-p", f"127.0.0.1::{EXTERNAL_PORT}", "-e", f"LLAMA_MODEL={DOWNLOAD_REPO}",
                 "-e", f"HF_ENDPOINT={endpoint}", "-e", f"LLAMA_DOWNLOAD_CONNECTIONS={connections}",
                 "-e", f"OPEN_BUTTON_TOKEN={token}", image]  # fmt: skip
    started = time.monotonic()
    with container(arguments) as identifier:
        port = published_port(identifier, EXTERNAL_PORT)
        while health_status(port, token) != 200:
            if time.monotonic() - started > timeout:
                logs = subprocess.run(["docker", "logs", identifier], capture_output=True, text=True, check=False)
                raise BenchError(f"no /health 200 within {timeout} s:\n{(logs.stdout + logs.stderr)[-2000:]}")
            time.sleep(0.05)
        return time.monotonic() - started


def download_scenarios(rate: int, link_rate: int) -> dict[str, dict[str, int]]:
    """The two situations a rented machine meets: a CDN that caps each connection, and a link that
    is the limit whatever the number of connections."""
    return {"per-connection cap": {"rate": rate, "link_rate": 0}, "link cap": {"rate": 0, "link_rate": link_rate}}


def measure_download(ctx: Context, image: str, runs: int, size: int, rate: int, link_rate: int) -> dict[str, Any]:
    model = download_model(ctx, size)
    token = secrets.token_urlsafe(18)
    scenarios: dict[str, Any] = {}
    for scenario, limits in download_scenarios(rate, link_rate).items():
        seconds: dict[str, list[float]] = {way: [] for way in DOWNLOAD_WAYS}
        with fake_hub(ctx, model, limits["rate"], limits["link_rate"]) as endpoint:
            for number in range(runs):
                ways = list(DOWNLOAD_WAYS) if number % 2 == 0 else list(reversed(DOWNLOAD_WAYS))
                for way in ways:  # interleaved, alternating which goes first
                    seconds[way].append(round(download_once(image, endpoint, token, DOWNLOAD_WAYS[way]), 2))
                ctx.log(f"download: {scenario}: run {number + 1}/{runs}: "
                        + ", ".join(f"{way} {found[-1]:.1f} s" for way, found in seconds.items()))  # fmt: skip
        medians = {way: median(found) for way, found in seconds.items()}
        ours, theirs = medians["launcher, 16 connections"], medians["llama-server's own -hf"]
        scenarios[scenario] = {
            **limits,
            "seconds": seconds,
            "median_seconds": {way: round(value, 2) for way, value in medians.items()},
            "speedup": round(theirs / ours, 2) if ours else None,
        }
    return {"image": image, "bytes": size, "runs": runs, "scenarios": scenarios}


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
