"""The invoke tasks as a user runs them (no engine needed for these)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llama_images.core.bake import bake_name, packages_name
from tests import shipped
from tests.conftest import REPO_ROOT


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def test_every_task_is_listed_with_its_summary() -> None:
    listing = invoke("--list").stdout
    for task in ("engine", "matrix", "bake", "build"):
        line = next((line for line in listing.splitlines() if line.strip().startswith(task + " ")), "")
        assert len(line.split()) > 3, f"{task} has no summary in:\n{listing}"


def test_matrix_lists_the_shipped_targets_with_tags_and_upstreams() -> None:
    result = invoke("matrix")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    cpu, cuda = shipped.target("cpu"), shipped.target("cuda")
    assert rows[cpu.id] == [cpu.image, cpu.base.upstream.image, ",".join(cpu.platforms)]
    assert rows[cuda.id][:2] == [cuda.image, cuda.base.upstream.image]
    assert "docker.io/" in cpu.image and ":" in cpu.base.upstream.image


def test_bake_prints_the_default_targets_and_honours_overrides() -> None:
    default = json.loads(invoke("bake", "--print").stdout)
    assert default["group"]["default"]["targets"] == shipped.default_bake_names()
    custom = invoke("bake", "--filter", shipped.flavor_glob("cuda"), "--tag", "my-build", "--repository", "mine")
    cuda = shipped.target("cuda", custom_tag="my-build", repository="mine")
    assert cuda.tag.startswith("my-build-")
    assert json.loads(custom.stdout)["target"][bake_name(cuda.id)]["tags"] == [cuda.image]


def test_bad_option_values_exit_2_without_traceback() -> None:
    for args, message in (
        (("matrix", "--platform", "amd64"), "--platform: 'amd64' is not a platform"),
        (("matrix", "--filter", "gpu/*"), "--filter 'gpu/*' matches no target"),
    ):
        result = invoke(*args)
        assert result.returncode in (2, 3), result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


# ---- what a new user met (issue 7), kept as tests -------------------------------------------


def test_empty_overrides_are_errors_not_fallbacks() -> None:
    for task in ("matrix", "bake", "build", "plan", "release"):
        result = invoke(task, "--namespace", "")
        assert result.returncode == 2, (task, result.stdout, result.stderr)
        assert "--namespace is empty; leave the option out" in result.stderr
        assert "Traceback" not in result.stderr
    assert invoke("bake", "--filter", "").returncode == 2
    assert "--platform is empty" in invoke("bake", "--platform", "").stderr


def test_bake_output_into_a_missing_folder_is_a_clear_error() -> None:
    result = invoke("bake", "--output", "/nonexistent/x.json")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --output /nonexistent/x.json: folder /nonexistent does not exist"


def test_every_selecting_task_takes_the_same_selection_options() -> None:
    from llama_images.cli.tasks import TASKS
    from llama_images.core.options import SELECTION

    for spec in TASKS:
        names = {o.name for o in spec.options}
        if names & {o.name for o in SELECTION}:
            assert {o.name for o in SELECTION} <= names, spec.name
    help_text = invoke("build", "--help").stdout
    assert "--load" not in help_text  # loading is what a build without --push does
    for option in SELECTION:
        assert option.flag in help_text


def test_build_checks_its_options_before_touching_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_images.cli.tasks import TaskFailed, run
    from llama_images.edges import engine

    def no_engine(*args: object) -> None:
        raise AssertionError("the engine was provisioned before the options were checked")

    monkeypatch.setattr(engine, "provision", no_engine)
    monkeypatch.setattr(engine, "require_builder", no_engine)
    bad_options: list[dict[str, Any]] = [
        {"namespace": ""},
        {"platform": "amd64"},
        {"filter": ["gpu/*"]},
        {"by_digest": True},
        {"skip_existing": True},
        {"builder": "farm", "report": "/nonexistent/r.json", "push": True},
    ]
    for values in bad_options:
        with pytest.raises(TaskFailed) as caught:
            run("build", REPO_ROOT, values)
        assert caught.value.code in (2, 3), values


def test_bake_push_renders_what_build_push_builds(tmp_path: Path) -> None:
    """Both publish with each release's checksums: `bake --push` shows the file `build --push` runs."""
    from tests.support.loopback import Answer, Loopback, release, serve, sha256_of, tag_path

    cuda = shipped.target("cuda")
    with serve(Loopback()) as api:
        api.route(tag_path(cuda.release), Answer(body=release(cuda.release, shipped.tarballs())))
        env = {"GITHUB_API_URL": api.url}
        pushed = invoke_env(env, "bake", "--push", "--filter", "cuda/*")
        assert pushed.returncode == 0, pushed.stderr
        args = json.loads(pushed.stdout)["target"][bake_name(cuda.id)]["args"]
        assert args["LLAMA_CPP_SHA256_ARM64"] == sha256_of(cuda.release, cuda.binary_cuda or "", "arm64")
        by_digest = json.loads(invoke_env(env, "bake", "--push", "--by-digest", "--filter", "cuda/*").stdout)
        target = by_digest["target"][bake_name(cuda.id)]
        assert "tags" not in target
        repository = cuda.image.rsplit(":", 1)[0]
        assert target["output"] == [f"type=image,name={repository},push-by-digest=true,name-canonical=true,push=true"]
        # The base's packages stage is only the derivative's build context: never pushed.
        assert "output" not in by_digest["target"][packages_name(cuda.base)]


