"""Publishing on native runners, as pure functions: the GitHub Actions strategy matrix (one job per
target and platform), the bake file variant that pushes by digest, the digest records the jobs
leave, and which multi-platform tags the merge creates from them.

A plan names targets, never images: an image name holds the namespace, which a fork may keep as a
secret, and GitHub drops a job output holding a secret's value. Targets are named by the release
they resolved (`cuda/cuda-12.9/b9300`, not `.../latest`): in job and artifact names, the jobs'
records and the merge's expectations alike.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .bake import bake_name
from .model import arch
from .targets import ImageTarget, Target

# GitHub-hosted runners of each architecture: every platform builds natively, no emulation.
RUNNERS = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}


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


def run_id(target: Target) -> str:
    """The target's id with the release this run resolved: `cuda/cuda-12.9/latest` built from
    b9300 is `cuda/cuda-12.9/b9300`."""
    if isinstance(target, ImageTarget):
        prefix, _, release = target.id.rpartition("/")
        if release != target.release:
            return f"{prefix}/{target.release}"
    return target.id


@dataclass(frozen=True)
class DigestRecord:
    """What a by-digest job pushed: `image` is the tag it is meant to get."""

    target: str
    image: str
    platform: str
    digest: str

    @property
    def repository(self) -> str:
        return self.image.rsplit(":", 1)[0]

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"

    def as_json(self) -> dict[str, str]:
        return {"target": self.target, "image": self.image, "platform": self.platform, "digest": self.digest}


DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digest_records(
    metadata: Mapping[str, Any], names: Mapping[str, str], images: Mapping[str, str], platform: str
) -> list[DigestRecord]:
    """Records from buildx's --metadata-file: bake name -> {"containerimage.digest": ...}."""
    records = []
    for name, target_id in names.items():
        digest = (metadata.get(name) or {}).get("containerimage.digest", "")
        if not DIGEST.fullmatch(str(digest)):
            raise ValueError(f"buildx reported no digest for {target_id}")
        records.append(DigestRecord(target_id, images[target_id], platform, str(digest)))
    return records


def parse_record(data: Any) -> DigestRecord:
    if not isinstance(data, Mapping):
        raise ValueError("not a digest record")
    record = DigestRecord(str(data["target"]), str(data["image"]), str(data["platform"]), str(data["digest"]))
    if not DIGEST.fullmatch(record.digest):
        raise ValueError(f"'{record.digest}' is not a sha256 digest")
    return record


def record_file_name(record: DigestRecord) -> str:
    return f"{bake_name(record.target)}-{arch(record.platform)}.json"


@dataclass(frozen=True)
class Job:
    """One native-runner job: one target (its run id) on one platform, with the selection that
    builds it. `image` is for people reading the plan; the job's JSON leaves it out."""

    target: str
    image: str
    platform: str
    selection: Mapping[str, Any]

    @property
    def name(self) -> str:
        return f"{bake_name(self.target)}-{arch(self.platform)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runner": RUNNERS.get(self.platform, RUNNERS["linux/amd64"]),
            "target": self.target,
            "platform": self.platform,
            "selection": dict(self.selection),
        }


def strategy_matrix(jobs: Sequence[Job]) -> dict[str, Any]:
    """`strategy.matrix` for GitHub Actions: `include` lists one entry per job."""
    return {"include": [job.as_json() for job in jobs]}


@dataclass(frozen=True)
class Merge:
    """A tag to create from the digests of its platforms."""

    image: str
    sources: tuple[DigestRecord, ...]

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(r.platform for r in self.sources)


@dataclass(frozen=True)
class Incomplete:
    target: str
    image: str | None  # None when no platform's job left a record
    missing: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.image} ({self.target})" if self.image else self.target


def plan_merges(
    records: Iterable[DigestRecord], expected: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[Merge], list[Incomplete]]:
    """Group records by the target they were built for, one tag each. With `expected` (target
    -> platforms the plan built), a tag with a missing platform is not created: a failed job never
    yields a partial image."""
    grouped: dict[str, dict[str, DigestRecord]] = {}
    for record in records:
        grouped.setdefault(record.target, {})[record.platform] = record
    merges, incomplete = [], []
    for target in sorted(set(grouped) | set(expected or {})):
        have = grouped.get(target, {})
        wanted = list((expected or {}).get(target, sorted(have)))
        missing = tuple(p for p in wanted if p not in have)
        image = next((r.image for r in have.values()), None)
        if missing or image is None:
            incomplete.append(Incomplete(target, image, missing))
            continue
        merges.append(Merge(image, tuple(have[p] for p in wanted)))
    return merges, incomplete
