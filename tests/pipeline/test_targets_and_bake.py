"""Matrix -> targets -> selection -> bake file, as plain functions (no Docker)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_images.core.bake import RenderOptions, bake_name, render
from llama_images.core.errors import MatrixError, NothingSelectedError, UsageError
from llama_images.core.matrix import parse_matrix
from llama_images.core.options import Overrides
from llama_images.core.plan import Plan, builds_for_host, on_host
from llama_images.core.releases import Asset, Release
from llama_images.core.targets import ImageTarget, apply_overrides, expand, select
from llama_images.edges.buildx import bake_command, failed_targets, failure_cause, first_platform, secret_files
from llama_images.edges.gitinfo import source_url
from llama_images.edges.pipcert import pip_cert
from tests.matrices import VALID, no_fetch, planned, request_for

OPTIONS = RenderOptions(revision="abc123", created="2026-11-25T12:00:00Z", source="https://example.org/repo")


def ids(targets: object) -> list[str]:
    return [t.id for t in targets]  # type: ignore[attr-defined]


def test_expansion_gives_stable_readable_ids_and_published_tags() -> None:
    targets = expand(parse_matrix(VALID))
    assert ids(targets) == [
        "base/cuda-12.9",
        "base/cuda-13.1",
        "base/debian-forky",
        "cuda/cuda-12.9/b9159",
        "cuda/cuda-12.9/b9000",
        "cuda/cuda-13.1/b9159",
        "cuda/cuda-13.1/b9000",
        "cpu/debian-forky/b11669",
    ]
    images = {t.id: t.image for t in targets}
    assert images["cuda/cuda-12.9/b9159"] == "docker.io/example/llama-cpp:b9159-cuda-12.9"
    assert images["cpu/debian-forky/b11669"] == "docker.io/example/llama-cpp:b11669-cpu"
    assert images["base/debian-forky"] == "docker.io/example/base-image:debian-forky"


def test_selection_by_glob_brings_the_base_along() -> None:
    targets = expand(parse_matrix(VALID))
    assert ids(select(targets, ["cpu/*"])) == ["base/debian-forky", "cpu/debian-forky/b11669"]
    assert ids(select(targets, ["*/b9000"])) == [
        "base/cuda-12.9",
        "base/cuda-13.1",
        "cuda/cuda-12.9/b9000",
        "cuda/cuda-13.1/b9000",
    ]


def test_a_filter_that_selects_nothing_is_an_error_with_a_suggestion() -> None:
    targets = expand(parse_matrix(VALID))
    with pytest.raises(NothingSelectedError) as caught:
        select(targets, ["cpu/*", "cuda/cuda-12.9/b915"])
    assert "--filter 'cuda/cuda-12.9/b915' matches no target (did you mean 'cuda/cuda-12.9/b9159'?)" in str(
        caught.value
    )
    assert caught.value.exit_code == 3


def test_platform_override_narrows_and_drops_targets_that_cannot_build() -> None:
    targets = expand(parse_matrix(VALID), ["linux/arm64"])
    assert "cuda/cuda-13.1/b9159" not in ids(targets)  # amd64-only upstream
    assert all(t.platforms == ("linux/arm64",) for t in targets)


def platforms_of(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {t.id: t.platforms for t in plan.targets}


def test_a_local_build_is_for_the_hosts_platform_and_publishing_for_every_declared_one(
    write_matrix: Callable[[str], Path],
) -> None:
    """Issue 25: the first build spent two thirds of its time on linux/arm64 under emulation."""
    path = write_matrix(VALID)
    local = request_for(path, ("cpu/*",))
    assert builds_for_host(local)
    on_amd64 = on_host(planned(local, no_fetch), "linux/amd64")
    assert platforms_of(on_amd64) == {"base/debian-forky": ("linux/amd64",),
                                      "cpu/debian-forky/b11669": ("linux/amd64",)}  # fmt: skip
    [image] = on_amd64.images
    assert image.base.platforms == ("linux/amd64",)  # the upstream it needs, for that platform only
    on_arm64 = on_host(planned(local, no_fetch), "linux/arm64")
    assert set(platforms_of(on_arm64).values()) == {("linux/arm64",)}
    # --platform names what to build; --push publishes every platform the matrix declares.
    assert not builds_for_host(request_for(path, ("cpu/*",), Overrides(platforms=("linux/arm64", "linux/amd64"))))
    assert not builds_for_host(request_for(path, ("cpu/*",), push=True))


def test_a_target_without_the_hosts_platform_keeps_the_ones_it_declares(write_matrix: Callable[[str], Path]) -> None:
    """A local build never drops a selected target: one the host cannot run natively is built
    as its matrix declares it (under emulation)."""
    plan = on_host(planned(request_for(write_matrix(VALID), ("cuda/cuda-13.1/*",)), no_fetch), "linux/arm64")
    assert platforms_of(plan) == {"base/cuda-13.1": ("linux/amd64",), "cuda/cuda-13.1/b9159": ("linux/amd64",),
                                  "cuda/cuda-13.1/b9000": ("linux/amd64",)}  # fmt: skip


def test_the_native_platform_is_the_first_one_buildx_lists() -> None:
    listed = "Name: default\nDriver: docker\nPlatforms:        linux/arm64*, linux/amd64, linux/arm/v7\n"
    assert first_platform(listed) == "linux/arm64"
    assert first_platform("Name: default\nDriver: remote\n") is None


def test_overrides_release_cuda_repository_and_custom_tag() -> None:
    overrides = Overrides(release="b9999", binary_cuda="13.0", repository="my-llama", custom_tag="nightly",
                          registry="127.0.0.1:5000", namespace="me")  # fmt: skip
    matrix = apply_overrides(parse_matrix(VALID), overrides)
    targets = {t.id: t for t in expand(matrix) if isinstance(t, ImageTarget)}
    cuda = targets["cuda/cuda-12.9/b9999"]
    assert cuda.image == "127.0.0.1:5000/me/my-llama:nightly-cuda-12.9"
    assert cuda.binary_cuda == "13.0"
    # A Debian flavor keeps the build its package carries; only the tag is customised.
    assert targets["cpu/debian-forky/b11669"].image == "127.0.0.1:5000/me/my-llama:nightly-cpu"


def test_a_cuda_version_without_declared_architectures_is_refused_naming_the_key() -> None:
    """--cuda-version picks other tarballs: the matrix must say which GPUs they are built for."""
    with pytest.raises(MatrixError) as raised:
        apply_overrides(parse_matrix(VALID), Overrides(binary_cuda="12.6"))
    shown = str(raised.value)
    assert "release_source.cuda_architectures: --cuda-version 12.6: no GPU architectures are declared" in shown
    assert 'add `"12.6": [75-virtual, ...]` under release_source.cuda_architectures' in shown


def test_the_bake_passes_the_declared_architectures_of_each_tarball() -> None:
    matrix = parse_matrix(VALID)
    bake = render(matrix, select(expand(matrix), ["cuda/*"]), OPTIONS)
    args = {
        name: target["args"] for name, target in bake["target"].items() if "LLAMA_CPP_CUDA_VERSION" in target["args"]
    }
    assert args["cuda_cuda-12_9_b9159"]["LLAMA_CPP_CUDA_ARCHITECTURES"] == "75-virtual;80-virtual;86-virtual;90-virtual"
    assert args["cuda_cuda-13_1_b9159"]["LLAMA_CPP_CUDA_ARCHITECTURES"] == "75-virtual;120a-real"


def test_custom_tag_on_several_releases_is_a_clash_not_an_overwrite() -> None:
    matrix = apply_overrides(parse_matrix(VALID), Overrides(custom_tag="mine"))
    with pytest.raises(MatrixError, match=re.escape("would both be tagged docker.io/example/llama-cpp:mine-cuda-12.9")):
        expand(matrix)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (Overrides(platforms=("amd64",)), "--platform: 'amd64'"),
        (Overrides(release="9159"), "--release: '9159'"),
        (Overrides(binary_cuda="12"), "--cuda-version: '12'"),
        (Overrides(custom_tag="my tag"), "--tag: 'my tag'"),
        (Overrides(repository="My/Repo"), "--repository: 'My/Repo'"),
    ],
)
def test_bad_override_values_are_usage_errors(overrides: Overrides, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        apply_overrides(parse_matrix(VALID), overrides)


def test_bake_chains_each_derivative_onto_its_base_built_once() -> None:
    matrix = parse_matrix(VALID)
    targets = select(expand(matrix), ["cuda/cuda-12.9/*", "cpu/*"])
    bake = render(matrix, targets, OPTIONS)
    assert bake["group"]["default"]["targets"] == [bake_name(t.id) for t in targets]
    assert bake["group"]["base"]["targets"] == ["base_cuda-12_9", "base_debian-forky"]
    assert bake["group"]["cuda"]["targets"] == ["cuda_cuda-12_9_b9159", "cuda_cuda-12_9_b9000"]
    assert bake["group"]["cpu"]["targets"] == ["cpu_debian-forky_b11669"]
    cpu = bake["target"]["cpu_debian-forky_b11669"]
    assert cpu["context"] == "derivatives/llama-cpp"
    # The derivative stands on the base's heavy layers; both overlays come last (kilobyte updates).
    assert cpu["contexts"] == {
        "example/base-image:debian-forky": "target:base-packages_debian-forky",
        "base-overlay": "base-image/ROOT",
    }
    assert cpu["args"] == {
        "BASE_IMAGE": "example/base-image:debian-forky",
        "LLAMA_CPP_FLAVOR": "cpu",
        "LLAMA_CPP_VERSION": "b11669",
    }
    assert cpu["tags"] == ["docker.io/example/llama-cpp:b11669-cpu"]
    assert cpu["platforms"] == ["linux/amd64", "linux/arm64"]
    base = bake["target"]["base_debian-forky"]
    assert base["context"] == "base-image"
    assert base["target"] == "base"
    assert base["args"] == {"UPSTREAM_IMAGE": "debian:forky-slim"}
    packages = bake["target"]["base-packages_debian-forky"]
    assert (packages["target"], packages["args"], "tags" in packages) == ("packages", base["args"], False)
    assert "base-packages_debian-forky" not in bake["group"]["default"]["targets"]
    cuda = bake["target"]["cuda_cuda-12_9_b9159"]
    assert cuda["args"]["LLAMA_CPP_CUDA_VERSION"] == "12.8"
    assert cuda["args"]["LLAMA_CPP_FLAVOR"] == "cuda"
    assert cuda["args"]["LLAMA_CPP_RELEASE_URL"] == "https://github.com/ai-dock/llama.cpp-cuda/releases/download"


def test_bake_labels_follow_oci_annotations() -> None:
    matrix = parse_matrix(VALID)
    bake = render(matrix, select(expand(matrix), ["cpu/*"]), OPTIONS)
    labels = bake["target"]["cpu_debian-forky_b11669"]["labels"]
    assert labels["org.opencontainers.image.source"] == "https://example.org/repo"
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.version"] == "b11669-cpu"
    assert labels["org.opencontainers.image.created"] == "2026-11-25T12:00:00Z"


def test_cache_and_attestations_only_when_pushing() -> None:
    matrix = parse_matrix(VALID)
    targets = select(expand(matrix), ["cpu/*"])
    local = render(matrix, targets, OPTIONS)["target"]["cpu_debian-forky_b11669"]
    assert not {"cache-from", "cache-to", "attest"} & set(local)
    pushed = render(matrix, targets, RenderOptions("abc", "now", push=True, sbom=True))["target"][
        "cpu_debian-forky_b11669"
    ]
    assert pushed["cache-from"] == ["type=registry,ref=docker.io/example/llama-cpp:buildcache-b11669-cpu"]
    assert pushed["cache-to"] == ["type=registry,ref=docker.io/example/llama-cpp:buildcache-b11669-cpu,mode=max"]
    assert pushed["attest"] == ["type=provenance,mode=max", "type=sbom"]
    no_sbom = render(matrix, targets, RenderOptions("abc", "now", push=True, sbom=False))
    assert no_sbom["target"]["cpu_debian-forky_b11669"]["attest"] == ["type=provenance,mode=max"]


def test_release_checksums_become_build_args() -> None:
    matrix = parse_matrix(VALID)
    targets = select(expand(matrix), ["cuda/cuda-12.9/b9159"])
    release = Release(
        "b9159",
        (
            Asset("llama.cpp-b9159-cuda-12.8-amd64.tar.gz", "https://x/a", "a" * 64),
            Asset("llama.cpp-b9159-cuda-12.8-arm64.tar.gz", "https://x/b", "b" * 64),
            Asset("llama.cpp-b9159-cuda-13.0-amd64.tar.gz", "https://x/c", "c" * 64),
        ),
    )
    options = RenderOptions("abc", "now", releases={"b9159": release})
    args = render(matrix, targets, options)["target"]["cuda_cuda-12_9_b9159"]["args"]
    assert args["LLAMA_CPP_SHA256_AMD64"] == "a" * 64
    assert args["LLAMA_CPP_SHA256_ARM64"] == "b" * 64


def test_a_mistyped_flavor_filter_suggests_the_flavor_glob() -> None:
    with pytest.raises(NothingSelectedError, match=re.escape("(did you mean 'cpu/*'?)")):
        select(expand(parse_matrix(VALID)), ["cpux"])


def test_release_override_without_a_cuda_target_selected_is_refused(write_matrix: Callable[[str], Path]) -> None:
    path = write_matrix(VALID)
    with pytest.raises(UsageError, match="--release applies to release-tarball flavors"):
        planned(request_for(path, ("cpu/*",), Overrides(release="b9999")), no_fetch)
    assert planned(request_for(path, ("cpu/*",), Overrides(release="latest")), no_fetch).releases == {}
    plan = planned(request_for(path, ("cuda/*", "cpu/*"), Overrides(release="b9999")), no_fetch)
    assert {t.id for t in plan.targets} >= {"cuda/cuda-12.9/b9999", "cpu/debian-forky/b11669"}


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("git@github.com:someone/llama-images.git", "https://github.com/someone/llama-images"),
        ("https://github.com/someone/llama-images.git", "https://github.com/someone/llama-images"),
        ("/srv/git/llama-images", None),
    ],
)
def test_source_label_comes_from_the_origin_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: str, expected: str | None
) -> None:
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
    assert source_url(tmp_path) == expected
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/fork")
    assert source_url(tmp_path) == "https://github.com/org/fork"


def test_failed_targets_are_read_from_buildx_error_lines() -> None:
    names = {"base_debian-forky": "base/debian-forky", "cpu_debian-forky_b1": "cpu/debian-forky/b1"}
    output = [
        '#12 ERROR: process "/bin/bash -o pipefail -c ..." did not complete successfully: exit code: 1\n',
        "ERROR: target cpu_debian-forky_b1: failed to solve: process did not complete successfully\n",
        "ERROR: target cpu_debian-forky_b1 [linux/arm64]: failed to solve: exit code: 1\n",
    ]
    assert failed_targets(output, names) == ["cpu/debian-forky/b1"]


def test_a_failed_builds_cause_is_buildxs_last_error_line() -> None:
    output = [
        '#12 ERROR: process "/bin/sh -c apt-get install" did not complete successfully: exit code: 100\n',
        "ERROR: target cpu_debian-forky_b1: failed to solve: process did not complete successfully: exit code: 100\n",
    ]
    assert failure_cause(output) == "target cpu_debian-forky_b1: failed to solve: process did not complete " \
        "successfully: exit code: 100"  # fmt: skip
    assert failure_cause(["ERROR: " + "x" * 1000]).endswith("x…")
    assert failure_cause(["#3 DONE 0.1s"]) == ""


def test_the_pip_certificate_is_an_optional_build_secret_of_the_base_stages(tmp_path: Path) -> None:
    matrix = parse_matrix(VALID)
    targets = select(expand(matrix), ["cpu/*"])
    assert all("secret" not in t for t in render(matrix, targets, OPTIONS)["target"].values())
    cert = tmp_path / "ca.pem"
    with_cert = render(matrix, targets, RenderOptions("abc", "now", pip_cert=str(cert)))
    secrets = {name: t.get("secret") for name, t in with_cert["target"].items()}
    assert secrets == {
        "base_debian-forky": [f"id=pipcert,src={cert}"],
        "base-packages_debian-forky": [f"id=pipcert,src={cert}"],
        "cpu_debian-forky_b11669": [f"id=pipcert,src={cert}"],
    }
    assert secret_files(with_cert) == [str(cert)]
    assert f"--allow=fs.read={cert}" in bake_command(load=True, push=False, reads=secret_files(with_cert))


def test_the_pip_certificate_comes_from_pip_cert_or_pips_configuration(tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text("certificate")
    assert pip_cert({"PIP_CERT": str(cert)}, tmp_path) == str(cert)
    assert pip_cert({"PIP_CERT": str(tmp_path / "missing.pem")}, tmp_path) is None
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\ncert = {cert}\n")
    assert pip_cert({"PIP_CONFIG_FILE": str(config), "XDG_CONFIG_DIRS": str(tmp_path / "none")}, tmp_path) == str(cert)
