#!/usr/bin/env bash
# Supervisor program "proxy": Caddy on every external port. Its config (and the login verifier's
# settings) is rendered here, from the service declaration as boot left it (runtime overrides,
# PORTAL_CONFIG), the stored token and the settings files (/etc/environment,
# ${WORKSPACE}/.env), so restarting the program applies changed settings; the rendering runs
# while llama-server starts instead of before Supervisor (docs/benchmarks.md, boot to healthy).
# A problem with the declaration is logged and that entry skipped. When the config cannot be
# written (a full /run), the last one that was written keeps serving while the render is retried.
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
runtime=${LLAMA_IMAGES_RUNTIME_COMMAND}
caddy=/usr/local/bin/caddy
config=${LLAMA_IMAGES_CADDY_CONFIG_FILE}
retry_seconds=10
stays_off=3 # llama_runtime/cli.py STAYS_OFF

# Serverless mode (SERVERLESS=true) stops the proxy unless SERVERLESS_KEEP=proxy keeps it: the
# render says so with its own exit status, after saying why and outliving startsecs (a clean
# EXITED).
"${runtime}" render-proxy --output "${config}"
rendered=$?
if ((rendered == 0)); then
    exec "${caddy}" run --config "${config}"
fi
if ((rendered == stays_off)); then
    exit 0
fi
if [[ ! -s ${config} ]]; then
    echo "[proxy] FAILED: the proxy config could not be rendered and there is no earlier one; see the lines above" >&2
    exit 1
fi
echo "[proxy] serving with the last config written; rendering again every ${retry_seconds} s"
"${caddy}" run --config "${config}" &
caddy_pid=$!
trap 'kill -TERM "${caddy_pid}" 2>/dev/null; wait "${caddy_pid}"; exit 0' TERM INT
while kill -0 "${caddy_pid}" 2>/dev/null; do
    sleep "${retry_seconds}" &
    wait $!
    if "${runtime}" render-proxy --output "${config}" --retry; then
        echo "[proxy] the config is rendered again; restarting Caddy with it"
        kill -TERM "${caddy_pid}" 2>/dev/null
        wait "${caddy_pid}"
        exec "${caddy}" run --config "${config}"
    fi
done
wait "${caddy_pid}"
exit $?
