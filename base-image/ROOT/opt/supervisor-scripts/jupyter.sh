#!/usr/bin/env bash
# Supervisor program "jupyter": JupyterLab on 127.0.0.1:18080, rooted at /workspace. The proxy
# checks the token, so Jupyter's own token and XSRF check are off (the proxy's cookie is
# SameSite=Lax, which keeps other sites' forms from using it).
set -euo pipefail

runtime=/opt/llama-images/bin/llama-runtime
status=/run/llama-images/status/jupyter
# The declaration decides (its enabled_by variable, ENABLE_JUPYTER, read as the proxy and the
# portal read it: false, 0, no or off).
if [[ $("${runtime}" services --field jupyter.enabled) != true ]]; then
    echo "[jupyter] ENABLE_JUPYTER=${ENABLE_JUPYTER:-}: not started"
    echo "disabled (ENABLE_JUPYTER=${ENABLE_JUPYTER:-})" >"${status}"
    exit 0
fi
rm -f "${status}"
# The API first: JupyterLab's start keeps a core busy for seconds, so it waits until the essential
# services (llama-server, the portal) answer or stop trying, 10 s at most.
"${runtime}" wait-essential --timeout 10 || true
mkdir -p /workspace 2>/dev/null || true
# The port follows the declaration (a runtime override may move it).
port="$("${runtime}" services --field jupyter.internal_port)"
export JUPYTER_RUNTIME_DIR=/run/llama-images/jupyter
exec /venv/main/bin/jupyter-lab \
    --no-browser \
    --ServerApp.ip=127.0.0.1 \
    --ServerApp.port="${port}" \
    --ServerApp.port_retries=0 \
    --ServerApp.root_dir=/workspace \
    --ServerApp.allow_remote_access=True \
    --ServerApp.allow_root=True \
    --ServerApp.disable_check_xsrf=True \
    --IdentityProvider.token= \
    --PasswordIdentityProvider.hashed_password= \
    --ServerApp.terminado_settings='{"shell_command": ["/bin/bash", "-l"]}'
