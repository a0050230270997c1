# shellcheck shell=sh
# CUDA forward compatibility in shells (docker exec, SSH, Jupyter's terminals): the compat
# library directory boot chose (llama_runtime/paths.py CUDA_COMPAT_FILE) goes first on
# LD_LIBRARY_PATH, after whatever /etc/environment set, so nvidia-smi and a user's own CUDA
# program see the CUDA llama-server sees. Login shells read this from /etc/profile; non-login
# bash (docker exec -it ... bash) from /etc/bash.bashrc. It runs at every shell's start: one
# subshell, no program.
llama_images_compat=$(
    # shellcheck source=base-image/ROOT/opt/llama-images/lib/llama_runtime/paths.sh
    . /opt/llama-images/lib/llama_runtime/paths.sh 2>/dev/null &&
        read -r line <"${LLAMA_IMAGES_CUDA_COMPAT_FILE}" 2>/dev/null
    printf '%s' "${line:-}"
)
case "${llama_images_compat}" in
    /*)
        case "${LD_LIBRARY_PATH:-}" in
            "${llama_images_compat}" | "${llama_images_compat}":*) ;;
            *) export LD_LIBRARY_PATH="${llama_images_compat}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}" ;;
        esac
        ;;
esac
unset llama_images_compat
