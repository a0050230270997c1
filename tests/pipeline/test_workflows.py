"""The GitHub Actions workflows hold no logic: every run step calls pip, invoke, nox or the CI
entry point .ci/run, every action is pinned to a full commit, and the publishing workflow keeps the
reference's interface."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_images.core.bake import bake_name
from llama_images.core.workflow import WEEKLY
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.support.loopback import RELEASES_PATH, Answer, Loopback, release, serve, tag_path
from tests.support.workflow_runner import GITHUB_TOKEN, Workflow

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


def test_each_publishing_step_gets_every_setting_as_a_variable_or_a_secret() -> None:
    """The user and namespace may be repository variables or (the reference's setup) secrets:
    the plan, build and merge steps get both places, as workflow.py declares them; the plan's
    outputs name no image, so a secret namespace does not empty them."""
    from llama_images.core.workflow import NAMESPACE, REPOSITORY_SETTINGS

    workflow = load(REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml")
    assert set(workflow["jobs"]["plan"]["outputs"]) == {"publish", "matrix", "plan"}
    calls = [("plan", "invoke plan --workflow"), ("build", "invoke build --job"), ("build", "invoke soak --workflow"),
             ("merge", "invoke merge --workflow")]  # fmt: skip
    for job, call in calls:
        [step] = [s for s in workflow["jobs"][job]["steps"] if s.get("run", "").startswith(call)]
        assert "--workflow" in step["run"]
        for setting in REPOSITORY_SETTINGS:
            if (job == "merge" or "soak" in call) and setting.name == NAMESPACE:
                continue  # the merge tags, and the soak pulls, what the records name
            assert step["env"][setting.secret_env] == f"${{{{ secrets.{setting.name} }}}}", (job, setting)
            if setting.variable_env:
                assert step["env"][setting.variable_env] == f"${{{{ vars.{setting.name} }}}}", (job, setting)


def test_the_test_workflow_runs_the_ci_entry_point_and_nothing_else() -> None:
    """.ci/run is the one list of CI steps (chromium, package, engine, `nox -s lint test`)."""
    runs = [step["run"] for step in steps(REPO_ROOT / ".github" / "workflows" / "test.yml") if "run" in step]
    assert [program_of(run) for run in runs] == [".ci/run"]
    assert (REPO_ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


# ---- the publishing workflow run as GitHub runs it (tests/support/workflow_runner.py) --------
# plan -> build -> merge -> notify, with a loopback releases API and a Slack stand-in. Runs that
# would ask Docker Hub whether a tag is published use a CUDA-only matrix whose targets the release
# cannot build; the runs that push are tests/container/test_publishing.py's.

PUBLISHING = REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml"
WEBHOOK_PATH = "/services/T000/B000/webhook-secret-part"
TOKEN_VALUE = "dckr_pat_secret-token-value"


def reference_setup(slack_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """(variables, secrets) of a fork set up as the reference's README says: three secrets."""
    return {}, {"DOCKERHUB_USERNAME": "someone", "DOCKERHUB_TOKEN": TOKEN_VALUE, "DOCKERHUB_NAMESPACE": "someone",
                "SLACK_WEBHOOK_URL": slack_url + WEBHOOK_PATH}  # fmt: skip


def variables_setup(slack_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """(variables, secrets) with the user and namespace as repository variables."""
    return {"DOCKERHUB_USERNAME": "someone", "DOCKERHUB_NAMESPACE": "someone"}, {
        "DOCKERHUB_TOKEN": TOKEN_VALUE, "SLACK_WEBHOOK_URL": slack_url + WEBHOOK_PATH}  # fmt: skip


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A copy of the checkout, what actions/checkout gives each job, with the shipped matrix
    narrowed to its CUDA flavor."""
    from benchmarks.measure import copy_checkout

    copy = copy_checkout(REPO_ROOT, tmp_path / "repository")
    document = yaml.safe_load((copy / "matrix.yaml").read_text(encoding="utf-8"))
    document["flavors"] = {"cuda": document["flavors"]["cuda"]}
    document["upstreams"] = {name: document["upstreams"][name] for name in document["flavors"]["cuda"]["upstreams"]}
    document["default_targets"] = ["cuda/*"]
    (copy / "matrix.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return copy


@pytest.fixture
def services() -> Iterator[tuple[Loopback, Loopback]]:
    """(releases API, Slack)."""
    with serve(Loopback()) as api, serve(Loopback()) as slack:
        slack.route(WEBHOOK_PATH, Answer(200, b"ok"))
        yield api, slack


def workflow(repository: Path, tmp_path: Path, api: Loopback, event: str, setup: tuple[dict[str, str], dict[str, str]],
             **inputs: Any) -> Workflow:  # fmt: skip
    variables, secrets = setup
    return Workflow(PUBLISHING, repository, tmp_path / f"run-{event}-{len(list(tmp_path.iterdir()))}", event,
                    inputs=inputs, vars=variables, secrets=secrets,
                    environment={"GITHUB_API_URL": api.url})  # fmt: skip


def posted(slack: Loopback) -> list[str]:
    return [json.loads(r.body)["text"] for r in slack.received]


def assert_no_secret_in(texts: list[str]) -> None:
    for text in texts:
        for secret in (TOKEN_VALUE, "webhook-secret-part", GITHUB_TOKEN):
            assert secret not in text


# The shipped CUDA target built from the release these runs resolve, and its job names.
CUDA = shipped.target("cuda", release="b9300")
JOB = bake_name(CUDA.id)
# A release of the older format (no per-architecture tarballs) of the shipped binaries' CUDA.
NO_TARBALL_FOR_ITS_ARCHITECTURES = ((CUDA.binary_cuda or "", None),)
SKIP_REASON = (
    f"release b9300 has llama.cpp-b9300-cuda-{CUDA.binary_cuda}.tar.gz (older format, no architecture), "
    f"not llama.cpp-b9300-cuda-{CUDA.binary_cuda}-amd64.tar.gz"
)


def test_a_scheduled_run_with_nothing_to_build_posts_its_skips_to_slack(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback]
) -> None:
    """What a user met: the weekly run left everything out, and Slack heard nothing of it."""
    api, slack = services
    api.route(RELEASES_PATH, Answer(body=[release("b9300", NO_TARBALL_FOR_ITS_ARCHITECTURES)]))
    run = workflow(repository, tmp_path, api, "schedule", reference_setup(slack.url))
    jobs = run.run()
    assert jobs["plan"].result == "success", jobs["plan"].runs[0].steps
    assert (jobs["build"].result, jobs["merge"].result) == ("skipped", "skipped")
    [text] = posted(slack)
    assert ":information_source: Build llama.cpp images: nothing to publish" in text
    assert "weekly run: the newest release on linux/amd64 and linux/arm64" in text
    # Named by the release the run resolved, not `latest`.
    assert f"skipped `{CUDA.id}` ({', '.join(CUDA.platforms)}): {SKIP_REASON}" in text
    assert "actions/runs/4242" in text
    assert_no_secret_in(posted(slack))


def test_a_manual_run_with_an_empty_version_decides_as_the_weekly_run(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback]
) -> None:
    """The reference's README: "leave empty to simulate a scheduled build"."""
    api, slack = services
    api.route(RELEASES_PATH, Answer(body=[release("b9300", NO_TARBALL_FOR_ITS_ARCHITECTURES)]))
    plans = {}
    for event, inputs in (("schedule", {}), ("workflow_dispatch", {"LLAMA_CPP_VERSION": ""})):
        run = workflow(repository, tmp_path, api, event, variables_setup(slack.url), **inputs)
        jobs = run.run()
        assert jobs["plan"].result == "success"
        plans[event] = json.loads(jobs["plan"].outputs["plan"])
    weekly, manual = plans["schedule"], plans["workflow_dispatch"]
    assert manual["skipped"] == weekly["skipped"] and manual["jobs"] == weekly["jobs"] == []
    assert manual["notes"] == ["LLAMA_CPP_VERSION is empty: decided as the weekly run does: " + WEEKLY]
    scheduled_text, manual_text = posted(slack)
    assert scheduled_text.split("\n")[2:] == manual_text.split("\n")[2:]  # same skips, same reasons
    # Naming the release builds what it names: the missing tarball fails the run, naming it.
    run = workflow(repository, tmp_path, api, "workflow_dispatch", variables_setup(slack.url),
                   LLAMA_CPP_VERSION="b9300")  # fmt: skip
    api.route(tag_path("b9300"), Answer(body=release("b9300", NO_TARBALL_FOR_ITS_ARCHITECTURES)))
    assert run.run()["plan"].result == "failure"


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [({"LLAMA_CPP_VERSION": "b9300"}, "the plan failed (exit 6): the release lacks tarballs these targets need"),
     ({"LLAMA_CPP_VERSION": "b9300", "CUDA_VERSION": "twelve"},
      "the plan failed (exit 2): --cuda-version: 'twelve' is not a CUDA version")],
    ids=["exit-6-missing-tarball", "exit-2-bad-input"],
)  # fmt: skip
def test_a_failed_plan_posts_its_reason_to_slack_without_secrets(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback], inputs: dict[str, str], reason: str
) -> None:
    """What a user met: "failed before it published anything", the reason left in the log."""
    api, slack = services
    api.route(tag_path("b9300"), Answer(body=release("b9300", NO_TARBALL_FOR_ITS_ARCHITECTURES)))
    jobs = workflow(repository, tmp_path, api, "workflow_dispatch", reference_setup(slack.url), **inputs).run()
    assert jobs["plan"].result == "failure"
    assert (jobs["build"].result, jobs["merge"].result) == ("skipped", "skipped")
    [text] = posted(slack)
    assert ":x: Build llama.cpp images: failure" in text and reason in text
    assert "failed before it published anything" not in text
    assert_no_secret_in(posted(slack))


