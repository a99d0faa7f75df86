"""Every HTTP route of the engine, registered in one place."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.api import assignment, health, imports, openapi, queries, segments
from engine.api.auth import load_tokens
from engine.api.server import Routes

if TYPE_CHECKING:
    from engine.app import Engine


def all_routes() -> Routes:
    routes = Routes()
    for module in (segments, queries, imports, assignment, health, openapi):
        module.register(routes)
    return routes


def install_routes(engine: "Engine") -> Routes:
    routes = all_routes()
    routes.install(engine, load_tokens(engine.settings.tokens_file))
    return routes
