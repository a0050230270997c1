"""The build measurements: 1. update pull delta (what a user re-pulls after an edit or a release
bump), 2. matrix build (one bake vs one build per target), 5. image size."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from . import layers as layer_math
from . import report
from .measure import (
    PLATFORM,
    Context,
    bench_matrix,
    copy_checkout,
    cpu_upstream,
    image_target,
    make_upstream,
    render_bake,
    run,
    run_bake,
    saved_layers,
)

# The two overlays sit on top of the llama.cpp install (derivatives/llama-cpp/Dockerfile).
LLAMA_AND_OVERLAY_LAYERS = 3
BASE_SCRIPT = "base-image/ROOT/opt/boot/boot.sh"
DERIVATIVE_SCRIPT = "derivatives/llama-cpp/ROOT/opt/supervisor-scripts/llama.sh"
LLAMA_STAGE = "llama-cpu"  # the derivative's install stage of the CPU flavor
# Only Debian's llama-server on the same upstream: the size baseline.
MINIMAL_DOCKERFILE = """\
ARG UPSTREAM_IMAGE
FROM ${UPSTREAM_IMAGE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends llama.cpp-tools \\
    && apt-get clean \\
    && rm -rf /var/lib/apt/lists/*
"""

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
    """One `docker buildx build` per bake target, in dependency order, as docs/building.md's "Build
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
        # The image's Python environments, each its own layer (the portal's, Jupyter's, vastai's).
        "environments": [layer.as_json() for layer in layer_math.environments(image_layers)],
    }