def test_a_failed_build_job_names_its_target_platform_and_cause_in_the_summary_and_on_slack(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback]
) -> None:
    """Issue 25: with a failing build, the merge and Slack said only "no digest for linux/amd64,
    linux/arm64 (that job failed or did not run)"; the cause was in the build step's log alone.
    Here the release loses its tarballs between the plan and the build jobs (exit 6)."""
    api, slack = services
    api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
    run = workflow(repository, tmp_path, api, "workflow_dispatch", reference_setup(slack.url),
                   LLAMA_CPP_VERSION="b9300", MULTI_ARCH=True)  # fmt: skip
    run.jobs["plan"] = run.run_job("plan")
    assert run.jobs["plan"].outputs["publish"] == "true", run.jobs["plan"].runs[0].steps
    api.route(tag_path("b9300"), Answer(body=release("b9300", NO_TARBALL_FOR_ITS_ARCHITECTURES)))
    for name in ("build", "merge"):
        run.jobs[name] = run.run_job(name)
    assert (run.jobs["build"].result, run.jobs["merge"].result) == ("failure", "failure")
    [text] = posted(slack)
    summary = "".join(path.read_text() for path in sorted(tmp_path.glob("run-*/jobs/merge-0-output-*-summary.md")))
    assert ":x: Build llama.cpp images: failure" in text and "**Failed**" in summary
    for job_run in run.jobs["build"].runs:
        assert job_run.matrix is not None
        platform = job_run.matrix["platform"]
        [step] = [s for s in job_run.steps if s.name == "Build and push by digest"]
        assert step.outcome == "failure"
        # The task's own error line, as the build step printed it, with its exit code.
        printed = " ".join(line.strip() for line in step.output.split("error: ", 1)[1].splitlines() if line.strip())
        assert printed.startswith("the release lacks tarballs these targets need")
        for target in (CUDA.id, CUDA.base.id):
            line = f"{target} [{platform}]: the build job failed (exit 6): {printed}"
            assert line in text and line in summary, (line, text)
        [upload] = [s for s in job_run.steps if "upload-artifact" in s.name]
        assert upload.outcome == "success"  # the reason travels even though the job failed
    assert "no digest" not in text
    assert_no_secret_in(posted(slack))


