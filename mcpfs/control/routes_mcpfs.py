"""mcpfs's own routes: ``/api/v0/mcpfs/stats`` (JSON) and ``/metrics`` (Prometheus text).

Both read the daemon's :class:`~mcpfs.stats.Stats` (O(ops of mounts, backends and bridge
routes) work, no thread hop).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..stats import METRICS_CONTENT_TYPE
from .common import Ctx, ctx_of, json_response

router = APIRouter()
metrics_router = APIRouter()


@router.post("/mcpfs/stats")
async def mcpfs_stats(ctx: Ctx = Depends(ctx_of)):
    """Per-mount and per-backend ops, bytes, errors, latency percentiles (seconds) and
    cache hits, and the bridge's native/streamed transfers (``Stats.snapshot``)."""
    return json_response(ctx.stats.snapshot())


@metrics_router.get("/metrics")
async def metrics(ctx: Ctx = Depends(ctx_of)):
    return Response(ctx.stats.prometheus_text(), media_type=METRICS_CONTENT_TYPE)
