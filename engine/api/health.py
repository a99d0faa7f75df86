"""Health: liveness (the process serves), readiness (every answer is complete: segment registry loaded,
this worker's tables recovered, no rebalance under way, and every partition held by a live worker) and
the details an operator looks at."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.cluster import RETRY_AFTER_BUSY
from engine.api.server import Context, Routes, reply
from engine.observe import consumer_lag


def register(routes: Routes) -> None:
    routes.add("GET", "/health", health, public=True)
    routes.add("GET", "/health/live", live, public=True)
    routes.add("GET", "/health/ready", ready, public=True)


async def live(ctx: Context) -> web.StreamResponse:
    """200 while the event loop serves requests: a restart cannot help anything that answers here."""
    return reply({"live": True})


def readiness(ctx: Context) -> dict[str, Any]:
    """`ready` with its parts. `unowned_partitions`: partitions no live worker holds as the group is
    assigned now (a killed worker's, until the group evicts it after the session timeout);
    `repairing_partitions`: this worker's partitions restored from the changelog and not repaired yet."""
    engine = ctx.engine
    recovery = engine.app.tables.recovery
    try:
        unowned = engine.cluster.unowned()
        repairing = engine.cluster.repairing()
    except Exception:  # noqa: BLE001 - not started yet
        unowned, repairing = list(range(engine.settings.partitions)), []
    return {
        "ready": engine.cluster.ready(),
        "registry_loaded": engine.registry_ready.is_set(),
        "recovering": bool(recovery.in_recovery or not recovery.completed.is_set() or engine.app.rebalancing),
        "unowned_partitions": unowned,
        "repairing_partitions": repairing,
        "partition_count": engine.settings.partitions,
    }


async def ready(ctx: Context) -> web.StreamResponse:
    """200 when every answer of this worker is complete, 503 while it loads definitions, recovers its
    tables, or a partition has no live owner."""
    state = readiness(ctx)
    retry = None if state["ready"] else {"Retry-After": str(RETRY_AFTER_BUSY)}
    return reply(state, 200 if state["ready"] else 503, retry)


async def health(ctx: Context) -> web.StreamResponse:
    """Readiness plus the partitions this worker owns, who owns the rest, running backfills (records left
    per partition) and consumer lag per partition (messages not applied yet, all input topics)."""
    engine = ctx.engine
    state = readiness(ctx)
    try:
        partitions = engine.cluster.local_partitions()
    except Exception:  # noqa: BLE001 - not assigned yet
        partitions = []
    backfill = {str(p): n for p, n in sorted(engine.backfill_pending.items()) if n}
    lag: dict[str, int] = {}
    for (_, p), n in consumer_lag(engine, partitions).items():
        lag[str(p)] = lag.get(str(p), 0) + n
    body = {**state, "partitions": partitions, "workers": engine.cluster.owners(), "backfill_pending": backfill,
            "lag": lag}
    return reply(body, 200 if state["ready"] else 503)
