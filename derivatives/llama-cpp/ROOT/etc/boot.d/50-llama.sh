#!/usr/bin/env bash
# Before the proxy is configured: publish llama-server's effective port (LLAMA_ARGS --port) in
# /run/llama-images/services.d/llama.toml, write llama's first status line, and clear what a
# previous run of the container left (a "gave up" marker). Never stops the boot: a bad setting
# is reported by program llama itself.
set -uo pipefail
/opt/llama-images/bin/llama-serving boot || echo "[llama] boot step failed (status $?); llama reports why when it starts" >&2
exit 0
