"""A tiny random llama model as GGUF bytes: what the soak serves (core/soak.py). Pure: the bytes
are returned, the caller writes them.

The publishing workflow installs only the package's own dependencies, so this is written with the
standard library (tests/support/tiny_gguf.py, which the tests use, needs gguf-py and numpy). The
model: 2 blocks, width 64, 4 heads, feed-forward 128, context 512, f32 weights, a
SentencePiece-style vocab (the specials, the 256 byte tokens, a few pieces) and a Jinja chat
template; about 0.5 MB. It loads in well under a second and answers gibberish, fast: the soak
measures the server, not the model. The same seed gives the same bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

BLOCKS = 2
WIDTH = 64
HEADS = 4
FEED_FORWARD = 128
CONTEXT = 512
ALIGNMENT = 32  # GGUF's default

# GGUF value types and the f32 tensor type.
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
TENSOR_F32 = 0
FILE_TYPE_ALL_F32 = 0
# SentencePiece token types.
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6

WORDS = ("▁Hello", "▁world", "▁the", "▁is", "▁of", "▁and", "▁to", "▁test", "!", ",", ".")
LETTERS = tuple("▁" + c for c in "abcdefghijklmnopqrstuvwxyz") + tuple(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ 'System: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'User: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'Assistant: ' + message['content'] + eos_token + '\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def value(kind: int, item: object) -> bytes:
    if kind == STRING:
        return string(str(item))
    if kind == UINT32:
        return struct.pack("<I", item)
    if kind == INT32:
        return struct.pack("<i", item)
    if kind == FLOAT32:
        return struct.pack("<f", item)
    if kind == BOOL:
        return struct.pack("<?", item)
    raise ValueError(f"no such GGUF value type {kind}")


def entry(key: str, kind: int, item: object) -> bytes:
    return string(key) + struct.pack("<I", kind) + value(kind, item)


def array(key: str, kind: int, items: Sequence[object]) -> bytes:
    head = string(key) + struct.pack("<IIQ", ARRAY, kind, len(items))
    return head + b"".join(value(kind, item) for item in items)


def vocab() -> tuple[list[str], list[float], list[int]]:
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [UNKNOWN, CONTROL, CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(BYTE)
    for rank, piece in enumerate(("▁", *WORDS, *LETTERS)):
        tokens.append(piece)
        scores.append(-float(rank + 1))  # log-probabilities: higher merges first
        types.append(NORMAL)
    return tokens, scores, types


def tensor_shapes(vocabulary: int) -> list[tuple[str, tuple[int, ...]]]:
    """Each tensor's name and dimensions in GGUF's order (the fastest-varying first)."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (WIDTH, vocabulary))]
    for block in range(BLOCKS):
        name = f"blk.{block}"
        shapes += [
            (f"{name}.attn_norm.weight", (WIDTH,)),
            (f"{name}.attn_q.weight", (WIDTH, WIDTH)),
            (f"{name}.attn_k.weight", (WIDTH, WIDTH)),
            (f"{name}.attn_v.weight", (WIDTH, WIDTH)),
            (f"{name}.attn_output.weight", (WIDTH, WIDTH)),
            (f"{name}.ffn_norm.weight", (WIDTH,)),
            (f"{name}.ffn_gate.weight", (WIDTH, FEED_FORWARD)),
            (f"{name}.ffn_up.weight", (WIDTH, FEED_FORWARD)),
            (f"{name}.ffn_down.weight", (FEED_FORWARD, WIDTH)),
        ]
    return [*shapes, ("output_norm.weight", (WIDTH,)), ("output.weight", (WIDTH, vocabulary))]


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % ALIGNMENT)


def tiny_llama_gguf(seed: int = 0) -> bytes:
    tokens, scores, types = vocab()
    metadata = [
        entry("general.architecture", STRING, "llama"),
        entry("general.name", STRING, f"tiny-llama-soak-seed{seed}"),
        entry("general.file_type", UINT32, FILE_TYPE_ALL_F32),
        entry("llama.vocab_size", UINT32, len(tokens)),
        entry("llama.context_length", UINT32, CONTEXT),
        entry("llama.embedding_length", UINT32, WIDTH),
        entry("llama.block_count", UINT32, BLOCKS),
        entry("llama.feed_forward_length", UINT32, FEED_FORWARD),
        entry("llama.attention.head_count", UINT32, HEADS),
        entry("llama.attention.head_count_kv", UINT32, HEADS),
        entry("llama.rope.dimension_count", UINT32, WIDTH // HEADS),
        entry("llama.rope.freq_base", FLOAT32, 10000.0),
        entry("llama.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        entry("tokenizer.ggml.model", STRING, "llama"),
        array("tokenizer.ggml.tokens", STRING, tokens),
        array("tokenizer.ggml.scores", FLOAT32, scores),
        array("tokenizer.ggml.token_type", INT32, types),
        entry("tokenizer.ggml.unknown_token_id", UINT32, 0),
        entry("tokenizer.ggml.bos_token_id", UINT32, 1),
        entry("tokenizer.ggml.eos_token_id", UINT32, 2),
        entry("tokenizer.ggml.add_bos_token", BOOL, True),
        entry("tokenizer.ggml.add_eos_token", BOOL, False),
        entry("tokenizer.chat_template", STRING, CHAT_TEMPLATE),
    ]
    rng = random.Random(seed)
    infos, data = [], []
    offset = 0
    for name, dims in tensor_shapes(len(tokens)):
        count = 1
        for size in dims:
            count *= size
        norm = name.endswith("norm.weight")
        values = [1.0] * count if norm else [rng.gauss(0.0, 0.02) for _ in range(count)]
        tensor = padded(struct.pack(f"<{count}f", *values))
        infos.append(string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, TENSOR_F32, offset))
        data.append(tensor)
        offset += len(tensor)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(metadata))
    return padded(header + b"".join(metadata) + b"".join(infos)) + b"".join(data)
