"""A plan -> a `docker buildx bake` file (JSON), and its variant that pushes by digest. Pure:
everything it needs comes in as arguments."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import SOURCE_RELEASE_TARBALL, Matrix, arch
from .options import Request
from .plan import Plan
from .releases import Release, checksum_args
from .targets import BaseTarget, ImageTarget, Target

BASE_CONTEXT = "base-image"
DERIVATIVE_CONTEXT = "derivatives/llama-cpp"
# base-image/Dockerfile stages: `packages` holds everything heavy, `base` adds ROOT/ on top.
BASE_STAGE = "base"
PACKAGES_STAGE = "packages"
# The derivative's named context that receives the base overlay, copied last (kilobyte updates).
BASE_OVERLAY_CONTEXT = "base-overlay"
BASE_OVERLAY_DIR = f"{BASE_CONTEXT}/ROOT"
# BuildKit secret id of the optional CA bundle pip/uv use inside image builds.
PIP_CERT_SECRET = "pipcert"


@dataclass(frozen=True)
class RenderOptions:
    """What varies between renders of the same targets."""

    revision: str  # git commit the images are built from
    created: str  # RFC 3339 build time
    source: str | None = None  # repository URL; the label is left out when unknown
    push: bool = False
    sbom: bool = False  # with push: attach an SBOM (the option --sbom, on by default)
    # Release tag -> looked-up release; gives the tarball checksums for the CUDA builds.
    releases: Mapping[str, Release] = field(default_factory=dict)
    # A CA bundle for PyPI over HTTPS inside builds (hosts behind an inspecting proxy); passed
    # as an optional BuildKit secret, never baked into an image. None: pip's own certificates.
    pip_cert: str | None = None


def bake_name(target_id: str) -> str:
    """Bake target names allow [a-zA-Z0-9_-] only; ids use '/' and '.', so map those to '_'."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", target_id)


def bake_names(targets: Sequence[Target]) -> dict[str, str]:
    """Bake name -> target id, for reading buildx's output and metadata."""
    return {bake_name(t.id): t.id for t in targets}


def render_plan(
    plan: Plan,
    request: Request,
    revision: str,
    created: str,
    source: str | None,
    staging_tags: bool = False,
    pip_cert: str | None = None,
) -> dict[str, Any]:
    """The bake file a task builds (or prints) for its plan: by digest when the request says so."""
    options = RenderOptions(
        revision=revision, created=created, source=source, push=request.push, sbom=request.sbom,
        releases=plan.releases, pip_cert=pip_cert,
    )  # fmt: skip
    bake = render(plan.matrix, plan.targets, options)
    return by_digest(bake, staging_tags) if request.by_digest else bake


def render(matrix: Matrix, targets: Sequence[Target], options: RenderOptions) -> dict[str, Any]:
    """The bake file for `targets` (bases must be among them: select() guarantees it)."""
    bake_targets: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {"default": [], "base": []}
    for target in targets:
        name = bake_name(target.id)
        if isinstance(target, BaseTarget):
            bake_targets[name] = render_base(target, options)
            # Built only as the derivatives' base (a `target:` context), never loaded or pushed.
            bake_targets[packages_name(target)] = render_base(target, options, stage=PACKAGES_STAGE)
            groups["base"].append(name)
        else:
            bake_targets[name] = render_image(matrix, target, options)
            groups.setdefault(target.flavor.name, []).append(name)
        groups["default"].append(name)
    return {
        "group": {group: {"targets": names} for group, names in groups.items() if names},
        "target": bake_targets,
    }


def packages_name(target: BaseTarget) -> str:
    """Bake name of a base's heavy `packages` stage: base/debian-forky -> base-packages_debian-forky."""
    return bake_name(target.id).replace("base_", "base-packages_", 1)


def render_base(target: BaseTarget, options: RenderOptions, stage: str = BASE_STAGE) -> dict[str, Any]:
    """The base image (stage `base`), or its `packages` stage that derivatives build FROM."""
    upstream = target.upstream
    found: dict[str, Any] = {
        "context": BASE_CONTEXT,
        "dockerfile": "Dockerfile",
        "target": stage,
        "args": {"UPSTREAM_IMAGE": upstream.image},
        "platforms": list(target.platforms),
    }
    found.update(pip_cert_secret(options))
    if stage != BASE_STAGE:
        return found
    return {
        **found,
        "tags": [target.image],
        "labels": labels(
            options,
            title="llama-images base-image",
            description=f"Runtime base (Supervisor, proxy, portal, Jupyter, boot sequence) on {upstream.image}",
            version=upstream.name,
            base=upstream.image,
        ),
        **publishing(target.image, options),
    }


