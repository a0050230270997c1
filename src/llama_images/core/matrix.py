"""matrix.yaml: the one declaration of what is built. Reading it validates everything.

The model is a tree of frozen dataclasses; `matrix_from_bytes` (the file's bytes, which
edges/files.py's `load_matrix` reads) and `parse_matrix` (text) are the only ways in: either a
complete, valid `Matrix` or a `MatrixError` listing every problem with `file:line key`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from types import MappingProxyType

import yaml

from .errors import MatrixError, Problem, did_you_mean
from .model import (
    BACKEND_CUDA,
    CUDA_ARCHITECTURE,
    CUDA_VERSION,
    DEBIAN_BACKENDS,
    DOCKER_TAG,
    GITHUB_REPOSITORY,
    HTTP_URL,
    IMAGE_REF,
    LATEST,
    NAME,
    PATH_COMPONENT,
    PLATFORM,
    REGISTRY,
    RELEASE,
    SOURCE_DEBIAN_PACKAGE,
    SOURCE_RELEASE_TARBALL,
    SOURCES,
    TAG_FIELDS,
    TARBALL_PLATFORMS,
    Flavor,
    ImageNames,
    Matrix,
    ReleaseSource,
    Upstream,
    render_tag,
)
from .targets import expand, unmatched_patterns
from .yamlnodes import NULL_TAG, NodeReader, Problems, compose, join_key, read_text

# A matrix is a few kilobytes; anything far larger is not one.
MAX_MATRIX_BYTES = 1_000_000

__all__ = [
    "BACKEND_CUDA",
    "CUDA_ARCHITECTURE",
    "CUDA_VERSION",
    "DEBIAN_BACKENDS",
    "DOCKER_TAG",
    "GITHUB_REPOSITORY",
    "HTTP_URL",
    "IMAGE_REF",
    "LATEST",
    "NAME",
    "PATH_COMPONENT",
    "PLATFORM",
    "REGISTRY",
    "RELEASE",
    "SOURCES",
    "SOURCE_DEBIAN_PACKAGE",
    "SOURCE_RELEASE_TARBALL",
    "TAG_FIELDS",
    "TARBALL_PLATFORMS",
    "Flavor",
    "ImageNames",
    "Matrix",
    "ReleaseSource",
    "Upstream",
    "matrix_from_bytes",
    "parse_matrix",
    "render_tag",
]


def matrix_from_bytes(data: bytes, file: str) -> Matrix:
    """Validate a matrix file's bytes; `file` is the name used in problems. Any bytes give a
    Matrix or a MatrixError, never a crash."""
    if len(data) > MAX_MATRIX_BYTES:
        raise MatrixError(
            [Problem(file, 1, "", f"the file has {len(data)} bytes; a matrix is a few kilobytes",
                     "pass the matrix file, not another file")]
        )  # fmt: skip
    return parse_matrix(decode(data, file), file)


def decode(data: bytes, display: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MatrixError(
            [
                Problem(
                    display,
                    line,
                    "",
                    f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8 text",
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                )
            ]
        ) from None


def parse_matrix(text: str, file: str = "matrix.yaml") -> Matrix:
    """Validate matrix YAML text; `file` is the name used in problems."""
    problems = Problems(file)
    root = compose(text, problems)
    if root is None:
        problems.raise_if_any()
        raise MatrixError([Problem(file, 1, "", "the file is empty", "start from the shipped matrix.yaml")])
    lines: dict[str, int] = {}
    record_lines(root, "", lines)
    top = NodeReader(root, "", problems)
    images = read_images(top, problems)
    release_source = read_release_source(top, problems)
    upstreams = read_upstreams(top, problems)
    declared = set(top.mapping_keys("upstreams"))
    architectures = release_source.cuda_architectures if release_source else None
    flavors = read_flavors(top, upstreams, declared, architectures, problems)
    default_targets = top.text_list(
        "default_targets",
        expected="a target id pattern",
        fix="list id globs such as 'cpu/*' (see `invoke matrix` for ids)",
    )
    if top.is_mapping:
        top.finish()
    problems.raise_if_any()
    assert images and release_source and default_targets is not None  # guaranteed: no problems
    matrix = Matrix(
        file=file,
        images=images,
        release_source=release_source,
        upstreams=MappingProxyType(upstreams),
        flavors=MappingProxyType(flavors),
        default_targets=default_targets,
        lines=MappingProxyType(lines),
    )
    check_default_targets(matrix)
    return matrix


def record_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = join_key(path, str(key_node.value))
            lines.setdefault(key, key_node.start_mark.line + 1)
            record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = join_key(path, index)
            lines.setdefault(key, item.start_mark.line + 1)
            record_lines(item, key, lines)


def read_images(top: NodeReader, problems: Problems) -> ImageNames | None:
    section = top.mapping("images", "add an 'images' mapping with registry, namespace, repository, base_repository")
    if section is None or not section.is_mapping:
        return None
    component_fix = "use lowercase letters, digits and single '.', '_' or '-' between them"
    registry = section.text(
        "registry", pattern=REGISTRY, expected="a registry host", fix="e.g. docker.io or 127.0.0.1:5000"
    )
    namespace = section.text("namespace", pattern=PATH_COMPONENT, expected="a namespace", fix=component_fix)
    repository = section.text("repository", pattern=PATH_COMPONENT, expected="a repository name", fix=component_fix)
    base_repository = section.text(
        "base_repository", pattern=PATH_COMPONENT, expected="a repository name", fix=component_fix
    )
    section.finish()
    if registry and namespace and repository and base_repository:
        return ImageNames(registry, namespace, repository, base_repository)
    return None


def read_release_source(top: NodeReader, problems: Problems) -> ReleaseSource | None:
    section = top.mapping(
        "release_source", "add 'release_source' with github_repository and download_url of the CUDA tarballs"
    )
    if section is None or not section.is_mapping:
        return None
    repository = section.text(
        "github_repository", pattern=GITHUB_REPOSITORY, expected="an owner/name", fix="e.g. ai-dock/llama.cpp-cuda"
    )
    download_url = section.text(
        "download_url",
        pattern=HTTP_URL,
        expected="an http(s) URL",
        fix="e.g. https://github.com/ai-dock/llama.cpp-cuda/releases/download",
    )
    architectures = read_cuda_architectures(section, problems)
    section.finish()
    if repository and download_url and architectures is not None:
        return ReleaseSource(repository, download_url.rstrip("/"), MappingProxyType(architectures))
    return None


def read_cuda_architectures(section: NodeReader, problems: Problems) -> dict[str, tuple[str, ...]] | None:
    """release_source.cuda_architectures: CUDA version -> the GPU architectures its tarballs are
    built for, as CMake names them (the release's VERSION.txt lists them). Optional here; every
    CUDA version a flavor installs must have an entry (checked with the flavors)."""
    mapping = section.mapping("cuda_architectures", "", required=False)
    if mapping is None:
        return {}
    if not mapping.is_mapping:
        return None
    found: dict[str, tuple[str, ...]] = {}
    ok = True
    for version in mapping.keys():
        key = join_key(mapping.path, version)
        if not CUDA_VERSION.fullmatch(version):
            problems.add(
                mapping.key_node(version), key, f"'{version}' is not a CUDA version like 12.8", 'write "MAJOR.MINOR"'
            )
            ok = False
            continue
        listed = mapping.text_list(
            version,
            pattern=CUDA_ARCHITECTURE,
            expected="a CUDA architecture as CMake names it",
            fix="e.g. 75-virtual (PTX for 7.5 and newer), 86-real (machine code for 8.6), 90 (both)",
        )
        if listed is None:
            ok = False
            continue
        found[version] = listed
    return found if ok else None


def read_upstreams(top: NodeReader, problems: Problems) -> dict[str, Upstream]:
    section = top.mapping("upstreams", "add 'upstreams': the images base-image builds FROM")
    upstreams: dict[str, Upstream] = {}
    if section is None or not section.is_mapping:
        return upstreams
    if not section.keys():
        problems.add(section.node, "upstreams", "no upstream is declared", "declare at least one upstream image")
    for name in section.keys():
        key = join_key("upstreams", name)
        if not NAME.fullmatch(name):
            problems.add(
                section.key_node(name),
                key,
                f"'{name}' is not a usable upstream name (it goes into target ids and tags)",
                "use lowercase letters, digits, '.' and '-', e.g. cuda-12.9",
            )
        entry = section.mapping(name, "")
        if entry is None or not entry.is_mapping:
            continue
        image = entry.text(
            "image",
            pattern=IMAGE_REF,
            expected="an image reference with a tag",
            fix="e.g. nvidia/cuda:12.9.1-runtime-ubuntu24.04",
        )
        if image is not None and not has_tag_or_digest(image):
            problems.add(
                entry.child("image") or entry.node,
                join_key(key, "image"),
                f"'{image}' has no tag",
                "pin a tag or digest (e.g. debian:forky-slim): an untagged upstream changes under you",
            )
            image = None
        cuda_node = entry.child("cuda")
        cuda: str | None = None
        cuda_ok = True  # absent or null: a CPU upstream
        if cuda_node is not None and cuda_node.tag != NULL_TAG:
            cuda = read_text(
                cuda_node,
                join_key(key, "cuda"),
                problems,
                pattern=CUDA_VERSION,
                expected="a CUDA version like 12.9",
                fix="write MAJOR.MINOR, e.g. \"12.9\", or leave 'cuda' out for a CPU upstream",
            )
            cuda_ok = cuda is not None
        platforms = entry.text_list(
            "platforms", pattern=PLATFORM, expected="a linux platform", fix="e.g. linux/amd64, linux/arm64"
        )
        entry.finish()
        if image and platforms and cuda_ok:
            upstreams[name] = Upstream(name, image, cuda, platforms)
    return upstreams


def has_tag_or_digest(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return ":" in last or "@" in last


def read_flavors(
    top: NodeReader,
    upstreams: Mapping[str, Upstream],
    declared: set[str],
    architectures: Mapping[str, tuple[str, ...]] | None,
    problems: Problems,
) -> dict[str, Flavor]:
    section = top.mapping("flavors", "add 'flavors': how llama.cpp is installed (cuda, cpu, vulkan)")
    flavors: dict[str, Flavor] = {}
    if section is None or not section.is_mapping:
        return flavors
    if not section.keys():
        problems.add(section.node, "flavors", "no flavor is declared", "declare at least one flavor")
    for name in section.keys():
        key = join_key("flavors", name)
        if not NAME.fullmatch(name):
            problems.add(
                section.key_node(name), key, f"'{name}' is not a usable flavor name", "use lowercase letters and '-'"
            )
        entry = section.mapping(name, "")
        if entry is None or not entry.is_mapping:
            continue
        flavor = read_flavor(name, key, entry, upstreams, declared, architectures, problems)
        entry.finish()
        if flavor is not None:
            flavors[name] = flavor
    return flavors


def read_flavor(
    name: str,
    key: str,
    entry: NodeReader,
    upstreams: Mapping[str, Upstream],
    declared: set[str],
    architectures: Mapping[str, tuple[str, ...]] | None,
    problems: Problems,
) -> Flavor | None:
    source = entry.text("source", expected="a source", fix=f"one of: {', '.join(SOURCES)}")
    if source is not None and source not in SOURCES:
        problems.add(
            entry.child("source") or entry.node,
            join_key(key, "source"),
            f"unknown source '{source}'",
            f"use one of: {', '.join(SOURCES)}{did_you_mean(source, SOURCES)}",
        )
        source = None
    names = entry.text_list("upstreams", expected="an upstream name", fix="list keys of the 'upstreams' section")
    for index, upstream_name in enumerate(names or ()):
        item = entry.child("upstreams")
        node = item.value[index] if item is not None and hasattr(item, "value") else entry.node
        if upstream_name not in declared:
            problems.add(
                node,
                join_key(join_key(key, "upstreams"), index),
                f"upstream '{upstream_name}' is not declared",
                f"declare it under 'upstreams' or use one of: {', '.join(sorted(declared))}"
                + did_you_mean(upstream_name, declared),
            )
            names = None
    if names and not all(n in upstreams for n in names):
        names = None  # an upstream of it is invalid: reported there, no follow-on problems here
    releases = entry.text_list(
        "releases", pattern=RELEASE, expected="a release tag", fix="write tags like b9159, or 'latest'"
    )
    tag = entry.text("tag", expected="a tag template", fix="e.g. '{release}-cuda-{cuda}'")
    backend = read_backend(key, entry, source, problems)
    binary_cuda: dict[str, str] = {}
    if source == SOURCE_DEBIAN_PACKAGE:
        check_debian_flavor(key, entry, releases, problems)
    elif source == SOURCE_RELEASE_TARBALL:
        binary_cuda = read_binary_cuda(key, entry, names, upstreams, architectures, problems) or {}
    if names and tag is not None:
        for upstream_name in names:
            check_tag_template(key, entry, tag, upstreams[upstream_name], problems)
    if names and source == SOURCE_RELEASE_TARBALL:
        for upstream_name in names:
            for platform in upstreams[upstream_name].platforms:
                if platform not in TARBALL_PLATFORMS:
                    problems.add(
                        entry.child("upstreams") or entry.node,
                        join_key(key, "upstreams"),
                        f"upstream '{upstream_name}' lists {platform}, for which no prebuilt tarball exists",
                        f"give that upstream only {' and '.join(TARBALL_PLATFORMS)}",
                    )
    if (
        source
        and names
        and releases
        and tag is not None
        and backend is not None
        and (source != SOURCE_RELEASE_TARBALL or binary_cuda)
    ):
        return Flavor(name, source, names, releases, tag, MappingProxyType(binary_cuda), backend)
    return None


def read_backend(key: str, entry: NodeReader, source: str | None, problems: Problems) -> str | None:
    """The ggml backend: release tarballs are CUDA builds; Debian's packages give cpu or vulkan."""
    choices = f"one of: {', '.join(DEBIAN_BACKENDS)}"
    given = entry.text("backend", required=False, expected="a backend name", fix=choices)
    node = entry.child("backend") or entry.node
    if source == SOURCE_RELEASE_TARBALL:
        if given not in (None, BACKEND_CUDA):
            problems.add(
                node,
                join_key(key, "backend"),
                f"backend '{given}' does not apply to release-tarball flavors (their binaries are CUDA builds)",
                "remove it, or use source: debian-package for Debian's cpu and vulkan backends",
            )
            return None
        return BACKEND_CUDA
    if given is None:
        return DEBIAN_BACKENDS[0]
    if given not in DEBIAN_BACKENDS:
        problems.add(
            node,
            join_key(key, "backend"),
            f"unknown backend '{given}' for a debian-package flavor",
            f"use one of: {', '.join(DEBIAN_BACKENDS)}{did_you_mean(given, DEBIAN_BACKENDS)}",
        )
        return None
    return given


def check_debian_flavor(key: str, entry: NodeReader, releases: tuple[str, ...] | None, problems: Problems) -> None:
    releases_node = entry.child("releases")
    for index, release in enumerate(releases or ()):
        if release == LATEST:
            node = releases_node.value[index] if releases_node is not None else entry.node
            problems.add(
                node,
                join_key(join_key(key, "releases"), index),
                "'latest' cannot be resolved for a debian-package flavor",
                "name the llama.cpp build the Debian package carries, e.g. b11669 (`llama-server --version`)",
            )
    if entry.child("binary_cuda") is not None:
        problems.add(
            entry.key_node("binary_cuda"),
            join_key(key, "binary_cuda"),
            "binary_cuda applies to release-tarball flavors only",
            "remove it: Debian's package decides its own build",
        )


def read_binary_cuda(
    key: str,
    entry: NodeReader,
    names: tuple[str, ...] | None,
    upstreams: Mapping[str, Upstream],
    architectures: Mapping[str, tuple[str, ...]] | None,
    problems: Problems,
) -> dict[str, str] | None:
    mapping = entry.mapping(
        "binary_cuda", "map each upstream of this flavor to the CUDA version of its prebuilt binaries"
    )
    if mapping is None or not mapping.is_mapping:
        return None
    result: dict[str, str] = {}
    for upstream_name in mapping.entries:
        version = mapping.text(
            upstream_name,
            pattern=CUDA_VERSION,
            expected="a CUDA version like 12.8",
            fix='write MAJOR.MINOR, e.g. "12.8"',
        )
        if names is not None and upstream_name not in names:
            problems.add(
                mapping.key_node(upstream_name),
                join_key(join_key(key, "binary_cuda"), upstream_name),
                f"'{upstream_name}' is not an upstream of this flavor",
                f"use one of: {', '.join(names)}{did_you_mean(upstream_name, names)}",
            )
            continue
        if version is not None and architectures is not None and version not in architectures:
            problems.add(
                mapping.entries[upstream_name][1],
                join_key(join_key(key, "binary_cuda"), upstream_name),
                f"no GPU architectures are declared for the CUDA {version} tarballs",
                f'add `"{version}": [75-virtual, ...]` under release_source.cuda_architectures '
                "(the release's VERSION.txt lists them)",
            )
            continue
        if version is not None:
            result[upstream_name] = version
    for upstream_name in names or ():
        upstream = upstreams.get(upstream_name)
        if upstream is not None and upstream.cuda is None:
            problems.add(
                entry.child("upstreams") or entry.node,
                join_key(key, "upstreams"),
                f"upstream '{upstream_name}' has no CUDA version, but this flavor installs CUDA binaries",
                "give the upstream a 'cuda' version or move it to a CPU flavor",
            )
        elif upstream_name not in mapping.entries:
            problems.add(
                mapping.anchor,
                join_key(key, "binary_cuda"),
                f"no binary CUDA version for upstream '{upstream_name}'",
                f'add `{upstream_name}: "MAJOR.MINOR"` (the CUDA version of the tarball to install)',
            )
    return result if len(result) == len(names or ()) else None


def check_tag_template(key: str, entry: NodeReader, template: str, upstream: Upstream, problems: Problems) -> None:
    node = entry.child("tag") or entry.node
    path = join_key(key, "tag")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        problems.add(node, path, f"'{template}' is not a valid template: {exc}", "write fields as {release}")
        return
    for name in fields:
        if name not in TAG_FIELDS:
            problems.add(
                node,
                path,
                f"unknown field '{{{name}}}' in tag template",
                f"use only {', '.join('{' + f + '}' for f in TAG_FIELDS)}{did_you_mean(name, TAG_FIELDS)}",
            )
            return
    if "release" not in fields:
        problems.add(node, path, "the tag template lacks {release}", "add {release}: each release needs its own tag")
        return
    if "cuda" in fields and upstream.cuda is None:
        problems.add(
            node,
            path,
            f"the tag uses {{cuda}} but upstream '{upstream.name}' has no CUDA version",
            "drop {cuda} from this flavor's tag",
        )
        return
    sample = render_tag(template, release="b1", cuda=upstream.cuda or "", flavor="f", upstream=upstream.name)
    if not DOCKER_TAG.fullmatch(sample):
        problems.add(
            node,
            path,
            f"'{template}' does not make a valid Docker tag (e.g. '{sample}')",
            "use letters, digits, '_', '.' and '-' around the fields, at most 128 characters",
        )


def check_default_targets(matrix: Matrix) -> None:
    targets = expand(matrix)
    missing = unmatched_patterns(targets, matrix.default_targets)
    if missing:
        ids = [t.id for t in targets]
        raise MatrixError(
            [
                matrix.problem(
                    join_key("default_targets", matrix.default_targets.index(pattern)),
                    f"'{pattern}' matches no target",
                    f"use an id glob from `invoke matrix`{did_you_mean(pattern, ids)}",
                )
                for pattern in missing
            ]
        )
