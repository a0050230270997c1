#!/usr/bin/env bash
# Supervisor program "cron": cron in the foreground, so users' crontabs run (`crontab -e`), as in
# the reference image. cron switches to each crontab's owner, which needs root.
set -euo pipefail
if ((EUID != 0)); then
    echo "[cron] not started: cron needs root to run users' crontabs (this container runs as uid ${EUID})"
    exit 0
fi
exec /usr/sbin/cron -f