def pip_cert_secret(options: RenderOptions) -> dict[str, list[str]]:
    """The CA bundle secret for every target that builds the base's Python environments: the
    base stages, and each derivative, whose build solves its linked base stage in its own session."""
    return {"secret": [f"id={PIP_CERT_SECRET},src={options.pip_cert}"]} if options.pip_cert else {}


def render_image(matrix: Matrix, target: ImageTarget, options: RenderOptions) -> dict[str, Any]:
    flavor = target.flavor
    args = {
        # The derivative names its base by image reference; the context below substitutes the
        # base's packages stage built in this same bake, once for all its derivatives.
        "BASE_IMAGE": familiar(target.base.image),
        "LLAMA_CPP_FLAVOR": target.flavor.backend,
        "LLAMA_CPP_VERSION": target.release,
    }
    if flavor.source == SOURCE_RELEASE_TARBALL:
        cuda = target.binary_cuda or ""
        args["LLAMA_CPP_CUDA_VERSION"] = cuda
        # Declared once, in the matrix; the build checks the binaries against it (Dockerfile).
        args["LLAMA_CPP_CUDA_ARCHITECTURES"] = ";".join(matrix.release_source.cuda_architectures.get(cuda, ()))
        args["LLAMA_CPP_RELEASE_URL"] = matrix.release_source.download_url
        release = options.releases.get(target.release)
        if release is not None:
            args.update(checksum_args(release, cuda))
    return {
        **pip_cert_secret(options),
        "context": DERIVATIVE_CONTEXT,
        "dockerfile": "Dockerfile",
        # BASE_IMAGE resolves to the base's heavy layers; its overlay is copied in last.
        "contexts": {
            familiar(target.base.image): f"target:{packages_name(target.base)}",
            BASE_OVERLAY_CONTEXT: BASE_OVERLAY_DIR,
        },
        "args": args,
        "platforms": list(target.platforms),
        "tags": [target.image],
        "labels": labels(
            options,
            title="llama-images llama-cpp",
            description=f"llama.cpp server {target.release} ({flavor.name}) on {target.base.upstream.image}",
            version=target.tag,
            base=target.base.image,
        ),
        **publishing(target.image, options),
    }


def familiar(image: str) -> str:
    """Docker Hub references without `docker.io/`: BuildKit matches a named context against the
    FROM reference as written, and only the familiar form matches."""
    return image.removeprefix("docker.io/")


def labels(options: RenderOptions, *, title: str, description: str, version: str, base: str) -> dict[str, str]:
    found = {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.revision": options.revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": options.created,
        "org.opencontainers.image.base.name": base,
    }
    if options.source:
        found["org.opencontainers.image.source"] = options.source
    return found


def publishing(image: str, options: RenderOptions) -> dict[str, Any]:
    """Cache and attestations: only when pushing, where a registry holds the cache and the
    attestations travel with the published index. Local builds use the engine's own cache."""
    if not options.push:
        return {}
    cache_ref = f"{image.rsplit(':', 1)[0]}:buildcache-{image.rsplit(':', 1)[1]}"
    return {
        "cache-from": [f"type=registry,ref={cache_ref}"],
        "cache-to": [f"type=registry,ref={cache_ref},mode=max"],
        "attest": ["type=provenance,mode=max", *(["type=sbom"] if options.sbom else [])],
    }


def by_digest(bake: Mapping[str, Any], staging_tags: bool = False) -> dict[str, Any]:
    """The publishing bake file, changed to push each target untagged (by digest).

    Tags are created later by `invoke merge`, once every platform's job has pushed. A job builds
    one platform, so each platform keeps a registry cache of its own. BuildKit's `docker` driver
    (a plain Docker engine) cannot push untagged: with `staging_tags` each push carries a tag of
    its own, `<tag>-<arch>-job`, and the merge still reads only the digests.
    """
    result = copy.deepcopy(dict(bake))
    for target in result["target"].values():
        tags = target.pop("tags", None)
        if not tags:
            continue  # a stage built only as another target's context: nothing to push
        name = tags[0].rsplit(":", 1)[0]
        suffix = "-".join(arch(p) for p in target["platforms"])
        if staging_tags:
            target["output"] = [f"type=image,name={tags[0]}-{suffix}-job,push=true"]
        else:
            target["output"] = [f"type=image,name={name},push-by-digest=true,name-canonical=true,push=true"]
        for key in ("cache-from", "cache-to"):
            if key in target:
                target[key] = [re.sub(r"(ref=[^,]+)", rf"\1-{suffix}", entry, count=1) for entry in target[key]]
    return result


def to_json(bake: Mapping[str, Any]) -> str:
    return json.dumps(bake, indent=2, sort_keys=False) + "\n"
