#!/usr/bin/env bash
# First boot: install extra packages requested at run time.
#   APT_PACKAGES  space-separated Debian/Ubuntu package names (apt-get)
#   PIP_PACKAGES  space-separated pip requirement specifiers, installed into /venv/main (the
#                 environment Jupyter's kernels use); pip's own PIP_* variables apply.
# Success is recorded under /var/lib/llama-images/done, so later boots skip the step; a failure
# is not (it is retried on the next boot). Boot goes on either way.
set -uo pipefail

# shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
source /opt/llama-images/lib/llama_runtime/paths.sh
done_dir=${LLAMA_IMAGES_DONE_DIR}
status=${LLAMA_IMAGES_PACKAGES_STATUS_FILE}

# Split on whitespace (newlines included) without glob expansion; nothing is evaluated.
read -r -d '' -a apt_packages <<<"${APT_PACKAGES:-}" || true
read -r -d '' -a pip_packages <<<"${PIP_PACKAGES:-}" || true

record() {
    mkdir -p "${done_dir}" 2>/dev/null && touch "${done_dir}/$1" 2>/dev/null ||
        echo "[packages] cannot record success in ${done_dir} (read-only?): $1 runs again next boot"
}

failed=()
if ((${#apt_packages[@]})); then
    if [[ -e ${done_dir}/apt ]]; then
        echo "[packages] APT_PACKAGES already installed on an earlier boot"
    elif ((EUID != 0)); then
        echo "[packages] FAILED: APT_PACKAGES needs root (this container runs as uid ${EUID}): ${apt_packages[*]}"
        failed+=("apt: ${apt_packages[*]}")
    else
        echo "[packages] apt-get install: ${apt_packages[*]}"
        if apt-get update -o Acquire::Retries=3 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${apt_packages[@]}"; then
            record apt
        else
            echo "[packages] FAILED: apt-get could not install: ${apt_packages[*]} (retried on the next boot)"
            failed+=("apt: ${apt_packages[*]}")
        fi
        apt-get clean
        rm -rf /var/lib/apt/lists/*
    fi
fi

if ((${#pip_packages[@]})); then
    if [[ -e ${done_dir}/pip ]]; then
        echo "[packages] PIP_PACKAGES already installed on an earlier boot"
    elif [[ ! -w /venv/main ]]; then
        echo "[packages] FAILED: /venv/main belongs to root, not uid ${EUID}; PIP_PACKAGES needs root: ${pip_packages[*]}"
        failed+=("pip: ${pip_packages[*]}")
    else
        echo "[packages] pip install into /venv/main: ${pip_packages[*]}"
        if /venv/main/bin/python -m pip install --no-cache-dir --disable-pip-version-check "${pip_packages[@]}"; then
            record pip
        else
            echo "[packages] FAILED: pip could not install: ${pip_packages[*]} (retried on the next boot)"
            failed+=("pip: ${pip_packages[*]}")
        fi
    fi
fi

if ((${#failed[@]})); then
    printf 'failed: %s\n' "${failed[*]}" >"${status}"
    exit 1
fi
if ((${#apt_packages[@]} + ${#pip_packages[@]})); then
    echo "done" >"${status}"
else
    echo "none requested" >"${status}"
fi
