#!/usr/bin/env bash
# Supervisor program "proxy": Caddy on every external port. Its config is rendered here, from the
# service declaration as boot left it (runtime overrides, PORTAL_CONFIG) and the stored token, so
# the rendering runs while llama-server starts instead of before Supervisor (docs/benchmarks.md,
# boot to healthy). A problem with the declaration is logged and that entry skipped.
set -euo pipefail

config=/run/llama-images/caddy.json
if ! /opt/llama-images/bin/llama-runtime render-proxy --output "${config}"; then
    echo "[proxy] FAILED: the proxy config could not be rendered; see the lines above" >&2
    exit 1
fi
exec /usr/local/bin/caddy run --config "${config}"
