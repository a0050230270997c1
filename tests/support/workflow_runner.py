"""A workflow file run on this machine as GitHub Actions runs it: jobs in `needs` order, job and
step `if:` conditions with GitHub's status functions (a condition without one means
`success() && ...`), `${{ }}` expressions over inputs, vars, secrets, needs, matrix and steps,
strategy matrices from a job's outputs, step outputs from $GITHUB_OUTPUT, job outputs dropped when
they hold the value of a secret the job uses ("Skip output ... since it may contain secret"),
artifacts passed between jobs, and a run cancelled after a chosen job.

Run steps execute for real (the invoke tasks); each job (and each matrix entry) works in a fresh
copy of the repository, as `actions/checkout` gives it. The other actions this project uses are
stand-ins: setup-python and setup-buildx are the machine itself, upload/download-artifact copy
folders. `python -m pip install -e .` is skipped: the test's environment has the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GITHUB_TOKEN = "ghs_simulated_workflow_token_0123456789"
STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")
SKIPPED_RUN_STEPS = ("python -m pip install -e .",)

# ---- expressions ----------------------------------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!().,\[\]])"
                   r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")  # fmt: skip


class ExpressionError(ValueError):
    pass


def tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(text.rstrip()):
        match = TOKEN.match(text, position)
        if not match:
            raise ExpressionError(f"cannot read {text[position:]!r} in {text!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


@dataclass
class Context:
    values: dict[str, Any]
    functions: dict[str, Callable[..., Any]]


def truthy(value: Any) -> bool:
    return value not in (None, False, "", 0)


def loosely_equal(left: Any, right: Any) -> bool:
    """GitHub compares strings ignoring case."""
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    return bool(left == right)


class Parser:
    """GitHub's expression grammar, as much of it as workflows use: literals, property access,
    function calls, !, ==, !=, && and || (which return an operand, as GitHub's do)."""

    def __init__(self, text: str, context: Context) -> None:
        self.items = tokens(text)
        self.position = 0
        self.context = context
        self.text = text

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.position] if self.position < len(self.items) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        item = self.peek()
        if item is None or (value is not None and item[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in {self.text!r}")
        self.position += 1
        return item

    def parse(self) -> Any:
        value = self.either()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()} in {self.text!r}")
        return value

    def either(self) -> Any:
        value = self.both()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.both()
            value = value if truthy(value) else right
        return value

    def both(self) -> Any:
        value = self.comparison()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.comparison()
            value = right if truthy(value) else value
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while self.peek() in (("op", "=="), ("op", "!=")):
            operator = self.take()[1]
            right = self.unary()
            equal = loosely_equal(value, right)
            value = equal if operator == "==" else not equal
        return value

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return float(text) if "." in text else int(text)
        if text == "(":
            value = self.either()
            self.take(")")
            return value
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r} in {self.text!r}")
        if self.peek() == ("op", "("):
            return self.call(text)
        literals: dict[str, Any] = {"true": True, "false": False, "null": None}
        return literals[text] if text in literals else self.context.values.get(text)

    def call(self, name: str) -> Any:
        self.take("(")
        arguments = []
        while self.peek() != ("op", ")"):
            arguments.append(self.either())
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        function = self.context.functions.get(name.lower())
        if function is None:
            raise ExpressionError(f"unknown function {name} in {self.text!r}")
        return function(*arguments)

    def postfix(self, value: Any) -> Any:
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.either()
                self.take("]")
            value = value.get(key) if isinstance(value, Mapping) else None
        return value


def evaluate(expression: str, context: Context) -> Any:
    return Parser(expression, context).parse()


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


INTERPOLATION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def interpolate(value: Any, context: Context) -> Any:
    """A YAML value with its `${{ }}` parts evaluated; a value that is one expression keeps its type."""
    if not isinstance(value, str):
        return value
    whole = INTERPOLATION.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), context)
    return INTERPOLATION.sub(lambda m: as_text(evaluate(m.group(1), context)), value)


def condition(text: Any, context: Context) -> bool:
    """An `if:`; without a status function it means `success() && (...)`."""
    if text is None:
        return truthy(context.functions["success"]())
    if isinstance(text, bool):
        return text
    expression = str(text).strip()
    whole = INTERPOLATION.fullmatch(expression)
    if whole:
        expression = whole.group(1).strip()
    if not re.search(r"\b(" + "|".join(STATUS_FUNCTIONS) + r")\s*\(", expression):
        expression = f"success() && ({expression})"
    return truthy(evaluate(expression, context))


def functions(success: bool, failure: bool, cancelled: bool) -> dict[str, Callable[..., Any]]:
    return {
        "success": lambda: success and not cancelled,
        "failure": lambda: failure,
        "cancelled": lambda: cancelled,
        "always": lambda: True,
        "fromjson": json.loads,
        "tojson": lambda value: json.dumps(value, indent=2),
    }


# ---- outputs --------------------------------------------------------------------------------


