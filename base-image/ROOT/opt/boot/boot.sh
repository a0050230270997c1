#!/usr/bin/env bash
# Container entrypoint (PID 1 is tini): run every /etc/boot.d/*.sh in lexical order, then hand
# over to supervisord. Arguments, if any, replace supervisord (e.g. `docker run IMAGE bash`).
set -euo pipefail

shopt -s nullglob
for step in /etc/boot.d/*.sh; do
    echo "[boot] running ${step}"
    # Each step runs in its own bash: its `set -e`/`exit` cannot end boot silently, and a
    # non-zero status is reported here with the step's name.
    bash "${step}" || {
        rc=$?
        echo "[boot] FAILED: ${step} exited with status ${rc}; boot stopped." >&2
        exit "${rc}"
    }
done

if (($#)); then
    exec "$@"
fi
exec supervisord -n -c /etc/supervisor/supervisord.conf
