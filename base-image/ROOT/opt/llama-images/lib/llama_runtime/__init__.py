"""The base runtime's Python side (stdlib only; runs with the image's python3 >= 3.11).

`python3 -m llama_runtime --help` lists the commands boot, Supervisor and the health check use.
"""
