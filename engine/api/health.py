"""GET /health: is this worker ready, which partitions does it own, who owns the rest."""
from __future__ import annotations

from aiohttp import web

from engine.api.server import Context, Routes, reply


def register(routes: Routes) -> None:
    routes.add("GET", "/health", health, public=True)


async def health(ctx: Context) -> web.StreamResponse:
    engine = ctx.engine
    partitions = engine.cluster.local_partitions()
    ready = engine.registry_ready.is_set()
    return reply({"ready": ready, "partitions": partitions, "workers": engine.cluster.owners()}, 200 if ready else 503)
