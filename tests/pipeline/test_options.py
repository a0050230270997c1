"""The options table (core/options.py) is the one declaration of every task option: the checks,
the overrides, the workflow's inputs and the values that travel between tasks (a plan's jobs, the
plan itself) all follow from it and come back unchanged."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from llama_images.cli.tasks import TASKS
from llama_images.core.errors import UsageError
from llama_images.core.options import (
    OPTION,
    OPTIONS,
    SELECTION,
    Overrides,
    Request,
    parse_request,
    parse_selection,
)
from llama_images.core.publishing import Job, PublishingPlan, job_from_json, plan_from_json, publishing_plan
from llama_images.core.releases import Release, parse_release
from llama_images.core.report import Skipped, compact_json
from llama_images.core.workflow import INPUTS, workflow_run
from tests.conftest import REPO_ROOT
from tests.matrices import VALID, planned
from tests.support.loopback import CURRENT
from tests.support.loopback import release as release_payload

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "build-llama-cpp.yml"


def test_each_override_is_filled_by_exactly_one_option() -> None:
    filled = [option.fills for option in OPTIONS if option.fills]
    assert sorted(filled) == sorted(field.name for field in fields(Overrides))


def test_each_task_takes_its_options_from_the_table() -> None:
    for spec in TASKS:
        assert all(OPTION[option.name] is option for option in spec.options), spec.name
        assert len({option.name for option in spec.options}) == len(spec.options), spec.name


def test_a_request_left_alone_has_the_tables_defaults(tmp_path: Path) -> None:
    request = parse_request(tmp_path, {})
    for name in ("push", "by_digest", "sbom", "skip_existing", "skip_unavailable"):
        assert getattr(request, name) == OPTION[name].default
    assert request.selection.matrix_file == tmp_path / OPTION["matrix"].default


@pytest.mark.parametrize(
    ("values", "message"),
    [({"release": "9159"}, "--release: '9159' is not a release tag"),
     ({"platform": "linux/amd64,,linux/arm64"}, "--platform 'linux/amd64,,linux/arm64' has an empty entry"),
     ({"filter": ["cpu/*", " "]}, "--filter is empty"),
     ({"namespace": "  "}, "--namespace is empty; leave the option out to use the matrix's value"),
     ({"tag": "my tag"}, "--tag: 'my tag' is not a valid Docker tag")],
)  # fmt: skip
def test_values_are_checked_and_named_by_their_option(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_selection(tmp_path, values)


def test_a_selection_survives_its_trip_through_option_values(tmp_path: Path) -> None:
    """What a fan-out job is handed selects the same targets again."""
    given = {"matrix": "other.yaml", "filter": ["cpu/*", "cuda/*"], "platform": "linux/arm64", "release": "b1",
             "cuda_version": "12.8", "repository": "r", "tag": "t", "registry": "127.0.0.1:5000",
             "namespace": "n"}  # fmt: skip
    selection = parse_selection(tmp_path, given)
    assert selection.overrides == Overrides(("linux/arm64",), "b1", "12.8", "r", "t", "127.0.0.1:5000", "n")
    assert selection.as_values(tmp_path) == {**given, "filter": ["cpu/*", "cuda/*"]}
    assert parse_selection(tmp_path, selection.as_values(tmp_path)) == selection


def test_a_job_survives_its_json(tmp_path: Path) -> None:
    job = Job("cuda/cuda-12.9/b9300", "linux/arm64", {"filter": ["cuda/cuda-12.9/b9300"], "platform": "linux/arm64"})
    data = json.loads(json.dumps(job.as_json()))
    assert data["name"] == "cuda_cuda-12_9_b9300-arm64" and data["runner"] == "ubuntu-24.04-arm"
    assert job_from_json(data) == job
    with pytest.raises(ValueError, match="unknown option"):
        job_from_json({**data, "selection": {"push": True}})


def test_the_publishing_plan_survives_its_json(tmp_path: Path) -> None:
    """`invoke plan` writes it (a file, and the compact step output); `invoke merge` reads it."""
    path = tmp_path / "matrix.yaml"
    path.write_text(VALID, encoding="utf-8")

    def fetch(repository: str, tag: str) -> Release:
        return parse_release(release_payload(tag if tag != "latest" else "b9300", CURRENT))

    request = parse_request(tmp_path, {"filter": ["*"], "release": "latest", "push": True, "skip_unavailable": True})
    plan = planned(request, fetch)
    published = publishing_plan(plan, request, ("a note",), with_namespace=False)
    assert published.jobs and published.targets and published.releases
    assert plan_from_json(json.dumps(published.as_json(), indent=2)) == published
    assert plan_from_json(published.outputs()["plan"]) == published
    assert json.loads(published.outputs()["matrix"])["include"] == [job.as_json() for job in published.jobs]
    skipped = PublishingPlan(skipped=(Skipped("cpu/x/b1", "", ("linux/amd64",), "why"),), notes=("n",))
    assert plan_from_json(compact_json(skipped.as_json())) == skipped
    for broken in ("", "[]", '{"jobs": []}', '{"targets": {"a": 1}}'):
        with pytest.raises(ValueError):
            plan_from_json(broken)


def test_the_workflow_has_exactly_the_inputs_the_options_name_with_their_defaults() -> None:
    inputs = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))[True]["workflow_dispatch"]["inputs"]
    assert sorted(inputs) == sorted(INPUTS)
    for option in OPTIONS:
        source = option.workflow
        if source is None or source.setting:
            continue
        default = inputs[source.name].get("default", "")
        # The form's default is what an empty input stands for (or empty), never another value.
        assert default in ("", False, source.empty), (source.name, default)
    env = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["env"]
    assert env == {name: f"${{{{ inputs.{name} }}}}" for name in INPUTS}


def test_the_workflow_inputs_fill_the_options_they_are_declared_for() -> None:
    env = {"GITHUB_EVENT_NAME": "workflow_dispatch", "LLAMA_CPP_VERSION": "b9300", "CUDA_VERSION": "12.6",
           "DOCKERHUB_REPO": "", "MULTI_ARCH": "false", "CUSTOM_IMAGE_TAG": "mine", "TARGETS": "cuda/*",
           "DOCKERHUB_NAMESPACE": "someone"}  # fmt: skip
    run = workflow_run(env)
    assert run.values == {"filter": "cuda/*", "platform": "linux/amd64", "release": "b9300", "cuda_version": "12.6",
                          "repository": "llama-cpp", "tag": "mine", "namespace": "someone"}  # fmt: skip
    assert not run.skip_existing and not run.notes
    weekly = workflow_run({**env, "GITHUB_EVENT_NAME": "schedule", "LLAMA_CPP_VERSION": "", "MULTI_ARCH": ""})
    assert weekly.values["platform"] == "linux/amd64,linux/arm64" and weekly.values["release"] == "latest"
    assert weekly.skip_existing and weekly.skip_unavailable
    assert {o.name for o in SELECTION if o.workflow is None} == {"matrix", "registry"}


def test_request_rules_hold_however_a_request_is_made(tmp_path: Path) -> None:
    selection = parse_selection(tmp_path, {})
    with pytest.raises(UsageError, match="--by-digest"):
        Request(tmp_path, selection, by_digest=True)
    with pytest.raises(UsageError, match="--no-sbom"):
        Request(tmp_path, selection, sbom=False)
    with pytest.raises(UsageError, match="--skip-existing"):
        Request(tmp_path, selection, skip_existing=True)
