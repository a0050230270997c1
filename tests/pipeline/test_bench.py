"""The benchmark's pure parts: statistics, hey's output, layer deltas, the table and the targets.
The benchmark itself runs only in `nox -s bench` (it asserts no timings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import layers, load, portal, report, stats, worker
from benchmarks.builds import sequential_builds
from benchmarks.measure import bench_matrix
from llama_images.edges.files import load_matrix
from tests.conftest import REPO_ROOT

# ---- statistics ----------------------------------------------------------------------------


def test_percentiles_interpolate_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.median(values) == 2.5
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert stats.median([7.0]) == 7.0


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1.0], 101)


def test_a_ratio_against_zero_is_none() -> None:
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(3.0, 0.0) is None


def test_load_summary_pools_latencies_and_takes_the_median_throughput() -> None:
    runs = [
        stats.LoadSample(latencies=(0.001, 0.002), errors=0, seconds=1.0),  # 2 rps
        stats.LoadSample(latencies=(0.003, 0.004), errors=1, seconds=0.5),  # 4 rps
        stats.LoadSample(latencies=(0.005, 0.006), errors=0, seconds=0.2),  # 10 rps
    ]
    summary = stats.summarize(runs)
    assert summary.requests == 7
    assert summary.errors == 1
    assert summary.requests_per_second == 4.0
    assert summary.p50_ms == pytest.approx(3.5)
    assert summary.p99_ms == pytest.approx(5.95)


# ---- hey -----------------------------------------------------------------------------------

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.0020,0.0001,0.0000,0.0000,0.0018,0.0001,200,0.0001
0.0030,0.0000,0.0000,0.0000,0.0029,0.0001,200,0.0022
0.0040,0.0000,0.0000,0.0000,0.0039,0.0001,503,0.0053
"""


def test_hey_csv_counts_non_2xx_and_missing_answers_as_errors() -> None:
    sample = load.parse_hey_csv(HEY_CSV, requested=4)
    assert sample.latencies == (0.002, 0.003)
    assert sample.errors == 2  # the 503, and the request hey got no answer for
    assert sample.seconds == pytest.approx(0.0093)  # the last answer's start offset + its latency
    assert sample.requests == 4


def test_hey_csv_with_no_answer_at_all() -> None:
    sample = load.parse_hey_csv(HEY_CSV.splitlines()[0] + "\n", requested=8)
    assert sample.latencies == ()
    assert sample.errors == 8


def test_other_csv_is_refused() -> None:
    with pytest.raises(ValueError, match="not hey"):
        load.parse_hey_csv("a,b\n1,2\n", requested=1)


def test_request_counts_are_fixed_multiples_of_the_concurrency() -> None:
    health, completion, _ = load.KINDS
    for kind in load.KINDS:
        for concurrency in load.CONCURRENCY:
            count = load.request_count(kind, concurrency)
            assert count % concurrency == 0
            assert count >= load.MIN_REQUESTS
    assert load.request_count(health, 64) == 2560
    assert load.request_count(completion, 1) == 400


def test_hey_command_sends_the_same_request_to_either_path() -> None:
    _, _, stream = load.KINDS
    command = load.hey_command("http://127.0.0.1:8000/v1/completions", stream, 64, {"Authorization": "Bearer t"})
    assert command[:6] == ["hey", "-disable-keepalive", "-n", "640", "-c", "64"]
    assert command[command.index("-H") + 1] == "Authorization: Bearer t"
    assert json.loads(command[command.index("-d") + 1]) == {"prompt": load.PROMPT, "max_tokens": 8, "stream": True}
    assert command[-1] == "http://127.0.0.1:8000/v1/completions"


# ---- layers --------------------------------------------------------------------------------


