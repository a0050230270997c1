"""Body of `invoke soak`: in a publishing job, after `build --by-digest`, every llama.cpp image the
job pushed serves the soak's load (core/soak.py) before any tag is made from it. Each image gets a
soak record in `<digests>/soak/`, which travels to the merge with the digest records; `invoke
merge` creates no tag for an image whose soak failed or is missing (core/soak.py: gate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core import soak
from ..core.errors import BuildError, UsageError
from ..core.publishing import DigestRecord, record_file_name
from ..edges import actions, registry
from ..edges import soak as soak_edge
from ..edges.engine import docker
from .arguments import SoakArguments
from .steps import log_in_as_the_workflow, read_records

SOAK_FOLDER = "soak"  # inside the digests folder


def soak_folder(digests: Path) -> Path:
    return digests / SOAK_FOLDER


def native_platform() -> str:
    """The engine's own platform (linux/amd64): another one runs emulated."""
    done = docker(["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"], soak_edge.SoakError, timeout=60)
    return done.stdout.strip()


def soak_images(root: Path, arguments: SoakArguments) -> None:
    log_in_as_the_workflow(arguments.workflow)
    records = [r for r in read_records(arguments.digests) if soak.is_soaked(r.target)]
    if not records:
        raise UsageError(f"no digest records of llama.cpp images in {arguments.digests}/: nothing to soak")
    native = native_platform()
    found: list[soak.SoakRecord] = []
    with registry.logged_in(records[0].image.split("/", 1)[0]):
        for record in records:
            found.append(soak_one(record, emulated=record.platform != native))
    folder = soak_folder(arguments.digests)
    folder.mkdir(parents=True, exist_ok=True)
    summary = ["## Soak", ""]
    for record, result in zip(records, found, strict=True):
        (folder / record_file_name(record)).write_text(json.dumps(result.as_json()) + "\n", encoding="utf-8")
        print(result.line())
        summary += [f"- {result.line()}", "", "```", *result.figures, "```", ""]
    actions.write_actions({}, "\n".join(summary) + "\n")
    failed = [r for r in found if not r.passed]
    if failed:
        raise BuildError(f"{len(failed)} image(s) failed the soak and will not be published: see above")


def soak_one(record: DigestRecord, emulated: bool) -> soak.SoakRecord:
    """Pull the pushed digest and soak it; a soak that cannot run is a failed one, with its reason."""
    settings = soak.EMULATED if emulated else soak.RELEASE
    how = " (emulated: answers checked only)" if emulated else ""
    print(f"soaking {record.image} [{record.platform}] {record.digest}{how}: {settings.total_requests} requests",
          flush=True)  # fmt: skip
    try:
        pulled = docker(["pull", "--platform", record.platform, record.reference], soak_edge.SoakError, timeout=1800)
        if pulled.returncode != 0:
            raise soak_edge.SoakError(f"cannot pull {record.reference}: {pulled.stderr.strip()[-300:]}")
        run = soak_edge.run(record.reference, settings, record.platform, progress=lambda line: print(line, flush=True))
    except soak_edge.SoakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return soak.not_served(record.target, record.image, record.platform, record.digest, str(exc).splitlines()[0])
    finally:
        # The reference the pull made; the engine keeps nothing of the soak (its content stays
        # where another tag still names it).
        docker(["rmi", record.reference], soak_edge.SoakError, timeout=300)
    verdict = soak.judge_emulated(run) if emulated else soak.judge(run)
    return soak.record_of(record.target, record.image, record.platform, record.digest, verdict, emulated)


def read_soak_records(digests: Path) -> list[soak.SoakRecord]:
    folder = soak_folder(digests)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(soak.parse_soak_record(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path}: not a soak record ({exc})") from None
    return found
