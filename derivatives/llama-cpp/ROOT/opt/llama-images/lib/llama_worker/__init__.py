"""The serverless worker (Supervisor program `pyworker`, SERVERLESS=true): Vast.ai's own worker
framework (vastai.serverless) in front of llama-server. settings.py and workload.py are
stdlib-only and pure; worker.py is the one module that imports vastai. llama-server's readiness
comes from the launcher's status record (llama_serving/status.py), read as the portal reads it."""
