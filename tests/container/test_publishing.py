"""Publishing to a registry that requires login, and the native-runner fan-out, against a loopback
registry with htpasswd that this module starts (Debian's docker-registry on a free port).

The images come from the build cache the `main_build` fixture filled: each job pushes the CPU
image for one platform by digest, and `invoke merge` creates the multi-platform tag.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from llama_images.core.bake import bake_name
from tests import shipped
from tests.conftest import REPO_ROOT
from tests.container.conftest import NAMESPACE

pytestmark = pytest.mark.container

USER = "publisher"
PASSWORD = "correct-horse-battery-staple"


@dataclass(frozen=True)
class AuthRegistry:
    address: str
    docker_config: Path  # logins made by the tests go here, not into the user's own config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    work = tmp_path_factory.mktemp("auth-registry")
    (work / "htpasswd").write_bytes(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()) + b"\n")
    address = f"127.0.0.1:{free_port()}"
    (work / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: {address}\n"
        f"auth:\n  htpasswd:\n    realm: llama-images-test\n    path: {work / 'htpasswd'}\n",
        encoding="utf-8",
    )
    log = (work / "registry.log").open("wb")
    server = subprocess.Popen(["docker-registry", "serve", str(work / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"the htpasswd registry did not start:\n{(work / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.2)
        docker_config = work / "docker-config"
        docker_config.mkdir()
        yield AuthRegistry(address, docker_config)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.fixture
def staging_images(auth_registry: AuthRegistry, client: Any) -> Iterator[list[str]]:
    """Namespaces a test pushes to: the staging tags the engine's `docker` builder keeps locally
    (`<tag>-<arch>-job`) are removed afterwards, so the shared engine does not fill up."""
    namespaces: list[str] = []
    yield namespaces
    for image in client.images.list():
        for tag in image.tags:
            if any(tag.startswith(f"{auth_registry.address}/{namespace}/") for namespace in namespaces):
                client.images.remove(tag)


def invoke_as(registry: AuthRegistry, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(registry.docker_config), "REGISTRY_USERNAME": USER,
           "REGISTRY_PASSWORD": password, "GITHUB_ACTIONS": ""}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip


def selection(registry: AuthRegistry, namespace: str) -> tuple[str, ...]:
    return ("--filter", "cpu/*", "--registry", registry.address, "--namespace", namespace)


def test_a_wrong_password_fails_before_anything_is_built(main_build: Any, auth_registry: AuthRegistry) -> None:
    result = invoke_as(auth_registry, "wrong-password", "build", *selection(auth_registry, NAMESPACE),
                       "--platform", "linux/amd64", "--push", "--no-sbom")  # fmt: skip
    assert result.returncode == 7, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"login to {auth_registry.address} as {USER} failed" in result.stderr
    assert "building" not in result.stdout
    assert "wrong-password" not in result.stdout + result.stderr


def test_an_unknown_builder_fails_before_building(main_build: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "build", "--builder", "no-such-builder", "--platform", "linux/amd64"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 5
    assert "buildx builder 'no-such-builder' is not usable" in result.stderr


def test_native_jobs_push_by_digest_and_merge_into_one_index_with_attestations(
    main_build: Any, auth_registry: AuthRegistry, tmp_path: Path, staging_images: list[str]
) -> None:
    assert main_build.returncode == 0, main_build.stdout[-3000:]
    namespace = f"{NAMESPACE}-fanout{time.time_ns()}"
    staging_images.append(namespace)
    chosen = selection(auth_registry, namespace)
    planned = invoke_as(auth_registry, PASSWORD, "plan", *chosen, "--skip-existing")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    cpu = shipped.target("cpu", registry=auth_registry.address, namespace=namespace)
    assert [(job["target"], job["platform"]) for job in plan["jobs"]] == [
        (cpu.id, "linux/amd64"),
        (cpu.id, "linux/arm64"),
    ]
    digests = tmp_path / "digests"
    for job in plan["jobs"]:
        # What each runner's job does; --builder picks buildx's builder by name (here the engine's own).
        built = invoke_as(auth_registry, PASSWORD, "build", "--job", json.dumps(job), "--push", "--by-digest",
                          "--no-sbom", "--digests", str(digests), "--builder", "default")  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        assert PASSWORD not in built.stdout + built.stderr
    assert len(list(digests.glob("*.json"))) == 4  # base and image, two platforms each
    report = tmp_path / "report.json"
    merged = invoke_as(auth_registry, PASSWORD, "merge", "--digests", str(digests), "--plan", planned.stdout,
                       "--report", str(report))  # fmt: skip
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr[-3000:]
    image = cpu.image
    published = {p["image"]: p for p in json.loads(report.read_text())["published"]}
    assert published[image]["platforms"] == ["linux/amd64", "linux/arm64"]
    # The tasks log out when they are done; look at the result with a login of the test's own.
    env = {**os.environ, "DOCKER_CONFIG": str(auth_registry.docker_config)}
    login = ["docker", "login", "--username", USER, "--password-stdin", auth_registry.address]
    subprocess.run(login, input=PASSWORD, env=env, capture_output=True, text=True, check=True)
    inspected = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", "--raw", image], env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    manifests = json.loads(inspected.stdout)["manifests"]
    attestations = [m for m in manifests if m.get("annotations", {}).get("vnd.docker.reference.type")]
    images = [m for m in manifests if m not in attestations]
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in images)
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert len(attestations) == 2  # each platform's provenance travels with the index
    # "Should we build?": the tags exist now, so next week's scheduled plan has no job.
    again = invoke_as(auth_registry, PASSWORD, "plan", *chosen, "--skip-existing")
    assert again.returncode == 0, again.stderr
    replanned = json.loads(again.stdout)
    assert replanned["jobs"] == []
    assert replanned["skipped"][0]["reason"] == "already published"


def test_a_fork_set_up_with_the_reference_secrets_publishes_through_the_workflow(
    main_build: Any, auth_registry: AuthRegistry, tmp_path: Path, staging_images: list[str]
) -> None:
    """The publishing workflow run as GitHub runs it (tests/support/workflow_runner.py) in a fork
    that keeps DOCKERHUB_USERNAME, DOCKERHUB_TOKEN and DOCKERHUB_NAMESPACE as secrets, as the
    reference's README says: the plan's outputs survive GitHub's secret filter, each build job
    receives its target and pushes under the secret namespace, the merge tags it, and Slack hears
    of it. The next scheduled run has nothing to build and posts its skips; a manual run with an
    empty LLAMA_CPP_VERSION decides the same."""
    from benchmarks.measure import copy_checkout
    from tests.support.loopback import Answer, Loopback, serve
    from tests.support.workflow_runner import Workflow

    assert main_build.returncode == 0, main_build.stdout[-3000:]
    namespace = f"{NAMESPACE}-secrets{time.time_ns()}"
    staging_images.append(namespace)
    repository = copy_checkout(REPO_ROOT, tmp_path / "repository")
    # The fork publishes to the loopback registry, its CPU images only (no GitHub here).
    document = yaml.safe_load((repository / "matrix.yaml").read_text(encoding="utf-8"))
    document["images"]["registry"] = auth_registry.address
    document["flavors"] = {"cpu": document["flavors"]["cpu"]}
    document["upstreams"] = {name: document["upstreams"][name] for name in document["flavors"]["cpu"]["upstreams"]}
    (repository / "matrix.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    webhook = "/services/T000/B000/webhook-secret-part"
    with serve(Loopback()) as slack:
        slack.route(webhook, Answer(200, b"ok"))
        secrets = {"DOCKERHUB_USERNAME": USER, "DOCKERHUB_TOKEN": PASSWORD, "DOCKERHUB_NAMESPACE": namespace,
                   "SLACK_WEBHOOK_URL": slack.url + webhook}  # fmt: skip

        def run(event: str, **inputs: Any) -> Workflow:
            workflow = Workflow(REPO_ROOT / ".github/workflows/build-llama-cpp.yml", repository,
                                tmp_path / f"run-{len(slack.received)}-{event}", event, inputs=inputs, secrets=secrets,
                                environment={"DOCKER_CONFIG": str(auth_registry.docker_config)},
                                extra_arguments={"invoke build": "--no-sbom"})  # fmt: skip
            workflow.run()
            return workflow

        first = run("workflow_dispatch", LLAMA_CPP_VERSION="")
        jobs = first.jobs
        logs = "\n".join(s.output for job in jobs.values() for r in job.runs for s in r.steps)
        assert jobs["plan"].dropped_outputs == [] and jobs["plan"].outputs["publish"] == "true", logs[-3000:]
        cpu = shipped.target(
            "cpu",
            registry=auth_registry.address,
            namespace=namespace,
            repository=shipped.workflow_default("repository"),
        )
        assert [r.name for r in jobs["build"].runs] == [f"build {bake_name(cpu.id)}-amd64",
                                                        f"build {bake_name(cpu.id)}-arm64"]  # fmt: skip
        assert jobs["build"].result == "success", logs[-5000:]
        assert jobs["merge"].result == "success", logs[-5000:]
        assert PASSWORD not in logs
        image = cpu.image
        [published] = [json.loads(r.body)["text"] for r in slack.received]
        assert ":white_check_mark: Build llama.cpp images: success" in published and f"published `{image}`" in published
        # Next week: nothing new. The run says so on Slack; a manual run with an empty version alike.
        weekly = run("schedule")
        manual = run("workflow_dispatch", LLAMA_CPP_VERSION="")
        for later in (weekly, manual):
            assert later.jobs["plan"].outputs["publish"] == "false"
            assert (later.jobs["build"].result, later.jobs["merge"].result) == ("skipped", "skipped")
        weekly_text, manual_text = (json.loads(r.body)["text"] for r in slack.received[1:])
        skip = f"skipped `{cpu.id}` (linux/amd64, linux/arm64): already published"
        assert skip in weekly_text and skip in manual_text
        assert "nothing to publish" in weekly_text
        for text in (published, weekly_text, manual_text):
            assert PASSWORD not in text and "webhook-secret-part" not in text


def test_a_failed_build_job_is_reported_with_its_target_and_cause(auth_registry: AuthRegistry, tmp_path: Path) -> None:
    """Issue 25, as a user met it: the publishing workflow with a build whose upstream cannot be
    reached (exit 5) told Slack and the merge only "no digest for linux/amd64, linux/arm64 (that
    job failed or did not run)". Now the merge's summary and Slack name the target, platform,
    exit code and the task's error line."""
    from benchmarks.measure import copy_checkout
    from tests.support.loopback import Answer, Loopback, serve
    from tests.support.workflow_runner import Workflow

    repository = copy_checkout(REPO_ROOT, tmp_path / "repository")
    document = yaml.safe_load((repository / "matrix.yaml").read_text(encoding="utf-8"))
    document["images"]["registry"] = auth_registry.address
    document["flavors"] = {"cpu": document["flavors"]["cpu"]}
    [upstream] = document["flavors"]["cpu"]["upstreams"]
    # Not Debian (no stand-in is made), on a port where nothing listens: "cannot be reached".
    unreachable = f"127.0.0.1:{free_port()}/nobody/upstream:1"
    document["upstreams"] = {upstream: {**document["upstreams"][upstream], "image": unreachable}}
    (repository / "matrix.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    webhook = "/services/T000/B000/webhook-secret-part"
    with serve(Loopback()) as slack:
        slack.route(webhook, Answer(200, b"ok"))
        secrets = {"DOCKERHUB_USERNAME": USER, "DOCKERHUB_TOKEN": PASSWORD,
                   "DOCKERHUB_NAMESPACE": f"{NAMESPACE}-failing", "SLACK_WEBHOOK_URL": slack.url + webhook}  # fmt: skip
        run = Workflow(REPO_ROOT / ".github/workflows/build-llama-cpp.yml", repository, tmp_path / "run",
                       "workflow_dispatch", inputs={"LLAMA_CPP_VERSION": ""}, secrets=secrets,
                       environment={"DOCKER_CONFIG": str(auth_registry.docker_config)},
                       extra_arguments={"invoke build": "--no-sbom"})  # fmt: skip
        jobs = run.run()
        [text] = [json.loads(r.body)["text"] for r in slack.received]
    assert (jobs["build"].result, jobs["merge"].result) == ("failure", "failure")
    cpu = shipped.target("cpu")
    summary = "".join(path.read_text() for path in sorted((tmp_path / "run").glob("jobs/merge-0-output-*-summary.md")))
    for job_run in jobs["build"].runs:
        assert job_run.matrix is not None
        [step] = [s for s in job_run.steps if s.name == "Build and push by digest"]
        error = step.output.split("error: ", 1)[1]
        assert error.startswith(f"upstream {unreachable} ({upstream}) is not in the engine and its registry cannot be")
        printed = " ".join(line.strip() for line in error.splitlines() if line.strip())
        line = f"{cpu.id} [{job_run.matrix['platform']}]: the build job failed (exit 5): {printed}"
        assert line in text and line in summary, (line, text)
    assert ":x: Build llama.cpp images: failure" in text and "no digest" not in text
    assert PASSWORD not in text and "webhook-secret-part" not in text
