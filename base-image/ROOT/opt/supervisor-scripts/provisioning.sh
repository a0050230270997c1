#!/usr/bin/env bash
# Supervisor program "provisioning": first-boot provisioning in the background while the services
# are up, by the provisioner (/opt/instance-tools/bin/provisioner, the reference image's): the
# manifest PROVISIONING_MANIFEST names (a path in the container or an http(s) URL), else the baked
# /provisioning.yaml, then PROVISIONING_SCRIPT (a path or a URL) as its last phase. Success is
# recorded (/.provisioning_complete) and later boots skip it; a failure (/.provisioning_failed) is
# tried again on the next boot. Output: provisioning.log in the log directory (and `docker logs`,
# the portal); URLs and tokens are never shown.
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh

# The settings files (/etc/environment, ${WORKSPACE}/.env) apply to it, as to every program: this
# script starts again through `run`, which reads them as data.
if [[ -z ${LLAMA_IMAGES_SETTINGS_READ:-} ]]; then
    exec "${LLAMA_IMAGES_RUNTIME_COMMAND}" run -- "$0" "$@"
fi
# This program's output already goes to provisioning.log: a manifest's log_file naming it is not
# written twice.
export LLAMA_IMAGES_PROVISIONING_LOG="${LLAMA_IMAGES_PROGRAM_LOG_DIR:-/var/log/portal}/provisioning.log"
exec "${LLAMA_IMAGES_PROVISIONER_COMMAND}" --boot
