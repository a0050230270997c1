# Generated from llama_serving/paths.py by `nox -s generate`: edit that file, not this one.
# shellcheck shell=bash disable=SC2034
LLAMA_SERVING_LAUNCHER_DIR=/run/llama-images/llama
LLAMA_SERVING_GAVE_UP_FILE=/run/llama-images/llama/gave-up
LLAMA_SERVING_PID_FILE=/run/llama-images/llama/llama-server.pid
LLAMA_SERVING_PRESET_FILE=/run/llama-images/llama/models.ini
LLAMA_SERVING_REQUESTS_SERVED_FILE=/run/llama-images/llama/requests-served
LLAMA_SERVING_STATUS_FILE=/run/llama-images/status/llama
LLAMA_SERVING_STATUS_RECORD_FILE=/run/llama-images/llama/status.json
LLAMA_SERVING_OVERRIDE_FILE=/run/llama-images/services.d/llama.toml
LLAMA_SERVING_SUPERVISOR_PROGRAM_FILE=/etc/supervisor/conf.d/llama.conf
LLAMA_SERVING_SERVER_DIRECTORY=/
LLAMA_SERVING_WORKER_DIR=/run/llama-images/pyworker
LLAMA_SERVING_WORKER_STATUS_FILE=/run/llama-images/status/pyworker
LLAMA_SERVING_WORKER_OVERRIDE_FILE=/run/llama-images/services.d/pyworker.toml
