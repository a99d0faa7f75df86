"""Every HTTP route of the engine, registered in one place."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.api import health, queries, segments
from engine.api.auth import load_tokens
from engine.api.server import Routes

if TYPE_CHECKING:
    from engine.app import Engine


def install_routes(engine: "Engine") -> Routes:
    routes = Routes()
    segments.register(routes)
    queries.register(routes)
    health.register(routes)
    routes.install(engine, load_tokens(engine.settings.tokens_file))
    return routes
