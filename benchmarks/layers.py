"""An image's layers as a registry serves them, and what an update re-pulls. Pure: the OCI
documents (index, manifests, config) come in as parsed JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

Blob = Callable[[str], Mapping[str, Any]]  # digest -> that JSON document


@dataclass(frozen=True)
class Layer:
    index: int  # 0 is the bottom layer
    digest: str  # of the compressed blob a registry serves
    size: int  # compressed bytes: what a pull downloads
    created_by: str  # the build step that made it (image history)
    uncompressed: int | None = None

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "index": self.index,
            "digest": self.digest,
            "bytes": self.size,
            "created_by": self.created_by,
        }
        if self.uncompressed is not None:
            found["uncompressed_bytes"] = self.uncompressed
        return found


def platform_manifest(index: Mapping[str, Any], blob: Blob, architecture: str) -> Mapping[str, Any]:
    """The image manifest for `architecture`, from an OCI layout's index.json (which may point
    to an image index, or straight to a manifest)."""
    document: Mapping[str, Any] = index
    while "manifests" in document:
        entries = document["manifests"]
        matching = [m for m in entries if (m.get("platform") or {}).get("architecture") == architecture]
        # An entry without a platform is the image itself (docker save's top level).
        chosen = matching or [m for m in entries if "platform" not in m]
        if not chosen:
            raise ValueError(f"no {architecture} image among {[m.get('platform') for m in entries]}")
        document = blob(chosen[0]["digest"])
    if "layers" not in document:
        raise ValueError("not an image manifest: no layers")
    return document


def image_layers(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> list[Layer]:
    """Each layer of the manifest, bottom first, named by the history step that made it."""
    steps = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer", False)]
    layers = manifest["layers"]
    if len(steps) != len(layers):
        steps = [""] * len(layers)  # history that does not line up names nothing rather than the wrong step
    return [
        Layer(index=i, digest=str(layer["digest"]), size=int(layer["size"]), created_by=short_step(step))
        for i, (layer, step) in enumerate(zip(layers, steps, strict=True))
    ]


def short_step(created_by: str, limit: int = 100) -> str:
    """A build step as the table shows it: BuildKit's shell prefix and comment dropped, one line."""
    text = " ".join(created_by.split())
    text = text.removesuffix(" # buildkit")
    for prefix in ("/bin/sh -c #(nop) ", "/bin/bash -o pipefail -c "):
        text = text.replace(prefix, "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Delta:
    """What a user who has `old` downloads to get `new`."""

    changed: tuple[Layer, ...]  # layers of `new` whose blobs `old` lacks
    total_layers: int

    @property
    def bytes(self) -> int:
        return sum(layer.size for layer in self.changed)

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "changed_layers": len(self.changed),
            "total_layers": self.total_layers,
            "layers": [layer.as_json() for layer in self.changed],
        }


def pull_delta(old: Sequence[Layer], new: Sequence[Layer]) -> Delta:
    """Layers of `new` whose blob `old` does not have: a registry client pulls exactly those
    (it skips any blob it already holds, wherever in the image that blob sits)."""
    held = {layer.digest for layer in old}
    return Delta(tuple(layer for layer in new if layer.digest not in held), len(new))


def largest(layers: Sequence[Layer], count: int = 5) -> list[Layer]:
    """The `count` largest layers, by uncompressed size where known, else compressed."""
    return sorted(layers, key=lambda layer: (layer.uncompressed or layer.size, layer.size), reverse=True)[:count]


def with_uncompressed(layers: Sequence[Layer], sizes: Mapping[str, int]) -> list[Layer]:
    return [replace(layer, uncompressed=sizes.get(layer.digest)) for layer in layers]


def environments(layers: Sequence[Layer]) -> list[Layer]:
    """The layers that copy in one of the image's Python environments (a virtualenv)."""
    return [layer for layer in layers if "venv" in layer.created_by and layer.created_by.startswith("COPY")]
