#!/usr/bin/env bash
# Supervisor program "llama": llama-server on the internal port, fronted later by a proxy.
#   LLAMA_MODEL  path to a .gguf file, or else a Hugging Face repo "org/repo[:quant]" (-hf)
#   LLAMA_ARGS   extra llama-server arguments, split on whitespace; no quoting, so an argument
#                cannot contain spaces. They come last, so they override the defaults below.
#   LLAMA_CACHE  where -hf downloads go (default /workspace/.cache/llama, a persistent volume)
set -euo pipefail

port=18000
model="${LLAMA_MODEL:-}"

if [[ -z ${model} ]]; then
    echo "[llama] LLAMA_MODEL is empty; llama-server not started."
    # Outlive supervisor's startsecs so this counts as a clean exit, not a failed start.
    sleep 2
    exit 0
fi

export LLAMA_CACHE="${LLAMA_CACHE:-/workspace/.cache/llama}"
mkdir -p "${LLAMA_CACHE}"

read -r -d '' -a extra_args <<<"${LLAMA_ARGS:-}" || true

# Newer llama.cpp changed its default port: always pass one, unless LLAMA_ARGS does.
# (llama-server has no --port=N form.)
port_args=(--port "${port}")
for arg in "${extra_args[@]}"; do
    if [[ ${arg} == --port ]]; then
        port_args=()
    fi
done

if [[ -f ${model} ]]; then
    model_args=(-m "${model}")
elif [[ ${model} == /* || ${model} == ./* || ${model} == *.gguf ]]; then
    # Looks like a file, not an "org/repo" name: say so instead of a confusing -hf error.
    echo "[llama] LLAMA_MODEL=${model}: no such file in the container (mount it, or name a Hugging Face repo org/repo[:quant])" >&2
    exit 2
else
    model_args=(-hf "${model}")
fi

cmd=(llama-server --host 127.0.0.1 "${port_args[@]}" "${model_args[@]}" "${extra_args[@]}")
echo "[llama] ${cmd[*]}"
exec "${cmd[@]}"