def invoke_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


# The user and namespace as repository variables (here the usual case: the user's own namespace),
# the token a secret; nothing stored the reference's way.
WORKFLOW_SETTINGS = {"DOCKERHUB_NAMESPACE": "someone", "DOCKERHUB_USERNAME": "someone", "DOCKERHUB_TOKEN": "pw",
                     "DOCKERHUB_NAMESPACE_SECRET": "", "DOCKERHUB_USERNAME_SECRET": ""}  # fmt: skip


def test_plan_skips_publishing_with_a_notice_when_settings_are_missing(tmp_path: Path) -> None:
    outputs, summary, report = tmp_path / "out", tmp_path / "summary.md", tmp_path / "report.json"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_EVENT_NAME": "schedule", **dict.fromkeys(WORKFLOW_SETTINGS, "")}  # fmt: skip
    result = invoke_env(env, "plan", "--workflow", "--report", str(report))
    assert result.returncode == 0, result.stderr
    notice = ("::notice title=Publishing skipped::missing secret DOCKERHUB_TOKEN and DOCKERHUB_USERNAME, "
              "DOCKERHUB_NAMESPACE (each a repository variable or secret): publishing is skipped")  # fmt: skip
    assert notice in result.stdout
    lines = outputs.read_text().splitlines()
    assert lines[lines.index(next(line for line in lines if line.startswith("publish<<"))) + 1] == "false"
    assert "Publishing skipped" in summary.read_text()
    assert json.loads(report.read_text())["status"] == "nothing to publish"  # posted by `invoke notify`


def test_a_manual_workflow_run_plans_one_native_job_per_target_and_platform(tmp_path: Path) -> None:
    from llama_images.core.options import parse_selection
    from llama_images.core.workflow import job_values
    from tests.matrices import selected
    from tests.support.loopback import Answer, Loopback, release, serve, tag_path

    with serve(Loopback()) as api:
        api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
        result = invoke_env(workflow_env(api.url, LLAMA_CPP_VERSION="b9300"), "plan", "--workflow")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    cuda = shipped.target("cuda", release="b9300", namespace="someone")
    assert cuda.platforms == ("linux/amd64", "linux/arm64")  # MULTI_ARCH: both, each on its own runner
    assert [(j["target"], j["platform"], j["runner"]) for j in plan["jobs"]] == [
        (cuda.id, "linux/amd64", "ubuntu-24.04"),
        (cuda.id, "linux/arm64", "ubuntu-24.04-arm"),
    ]
    assert plan["targets"] == {cuda.base.id: list(cuda.platforms), cuda.id: list(cuda.platforms)}
    assert "someone" not in result.stdout  # the plan names no image: each job adds the namespace
    # Each job's selection builds exactly its target and platform, at the resolved release.
    selection = job_values(plan["jobs"][1]["selection"], WORKFLOW_SETTINGS)
    targets = selected(parse_selection(REPO_ROOT, selection))
    assert [(t.id, t.platforms) for t in targets] == [(cuda.base.id, ("linux/arm64",)), (cuda.id, ("linux/arm64",))]
    assert targets[1].image == cuda.image


