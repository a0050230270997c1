"""`python -m benchmarks` (what `nox -s bench` runs): measure, print the table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import builds, download, measure, portal, report, serving, soak, threads, worker

MEASUREMENTS = ("update", "matrix", "boot", "load", "size", "portal", "download", "threads", "soak", "worker")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nox -s bench --", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help=f"comma-separated measurements to run (default: all of {', '.join(MEASUREMENTS)})",
    )
    parser.add_argument("--output", type=Path, default=Path("build/bench/results.json"), help="JSON results file")
    parser.add_argument(
        "--namespace",
        default=None,
        help="namespace of every image the benchmark builds (default: $LLAMA_IMAGES_TEST_NAMESPACE, "
        "else llamaimages-bench)",
    )
    parser.add_argument("--targets", type=int, default=3, help="CPU targets in the matrix build (default 3)")
    parser.add_argument("--boot-runs", type=int, default=5, help="boot runs of each kind (default 5)")
    parser.add_argument("--load-repeats", type=int, default=3, help="runs of each load (default 3)")
    parser.add_argument("--worker-repeats", type=int, default=3, help="runs of each worker load (default 3)")
    parser.add_argument("--portal-seconds", type=float, default=30, help="seconds of each portal phase (default 30)")
    parser.add_argument("--portal-rounds", type=int, default=3, help="rounds of page closed/open (default 3)")
    parser.add_argument("--download-runs", type=int, default=3, help="downloads of each kind and scenario (default 3)")
    parser.add_argument(
        "--download-mb", type=int, default=300, help="size of the model the download serves, in MB (default 300)"
    )
    parser.add_argument(
        "--download-rate-mb", type=int, default=20, help="the hub's cap per connection, MB/s (default 20)"
    )
    parser.add_argument("--download-link-mb", type=int, default=40, help="the link's cap, MB/s (default 40)")
    parser.add_argument("--thread-runs", type=int, default=3, help="runs of each thread setting (default 3)")
    parser.add_argument(
        "--soak-blocks", type=int, default=20, help="blocks of the soak, 4,800 requests each (default 20; the gate: 4)"
    )
    parser.add_argument(
        "--image",
        help="measure boot, load, size, portal, download, threads, soak and worker on this image, not a new build",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"--only: unknown measurement(s) {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    if (
        args.targets < 2
        or args.boot_runs < 5
        or args.load_repeats < 1
        or args.worker_repeats < 1
        or args.portal_rounds < 1
        or args.download_runs < 1
        or args.thread_runs < 1
    ):
        parser.error(
            "--targets must be at least 2, --boot-runs at least 5, --load-repeats, --worker-repeats, "
            "--portal-rounds, --download-runs and --thread-runs at least 1"
        )
    if args.soak_blocks < 2:
        parser.error("--soak-blocks must be at least 2 (the first block against the last)")
    if args.download_mb < 10 or args.download_rate_mb < 1 or args.download_link_mb < 1:
        parser.error("--download-mb must be at least 10, --download-rate-mb and --download-link-mb at least 1")
    args.only = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path.cwd()
    if not (root / "matrix.yaml").is_file() or not (root / "tasks.py").is_file():
        print("error: run the benchmark in a llama-images checkout (nox -s bench)", file=sys.stderr)
        return 2
    namespace = args.namespace or os.environ.get("LLAMA_IMAGES_TEST_NAMESPACE") or "llamaimages-bench"
    work = (root / "build" / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = measure.Context(root=root, work=work, namespace=namespace)
    results: dict[str, Any] = {"machine": measure.machine(), "run_id": ctx.run_id, "namespace": namespace}
    print(f"benchmark run {ctx.run_id}: {', '.join(args.only)}; logs in {work / 'logs'}", flush=True)
    try:
        measure.ensure_upstream(ctx)
        image = args.image
        if image is None and {"boot", "load", "size", "portal", "download", "threads", "soak", "worker"} & set(
            args.only
        ):
            image = measure.build_image(ctx)
        steps = {
            "update": lambda: builds.measure_update(ctx),
            "matrix": lambda: builds.measure_matrix(ctx, args.targets),
            "boot": lambda: serving.measure_boot(ctx, image, args.boot_runs),
            "load": lambda: serving.measure_load(ctx, image, args.load_repeats),
            "size": lambda: builds.measure_size(ctx, image),
            "portal": lambda: portal.measure_portal(ctx, image, args.portal_seconds, args.portal_rounds),
            "download": lambda: download.measure_download(
                ctx,
                image,
                args.download_runs,
                args.download_mb * 1_000_000,
                args.download_rate_mb * 1_000_000,
                args.download_link_mb * 1_000_000,
            ),
            "threads": lambda: threads.measure_threads(ctx, image, args.thread_runs),
            "soak": lambda: soak.measure_soak(ctx, image, args.soak_blocks),
            "worker": lambda: worker.measure_worker(ctx, image, args.worker_repeats),
        }
        for name in MEASUREMENTS:
            if name in args.only:
                results[name] = steps[name]()
    except measure.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        measure.cleanup(ctx)
    results["machine"]["load_after"] = measure.load_average()
    results["targets"] = report.verdicts(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(report.render(results), end="")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
