#!/usr/bin/env bash
# Supervisor program "jupyter": JupyterLab on 127.0.0.1:18080, rooted at /workspace. It checks a
# token of its own and its XSRF proof: behind the proxy's login the proxy sends that token on the
# requests it let in (token_scheme in jupyter.toml), so nobody types it and the proxy's own checks
# (the login, Origin, Sec-Fetch-Site) decide; on a port the proxy leaves open (AUTH_EXCLUDE,
# ENABLE_AUTH=false) a browser needs the token (the portal's link carries it) and a page of
# another site cannot post to it.
set -euo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
runtime=${LLAMA_IMAGES_RUNTIME_COMMAND}
# The declaration decides, with the settings files applied (ENABLE_JUPYTER read as the proxy
# and the portal read it: false, 0, no or off; PORTAL_CONFIG without a Jupyter entry).
if [[ $("${runtime}" services --field jupyter.enabled) != true ]]; then
    echo "[jupyter] not started: $("${runtime}" services --field jupyter.off_reason)"
    exit 0
fi
# The API first: JupyterLab's start keeps a core busy for seconds, so it waits until the essential
# services (llama-server, the portal) answer or stop trying, 10 s at most.
"${runtime}" wait-essential --timeout 10 || true
mkdir -p /workspace 2>/dev/null || true
# The port follows the declaration (a runtime override may move it).
port="$("${runtime}" services --field jupyter.internal_port)"
export JUPYTER_RUNTIME_DIR=${LLAMA_IMAGES_JUPYTER_RUNTIME_DIR}
# Read from a root-only file (never an argument or a variable holding it); Jupyter logs it as "...".
JUPYTER_TOKEN_FILE=$("${runtime}" service-token jupyter)
export JUPYTER_TOKEN_FILE
# `run`: JupyterLab, its kernels and terminals get the settings files' values (never the token).
exec "${runtime}" run -- /venv/main/bin/jupyter-lab \
    --no-browser \
    --ServerApp.ip=127.0.0.1 \
    --ServerApp.port="${port}" \
    --ServerApp.port_retries=0 \
    --ServerApp.root_dir=/workspace \
    --ServerApp.allow_remote_access=True \
    --ServerApp.allow_root=True \
    --PasswordIdentityProvider.hashed_password= \
    --ServerApp.terminado_settings='{"shell_command": ["/bin/bash", "-l"]}'
