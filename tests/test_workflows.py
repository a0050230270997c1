"""The GitHub Actions workflows hold no logic: every run step calls pip, invoke, nox or the CI
entry point .ci/run, every action is pinned to a full commit, and the publishing workflow keeps the
reference's interface."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
ALLOWED_PROGRAMS = {"pip", "invoke", "nox", ".ci/run"}
PINNED = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}")


def load(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def steps(path: Path) -> list[dict[str, Any]]:
    return [step for job in load(path)["jobs"].values() for step in job.get("steps", [])]


def program_of(command: str) -> str:
    """The program a run step calls, after `sudo [--preserve-env=...]` and `python -m`."""
    if "\n" in command.strip() or re.search(r"[;&|<>`]|\$\(", command):
        return f"more than one command: {command!r}"
    words = shlex.split(command)
    if words[:1] == ["sudo"]:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if words[:2] in (["python", "-m"], ["python3", "-m"]):
        words = words[2:]
    return words[0] if words else ""


def test_the_run_step_rule_tells_a_call_from_logic() -> None:
    assert program_of("python -m pip install -e .") == "pip"
    assert program_of('invoke build --job "$JOB" --push') == "invoke"
    assert program_of("sudo --preserve-env=CI,PATH invoke engine") == "invoke"
    assert program_of("sudo --preserve-env=CI,PATH .ci/run") == ".ci/run"
    for logic in ("invoke build && docker push x", "if [ -n x ]; then invoke build; fi", "echo $(date)",
                  "docker login -u x", "invoke a\ninvoke b", "bash .ci/run"):  # fmt: skip
        assert program_of(logic) not in ALLOWED_PROGRAMS, logic


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_steps_only_call_pip_invoke_nox_or_the_ci_entry_point(path: Path) -> None:
    for step in steps(path):
        if "run" in step:
            assert program_of(step["run"]) in ALLOWED_PROGRAMS, f"{path.name}: {step.get('name')}: {step['run']!r}"
            assert "${{" not in step["run"], f"{path.name}: pass values through env:, not into the command"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_the_version_in_a_comment(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uses = re.findall(r"uses:\s*(\S+)(.*)", text)
    assert uses
    for reference, comment in uses:
        assert PINNED.fullmatch(reference), f"{path.name}: {reference} is not pinned to a full commit SHA"
        assert re.fullmatch(r"\s*# v[0-9]+\.[0-9]+\.[0-9]+", comment), f"{path.name}: {reference} lacks '# vX.Y.Z'"
    for step in steps(path):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False


def test_the_publishing_workflow_keeps_the_reference_interface() -> None:
    workflow = load(REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml")
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    inputs = triggers["workflow_dispatch"]["inputs"]
    assert {"LLAMA_CPP_VERSION", "CUDA_VERSION", "DOCKERHUB_REPO", "MULTI_ARCH", "CUSTOM_IMAGE_TAG"} <= set(inputs)
    assert [entry["cron"].split()[-1] for entry in triggers["schedule"]] == ["1"]  # Mondays
    text = (REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml").read_text(encoding="utf-8")
    for secret in ("DOCKERHUB_TOKEN", "SLACK_WEBHOOK_URL"):
        assert f"secrets.{secret}" in text
    jobs = workflow["jobs"]
    assert jobs["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert jobs["build"]["runs-on"] == "${{ matrix.runner }}"
    assert workflow["permissions"] == {"contents": "read"}


def test_the_namespace_and_user_are_variables_and_the_plan_job_uses_no_other_secret() -> None:
    """GitHub drops a job output that contains the value of a secret the job uses ("Skip output ...
    may contain secret"): every image name in the plan's outputs holds the namespace, most often
    the pushing user's own name, so both are variables; only the token is a secret."""
    workflow = load(REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml")
    plan = workflow["jobs"]["plan"]
    assert set(plan["outputs"]) == {"publish", "matrix", "plan"}
    [step] = [step for step in plan["steps"] if step.get("id") == "plan"]
    assert step["env"] == {
        "GITHUB_TOKEN": "${{ github.token }}",
        "DOCKERHUB_NAMESPACE": "${{ vars.DOCKERHUB_NAMESPACE }}",
        "REGISTRY_USERNAME": "${{ vars.DOCKERHUB_USERNAME }}",
        "REGISTRY_PASSWORD": "${{ secrets.DOCKERHUB_TOKEN }}",
        # The reference's setup stored these as secrets: passed apart, only so the plan says to move them.
        "DOCKERHUB_NAMESPACE_SECRET": "${{ secrets.DOCKERHUB_NAMESPACE }}",
        "DOCKERHUB_USERNAME_SECRET": "${{ secrets.DOCKERHUB_USERNAME }}",
    }
    logins = [
        s["env"]["REGISTRY_USERNAME"] for job in workflow["jobs"].values() for s in job.get("steps", [])
        if "REGISTRY_USERNAME" in s.get("env", {})
    ]  # fmt: skip
    assert logins == ["${{ vars.DOCKERHUB_USERNAME }}"] * 3  # plan, build, merge


def test_the_test_workflow_runs_the_ci_entry_point_and_nothing_else() -> None:
    """.ci/run is the one list of CI steps (chromium, package, engine, `nox -s lint test`)."""
    runs = [step["run"] for step in steps(REPO_ROOT / ".github" / "workflows" / "test.yml") if "run" in step]
    assert [program_of(run) for run in runs] == [".ci/run"]
    assert (REPO_ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"
