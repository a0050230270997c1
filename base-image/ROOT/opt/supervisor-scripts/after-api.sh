#!/usr/bin/env bash
# Runs a program that is not on the API's path (the portal, the log copier, JupyterLab) after a
# head start for the proxy and llama-server: for the first second of a boot, every core goes to
# the services a user is waiting for, not to Python imports of the others, whose own
# wait-for-the-essential-services check then follows (docs/benchmarks.md, boot to healthy).
set -euo pipefail
sleep 1
exec "$@"