def read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name=value` and `name<<DELIMITER` blocks."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    lines = path.read_text(encoding="utf-8").split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, index + 1)
            found[name] = "\n".join(lines[index + 1 : end])
            index = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
        index += 1
    return found


# ---- the run --------------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure, skipped
    output: str = ""


@dataclass
class JobRun:
    """One job, or one entry of its matrix."""

    name: str
    result: str  # success, failure, skipped, not run
    steps: list[StepResult] = field(default_factory=list)
    matrix: dict[str, Any] | None = None


@dataclass
class JobResult:
    result: str
    outputs: dict[str, str] = field(default_factory=dict)
    dropped_outputs: list[str] = field(default_factory=list)
    runs: list[JobRun] = field(default_factory=list)


@dataclass
class Workflow:
    """A run of `path` for one event."""

    path: Path
    repository: Path  # what actions/checkout gives each job (the tests' copy of the checkout)
    work: Path
    event: str
    inputs: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # the machine's (e.g. GITHUB_API_URL)
    # Arguments added to run steps that start with a key: what this offline machine needs that
    # GitHub's runners do not (e.g. `invoke build` --no-sbom: BuildKit's SBOM scanner image is
    # pulled from Docker Hub).
    extra_arguments: dict[str, str] = field(default_factory=dict)
    run_id: str = "4242"
    definition: dict[Any, Any] = field(init=False)
    jobs: dict[str, JobResult] = field(init=False, default_factory=dict)
    cancelled: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.definition = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        self.artifacts = self.work / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        declared = (self.definition[True].get("workflow_dispatch") or {}).get("inputs", {})
        if self.event == "workflow_dispatch":
            self.inputs = {**{k: v.get("default", "") for k, v in declared.items()}, **self.inputs}
        else:
            self.inputs = {}

    # -- contexts --

    def base_values(self) -> dict[str, Any]:
        return {
            "github": {
                "event_name": self.event,
                "token": GITHUB_TOKEN,
                "ref": "refs/heads/main",
                "server_url": "https://github.com",
                "repository": "someone/llama-images",
                "run_id": self.run_id,
            },
            "inputs": self.inputs,
            "vars": self.vars,
            "secrets": {**self.secrets, "GITHUB_TOKEN": GITHUB_TOKEN},
            "needs": {},
            "env": {},
        }

    def context(self, values: dict[str, Any], success: bool, failure: bool) -> Context:
        return Context(values, functions(success, failure, self.cancelled))

    def order(self) -> list[str]:
        jobs = self.definition["jobs"]
        done: list[str] = []
        while len(done) < len(jobs):
            for name, job in jobs.items():
                needs = job.get("needs", [])
                needs = [needs] if isinstance(needs, str) else needs
                if name not in done and all(n in done for n in needs):
                    done.append(name)
        return done

    def needs_of(self, name: str) -> list[str]:
        needs = self.definition["jobs"][name].get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    # -- running --

    def run(self, only: Iterable[str] | None = None, cancel_after: str | None = None) -> dict[str, JobResult]:
        """Every job (or those in `only`; the others do not run); with `cancel_after`, the run is
        cancelled once that job is done, as a user's Cancel button does."""
        chosen = set(only) if only is not None else None
        for name in self.order():
            if chosen is not None and name not in chosen:
                self.jobs[name] = JobResult("not run")
                continue
            self.jobs[name] = self.run_job(name)
            if name == cancel_after:
                self.cancelled = True
        return self.jobs

    def job_values(self, name: str) -> dict[str, Any]:
        values = self.base_values()
        values["needs"] = {
            n: {"result": self.jobs[n].result, "outputs": self.jobs[n].outputs} for n in self.needs_of(name)
        }
        return values

    def job_should_run(self, name: str) -> bool:
        results = [self.jobs[n].result for n in self.needs_of(name)]
        success = all(r == "success" for r in results)
        failure = any(r == "failure" for r in results)
        job = self.definition["jobs"][name]
        return condition(job.get("if"), self.context(self.job_values(name), success, failure))

    def matrix_entries(self, name: str) -> list[dict[str, Any] | None]:
        strategy = self.definition["jobs"][name].get("strategy")
        if not strategy:
            return [None]
        matrix = interpolate(strategy["matrix"], self.context(self.job_values(name), True, False))
        return list(matrix.get("include", []))

    def names(self, name: str) -> list[str]:
        """What GitHub shows for each of the job's runs (its `name:` with the matrix)."""
        values = self.job_values(name)
        shown = self.definition["jobs"][name].get("name", name)
        return [
            as_text(interpolate(shown, self.context({**values, "matrix": entry or {}}, True, False)))
            for entry in self.matrix_entries(name)
        ]

    def expand(self, name: str, value: Any, matrix: dict[str, Any] | None = None) -> Any:
        """`value` (e.g. a step's `env:` or `with:` entry) as job `name` sees it."""
        values = {**self.job_values(name), "matrix": matrix or {}}
        if isinstance(value, dict):
            return {k: as_text(interpolate(v, self.context(values, True, False))) for k, v in value.items()}
        return interpolate(value, self.context(values, True, False))

    def run_job(self, name: str) -> JobResult:
        job = self.definition["jobs"][name]
        if not self.job_should_run(name):
            return JobResult("skipped")
        result = JobResult("success")
        used_secrets = {*re.findall(r"secrets\.([A-Za-z0-9_]+)", yaml.safe_dump(job)), "GITHUB_TOKEN"}
        step_outputs: dict[str, dict[str, str]] = {}
        for entry in self.matrix_entries(name):
            values = {**self.job_values(name), "matrix": entry or {}}
            workspace = self.work / "jobs" / f"{name}-{len(result.runs)}"
            shown = as_text(interpolate(job.get("name", name), self.context(values, True, False)))
            job_run = JobRun(shown, "success", matrix=entry)
            step_outputs = self.run_steps(job, values, workspace, job_run)
            result.runs.append(job_run)
            if job_run.result != "success":
                result.result = "failure"
        values = {**self.job_values(name), "steps": {k: {"outputs": v} for k, v in step_outputs.items()}}
        known = {**self.secrets, "GITHUB_TOKEN": GITHUB_TOKEN}
        secret_values = [value for key, value in known.items() if key in used_secrets and value]
        for output, expression in (job.get("outputs") or {}).items():
            value = as_text(interpolate(expression, self.context(values, True, False)))
            if any(secret in value for secret in secret_values):
                result.dropped_outputs.append(output)  # GitHub: "Skip output ... may contain secret"
                continue
            result.outputs[output] = value
        return result

    def run_steps(
        self, job: dict[str, Any], values: dict[str, Any], workspace: Path, job_run: JobRun
    ) -> dict[str, dict[str, str]]:
        workflow_env = {k: as_text(interpolate(v, self.context(values, True, False)))
                        for k, v in (self.definition.get("env") or {}).items()}  # fmt: skip
        outputs: dict[str, dict[str, str]] = {}
        failed = False
        workspace.mkdir(parents=True, exist_ok=True)
        for index, step in enumerate(job.get("steps", [])):
            step_values = {**values, "steps": {k: {"outputs": v} for k, v in outputs.items()}, "env": workflow_env}
            label = step.get("name") or step.get("uses") or step.get("run", "")
            if not condition(step.get("if"), self.context(step_values, not failed, failed)):
                job_run.steps.append(StepResult(label, "skipped"))
                continue
            env = {k: as_text(interpolate(v, self.context(step_values, True, False)))
                   for k, v in (step.get("env") or {}).items()}  # fmt: skip
            output_file = workspace.parent / f"{workspace.name}-output-{index}"
            if "uses" in step:
                outcome, text = self.use(step, step_values, workspace)
            else:
                outcome, text = self.shell(step["run"], {**workflow_env, **env}, workspace, output_file)
            if step.get("id"):
                outputs[step["id"]] = read_outputs(output_file)
            job_run.steps.append(StepResult(label, outcome, text))
            failed = failed or outcome == "failure"
        job_run.result = "failure" if failed else "success"
        return outputs

    def shell(self, command: str, env: dict[str, str], workspace: Path, output_file: Path) -> tuple[str, str]:
        if command.strip() in SKIPPED_RUN_STEPS:
            return "success", "(installed already)"
        for prefix, extra in self.extra_arguments.items():
            if command.startswith(prefix):
                command = f"{command} {extra}"
        runner_env = {
            **os.environ,
            **self.environment,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_EVENT_NAME": self.event,
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(output_file) + "-summary.md",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "someone/llama-images",
            "GITHUB_RUN_ID": self.run_id,
            **env,
        }
        done = subprocess.run(
            ["bash", "-e", "-c", command], cwd=workspace, env=runner_env, capture_output=True, text=True,
            timeout=3600, check=False,
        )  # fmt: skip
        return ("success" if done.returncode == 0 else "failure"), done.stdout + done.stderr

    def use(self, step: dict[str, Any], values: dict[str, Any], workspace: Path) -> tuple[str, str]:
        action = step["uses"].split("@", 1)[0]
        given = {k: interpolate(v, self.context(values, True, False)) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            shutil.copytree(self.repository, workspace, dirs_exist_ok=True)
            return "success", "checked out"
        if action in ("actions/setup-python", "docker/setup-buildx-action"):
            return "success", "this machine"
        if action == "actions/upload-artifact":
            source = workspace / str(given["path"])
            if not source.exists() or not any(source.iterdir()):
                return ("failure" if given.get("if-no-files-found") == "error" else "success"), "no files"
            shutil.copytree(source, self.artifacts / str(given["name"]), dirs_exist_ok=True)
            return "success", f"uploaded {given['name']}"
        if action == "actions/download-artifact":
            destination = workspace / str(given["path"])
            destination.mkdir(parents=True, exist_ok=True)
            pattern = re.compile(str(given["pattern"]).replace("*", ".*"))
            found = [d for d in sorted(self.artifacts.iterdir()) if pattern.fullmatch(d.name)]
            for folder in found:
                target = destination if given.get("merge-multiple") else destination / folder.name
                shutil.copytree(folder, target, dirs_exist_ok=True)
            return "success", f"downloaded {len(found)} artifact(s)"
        return "failure", f"no stand-in for {action}"