def test_the_reference_secrets_setup_plans_the_jobs_and_images_that_variables_plan(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback]
) -> None:
    """What a user met: a fork with the three secrets stopped with exit 2. Now the plan's outputs
    name no image (GitHub drops an output holding a secret's value), and each build job derives
    the image from its own environment: the same jobs and images either way."""
    from llama_images.core.options import parse_selection
    from llama_images.core.workflow import job_values
    from tests.matrices import selected

    api, slack = services
    api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
    outputs, images = [], []
    for setup in (reference_setup(slack.url), variables_setup(slack.url)):
        run = workflow(repository, tmp_path, api, "workflow_dispatch", setup, LLAMA_CPP_VERSION="b9300",
                       MULTI_ARCH=True)  # fmt: skip
        plan = run.run(only=["plan"])["plan"]
        assert plan.result == "success" and plan.dropped_outputs == [], plan.runs[0].steps
        assert plan.outputs["publish"] == "true"
        outputs.append(plan.outputs)
        assert run.names("build") == [f"build {JOB}-amd64", f"build {JOB}-arm64"]
        [step] = [s for s in run.definition["jobs"]["build"]["steps"] if s.get("name") == "Build and push by digest"]
        for entry in run.matrix_entries("build"):
            assert entry is not None
            env = run.expand("build", step["env"], entry)
            assert json.loads(env["JOB"])["target"] == CUDA.id
            targets = selected(parse_selection(repository, job_values(entry["selection"], env)))
            images.append([(t.image, t.platforms) for t in targets])
    assert outputs[0] == outputs[1]
    assert "someone" not in json.dumps(outputs[0])
    assert images[:2] == images[2:]
    someone = shipped.target("cuda", release="b9300", namespace="someone")
    assert images[0] == [(someone.base.image, ("linux/amd64",)), (someone.image, ("linux/amd64",))]


