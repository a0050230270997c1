#!/usr/bin/env bash
# Container entrypoint (PID 1 is tini). In order:
#   1. check that /run and /tmp are writable (one line naming what to mount if not)
#   2. store the access token(s) root-only and drop them from the environment services inherit;
#      make the login sessions' secret if none (and, later and detached, /etc/instance.crt)
#   3. CUDA forward compatibility: decided and probed with a real cuInit (one [cuda-compat] line),
#      while 2 and 4 run; its library directory, if any, goes first on LD_LIBRARY_PATH, and stays
#      first in every program (after the settings files) and shell (/etc/profile.d) that starts
#   4. every /etc/boot.d/*.sh in lexical order; a failing step is logged and boot goes on
#   5. supervisord in the foreground; its program "proxy" renders the proxy config from the
#      service declaration (boot steps' overrides included) as it starts Caddy
# Arguments, if any, replace supervisord (e.g. `docker run IMAGE bash`).
set -uo pipefail

# The runtime's paths (generated from llama_runtime/paths.py).
# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
runtime=${LLAMA_IMAGES_RUNTIME_COMMAND}

for dir in /run /tmp; do
    if ! { mkdir -p "${dir}/.llama-images-probe" && rmdir "${dir}/.llama-images-probe"; } 2>/dev/null; then
        echo "[boot] FATAL: ${dir} is not writable for uid $(id -u); it must be: mount a tmpfs there (docker run --tmpfs ${dir}$( (($(id -u))) && echo ":uid=$(id -u),gid=$(id -g)"))" >&2
        exit 78
    fi
done

# Logs: /var/log normally; under a read-only root, in /run (tmpfs).
if [[ -w ${LLAMA_IMAGES_SYSTEM_LOG_DIR} ]]; then
    LLAMA_IMAGES_LOG_DIR=${LLAMA_IMAGES_SYSTEM_LOG_DIR}
else
    LLAMA_IMAGES_LOG_DIR=${LLAMA_IMAGES_RUN_LOG_DIR}
fi
# Programs log to portal/<program>.log (the Supervisor programs name it by this variable);
# program "logs" keeps the clean copies <program>.log.
LLAMA_IMAGES_PROGRAM_LOG_DIR="${LLAMA_IMAGES_LOG_DIR}/${LLAMA_IMAGES_PROGRAM_LOGS}"
export LLAMA_IMAGES_LOG_DIR LLAMA_IMAGES_PROGRAM_LOG_DIR
mkdir -p "${LLAMA_IMAGES_STATUS_DIR}" "${LLAMA_IMAGES_RUNTIME_SERVICES_DIR}" "${LLAMA_IMAGES_BOOT_DIR}" \
    "${LLAMA_IMAGES_PROGRAM_LOG_DIR}"
boot_log="${LLAMA_IMAGES_LOG_DIR}/${LLAMA_IMAGES_BOOT_LOG}"
steps_file=${LLAMA_IMAGES_BOOT_STEPS_FILE}
: >"${steps_file}"

say() {
    printf '%s\n' "$*" | tee -a "${boot_log}"
}

say "[boot] $(date -u +%FT%TZ) boot as uid $(id -u); logs in ${LLAMA_IMAGES_LOG_DIR}"
if [[ ${LLAMA_IMAGES_LOG_DIR} != "${LLAMA_IMAGES_SYSTEM_LOG_DIR}" ]]; then
    say "[boot] ${LLAMA_IMAGES_SYSTEM_LOG_DIR} is read-only: logs are kept in ${LLAMA_IMAGES_LOG_DIR} (tmpfs) for this boot"
fi

# The token is stored while the CUDA decision and the boot steps run (each is a Python start on
# the way to the first answer); the proxy config, rendered after them, is the first to need it.
"${runtime}" setup-access > >(tee -a "${boot_log}") 2>&1 &
token_stored=$!
# Only the proxy's render (root-only files) reads the token(s); no service's environment holds one.
unset OPEN_BUTTON_TOKEN WEB_PASSWORD
# The instance certificate (/etc/instance.crt, there whether or not HTTPS is on, as in the
# reference image) is made after the API's head start, detached (tini reaps it); a render under
# ENABLE_HTTPS makes it itself when it comes first (a lock keeps them from both writing it).
( (sleep 3 && "${runtime}" make-certificate) >>"${boot_log}" 2>&1 & )

# The decision is a Python start too (and, on a GPU host, a cuInit in a child process): it runs
# beside the boot steps (none of them needs the compat libraries); its answer is read before
# Supervisor starts the services, which inherit LD_LIBRARY_PATH.
compat_answer=${LLAMA_IMAGES_CUDA_COMPAT_FILE}
"${runtime}" cuda-compat >"${compat_answer}" 2> >(tee -a "${boot_log}" >&2) &
compat_decided=$!

shopt -s nullglob
for step in "${LLAMA_IMAGES_BOOT_STEPS_DIR}"/*.sh; do
    say "[boot] running ${step}"
    started=${SECONDS}
    # Each step runs in its own bash: its `set -e`/`exit` cannot end boot, and its status is
    # reported here with its name.
    bash "${step}" 2>&1 | tee -a "${boot_log}"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "${step##*/}" "${rc}" "$((SECONDS - started))" >>"${steps_file}"
    if ((rc != 0)); then
        say "[boot] FAILED: ${step} exited with status ${rc}; boot goes on (see ${boot_log})"
    fi
done

if wait "${compat_decided}" && compat_dir="$(<"${compat_answer}")" && [[ -n ${compat_dir} ]]; then
    export LD_LIBRARY_PATH="${compat_dir}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
fi
# The proxy's config is rendered from the token file as the proxy starts.
if ! wait "${token_stored}"; then
    say "[boot] FAILED: the access token could not be stored; the proxy will not start"
fi

if (($#)); then
    exec "$@"
fi
# Where each existing log ends now: program "logs" copies only what this boot adds.
for log in "${LLAMA_IMAGES_PROGRAM_LOG_DIR}"/*.log; do
    [[ -f ${log} ]] && printf '%s\t%s\n' "$(stat -c %s "${log}")" "${log}"
done >"${LLAMA_IMAGES_LOG_OFFSETS_FILE}"

# supervisord starts its programs after its first wait on the control socket, which lasts a full
# second unless something arrives: one request as soon as the socket listens starts them at once
# (docs/benchmarks.md, boot to healthy). Detached, so tini reaps it, not supervisord.
nudge_supervisord() {
    for _ in {1..150}; do
        curl -s -o /dev/null --max-time 1 --unix-socket "${LLAMA_IMAGES_SUPERVISOR_SOCKET}" http://localhost/boot-nudge &&
            return 0
        sleep 0.02
    done
    return 1
}
(nudge_supervisord &)

config=${LLAMA_IMAGES_SUPERVISORD_CONF}
if ((EUID != 0)); then
    # supervisord.conf says user=root (no warning about running as root); another uid, which
    # may have no passwd entry, runs a copy without that line.
    sed '/^user=root$/d' "${config}" >"${LLAMA_IMAGES_NON_ROOT_SUPERVISORD_CONF}"
    config=${LLAMA_IMAGES_NON_ROOT_SUPERVISORD_CONF}
fi
exec supervisord -n -c "${config}"
