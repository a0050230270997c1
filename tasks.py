"""invoke tasks: a thin shell over the llama_images package. `invoke --list` shows them."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from llama_images import cli

SELECTION_HELP = {
    "matrix": "matrix file (default: matrix.yaml); `--matrix` alone means the shipped one",
    "filter": "target id glob, e.g. 'cpu/*' or 'cuda/cuda-12.9/*'; repeat or comma-separate (default: default_targets)",
    "platform": "comma-separated platforms to narrow to, e.g. linux/amd64",
    "release": "build this llama.cpp release (or 'latest') instead of the matrix's, for release-tarball flavors",
    "cuda-version": "CUDA version of the prebuilt llama.cpp binaries, e.g. 12.8",
    "repository": "repository name instead of the matrix's (e.g. llama-cpp)",
    "tag": "custom tag replacing the release part of each tag, e.g. my-build -> my-build-cuda-12.9",
    "registry": "registry host instead of the matrix's, e.g. 127.0.0.1:5000",
    "namespace": "namespace instead of the matrix's, e.g. your Docker Hub user",
}


@task
def engine(c: Context) -> None:
    """Install and start a Docker engine with buildx, a loopback registry and arm64 emulation (root, Debian).

    Leaves whatever already works alone: a host with an engine is not touched.
    """
    cli.provision_engine()


@task(optional=["matrix"], iterable=["filter"], help=SELECTION_HELP)
def matrix(
    c: Context,
    matrix: str | bool | None = None,
    filter: list[str] | None = None,
    platform: str = "",
    release: str | None = None,
    cuda_version: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
    registry: str | None = None,
    namespace: str | None = None,
) -> None:
    """List the targets of the matrix: id, image tag, upstream image, platforms."""
    if not filter:
        filter = ["*"]
    cli.show_matrix(
        cli.make_request(matrix, filter, platform, release, cuda_version, repository, tag, registry, namespace)
    )


@task(
    optional=["matrix"],
    iterable=["filter"],
    help={**SELECTION_HELP, "output": "write the bake file here instead of printing it",
          "print": "print it to stdout (the default; with --output, print as well)",
          "check": "also have `docker buildx bake --print` accept it (needs an engine)", "push": "render for --push"},
)  # fmt: skip
def bake(
    c: Context,
    matrix: str | bool | None = None,
    filter: list[str] | None = None,
    platform: str = "",
    release: str | None = None,
    cuda_version: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
    registry: str | None = None,
    namespace: str | None = None,
    output: str | None = None,
    print: bool = False,
    check: bool = False,
    push: bool = False,
) -> None:
    """Render the docker buildx bake file (JSON) for the selected targets: print it, or --output FILE."""
    cli.write_bake(
        cli.make_request(matrix, filter, platform, release, cuda_version, repository, tag, registry, namespace, push),
        output,
        check,
        print_too=print,
    )


@task(
    pre=[engine],
    optional=["matrix"],
    iterable=["filter"],
    help={**SELECTION_HELP, "push": "push to the registry (with cache and attestations)",
          "load": "load into the local engine (the default when not pushing)",
          "skip-existing": "leave out images whose tag the registry already has (scheduled builds)",
          "sbom": "with --push: attach an SBOM (--no-sbom where BuildKit's scanner image can't be pulled)"},
)  # fmt: skip
def build(
    c: Context,
    matrix: str | bool | None = None,
    filter: list[str] | None = None,
    platform: str = "",
    release: str | None = None,
    cuda_version: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
    registry: str | None = None,
    namespace: str | None = None,
    push: bool = False,
    load: bool = False,
    skip_existing: bool = False,
    sbom: bool = True,
) -> None:
    """Build the matrix (default targets, or --filter) with one `docker buildx bake`; sets up the engine first."""
    cli.build(
        cli.make_request(
            matrix, filter, platform, release, cuda_version, repository, tag, registry, namespace, push, sbom
        ),
        load,
        skip_existing,
    )
