"""Write a tiny, random llama-architecture GGUF model for tests.

The test machines cannot reach the Hugging Face hub (or any model host), so tests
that need a model llama-server can load generate one here instead. The model is
about 0.5 MB of random f32 weights (2 blocks, width 64, 4 heads, feed-forward 128,
context 512) with a SentencePiece-style ("llama") vocab and a Jinja chat template.
It loads in well under a second and answers with gibberish. Output is
byte-for-byte deterministic for a given seed.

Run ``python -m tests.support.tiny_gguf OUT.gguf`` to write one by hand.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter, LlamaFileType, TokenType

__all__ = ["CHAT_TEMPLATE", "write_tiny_llama_gguf"]

N_BLOCKS = 2
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_CTX = 512
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2

# Plain SentencePiece pieces after the specials and the 256 byte tokens. Anything
# else falls back to the <0xNN> byte tokens, so every string tokenizes.
_WORDS = (
    "▁Hello",
    "▁world",
    "▁the",
    "▁is",
    "▁of",
    "▁and",
    "▁to",
    "▁test",
    "!",
    ",",
    ".",
)
_LETTERS = tuple("▁" + c for c in "abcdefghijklmnopqrstuvwxyz") + tuple(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)
_PIECES = ("▁", *_WORDS, *_LETTERS)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ 'System: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'User: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'Assistant: ' + message['content'] + eos_token + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ 'Assistant:' }}"
    "{%- endif -%}"
)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """Return the tokens, scores and token types of the SentencePiece-style vocab."""
    tokens = ["<unk>", "<s>", "</s>"]
    scores = [0.0, 0.0, 0.0]
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(int(TokenType.BYTE))
    for rank, piece in enumerate(_PIECES):
        tokens.append(piece)
        # SentencePiece scores are log-probabilities: higher means merged first.
        scores.append(-float(rank + 1))
        types.append(int(TokenType.NORMAL))
    return tokens, scores, types


def _tensors(
    n_vocab: int, seed: int, n_embd: int = N_EMBD, n_ff: int = N_FF, n_blocks: int = N_BLOCKS
) -> list[tuple[str, npt.NDArray[np.float32]]]:
    """Return llama's tensors as (name, array) in a fixed order.

    numpy shapes are the reverse of GGML's ``ne`` order: ``attn_q`` is ``{n_embd, n_embd}``,
    ``ffn_gate``/``ffn_up`` are ``{n_embd, n_ff}`` (numpy ``(n_ff, n_embd)``), ``ffn_down``
    is ``{n_ff, n_embd}`` and ``token_embd``/``output`` are ``{n_embd, n_vocab}``.
    """
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm() -> npt.NDArray[np.float32]:
        return np.ones(n_embd, dtype=np.float32)

    tensors = [("token_embd.weight", weight(n_vocab, n_embd))]
    for i in range(n_blocks):
        blk = f"blk.{i}"
        tensors += [
            (f"{blk}.attn_norm.weight", norm()),
            (f"{blk}.attn_q.weight", weight(n_embd, n_embd)),
            (f"{blk}.attn_k.weight", weight(n_embd, n_embd)),
            (f"{blk}.attn_v.weight", weight(n_embd, n_embd)),
            (f"{blk}.attn_output.weight", weight(n_embd, n_embd)),
            (f"{blk}.ffn_norm.weight", norm()),
            (f"{blk}.ffn_gate.weight", weight(n_ff, n_embd)),
            (f"{blk}.ffn_up.weight", weight(n_ff, n_embd)),
            (f"{blk}.ffn_down.weight", weight(n_embd, n_ff)),
        ]
    tensors += [
        ("output_norm.weight", norm()),
        ("output.weight", weight(n_vocab, n_embd)),
    ]
    return tensors


def write_tiny_llama_gguf(
    path: pathlib.Path, *, seed: int = 0, n_embd: int = N_EMBD, n_ff: int = N_FF, n_blocks: int = N_BLOCKS
) -> pathlib.Path:
    """Write a tiny random llama GGUF to ``path`` and return ``path``.

    The same ``seed`` (and sizes) always gives the same bytes. Larger ``n_embd``, ``n_ff`` and
    ``n_blocks`` make a model that takes measurable time per token and memory on a GPU.
    """
    path = pathlib.Path(path)
    tokens, scores, types = _vocab()

    writer = GGUFWriter(path, arch="llama")
    writer.add_name(f"tiny-llama-test-seed{seed}")
    writer.add_file_type(int(LlamaFileType.ALL_F32))
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_blocks)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(n_embd // N_HEAD)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for name, array in _tensors(len(tokens), seed, n_embd, n_ff, n_blocks):
        writer.add_tensor(name, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random llama GGUF for tests.")
    parser.add_argument("out", type=pathlib.Path, help="where to write the .gguf file")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--n-embd", type=int, default=N_EMBD, help=f"width (default: {N_EMBD})")
    parser.add_argument("--n-ff", type=int, default=N_FF, help=f"feed-forward width (default: {N_FF})")
    parser.add_argument("--n-blocks", type=int, default=N_BLOCKS, help=f"blocks (default: {N_BLOCKS})")
    args = parser.parse_args(argv)
    out = write_tiny_llama_gguf(args.out, seed=args.seed, n_embd=args.n_embd, n_ff=args.n_ff, n_blocks=args.n_blocks)
    print(f"{out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