def test_a_tag_missing_a_planned_platform_is_not_created() -> None:
    from llama_images.core.publishing import DigestRecord, plan_merges

    amd64 = DigestRecord("cpu/x/b1", "r/ns/llama-cpp:b1-cpu", "linux/amd64", "sha256:" + "1" * 64)
    arm64 = DigestRecord("cpu/x/b1", "r/ns/llama-cpp:b1-cpu", "linux/arm64", "sha256:" + "2" * 64)
    merges, incomplete = plan_merges([amd64, arm64], {"cpu/x/b1": ["linux/amd64", "linux/arm64"]})
    assert [m.platforms for m in merges] == [("linux/amd64", "linux/arm64")]
    assert merges[0].image == "r/ns/llama-cpp:b1-cpu"
    assert merges[0].sources[1].reference == "r/ns/llama-cpp@sha256:" + "2" * 64
    merges, incomplete = plan_merges([amd64], {"cpu/x/b1": ["linux/amd64", "linux/arm64"]})
    assert merges == [] and incomplete[0].missing == ("linux/arm64",)
    assert incomplete[0].name == "r/ns/llama-cpp:b1-cpu (cpu/x/b1)"
    # No platform's job left a record: the target is named (the plan names no image).
    merges, incomplete = plan_merges([], {"cpu/x/b1": ["linux/amd64"]})
    assert incomplete[0].name == "cpu/x/b1"


def test_a_missing_platform_is_explained_by_its_jobs_failure_record_the_base_too() -> None:
    from llama_images.core.job_failures import failure_from_json, job_failure, missing_platform_lines
    from llama_images.core.publishing import Job, plan_merges

    amd64 = Job("cpu/x/b1", "linux/amd64", {})
    failure = job_failure(amd64, 5, "upstream u (x) cannot be reached\n  fix: pull it, token s3cr3t", ["s3cr3t"])
    assert failure.reason == "upstream u (x) cannot be reached fix: pull it, token ***"
    assert failure_from_json(json.loads(json.dumps(failure.as_json()))) == failure
    expected = {"base/x": ["linux/amd64", "linux/arm64"], "cpu/x/b1": ["linux/amd64", "linux/arm64"]}
    _, incomplete = plan_merges([], expected)
    assert missing_platform_lines(incomplete, [failure]) == [
        "base/x [linux/amd64]: the build job failed (exit 5): upstream u (x) cannot be reached fix: pull it, token ***",
        "base/x: no digest for linux/arm64 (that job failed before it recorded why, or did not run; see its log)",
        "cpu/x/b1 [linux/amd64]: the build job failed (exit 5): upstream u (x) cannot be reached fix: pull it, "
        "token ***",
        "cpu/x/b1: no digest for linux/arm64 (that job failed before it recorded why, or did not run; see its log)",
    ]
    broken_records: list[object] = [[], {"target": "cpu/x/b1"}, {**failure.as_json(), "exit_code": "five"},
                                    {**failure.as_json(), "platform": "amd64 x"}]  # fmt: skip
    for broken in broken_records:
        with pytest.raises(ValueError, match=r"not a job failure record|not a platform"):
            failure_from_json(broken)


