#!/usr/bin/env bash
# install-env --venv DIR | --target DIR  REQUIREMENTS
# Image build helper (python-build stage): installs a hash-pinned requirements file for the
# build's TARGETARCH with uv, from binary wheels only, into a new virtualenv (byte-compiled by
# this python3, the same version as the target's) or a plain directory.
set -euo pipefail

mode="$1" dir="$2" requirements="$3"
# Optional CA bundle for hosts behind an inspecting proxy (BuildKit secret "pipcert").
if [[ -f /run/secrets/pipcert ]]; then
    export SSL_CERT_FILE=/run/secrets/pipcert UV_NATIVE_TLS=1
fi
case "${TARGETARCH:?TARGETARCH is not set}" in
    amd64) platform=x86_64-manylinux_2_28 ;;
    arm64) platform=aarch64-manylinux_2_28 ;;
    *) echo "install-env: unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;;
esac
uv=/opt/build-tools/bin/uv
common=(--python-platform "${platform}" --require-hashes --no-deps --no-build --compile-bytecode)
case "${mode}" in
    --venv)
        "${uv}" venv --quiet --python /usr/bin/python3 "${dir}"
        "${uv}" pip install --python "${dir}/bin/python" "${common[@]}" -r "${requirements}"
        ;;
    --target)
        "${uv}" pip install --python /usr/bin/python3 --target "${dir}" "${common[@]}" -r "${requirements}"
        ;;
    *) echo "install-env: unknown mode ${mode}" >&2; exit 1 ;;
esac
