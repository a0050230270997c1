"""The serverless worker (Supervisor program `pyworker`, SERVERLESS=true): Vast.ai's own worker
framework (vastai.serverless) in front of llama-server. settings.py, workload.py and
launcher_status.py are stdlib-only and pure; worker.py is the one module that imports vastai."""
