"""What a publishing run did, for people: plain text, the markdown of a GitHub Actions step
summary, step output values, and the Slack message. Pure: the tasks write and post what these
functions return (edges/actions.py writes the step outputs and summaries).

Nothing secret ever enters a report: it holds image references, digests, platforms, reasons
(which name release assets) and the run's link.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SUCCESS, FAILURE, NOTHING = "success", "failure", "nothing to publish"
# The title of a run's reports and Slack messages (`invoke notify --title` changes it).
RUN_TITLE = "Build llama.cpp images"
# A plan with jobs: the run's result comes from the merge, which reports it.
PLANNED = "planned"

# Slack: a section's text holds at most 3000 characters and a message at most 50 blocks.
SLACK_SECTION_LIMIT = 3000
SLACK_BLOCK_LIMIT = 50
SLACK_TEXT_LIMIT = 3000


@dataclass(frozen=True)
class Published:
    image: str
    digest: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    """A target (or some of its platforms) left out of a run, and why."""

    target: str
    image: str
    platforms: tuple[str, ...]
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "image": self.image, "platforms": list(self.platforms), "reason": self.reason}


@dataclass(frozen=True)
class Report:
    status: str
    published: tuple[Published, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[str, ...] = ()  # one line each: what failed and why
    run_url: str | None = None
    notes: tuple[str, ...] = ()  # how the run decided (e.g. as the weekly run), one line each

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "published": [
                {"image": p.image, "digest": p.digest, "platforms": list(p.platforms)} for p in self.published
            ],
            "skipped": [s.as_json() for s in self.skipped],
            "failed": list(self.failed),
            "run_url": self.run_url,
            "notes": list(self.notes),
        }


def report_from_json(data: Any) -> Report:
    """A report from what `as_json` wrote; raises ValueError, KeyError or TypeError for anything else."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    for key in ("published", "skipped"):
        if not all(isinstance(entry, Mapping) for entry in data.get(key, ())):
            raise ValueError(f"'{key}' holds something other than objects")
    return Report(
        status=str(data.get("status", FAILURE)),
        published=tuple(
            Published(str(p["image"]), str(p["digest"]), tuple(p.get("platforms", ())))
            for p in data.get("published", ())
        ),
        skipped=tuple(
            Skipped(str(s["target"]), str(s.get("image", "")), tuple(s.get("platforms", ())), str(s["reason"]))
            for s in data.get("skipped", ())
        ),
        failed=tuple(str(f) for f in data.get("failed", ())),
        run_url=data.get("run_url"),
        notes=tuple(str(n) for n in data.get("notes", ())),
    )


def redacted(report: Report, secrets: Sequence[str]) -> Report:
    """The report with each secret value replaced by `***`: a message that quotes a credential
    (none should) never carries it to Slack, which masks nothing."""

    def clean(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    return Report(
        report.status,
        tuple(Published(clean(p.image), p.digest, p.platforms) for p in report.published),
        tuple(Skipped(clean(s.target), clean(s.image), s.platforms, clean(s.reason)) for s in report.skipped),
        tuple(clean(f) for f in report.failed),
        report.run_url,
        tuple(clean(n) for n in report.notes),
    )


def status_of(published: Sequence[Published], failed: Sequence[str]) -> str:
    if failed:
        return FAILURE
    return SUCCESS if published else NOTHING


def plain_text(report: Report) -> str:
    lines = [f"status: {report.status}"]
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"published {p.image} {p.digest} [{', '.join(p.platforms)}]" for p in report.published]
    lines += [f"skipped {s.target} [{', '.join(s.platforms)}]: {s.reason}" for s in report.skipped]
    lines += [f"failed: {f}" for f in report.failed]
    if report.run_url:
        lines.append(f"run: {report.run_url}")
    return "\n".join(lines) + "\n"


def summary_markdown(report: Report, title: str) -> str:
    """A GitHub Actions step summary."""
    out = [f"## {title}: {report.status}", ""]
    out += [*report.notes, ""] if report.notes else []
    if report.published:
        out += ["| Published | Digest | Platforms |", "|---|---|---|"]
        out += [f"| `{p.image}` | `{p.digest}` | {', '.join(p.platforms)} |" for p in report.published]
        out.append("")
    if report.skipped:
        out += ["| Skipped target | Platforms | Why |", "|---|---|---|"]
        out += [f"| `{s.target}` | {', '.join(s.platforms)} | {escape_cell(s.reason)} |" for s in report.skipped]
        out.append("")
    if report.failed:
        out += ["**Failed**", ""]
        out += [f"- {escape_cell(f)}" for f in report.failed]
        out.append("")
    return "\n".join(out) + "\n"


def release_summary(releases: Mapping[str, str]) -> str:
    """`invoke release`'s step summary: each release looked up (tag -> what it carries)."""
    lines = ["## llama.cpp-cuda release", ""]
    lines += [f"- `{tag}`: {carries}" for tag, carries in releases.items()]
    return "\n".join(lines) + "\n"


def report_outputs(report: Report) -> dict[str, str]:
    """The step outputs of a task that published: its status, the images, the skipped targets."""
    return {
        "status": report.status,
        "published": compact_json([p.image for p in report.published]),
        "skipped": compact_json([s.target for s in report.skipped]),
    }


def report_json(report: Report) -> str:
    """A report file's text (`report_from_json` reads it back)."""
    return json.dumps(report.as_json(), indent=2) + "\n"


def escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def slack_payload(report: Report, title: str) -> dict[str, Any]:
    """An incoming-webhook message within Slack's limits: long lists are cut with a count."""
    icon = {SUCCESS: ":white_check_mark:", FAILURE: ":x:"}.get(report.status, ":information_source:")
    heading = f"{icon} {title}: {report.status}"
    lines: list[str] = [*report.notes]
    lines += [f"published `{p.image}` `{p.digest}` ({', '.join(p.platforms)})" for p in report.published]
    lines += [f"skipped `{s.target}` ({', '.join(s.platforms)}): {s.reason}" for s in report.skipped]
    lines += [f"failed: {f}" for f in report.failed]
    if report.run_url:
        lines.append(f"<{report.run_url}|the run's log>")
    sections = pack(lines, SLACK_SECTION_LIMIT, SLACK_BLOCK_LIMIT - 1)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": heading}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": text}} for text in sections]
    fallback = heading + "\n" + "\n".join(lines)
    if len(fallback) > SLACK_TEXT_LIMIT:
        fallback = fallback[: SLACK_TEXT_LIMIT - 1] + "…"
    return {"text": fallback, "blocks": blocks}


def pack(lines: Sequence[str], limit: int, max_sections: int) -> list[str]:
    """Lines joined into sections of at most `limit` characters, at most `max_sections` of them;
    what does not fit is replaced by a line saying how much was left out."""
    sections: list[str] = []
    current = ""
    for index, raw in enumerate(lines):
        line = raw if len(raw) <= limit else raw[: limit - 1] + "…"
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= limit:
            current = candidate
            continue
        sections.append(current)
        current = line
        if len(sections) == max_sections - 1:
            left = len(lines) - index
            note = f"… and {left} more line(s): see the run's summary"
            sections.append(note)
            return sections
    if current:
        sections.append(current)
    return sections
