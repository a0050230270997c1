"""Publishing on native runners, as pure functions: the publishing plan (one job per target and
platform, the GitHub Actions strategy matrix) and its JSON, the digest records the jobs leave,
and which multi-platform tags the merge creates from them.

A plan names targets, never images: an image name holds the namespace, which a fork may keep as a
secret, and GitHub drops a job output holding a secret's value. Targets are named by the release
they resolved (`cuda/cuda-12.8/b9300`, not `.../latest`): in job and artifact names, the jobs'
records and the merge's expectations alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .bake import bake_name
from .model import SOURCE_RELEASE_TARBALL, arch
from .options import SELECTION_NAMES, Request
from .plan import Plan
from .report import Skipped, compact_json
from .targets import ImageTarget, Target, run_id

# GitHub-hosted runners of each architecture: every platform builds natively, no emulation.
RUNNERS = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}


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
    """One native-runner job: one target (its run id) on one platform, with the option values
    that select exactly it (`invoke build --job` reads them through the options table)."""

    target: str
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


def job_from_json(data: Any) -> Job:
    """A job as `Job.as_json` wrote it; raises ValueError (saying what is wrong) for anything else."""
    if not isinstance(data, Mapping) or not isinstance(data.get("selection"), Mapping):
        raise ValueError("has no 'selection' object")
    unknown = set(data["selection"]) - set(SELECTION_NAMES)
    if unknown:
        raise ValueError("selects with unknown option(s): " + ", ".join(sorted(unknown)))
    return Job(str(data.get("target", "")), str(data.get("platform", "")), dict(data["selection"]))


def job_selection(base: Mapping[str, Any], target: Target, platform: str) -> dict[str, Any]:
    """The selection that builds exactly this target on this platform, with a resolved release
    ('latest' becomes the tag it resolved to, so every job builds the same release)."""
    values = dict(base)
    values["platform"] = platform
    if isinstance(target, ImageTarget) and target.flavor.source != SOURCE_RELEASE_TARBALL:
        # The run's release and CUDA version choose tarballs; a job of a Debian-package target
        # given them would be refused ("--release applies to release-tarball flavors").
        values.pop("release", None)
        values.pop("cuda_version", None)
    elif isinstance(target, ImageTarget) and run_id(target) != target.id:
        values["release"] = target.release
    values["filter"] = [run_id(target)]
    return values


@dataclass(frozen=True)
class PublishingPlan:
    """What `invoke plan` writes (a file, or the workflow's step outputs) and `invoke merge`
    reads: the jobs, the platforms each target's tag must get, and what was skipped and why. It
    names no image (skips carry none): each job derives the images from its own settings."""

    jobs: tuple[Job, ...] = ()
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # run id -> platforms
    skipped: tuple[Skipped, ...] = ()
    releases: Mapping[str, str] = field(default_factory=dict)  # release tag -> what it carries
    notes: tuple[str, ...] = ()  # how the run decided, one line each

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": [job.as_json() for job in self.jobs],
            "targets": {target: list(platforms) for target, platforms in self.targets.items()},
            "skipped": [{k: v for k, v in skip.as_json().items() if k != "image"} for skip in self.skipped],
            "releases": dict(self.releases),
            "notes": list(self.notes),
        }

    def outputs(self) -> dict[str, str]:
        """The plan step's outputs: whether to publish, the build jobs' strategy matrix, the plan."""
        return {
            "publish": "true" if self.jobs else "false",
            "matrix": compact_json({"include": [job.as_json() for job in self.jobs]}),
            "plan": compact_json(self.as_json()),
        }


def plan_from_json(text: str) -> PublishingPlan:
    """A plan as `PublishingPlan.as_json` wrote it (any JSON layout); raises ValueError."""
    try:
        data = json.loads(text)
        return PublishingPlan(
            jobs=tuple(job_from_json(job) for job in data.get("jobs", ())),
            targets={str(k): tuple(str(p) for p in v) for k, v in data["targets"].items()},
            skipped=tuple(
                Skipped(str(s["target"]), "", tuple(str(p) for p in s.get("platforms", ())), str(s["reason"]))
                for s in data.get("skipped", ())
            ),
            releases={str(k): str(v) for k, v in data.get("releases", {}).items()},
            notes=tuple(str(n) for n in data.get("notes", ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def publishing_plan(
    plan: Plan, request: Request, notes: Sequence[str] = (), with_namespace: bool = True
) -> PublishingPlan:
    """The jobs of a plan: one per image target and platform, each with the selection that
    builds exactly it. Without `with_namespace` (the workflow) each job takes the namespace from
    its own settings."""
    base = request.selection.as_values(request.root)
    if not with_namespace:
        base.pop("namespace", None)
    jobs = tuple(
        Job(run_id(target), platform, job_selection(base, target, platform))
        for target in plan.images
        for platform in target.platforms
    )
    return PublishingPlan(
        jobs=jobs,
        targets={run_id(target): target.platforms for target in plan.targets},
        skipped=tuple(replace(skip, image="") for skip in plan.skipped),
        releases={tag: release.carries() for tag, release in plan.releases.items()},
        notes=tuple(notes),
    )


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
