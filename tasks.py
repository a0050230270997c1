"""invoke tasks: a thin shell over the llama_images package. `invoke --list` shows them.

The project root is this file's own directory: every task builds this checkout's matrix.yaml,
Dockerfiles and git revision, whichever checkout the package was installed from.
"""

from __future__ import annotations

from pathlib import Path

from llama_images.cli.tasks import collection

ns = collection(Path(__file__).resolve().parent)
