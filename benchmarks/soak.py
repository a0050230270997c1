"""The soak (issue 28), longer than the release gate's: the same load, verdict and bounds
(core/soak.py, edges/soak.py) on the CPU image, with `soak.BENCH`'s blocks; the figures go to the
table `nox -s bench` prints."""

from __future__ import annotations

from typing import Any

from llama_images.core import soak
from llama_images.edges import soak as soak_edge

from .measure import BenchError, Context


def measure_soak(ctx: Context, image: str, blocks: int) -> dict[str, Any]:
    settings = soak.Settings(blocks=blocks)
    ctx.log(f"soak: {settings.total_requests} requests in {blocks} blocks")
    try:
        run = soak_edge.run(image, settings, progress=lambda line: ctx.log(f"soak: {line}"))
    except soak_edge.SoakError as exc:
        raise BenchError(f"the soak could not run: {exc}") from None
    verdict = soak.judge(run)
    return {"image": image, "blocks": blocks, **soak.verdict_json(verdict), "figures": soak.figures_lines(verdict)}
