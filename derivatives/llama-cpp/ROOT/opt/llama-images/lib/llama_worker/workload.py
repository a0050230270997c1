"""A request's workload in tokens: what it asks llama-server for, known before the reply exists.

The engine sizes and routes an endpoint by workload: each worker reports the workload it has in
hand and the workload per second its benchmark reached. Here a request's workload is its
prompt's tokens plus the tokens it asks to generate (max_tokens, max_completion_tokens or
n_predict; times `n` choices), so a long prompt or a long answer weighs what it costs. The
prompt's tokens are counted by llama-server's own tokenizer (worker.py asks its /tokenize);
`estimate_tokens` is the fallback when it cannot answer.

Stdlib only, pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
COMPLETION = "/completion"  # llama-server's own
ROUTES = (CHAT, COMPLETIONS, COMPLETION)
# Tokens a chat template adds around each message (role markers, separators): a typical figure;
# the text itself is counted exactly.
TOKENS_PER_MESSAGE = 4
# A request that sets no limit generates until the model stops: counted as this many tokens
# unless llama-server's own default (-n / --n-predict) is set.
DEFAULT_GENERATED_TOKENS = 256
# The fallback estimate: about four characters per token (English text, common tokenizers).
CHARACTERS_PER_TOKEN = 4
# Longer prompts are estimated, not sent to /tokenize (it would cost as much as the request).
MAX_TOKENIZED_CHARACTERS = 1_000_000
GENERATED_KEYS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    COMPLETION: ("n_predict", "max_tokens"),
}


@dataclass(frozen=True)
class Prompt:
    text: str  # what the tokenizer counts
    tokens: int  # tokens known without it: token-id prompts, the chat template's share


def prompt_of(route: str, payload: Mapping[str, Any]) -> Prompt:
    """The prompt of a request to `route`, as text to count and tokens already known."""
    if route == CHAT:
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return Prompt("", 0)
        texts = [message_text(m.get("content")) for m in messages if isinstance(m, Mapping)]
        return Prompt("\n".join(t for t in texts if t), TOKENS_PER_MESSAGE * len(messages))
    return prompt_parts(payload.get("prompt"))


def message_text(content: Any) -> str:
    """A chat message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def prompt_parts(prompt: Any) -> Prompt:
    """A completion prompt: a string, token ids, or a list of either (a batch, counted whole)."""
    if isinstance(prompt, str):
        return Prompt(prompt, 0)
    if isinstance(prompt, int) and not isinstance(prompt, bool):
        return Prompt("", 1)
    if isinstance(prompt, Mapping):  # llama-server's multimodal form: {"prompt_string": ...}
        return prompt_parts(prompt.get("prompt_string"))
    if isinstance(prompt, list):
        parts = [prompt_parts(item) for item in prompt]
        return Prompt("\n".join(p.text for p in parts if p.text), sum(p.tokens for p in parts))
    return Prompt("", 0)


def generated_tokens(route: str, payload: Mapping[str, Any], default: int = DEFAULT_GENERATED_TOKENS) -> int:
    """The tokens a request asks to generate: its limit (the first positive one of the route's
    keys), else `default`; times `n` choices on the OpenAI routes."""
    limit = default
    for key in GENERATED_KEYS.get(route, ()):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limit = value
            break
    choices = payload.get("n") if route != COMPLETION else 1
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        limit *= choices
    return limit


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARACTERS_PER_TOKEN)


def tokenizable(prompt: Prompt) -> bool:
    """Whether the prompt's text is worth a /tokenize call (there is some, and not too much)."""
    return 0 < len(prompt.text) <= MAX_TOKENIZED_CHARACTERS


def workload(prompt_tokens: int, generated: int) -> float:
    return float(max(prompt_tokens, 0) + max(generated, 0))


def benchmark_concurrency(slots: int | None, context: int | None, request_tokens: int, most: int) -> int:
    """How many benchmark requests run at once: one per llama-server slot (at most `most`), and no
    more than its context holds together. llama-server's slots share one KV cache by default, so
    requests that do not fit in it together fail, and a benchmark with no successful request
    leaves the worker errored (no traffic for this instance). `request_tokens` is the largest
    benchmark request's prompt plus its generated tokens; `context` is llama-server's n_ctx."""
    wanted = slots if slots and slots > 0 else 1
    if context and context > 0 and request_tokens > 0:
        wanted = min(wanted, context // request_tokens)
    return max(1, min(wanted, most))
