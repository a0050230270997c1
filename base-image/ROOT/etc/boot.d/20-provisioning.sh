#!/usr/bin/env bash
# Before any program starts: /.provisioning while provisioning is still to run (the reference
# image's marker; services a manifest registers wait for it to go). Program "provisioning" runs
# the provisioner and removes it when it ends (at once when there is nothing to provision).
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
if [[ -e ${LLAMA_IMAGES_PROVISIONING_COMPLETE} ]]; then
    rm -f "${LLAMA_IMAGES_PROVISIONING_MARKER}" 2>/dev/null
    exit 0
fi
if [[ -n ${PROVISIONING_MANIFEST:-} || -f ${LLAMA_IMAGES_BAKED_MANIFEST} || -n ${PROVISIONING_SCRIPT:-} ]]; then
    touch "${LLAMA_IMAGES_PROVISIONING_MARKER}" 2>/dev/null ||
        echo "[provisioning] ${LLAMA_IMAGES_PROVISIONING_MARKER} cannot be made (read-only root?); services do not wait"
fi
exit 0