def test_runs_of_the_newest_release_are_named_by_it_in_jobs_and_artifacts(tmp_path: Path) -> None:
    """What a user met: `...latest...` in job names, artifact names and the plan's targets."""
    api_context = serve(Loopback())
    with api_context as api:
        api.route(RELEASES_PATH, Answer(body=[release("b9300", shipped.tarballs())]))
        output = tmp_path / "outputs"
        env = {"GITHUB_API_URL": api.url, "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output),
               "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}  # fmt: skip
        planned = invoke_task(env, "plan", "--release", "latest", "--filter", "cuda/*", "--namespace", "someone")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert [job["target"] for job in plan["jobs"]] == [CUDA.id] * 2
    assert set(plan["targets"]) == {CUDA.base.id, CUDA.id}
    assert "latest" not in json.dumps(plan["jobs"]) + json.dumps(plan["targets"])
    run = Workflow(PUBLISHING, REPO_ROOT, tmp_path / "run", "workflow_dispatch")
    from tests.support.workflow_runner import JobResult, read_outputs

    run.jobs["plan"] = JobResult("success", read_outputs(output))
    assert run.names("build") == [f"build {JOB}-amd64", f"build {JOB}-arm64"]
    [upload] = [s for s in run.definition["jobs"]["build"]["steps"] if "upload-artifact" in s.get("uses", "")]
    names = [run.expand("build", upload["with"], entry)["name"] for entry in run.matrix_entries("build")]
    assert names == [f"digests-{JOB}-amd64", f"digests-{JOB}-arm64"]


def test_merge_and_notify_never_run_after_a_cancelled_run(
    repository: Path, tmp_path: Path, services: tuple[Loopback, Loopback]
) -> None:
    """What a user met: merge ran with `always()`, so also after Cancel. It still runs when some
    build failed (their tags are not created, and the report says so)."""
    from tests.support.workflow_runner import JobResult

    api, slack = services
    api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
    run = workflow(repository, tmp_path, api, "workflow_dispatch", variables_setup(slack.url),
                   LLAMA_CPP_VERSION="b9300")  # fmt: skip
    jobs = run.run(cancel_after="plan")
    assert jobs["plan"].outputs["publish"] == "true"
    assert (jobs["build"].result, jobs["merge"].result) == ("skipped", "skipped")
    assert slack.received == []  # the plan had jobs: its own notification left the run to the merge
    run.cancelled = False
    run.jobs["build"] = JobResult("failure")
    assert run.job_should_run("merge")
    merge_steps = run.definition["jobs"]["merge"]["steps"]
    [notify] = [s for s in merge_steps if s.get("name") == "Notify Slack"]
    run.cancelled = True
    assert not run.job_should_run("merge")
    from tests.support.workflow_runner import condition

    assert not condition(notify["if"], run.context({}, False, True))
    run.cancelled = False
    assert condition(notify["if"], run.context({}, False, True))  # after a failed merge step


def invoke_task(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
