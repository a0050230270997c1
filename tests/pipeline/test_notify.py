"""Slack notifications against a loopback webhook receiver: what a run published or why it
failed, within Slack's limits, with no secret in the payload or the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_images.core.report import Published, Report, Skipped, slack_payload
from tests.conftest import REPO_ROOT
from tests.support.loopback import Answer, Loopback, serve

WEBHOOK_PATH = "/services/T000/B000/webhook-secret-part"
SECRETS = {"REGISTRY_PASSWORD": "hunter2-registry", "GITHUB_TOKEN": "ghp_token_value_secret"}
RUN = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "someone/llama-images", "GITHUB_RUN_ID": "42"}


@pytest.fixture
def slack() -> Iterator[Loopback]:
    with serve(Loopback()) as receiver:
        receiver.route(WEBHOOK_PATH, Answer(200, b"ok"))
        yield receiver


def notify(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SLACK_WEBHOOK_URL", "GITHUB_ACTIONS")}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "notify", *args],
        cwd=REPO_ROOT, env={**clean, **SECRETS, **env}, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def write_report(path: Path) -> Path:
    report = Report(
        "success",
        (Published("docker.io/me/llama-cpp:b9300-cuda-12.9", "sha256:" + "a" * 64, ("linux/amd64", "linux/arm64")),),
        (Skipped("cuda/cuda-13.1/latest", "docker.io/me/llama-cpp:b9300-cuda-13.1", ("linux/amd64",), "no 13.0"),),
        run_url="https://github.com/someone/llama-images/actions/runs/42",
    )
    path.write_text(json.dumps(report.as_json()), encoding="utf-8")
    return path


def test_what_was_built_is_posted_without_secrets(slack: Loopback, tmp_path: Path) -> None:
    webhook = slack.url + WEBHOOK_PATH
    result = notify("--report", str(write_report(tmp_path / "report.json")), env={"SLACK_WEBHOOK_URL": webhook})
    assert result.returncode == 0, result.stderr
    assert "posted the run's result (success) to Slack" in result.stdout
    [posted] = slack.received
    payload = json.loads(posted.body)
    text = json.dumps(payload)
    assert "docker.io/me/llama-cpp:b9300-cuda-12.9" in text and "sha256:" + "a" * 64 in text
    assert "cuda/cuda-13.1/latest" in text and "actions/runs/42" in text
    for secret in (*SECRETS.values(), "webhook-secret-part"):
        assert secret not in text
        assert secret not in result.stdout + result.stderr


def test_a_run_that_failed_before_publishing_is_posted_with_its_link(slack: Loopback, tmp_path: Path) -> None:
    result = notify("--report", str(tmp_path / "absent.json"), env={"SLACK_WEBHOOK_URL": slack.url + WEBHOOK_PATH,
                                                                     **RUN})  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(slack.received[0].body)
    assert "failure" in payload["text"]
    assert "https://github.com/someone/llama-images/actions/runs/42" in payload["text"]


def test_unset_webhook_does_nothing_and_says_so(tmp_path: Path) -> None:
    result = notify("--report", str(write_report(tmp_path / "report.json")), env={})
    assert result.returncode == 0
    assert "SLACK_WEBHOOK_URL is not set: no Slack notification" in result.stdout


def test_a_failing_webhook_warns_and_never_fails_the_run(slack: Loopback, tmp_path: Path) -> None:
    slack.route(WEBHOOK_PATH, Answer(500, b"oops"))
    result = notify("--report", str(write_report(tmp_path / "report.json")),
                    env={"SLACK_WEBHOOK_URL": slack.url + WEBHOOK_PATH})  # fmt: skip
    assert result.returncode == 0
    assert "warning: the Slack notification failed (the server answered HTTP 500" in result.stderr
    assert "webhook-secret-part" not in result.stdout + result.stderr
    assert len(slack.received) == 3  # bounded retries
    gone = notify(env={"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/secret-path"})
    assert gone.returncode == 0 and "secret-path" not in gone.stdout + gone.stderr


def test_long_reports_stay_within_slack_limits() -> None:
    published = tuple(
        Published(f"docker.io/me/llama-cpp:b{n}-cuda-12.9", "sha256:" + f"{n:064d}", ("linux/amd64",))
        for n in range(2000)
    )
    payload = slack_payload(Report("success", published), "Build llama.cpp images")
    assert len(payload["blocks"]) <= 50
    assert all(len(block["text"]["text"]) <= 3000 for block in payload["blocks"])
    assert len(payload["text"]) <= 3000
    assert "more line(s): see the run's summary" in payload["blocks"][-1]["text"]["text"]


@pytest.mark.parametrize(
    "webhook",
    ["hooks.example/services/T000/B000/webhook-secret-part",  # no scheme: urllib's "unknown url type"
     "http://127.0.0.1:9/services/T000/B000/webhook secret-part",  # a space: http.client.InvalidURL
     "file:///services/T000/B000/webhook-secret-part"],
    ids=["no-scheme", "space", "file"],
)  # fmt: skip
def test_a_malformed_webhook_url_warns_without_naming_it(webhook: str, tmp_path: Path) -> None:
    result = notify("--report", str(write_report(tmp_path / "report.json")), env={"SLACK_WEBHOOK_URL": webhook})
    assert result.returncode == 0, result.stderr
    assert "warning: the Slack notification failed (the URL is not a valid http(s) URL)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret-part" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"[]", "a JSON list, not an object"), (b"{not json", "not JSON"), (b"\xff\xfe", "not UTF-8"),
     (b'{"published": [{"digest": "x"}]}', "an entry lacks 'image'"), (b'{"skipped": [1]}', "other than objects")],
    ids=["list", "bad-json", "bytes", "missing-key", "not-objects"],
)  # fmt: skip
def test_an_unreadable_report_is_posted_as_unreadable(
    slack: Loopback, tmp_path: Path, content: bytes, why: str
) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(content)
    result = notify("--report", str(report), env={"SLACK_WEBHOOK_URL": slack.url + WEBHOOK_PATH, **RUN})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"warning: the run's report {report} is unreadable (" in result.stderr and why in result.stderr
    text = json.loads(slack.received[0].body)["text"]
    assert "failure" in text and "is unreadable" in text and "failed before it published" not in text
    assert "actions/runs/42" in text


def test_report_from_json_refuses_what_is_not_an_object() -> None:
    from llama_images.core.report import report_from_json

    not_objects: list[object] = [[], "text", 3, None]
    for data in not_objects:
        with pytest.raises(ValueError, match="not an object"):
            report_from_json(data)


def test_a_plan_with_build_jobs_leaves_the_notification_to_the_merge(slack: Loopback, tmp_path: Path) -> None:
    """The plan job's notify step runs in every run that is not cancelled; a run that goes on to
    build is posted once, by the merge job."""
    report = tmp_path / "plan-report.json"
    report.write_text(json.dumps(Report("planned").as_json()), encoding="utf-8")
    result = notify("--report", str(report), env={"SLACK_WEBHOOK_URL": slack.url + WEBHOOK_PATH})
    assert result.returncode == 0, result.stderr
    assert "the merge job posts this run's result" in result.stdout
    assert slack.received == []


def test_a_credential_quoted_in_a_report_reaches_slack_masked(slack: Loopback, tmp_path: Path) -> None:
    """Slack masks nothing (GitHub masks only its own log): a credential in a message goes as ***."""
    report = tmp_path / "report.json"
    failed = f"the plan failed (exit 7): login refused for token {SECRETS['REGISTRY_PASSWORD']}"
    report.write_text(json.dumps(Report("failure", failed=(failed,), notes=("weekly run",)).as_json()))
    result = notify("--report", str(report), env={"SLACK_WEBHOOK_URL": slack.url + WEBHOOK_PATH})
    assert result.returncode == 0, result.stderr
    text = json.loads(slack.received[0].body)["text"]
    assert "login refused for token ***" in text and "weekly run" in text
    assert SECRETS["REGISTRY_PASSWORD"] not in slack.received[0].body.decode()
