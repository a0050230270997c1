"""Steps the task bodies share: plan from the matrix file, render the plan, report a run, read the
digest records publishing jobs leave."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.bake import render_plan
from ..core.errors import UsageError
from ..core.options import Request
from ..core.plan import Plan, make_plan
from ..core.publishing import DigestRecord, parse_record
from ..core.report import RUN_TITLE, Report, Skipped, plain_text, report_json, report_outputs, summary_markdown
from ..core.workflow import Publishing
from ..edges import actions, files, github, gitinfo, pipcert


def plan_for(request: Request) -> Plan:
    """The plan of a request: its matrix file loaded, its releases looked up on GitHub."""
    return make_plan(files.load_matrix(request.selection.matrix_file), request, github.fetch_release)


def render(plan: Plan, request: Request, staging_tags: bool = False) -> dict[str, Any]:
    """The plan's bake file, labelled with this checkout's revision and source."""
    root = request.root
    revision, source = gitinfo.git_revision(root), gitinfo.source_url(root)
    return render_plan(plan, request, revision, gitinfo.now(), source, staging_tags, pipcert.pip_cert())


def log_in_as_the_workflow(settings: Publishing | None) -> None:
    """With --workflow: the registry login (REGISTRY_USERNAME, REGISTRY_PASSWORD) from its settings."""
    if settings is not None:
        os.environ.update(settings.registry_env())


def print_skips(skipped: Sequence[Skipped], to_stderr: bool = False) -> None:
    for skip in skipped:
        line = f"skipped {skip.target} [{', '.join(skip.platforms)}]: {skip.reason}"
        print(line, file=sys.stderr if to_stderr else sys.stdout)


def emit_report(report: Report, report_file: Path | None, title: str = RUN_TITLE) -> None:
    """A run's report: to its file, as text, and as the step's outputs and summary."""
    if report_file is not None:
        files.write_file("--report", report_file, report_json(report))
    sys.stdout.write(plain_text(report))
    actions.write_actions(report_outputs(report), summary_markdown(report, title))


def read_records(folder: Path) -> list[DigestRecord]:
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(parse_record(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{path}: not a digest record ({exc})") from None
    return records