def layout(layer_sizes: list[tuple[str, int]], history: list[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    """An OCI layout like docker save writes: index.json -> image index -> manifests."""
    documents = {
        "sha256:config": {"history": history},
        "sha256:amd64": {"config": {"digest": "sha256:config"},
                         "layers": [{"digest": d, "size": s} for d, s in layer_sizes]},
        "sha256:arm64": {"config": {"digest": "sha256:other"}, "layers": []},
        "sha256:index": {"manifests": [
            {"digest": "sha256:arm64", "platform": {"architecture": "arm64", "os": "linux"}},
            {"digest": "sha256:amd64", "platform": {"architecture": "amd64", "os": "linux"}},
        ]},
    }  # fmt: skip
    return {"manifests": [{"digest": "sha256:index"}]}, documents.__getitem__


def test_layers_of_the_platform_are_named_by_the_steps_that_made_them() -> None:
    index, blob = layout(
        [("sha256:a", 100), ("sha256:b", 20)],
        [{"created_by": "ADD rootfs.tar / # buildkit"}, {"created_by": "ENV X=1", "empty_layer": True},
         {"created_by": "/bin/bash -o pipefail -c apt-get   update\n && install"}],
    )  # fmt: skip
    manifest = layers.platform_manifest(index, blob, "amd64")
    found = layers.image_layers(manifest, blob(manifest["config"]["digest"]))
    assert [(layer.index, layer.digest, layer.size) for layer in found] == [(0, "sha256:a", 100), (1, "sha256:b", 20)]
    assert [layer.created_by for layer in found] == ["ADD rootfs.tar /", "apt-get update && install"]
    with pytest.raises(ValueError, match="no riscv64 image"):
        layers.platform_manifest(index, blob, "riscv64")


def test_history_that_does_not_line_up_names_no_step() -> None:
    manifest = {"layers": [{"digest": "sha256:a", "size": 1}]}
    found = layers.image_layers(manifest, {"history": []})
    assert found[0].created_by == ""


def layer(index: int, digest: str, size: int, uncompressed: int | None = None) -> layers.Layer:
    return layers.Layer(index, digest, size, f"step {index}", uncompressed)


def test_pull_delta_is_the_blobs_the_old_image_lacks() -> None:
    old = [layer(0, "sha256:base", 1000), layer(1, "sha256:llama", 500), layer(2, "sha256:overlay", 20)]
    new = [layer(0, "sha256:base", 1000), layer(1, "sha256:llama", 500), layer(2, "sha256:overlay2", 25)]
    delta = layers.pull_delta(old, new)
    assert [item.index for item in delta.changed] == [2]
    assert delta.bytes == 25
    assert delta.as_json()["changed_layers"] == 1
    assert delta.as_json()["total_layers"] == 3
    # A blob the user already holds is not pulled again, wherever it sits.
    moved = [layer(0, "sha256:overlay", 20), layer(1, "sha256:base", 1000)]
    assert layers.pull_delta(old, moved).bytes == 0
    assert layers.pull_delta(old, old).changed == ()


def test_largest_layers_by_unpacked_size() -> None:
    found = layers.with_uncompressed(
        [layer(0, "sha256:a", 10), layer(1, "sha256:b", 30), layer(2, "sha256:c", 20)],
        {"sha256:a": 100, "sha256:b": 40, "sha256:c": 90},
    )
    assert [item.digest for item in layers.largest(found, 2)] == ["sha256:a", "sha256:c"]
    assert found[0].as_json()["uncompressed_bytes"] == 100


# ---- matrices and sequential builds ---------------------------------------------------------


def test_bench_matrix_is_n_cpu_targets_on_one_base(tmp_path: Path) -> None:
    text = bench_matrix(REPO_ROOT, "docker.io/someone/upstream:run1", 3)
    path = tmp_path / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    matrix = load_matrix(path)  # the project's own validation accepts it
    assert [u.image for u in matrix.upstreams.values()] == ["docker.io/someone/upstream:run1"]
    assert sorted(yaml.safe_load(text)["flavors"]) == ["cpu", "cpu2", "cpu3"]
    assert all(u.platforms == ("linux/amd64",) for u in matrix.upstreams.values())


BAKE = {
    "group": {"default": {"targets": ["base_x", "cpu_x_b1"]}},
    "target": {
        "cpu_x_b1": {"context": "derivatives/llama-cpp", "dockerfile": "Dockerfile", "platforms": ["linux/amd64"],
                     "args": {"BASE_IMAGE": "ns/base-image:x"}, "tags": ["docker.io/ns/llama-cpp:b1-cpu"],
                     "contexts": {"ns/base-image:x": "target:base-packages_x", "base-overlay": "base-image/ROOT"},
                     "secret": ["id=pipcert,src=/ca.pem"]},
        "base_x": {"context": "base-image", "dockerfile": "Dockerfile", "target": "base", "platforms": ["linux/amd64"],
                   "args": {"UPSTREAM_IMAGE": "u:1"}, "tags": ["docker.io/ns/base-image:x"],
                   "labels": {"org.opencontainers.image.title": "t"}},
        "base-packages_x": {"context": "base-image", "dockerfile": "Dockerfile", "target": "packages",
                            "platforms": ["linux/amd64"], "args": {"UPSTREAM_IMAGE": "u:1"}},
    },
}  # fmt: skip


def test_sequential_builds_are_one_build_per_bake_target_in_dependency_order() -> None:
    commands = sequential_builds(BAKE, "docker.io/ns/bench-packages:run")
    assert [command[-1] for command in commands] == ["base-image", "base-image", "derivatives/llama-cpp"]
    packages, base, image = commands
    assert packages[packages.index("--target") + 1] == "packages"
    assert packages[packages.index("--tag") + 1] == "docker.io/ns/bench-packages:run"
    assert base[base.index("--tag") + 1] == "docker.io/ns/base-image:x"
    assert "org.opencontainers.image.title=t" in base
    contexts = [image[i + 1] for i, arg in enumerate(image) if arg == "--build-context"]
    assert contexts == [
        "ns/base-image:x=docker-image://docker.io/ns/bench-packages:run",
        "base-overlay=base-image/ROOT",
    ]
    assert image[image.index("--secret") + 1] == "id=pipcert,src=/ca.pem"
    assert all(command[:4] == ["docker", "buildx", "build", "--load"] for command in commands)


# ---- the report ----------------------------------------------------------------------------


def results(**changes: Any) -> dict[str, Any]:
    def step(name: str, kind: str, size: int, fraction: float, indexes: list[int]) -> dict[str, Any]:
        return {"name": name, "kind": kind, "seconds": 1.0, "fraction_of_cold": fraction, "allowed_layers": [6, 7, 8],
                "delta": {"bytes": size, "changed_layers": len(indexes), "total_layers": 9,
                          "layers": [{"index": i, "bytes": size} for i in indexes]}}  # fmt: skip

    summary = {"requests": 400, "errors": 0, "requests_per_second": 100.0, "p50_ms": 1.0, "p99_ms": 2.0}
    found: dict[str, Any] = {
        "update": {"image": "i", "cold_seconds": 100.0, "cached_seconds": 1.0, "steps": [
            step("base script edit", "script", 30_000, 0.05, [7]),
            step("llama.cpp release bump", "release", 40_000_000, 0.3, [6]),
        ]},
        "matrix": {"targets": 3, "bake_seconds": 50.0, "sequential_seconds": 100.0, "sequential_builds": 5,
                   "ratio": 0.5},
        "boot": {"runs": 5, "image_seconds": [1.0] * 5, "bare_seconds": [0.5] * 5, "image_median_seconds": 1.0,
                 "bare_median_seconds": 0.5, "added_seconds": 0.5, "ratio": 2.0, "phases": {"boot started": 0.1}},
        "load": {"repeats": 1, "rows": report.load_rows({
            ("stream", 64, "proxy"): {**summary, "requests_per_second": 95.0, "p50_ms": 2.5},
            ("stream", 64, "direct"): summary,
        })},
        "size": {"image": {"ref": "a", "uncompressed_bytes": 800e6, "compressed_bytes": 200e6, "layers": 9},
                 "minimal": {"ref": "b", "uncompressed_bytes": 200e6, "compressed_bytes": 80e6, "layers": 2},
                 "ratio_uncompressed": 4.0, "ratio_compressed": 2.5,
                 "largest_layers": [{"index": 4, "bytes": 70e6, "uncompressed_bytes": 255e6, "created_by": "COPY"}]},
    }  # fmt: skip
    found.update(changes)
    return found


def test_load_rows_pair_proxy_and_direct() -> None:
    (row,) = results()["load"]["rows"]
    assert row["throughput_ratio"] == 0.95
    assert row["p50_added_ms"] == 1.5


def session_rows(c1_added: float, c8_ratio: float, errors: int) -> list[dict[str, Any]]:
    summary = {"requests": 400, "errors": 0, "requests_per_second": 1000.0, "p50_ms": 0.5, "p99_ms": 2.0}
    summaries = {}
    for concurrency in (1, 8, 256):
        summaries[("health", concurrency, "proxy")] = summary
        summaries[("health", concurrency, "direct")] = summary
        summaries[("health", concurrency, "session")] = {
            **summary,
            "p50_ms": 0.5 + (c1_added if concurrency == 1 else 0.0),
            "requests_per_second": 1000.0 * (c8_ratio if concurrency == 8 else 1.0),
            "errors": errors if concurrency == 256 else 0,
        }
    return report.load_rows(summaries)


def test_the_session_cookie_is_held_against_the_bearer_token() -> None:
    rows = session_rows(0.4, 0.85, 0)
    assert [(r["concurrency"], r["session_throughput_ratio"], r["session_p50_added_ms"]) for r in rows] == [
        (1, 1.0, 0.4), (8, 0.85, 0.0), (256, 1.0, 0.0)
    ]  # fmt: skip
    met = {v["name"]: v["met"] for v in report.verdicts(results(load={"repeats": 1, "rows": rows}))}
    assert (met["session p50 latency"], met["session throughput"], met["session errors"]) == (True, True, True)
    for slow in (session_rows(1.2, 0.85, 0), session_rows(0.4, 0.6, 0), session_rows(0.4, 0.85, 3)):
        judged = {v["name"]: v["met"] for v in report.verdicts(results(load={"repeats": 1, "rows": slow}))}
        assert [judged[n] for n in ("session p50 latency", "session throughput", "session errors")].count(False) == 1
    text = report.render(results(load={"repeats": 1, "rows": rows}))
    assert "4b. A browser's session cookie vs the Bearer token" in text and "0.85x" in text


def test_verdicts_hold_each_figure_against_its_target() -> None:
    found = {v["name"]: v["met"] for v in report.verdicts(results())}
    assert found == {
        "update: base script edit": True,
        "update: llama.cpp release bump": True,
        "matrix build": True,
        "boot to healthy": True,  # exactly 0.5 s added: "at most"
        "proxy throughput": True,
        "proxy p50 latency": True,
        "proxy errors": True,
    }


def test_verdicts_report_each_miss() -> None:
    missed = results()
    missed["update"]["steps"][0]["delta"]["bytes"] = 2_000_000
    missed["update"]["steps"][1]["delta"]["layers"] = [{"index": 2, "bytes": 1}, {"index": 6, "bytes": 1}]
    missed["matrix"]["ratio"] = 0.61
    missed["boot"]["added_seconds"] = 0.51
    missed["load"]["rows"][0]["throughput_ratio"] = 0.89
    missed["load"]["rows"][0]["p50_added_ms"] = 2.0
    missed["load"]["rows"][0]["proxy"]["errors"] = 1
    assert not any(v["met"] for v in report.verdicts(missed))


def test_errors_of_the_direct_path_alone_are_llama_servers_not_the_proxys() -> None:
    found = results()
    found["load"]["rows"][0]["direct"]["errors"] = 300
    errors = next(v for v in report.verdicts(found) if v["name"] == "proxy errors")
    assert errors["met"]
    assert errors["measured"] == "0 through the proxy, 0 at 64 streams (300 direct)"


def test_a_script_edit_slower_than_a_tenth_of_the_cold_build_misses() -> None:
    slow = results()
    slow["update"]["steps"][0]["fraction_of_cold"] = 0.1
    assert not report.verdicts(slow)[0]["met"]


def test_the_table_shows_every_measurement_and_the_targets() -> None:
    text = report.render(results(machine={"cores": 2, "memory_gib": 23.4, "kernel": "6.1", "engine": "28.5.2"}))
    expected_parts = (
        *("machine: 2 cores", "1. Update pull delta", "base script edit", "30.0 kB", "5.0%", "2. Matrix build"),
        *("0.50x", "3. Boot to healthy", "+0.50 s", "4. Proxy under load", "0.95x", "+1.50", "5. Image size"),
        *("800.0 MB", "4.00x", "255.0 MB", "Targets (issues 8, 17, 18, 26 and 28)"),
    )
    for expected in expected_parts:
        assert expected in text, expected
    assert "MISSED" not in text
    only_boot = report.render({"boot": results()["boot"]})
    assert "1. Update" not in only_boot and "3. Boot" in only_boot


def test_the_soak_prints_its_figures_and_its_three_targets() -> None:
    """What the soak measured (core/soak.py's figures) and issue 28's targets."""
    from llama_images.core import soak

    steps = [
        soak.Measured(step.block, step.kind.name, step.count, 0, 0, step.count / 400, soak.Sample(9, 26_000_000))
        for step in soak.schedule(soak.Settings(blocks=5))
    ]
    verdict = soak.judge(soak.Run(soak.Settings(blocks=5), soak.Sample(9, 24_000_000), tuple(steps), 70 * 25_200, 60))
    found = {"image": "img", "blocks": 5, **soak.verdict_json(verdict), "figures": soak.figures_lines(verdict)}
    text = report.render({"soak": found})
    assert "9. Soak (25200 requests in 5 blocks, img): held: 25200 requests, 0 failed" in text
    assert "completions streamed        400 r/s     400 r/s  1.00x" in text
    verdicts = {v["name"]: v for v in report.verdicts({"soak": found})}
    assert verdicts["soak: llama-server's memory"]["measured"] == "+0 kB per 1,000 requests"
    assert verdicts["soak: docker logs"] == {
        "name": "soak: docker logs",
        "target": "<= 100 bytes a request",
        "measured": "70 bytes a request",
        "met": True,
    }
    assert all(v["met"] for v in verdicts.values())
    leaking = {**found, "growth_per_1000": 6_600_000, "log_bytes_per_request": 989}
    assert [v["met"] for v in report.verdicts({"soak": leaking})] == [True, False, False]


def test_human_bytes() -> None:
    assert report.human_bytes(999) == "999 B"
    assert report.human_bytes(33_000) == "33.0 kB"
    assert report.human_bytes(38_000_000) == "38.0 MB"
    assert report.human_bytes(1.61e9) == "1.6 GB"


# ---- the Instance Portal's cost (issue 17) ---------------------------------------------------


def portal_phase(speed: float, portal_cpu: float, proxy_cpu: float) -> dict[str, Any]:
    return {"tokens_per_second": speed, "completions": 5, "cpu_percent": {"portal": portal_cpu, "proxy": proxy_cpu}}


def portal_results() -> dict[str, Any]:
    page = {"files": [{"path": "/", "bytes": 3000, "gzip_bytes": 1000},
                      {"path": "/static/portal.js", "bytes": 20000, "gzip_bytes": 6000}],
            "bytes": 23000, "gzip_bytes": 7000}  # fmt: skip
    phases = {
        "closed": [portal_phase(100.0, 0.0, 0.1), portal_phase(104.0, 0.1, 0.1), portal_phase(90.0, 0.0, 0.2)],
        "open": [portal_phase(99.0, 1.5, 0.4), portal_phase(97.0, 2.5, 0.5), portal_phase(101.0, 2.0, 0.3)],
    }
    return portal.summary(page, 4200, phases, 30.0)


def test_the_portals_cost_is_the_median_of_each_phase_and_open_against_closed() -> None:
    found = portal_results()
    assert found["portal_cpu_percent"] == {"closed": 0.0, "open": 2.0}
    assert found["proxy_cpu_percent"] == {"closed": 0.1, "open": 0.4}
    assert found["generation_tokens_per_second"] == {"closed": 100.0, "open": 99.0}
    assert found["generation_ratio"] == 0.99
    assert found["rounds"] == 3


def test_the_portals_targets_and_table() -> None:
    found = {v["name"]: v["met"] for v in report.verdicts({"portal": portal_results()})}
    assert found == {"portal page size": True, "portal CPU, page open": True, "generation, page open": True}
    heavy = portal_results()
    heavy["page"]["bytes"] = report.PORTAL_PAGE_MAX_BYTES + 1
    heavy["portal_cpu_percent"]["open"] = 5.1
    heavy["generation_ratio"] = 0.94
    assert not any(v["met"] for v in report.verdicts({"portal": heavy}))
    text = report.render({"portal": portal_results()})
    for expected in ("6. Instance Portal", "/static/portal.js", "20.0 kB", "one refresh (every 2 s) downloads 4.2 kB",
                     "2.00%", "99.0 tokens/s", "0.99x"):  # fmt: skip
        assert expected in text, expected


def download_results(capped: tuple[float, float], link: tuple[float, float]) -> dict[str, Any]:
    def scenario(rate: int, link_rate: int, ours: float, theirs: float) -> dict[str, Any]:
        return {
            "rate": rate,
            "link_rate": link_rate,
            "seconds": {"launcher, 16 connections": [ours], "llama-server's own -hf": [theirs]},
            "median_seconds": {"launcher, 16 connections": ours, "llama-server's own -hf": theirs},
            "speedup": round(theirs / ours, 2),
        }

    return {
        "download": {
            "image": "x",
            "bytes": 300_000_000,
            "runs": 1,
            "scenarios": {
                "per-connection cap": scenario(20_000_000, 0, *capped),
                "link cap": scenario(0, 40_000_000, *link),
            },
        }
    }


def test_the_download_meets_its_targets_at_5x_under_a_per_connection_cap_and_no_slower_on_the_link() -> None:
    met = {v["name"]: v["met"] for v in report.verdicts(download_results((3.0, 15.0), (8.0, 8.0)))}
    assert met == {"download: per-connection cap": True, "download: link cap": True}
    missed = {v["name"]: v["met"] for v in report.verdicts(download_results((3.1, 15.0), (9.0, 8.0)))}
    assert missed == {"download: per-connection cap": False, "download: link cap": False}
    text = report.render(download_results((3.0, 15.0), (8.0, 8.0)))
    assert "7. Cold start with a model download (300.0 MB" in text and "20.0 MB/s per connection" in text
    assert "5.00x" in text and "40.0 MB/s in all" in text


def test_the_thread_measurement_shows_tokens_per_second_both_ways() -> None:
    threads = {
        "cpus": 1.0,
        "cpus_seen": "2",
        "tokens": 64,
        "runs": 3,
        "model_bytes": 210_000_000,
        "speedup": 1.25,
        "ways": {
            "threads at the quota (the image's default)": {"threads": "1", "median_generation": 25.0,
                                                           "median_prompt": 80.0},
            "llama-server's own default (every CPU seen)": {"threads": "default", "median_generation": 20.0,
                                                            "median_prompt": 70.0},
        },
    }  # fmt: skip
    text = report.render({"threads": threads})
    assert "8. llama-server under docker run --cpus 1 on 2 CPUs" in text
    assert "threads at the quota (the image's default)   1          25.0                 80.0" in text
    assert "ratio (quota / default)" in text and "1.25x" in text


# ---- 7. the serverless worker (issue 26) ----


def worker_pace(name: str, judged: bool, ratio_c1: float, ratio_c8: float, errors: int) -> dict[str, Any]:
    direct = {"requests": 48, "errors": 0, "requests_per_second": 10.0, "p50_ms": 100.0, "p99_ms": 120.0}

    def through(ratio: float) -> dict[str, Any]:
        return {**direct, "errors": errors, "requests_per_second": 10.0 * ratio, "p50_ms": 103.0}

    summaries = {
        ("completion", 1, "worker"): through(ratio_c1),
        ("completion", 1, "direct"): direct,
        ("stream", 8, "worker"): through(ratio_c8),
        ("stream", 8, "direct"): direct,
    }
    return {"name": name, "model": f"random ({name})", "judged": judged, "ms_per_token": 1.56,
            "benchmark_tokens_per_second": 812.4, "rows": report.worker_rows(summaries, tokens=64)}  # fmt: skip


def worker_results(ratio_c1: float = 0.97, ratio_c8: float = 0.96, errors: int = 0, fast_ratio: float = 0.9,
                   fast_errors: int = 0) -> dict[str, Any]:  # fmt: skip
    paces = [
        worker_pace("real", True, ratio_c1, ratio_c8, errors),
        worker_pace("fast", False, fast_ratio, fast_ratio, fast_errors),
    ]
    return {"repeats": 3, "tokens_per_request": 64, "paces": paces}


def test_worker_rows_are_tokens_per_second_both_ways_and_their_ratio() -> None:
    first, second = worker_results()["paces"][0]["rows"]
    assert (first["kind"], first["concurrency"]) == ("completion", 1)
    assert (first["worker_tokens_per_second"], first["direct_tokens_per_second"]) == (620.8, 640.0)
    assert (first["throughput_ratio"], first["p50_added_ms"]) == (0.97, 3.0)
    assert second["throughput_ratio"] == 0.96


def test_the_worker_meets_its_target_at_95_percent_of_direct_at_each_concurrency_at_a_real_models_pace() -> None:
    met = {v["name"]: v["met"] for v in report.verdicts({"worker": worker_results()})}
    assert met == {"worker tokens/s, c=1 (real pace)": True, "worker tokens/s, c=8 (real pace)": True,
                   "worker errors": True}  # fmt: skip
    missed = {v["name"]: v["met"] for v in report.verdicts({"worker": worker_results(ratio_c8=0.94, errors=1)})}
    assert missed == {"worker tokens/s, c=1 (real pace)": True, "worker tokens/s, c=8 (real pace)": False,
                      "worker errors": False}  # fmt: skip


def test_the_fast_pace_is_reported_not_judged_but_its_errors_count() -> None:
    slow_fast = {v["name"]: v["met"] for v in report.verdicts({"worker": worker_results(fast_ratio=0.5)})}
    assert all(slow_fast.values())
    failing = {v["name"]: v["met"] for v in report.verdicts({"worker": worker_results(fast_errors=2)})}
    assert failing["worker errors"] is False
    text = report.render({"worker": worker_results(fast_ratio=0.5)})
    assert "10. Serverless worker" in text and "worker tokens/s, c=8 (real pace)" in text
    assert "real pace (judged)" in text and "fast pace (reported, not judged)" in text
    assert "1.56 ms per token alone" in text and "812.4 tokens/s" in text and "0.50x" in text


def test_the_images_python_environments_are_the_layers_that_copy_a_virtualenv() -> None:
    found = [
        layers.Layer(0, "sha256:a", 10, "RUN apt-get install python3"),
        layers.Layer(1, "sha256:b", 20, "COPY /opt/llama-images/vastai-venv /opt/llama-images/vastai-venv"),
        layers.Layer(2, "sha256:c", 30, "COPY /venv/main /venv/main"),
        layers.Layer(3, "sha256:d", 40, "COPY ROOT/ /"),
    ]
    assert [layer.index for layer in layers.environments(found)] == [1, 2]


def test_streams_go_one_connection_per_request_on_every_path_other_kinds_keep_alive() -> None:
    worker_stream, direct_stream = worker.kinds({"url": "http://127.0.0.1:3000"})["stream"]
    for kind in (worker_stream, direct_stream, next(k for k in load.KINDS if k.name == "stream")):
        command = load.hey_command("http://127.0.0.1:3000/v1/completions", kind, 8, {}, 32)
        assert command[:2] == ["hey", "-disable-keepalive"]
    for kind in (worker.kinds({})["completion"][1], *(k for k in load.KINDS if k.name != "stream")):
        assert "-disable-keepalive" not in load.hey_command("http://127.0.0.1:18000" + kind.path, kind, 1, {})
