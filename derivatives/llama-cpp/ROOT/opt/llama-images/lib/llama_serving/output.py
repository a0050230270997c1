"""Reading llama-server's output: its log lines, its download progress bars, the cause of a
failed start, router mode's model list, and the one line per request `docker logs` gets. Pure:
no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# "0.00.036.696 E llama_model_load: ..." (a router's child lines start with "[port] ").
LOG_LINE = re.compile(r"(?:\[\d+\] )?\d+\.\d+\.\d+\.\d+ ([IWEDT]) (?:(?:srv|cmn|slot|res|que|log|mtmd)\s+)?(.*)")
# Its progress bar, drawn when stdout is a terminal: "Downloading tiny-Q8_0.gguf ▕███  ▏ 42%".
PROGRESS = re.compile(r"Downloading\s+(\S+).*?(\d{1,3})%\s*$")
# A request served: each completion ends by releasing its slot ("slot release: ... stop processing").
REQUEST_DONE = re.compile(r"\bslot\s+release: .*\bstop processing\b")
# A line about one request: "slot print_timing: id  0 | task 5 | ..." (a router's child: "[port] " first).
TASK_LINE = re.compile(r"(?:(\[\d+\]) )?\d+\.\d+\.\d+\.\d+ ([IWEDT]) .*?\| task (-?\d+) \| (.*)")
TIMING = re.compile(r"(prompt eval|eval|total) time =\s*([\d.]+) ms /\s*(\d+) tokens")
ARGUMENT_ERROR = re.compile(r"^error(: invalid argument:| while handling argument)")
# Error lines that follow the real cause of a failed model load and say nothing new.
CONSEQUENCES = (
    "llama_model_load_from_file_impl: failed to load model",
    "common_fit_params:",
    "exactly one out metadata, path_model, and file must be defined",
    "common_init_: failed to load model",
    "load_model: failed to load model",
    "exiting due to",
)


def clean(segment: str) -> str:
    """A segment of output without terminal control sequences and surrounding blanks."""
    return ANSI.sub("", segment).strip()


def split_output(buffer: str) -> tuple[list[str], str]:
    """Complete segments (ended by a newline or a carriage return) and the unfinished rest."""
    parts = re.split(r"[\r\n]", buffer)
    return parts[:-1], parts[-1]


@dataclass(frozen=True)
class Progress:
    file: str
    percent: int


def progress(segment: str) -> Progress | None:
    match = PROGRESS.search(clean(segment))
    if match is None or int(match.group(2)) > 100:
        return None
    return Progress(match.group(1), int(match.group(2)))


def request_done(line: str) -> bool:
    return REQUEST_DONE.search(line) is not None


def error_text(line: str) -> str | None:
    """The message of an error line of llama-server's log, else None."""
    match = LOG_LINE.fullmatch(line)
    if match is not None:
        return match.group(2).strip() if match.group(1) == "E" else None
    if ARGUMENT_ERROR.match(line):
        return line
    return None


def is_argument_error(lines: Iterable[str]) -> bool:
    """llama-server refused its arguments: starting again cannot help."""
    return any(ARGUMENT_ERROR.match(line) for line in lines)


def failure_cause(lines: Iterable[str]) -> str | None:
    """The first error line that is a cause rather than a consequence."""
    errors = [text for line in lines if (text := error_text(line))]
    for text in errors:
        if not any(consequence in text for consequence in CONSEQUENCES):
            return text
    return errors[0] if errors else None


def router_summary(models: Mapping[str, Any]) -> str:
    """Router mode's status line from its /v1/models answer: which models are loaded."""
    entries = models.get("data") or []
    states: dict[str, list[str]] = {}
    for entry in entries:
        status = entry.get("status")
        value = status.get("value", "") if isinstance(status, dict) else ""
        states.setdefault(str(value), []).append(str(entry.get("id", "?")))
    count = f"{len(entries)} model{'s' if len(entries) != 1 else ''}"
    parts = [f"loaded: {', '.join(states['loaded'])}" if states.get("loaded") else "none loaded"]
    if states.get("loading"):
        parts.append(f"loading: {', '.join(states['loading'])}")
    failed = [name for value, names in states.items() if value.startswith("fail") for name in names]
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    return f"serving {count} ({'; '.join(parts)})"


@dataclass
class TaskFigures:
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    milliseconds: float | None = None


@dataclass
class Requests:
    """llama-server's lines about each request (eight a request at its default verbosity: the slot
    chosen, the task launched, five timing lines, the slot released) are detail, kept in the
    detail log; `route` turns them into one line when the request ends. Lines at debug level
    (-v, -lv 4), and the unprefixed lines that continue one, are detail too. Errors never are."""

    tasks: dict[tuple[str, str], TaskFigures] = field(default_factory=dict)
    continuing_detail: bool = False

    def route(self, line: str) -> tuple[bool, str | None]:
        """(whether `line` is detail, the request's one line when `line` ends a request)."""
        task = TASK_LINE.fullmatch(line)
        if task is None:
            logged = LOG_LINE.fullmatch(line)
            if logged is not None:
                self.continuing_detail = logged.group(1) == "D"
            return self.continuing_detail, None
        child, level, task_id, text = task.groups()
        self.continuing_detail = level != "E"
        if level == "E":
            return False, None
        if task_id == "-1":  # choosing a slot, before the task has its id
            return True, None
        return True, self.take(child or "", task_id, line, text)

    def take(self, child: str, task_id: str, line: str, text: str) -> str | None:
        """A line about task `task_id`: its figures kept, and its one line once it ends."""
        key = (child, task_id)
        figures = self.tasks.setdefault(key, TaskFigures())
        timing = TIMING.search(text)
        if timing is not None:
            kind, milliseconds, tokens = timing.group(1), float(timing.group(2)), int(timing.group(3))
            if kind == "prompt eval":
                figures.prompt_tokens = tokens
            elif kind == "eval":
                figures.generated_tokens = tokens
            else:
                figures.milliseconds = milliseconds
            return None
        if REQUEST_DONE.search(line) is None:
            return None
        del self.tasks[key]
        if len(self.tasks) > 1000:  # tasks that never ended (cancelled before their timings): forgotten
            self.tasks.clear()
        return request_line(child, task_id, figures)


def request_line(child: str, task_id: str, figures: TaskFigures) -> str:
    """`[llama] task 5: 11 prompt + 4 generated tokens in 12.5 ms` (tokens llama-server evaluated:
    a prompt the slot had cached counts only its new tokens)."""
    where = f"{child} task {task_id}" if child else f"task {task_id}"
    parts = []
    if figures.prompt_tokens is not None or figures.generated_tokens is not None:
        parts.append(f"{figures.prompt_tokens or 0} prompt + {figures.generated_tokens or 0} generated tokens")
    if figures.milliseconds is not None:
        parts.append(f"in {figures.milliseconds:.1f} ms")
    return f"[llama] {where}: {' '.join(parts) or 'done'}"
