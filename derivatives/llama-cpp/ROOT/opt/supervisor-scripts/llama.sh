#!/usr/bin/env bash
# Supervisor program "llama": llama-server, started and watched by the llama-serving launcher
# (/opt/llama-images/lib/llama_serving): LLAMA_MODEL / LLAMA_MODELS_DIR choose the model(s),
# LLAMA_ARGS adds llama-server arguments (split like a shell splits words; nothing is executed),
# a failing start is retried LLAMA_START_ATTEMPTS times, then the program ends FATAL.
set -euo pipefail

# The launcher's paths (generated from llama_serving/paths.py).
# shellcheck source=derivatives/llama-cpp/ROOT/opt/llama-images/lib/llama_serving/paths.sh
source /opt/llama-images/lib/llama_serving/paths.sh
# The launcher leaves this marker when it gives up and exits; Supervisor starts the program
# again, and this start must exit well within startsecs for Supervisor to record FATAL, so it
# is handled here, before Python starts, and only here (llama_serving/service.py: serve).
gave_up=${LLAMA_SERVING_GAVE_UP_FILE}
if [[ -f ${gave_up} ]]; then
    echo "[llama] stopped for good: $(<"${gave_up}"); \`supervisorctl start llama\` tries again"
    rm -f "${gave_up}"
    exit 1
fi
exec /opt/llama-images/bin/llama-serving serve
