#!/usr/bin/env bash
# /etc/environment as the reference image's tools expect it, before any program reads it: a PATH
# line (the container's, when the file has none), and, where the pids budget is too low for thread
# pools sized to the visible CPUs, a managed block capping them to the CPU quota (OMP_NUM_THREADS
# and the like; values you set are kept; the block goes again on a healthy host).
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
exec "${LLAMA_IMAGES_RUNTIME_COMMAND}" environment-file
