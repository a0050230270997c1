#!/usr/bin/env bash
# First boot only: install extra packages requested at run time.
#   APT_PACKAGES  space-separated Debian/Ubuntu package names (apt-get)
#   PIP_PACKAGES  space-separated pip requirement specifiers (python3 -m pip)
# A marker under /var/lib makes container restarts skip this step.
set -euo pipefail

marker=/var/lib/boot/10-packages.done
if [[ -e ${marker} ]]; then
    echo "[packages] already done on an earlier boot (${marker})"
    exit 0
fi

# Split on whitespace (newlines included) without glob expansion.
read -r -d '' -a apt_packages <<<"${APT_PACKAGES:-}" || true
read -r -d '' -a pip_packages <<<"${PIP_PACKAGES:-}" || true

if ((${#apt_packages[@]})); then
    echo "[packages] apt-get install: ${apt_packages[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${apt_packages[@]}"
    apt-get clean
    rm -rf /var/lib/apt/lists/*
fi

if ((${#pip_packages[@]})); then
    if python3 -m pip --version >/dev/null 2>&1; then
        echo "[packages] pip install: ${pip_packages[*]}"
        # The user asked for these packages in this container: allow installing next to
        # distro-managed Python (PEP 668 would refuse otherwise).
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir "${pip_packages[@]}"
    else
        echo "[packages] PIP_PACKAGES is set but 'python3 -m pip' is not available; skipped: ${pip_packages[*]}" >&2
    fi
fi

mkdir -p "${marker%/*}"
touch "${marker}"
