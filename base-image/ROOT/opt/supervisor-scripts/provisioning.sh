#!/usr/bin/env bash
# Supervisor program "provisioning": runs PROVISIONING_SCRIPT once, in the background while the
# services are up. PROVISIONING_SCRIPT is a path in the container or an http(s) URL (downloaded
# with bounded retries). Success is recorded and later boots skip it; a failure is retried on
# the next boot. Output: provisioning.log in the log directory (and `docker logs`, the portal).
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh

# The settings files (/etc/environment, ${WORKSPACE}/.env) apply to the script, as to every
# program: this script starts again through `run`, which reads them as data.
if [[ -z ${LLAMA_IMAGES_SETTINGS_READ:-} ]]; then
    exec "${LLAMA_IMAGES_RUNTIME_COMMAND}" run -- "$0" "$@"
fi

source="${PROVISIONING_SCRIPT:-}"
marker=${LLAMA_IMAGES_DONE_DIR}/provisioning
status=${LLAMA_IMAGES_PROVISIONING_STATUS_FILE}

report() {
    echo "$1" >"${status}"
    echo "[provisioning] $1"
}

if [[ -z ${source} ]]; then
    echo "not configured" >"${status}"
    exit 0
fi
if [[ -e ${marker} ]]; then
    report "done on an earlier boot (${marker})"
    exit 0
fi

if [[ ${source} =~ ^https?:// ]]; then
    script="$(mktemp /tmp/provisioning.XXXXXX)"
    # The URL may carry credentials (user:password@, a signed query): it is neither logged nor
    # passed as an argument (ps); curl reads it from its config on stdin.
    name="the downloaded PROVISIONING_SCRIPT"
    report "running: downloading PROVISIONING_SCRIPT"
    url="${source//\\/\\\\}"
    curl -fsSL --retry 5 --retry-delay 2 --retry-all-errors --connect-timeout 10 --max-time 600 \
        -o "${script}" --config - <<<"url = \"${url//\"/\\\"}\""
    rc=$?
    if ((rc != 0)); then
        report "failed: PROVISIONING_SCRIPT could not be downloaded (curl exit ${rc}); retried on the next boot"
        exit 1
    fi
elif [[ -f ${source} ]]; then
    script="${source}"
    name="${source##*/}"
else
    report "failed: PROVISIONING_SCRIPT=${source} is neither an http(s) URL nor a file in the container"
    exit 1
fi

report "running ${name}"
bash "${script}"
rc=$?
if ((rc != 0)); then
    report "failed: the script exited with status ${rc}; retried on the next boot"
    exit "${rc}"
fi
if mkdir -p "${marker%/*}" 2>/dev/null && touch "${marker}" 2>/dev/null; then
    report "done"
else
    report "done (not recorded: ${marker%/*} is not writable, so it runs again next boot)"
fi