def workflow_env(api_url: str, **changes: str) -> dict[str, str]:
    return {"GITHUB_API_URL": api_url, "GITHUB_ACTIONS": "", "GITHUB_EVENT_NAME": "workflow_dispatch",
            "TARGETS": "cuda/*", "MULTI_ARCH": "true", "LLAMA_CPP_VERSION": "", "CUDA_VERSION": "",
            "DOCKERHUB_REPO": "", "CUSTOM_IMAGE_TAG": "", **WORKFLOW_SETTINGS, **changes}  # fmt: skip


@pytest.mark.parametrize("name", ["DOCKERHUB_NAMESPACE", "DOCKERHUB_USERNAME"])
def test_a_setting_stored_as_both_a_variable_and_a_secret_with_two_values_is_refused(name: str) -> None:
    result = invoke_env(workflow_env("http://127.0.0.1:9", **{f"{name}_SECRET": "someone-else"}), "plan", "--workflow")
    assert result.returncode == 2, result.stderr
    assert f"{name} is both a repository variable and a repository secret, with different values" in result.stderr
    assert "someone-else" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("secret", "changes", "fix"),
    [("DOCKERHUB_TOKEN", {"DOCKERHUB_TOKEN": "hunter2-pw", "CUSTOM_IMAGE_TAG": "hunter2-pw"}, "change DOCKERHUB_TOKEN"),
     ("DOCKERHUB_NAMESPACE", {"DOCKERHUB_NAMESPACE": "", "DOCKERHUB_NAMESPACE_SECRET": "llama"},
      "store DOCKERHUB_NAMESPACE as a repository variable")],
    ids=["token-in-a-tag", "namespace-inside-a-repository-name"],
)  # fmt: skip
def test_plan_outputs_holding_a_secret_value_fail_instead_of_vanishing(
    tmp_path: Path, secret: str, changes: dict[str, str], fix: str
) -> None:
    """A secret's value inside a tag or a repository name (`llama` in `llama-cpp`): GitHub would
    drop the matrix; the plan says why and how to fix it, never the value."""
    from tests.support.loopback import Answer, Loopback, release, serve, tag_path

    outputs = tmp_path / "out"
    value = next(v for k, v in changes.items() if k.startswith("DOCKERHUB_") and v)
    with serve(Loopback()) as api:
        api.route(tag_path("b9300"), Answer(body=release("b9300", shipped.tarballs())))
        env = workflow_env(api.url, LLAMA_CPP_VERSION="b9300", GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(outputs),
                           **changes)  # fmt: skip
        result = invoke_env(env, "plan", "--workflow")
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"the value of the secret {secret} appears in the plan's outputs" in error and fix in error
    assert value not in error
    assert not outputs.exists()  # nothing half-written


def test_by_digest_with_several_platforms_fails_before_anything_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_images.cli.tasks import TaskFailed, run
    from llama_images.edges import engine, registry

    def untouched(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine or registry was used before --by-digest was checked")

    for module, name in ((engine, "provision"), (engine, "require_builder"), (engine, "require_engine"),
                         (registry, "logged_in")):  # fmt: skip
        monkeypatch.setattr(module, name, untouched)
    with pytest.raises(TaskFailed) as caught:
        run("build", REPO_ROOT, {"push": True, "by_digest": True, "filter": ["cpu/*"]})
    assert caught.value.code == 2


def test_tasks_without_the_docker_cli_fail_with_the_engine_exit_code(tmp_path: Path) -> None:
    """`invoke plan --skip-existing` asks the registry through docker: no CLI is exit 5, one line."""
    env = {"PATH": str(tmp_path), "REGISTRY_USERNAME": "", "REGISTRY_PASSWORD": ""}
    result = invoke_env(env, "plan", "--skip-existing", "--filter", "cpu/*")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the docker CLI is not installed")
    assert "Traceback" not in result.stderr
