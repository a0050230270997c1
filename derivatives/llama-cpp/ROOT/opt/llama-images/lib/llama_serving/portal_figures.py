"""The portal's model panel, its figures: which model llama-server serves and how fast, from its
own /metrics (Prometheus text) and /slots, read on its internal address (with LLAMA_API_KEY when
set); router mode's models, loaded or not, with load/unload through llama-server's /models
endpoints. (The download's progress is the launcher's status record: status.py.)

Turning llama-server's answers into figures is pure (tests feed recorded answers); `Llama` does
the HTTP. Stdlib only.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

TIMEOUT_SECONDS = 3.0
# Router mode: what a model in each state offers.
ROUTER_ACTIONS = ("load", "unload")
MODEL_ACTIONS = {"loaded": ["unload"], "unloaded": ["load"], "failed": ["load"], "loading": ["unload"]}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {name: value}; samples of one name with different labels
    are added up. Comments and malformed lines are skipped."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        found[match.group(1)] = found.get(match.group(1), 0.0) + value
    return found


def slot_figures(slots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Context size and busy slots from /slots (a list of slots, each with n_ctx and is_processing)."""
    contexts = [int(slot["n_ctx"]) for slot in slots if isinstance(slot.get("n_ctx"), int)]
    return {
        "context": max(contexts) if contexts else None,
        "slots": {"total": len(slots), "busy": sum(1 for slot in slots if slot.get("is_processing"))},
    }


def metric_figures(metrics: Mapping[str, float]) -> dict[str, Any]:
    """Throughput and counts from /metrics: llama-server's average prompt and generation speeds
    (tokens per second while it worked), tokens processed, requests in progress and waiting."""

    def get(name: str) -> float | None:
        return metrics.get(f"llamacpp:{name}")

    def rate(tokens: str, seconds: str, average: str) -> float | None:
        spent, counted = get(seconds), get(tokens)
        if spent and counted is not None:
            return round(counted / spent, 2)
        value = get(average)
        return round(value, 2) if value is not None else None

    return {
        "prompt_tokens_per_second": rate("prompt_tokens_total", "prompt_seconds_total", "prompt_tokens_seconds"),
        "generation_tokens_per_second": rate(
            "tokens_predicted_total", "tokens_predicted_seconds_total", "predicted_tokens_seconds"
        ),
        "prompt_tokens": get("prompt_tokens_total"),
        "generated_tokens": get("tokens_predicted_total"),
        "requests_processing": get("requests_processing"),
        "requests_deferred": get("requests_deferred"),
    }


@dataclass(frozen=True)
class ModelEntry:
    id: str
    state: str  # loaded, unloaded, loading, failed (its last load failed: router); loaded (one model)


def model_entries(answer: Mapping[str, Any]) -> tuple[list[ModelEntry], bool]:
    """The models of a /v1/models answer, and whether it came from a router (whose entries carry
    a status: {"value": "loaded"}); a single-model server's one model is loaded."""
    entries = []
    router = False
    for item in answer.get("data") or []:
        if not isinstance(item, Mapping) or not item.get("id"):
            continue
        status = item.get("status")
        if isinstance(status, Mapping):
            router = True
            value = str(status.get("value") or "unknown")
            failed = status.get("failed") is True and value == "unloaded"
            entries.append(ModelEntry(str(item["id"]), "failed" if failed else value))
        else:
            entries.append(ModelEntry(str(item["id"]), "loaded"))
    return entries, router


class LlamaError(Exception):
    """llama-server did not answer as expected; the message says what it said."""


class Llama:
    """llama-server's own HTTP API on its internal address (not through the proxy)."""

    def __init__(self, host: str, port: int, api_key: str | None) -> None:
        self.host, self.port, self.api_key = host, port, api_key

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LlamaError(f"llama-server does not answer on {self.host}:{self.port} ({exc})") from None
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise LlamaError(f"{path.partition('?')[0]}: {status} {error_message(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise LlamaError(f"{path}: not JSON") from None

    def get_text(self, path: str) -> str:
        status, body = self.request("GET", path)
        if status != 200:
            raise LlamaError(f"{path.partition('?')[0]}: {status} {error_message(body)}")
        return body.decode(errors="replace")

    def figures(self, model: str | None) -> tuple[dict[str, Any], list[str]]:
        """Context, slots and throughput of one model (router: `model`), and notes on what failed."""
        # autoload=false: a model unloading as the page asks must not be loaded again by the asking.
        suffix = f"?model={quote(model, safe='')}&autoload=false" if model else ""
        found: dict[str, Any] = {}
        notes = []
        try:
            found.update(slot_figures(self.get_json(f"/slots{suffix}")))
        except LlamaError as exc:
            notes.append(str(exc))
        try:
            found.update(metric_figures(parse_metrics(self.get_text(f"/metrics{suffix}"))))
        except LlamaError as exc:
            notes.append(str(exc))
        return found, notes

    def change(self, action: str, model: str) -> str:
        """Router mode: load or unload a model; what llama-server answered."""
        status, body = self.request("POST", f"/models/{action}", {"model": model})
        if status != 200:
            raise LlamaError(f"llama-server refused to {action} {model}: {status} {error_message(body)}")
        return "requested"


def error_message(body: bytes) -> str:
    """llama-server's error text ({"error": {"message": ...}}), else the start of the body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:200]
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("message", ""))[:200]
    return str(error or parsed)[:200]


def model_panel(llama: Llama) -> dict[str, Any]:
    """Every model with its state, figures and buttons; notes on what could not be read."""
    notes: list[str] = []
    try:
        entries, router = model_entries(llama.get_json("/v1/models"))
    except LlamaError as exc:
        return {"router": False, "models": [], "notes": [str(exc)]}
    models = []
    for entry in entries:
        figures: dict[str, Any] = {}
        if entry.state == "loaded":
            figures, problems = llama.figures(entry.id if router else None)
            notes += problems
        actions = MODEL_ACTIONS.get(entry.state, []) if router else []
        models.append({"id": entry.id, "state": entry.state, "figures": figures, "actions": actions})
    return {"router": router, "models": models, "notes": notes}
