"""Every HTTP route of the engine, registered in one place."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.api import account, assignment, catalog, console, defaults, feed, health, imports, openapi, queries, segments, team
from engine.api.auth import load_tokens
from engine.api.parser_errors import answer_parser_errors_in_json
from engine.api.server import Routes

if TYPE_CHECKING:
    from engine.app import Engine


def all_routes() -> Routes:
    routes = Routes()
    for module in (segments, queries, feed, imports, assignment, account, team, defaults, catalog, health, openapi, console):
        module.register(routes)
    return routes


def install_routes(engine: "Engine") -> Routes:
    routes = all_routes()
    drop_faust_views(engine)
    answer_parser_errors_in_json(engine.app.web)
    routes.install(engine, load_tokens(engine.settings.tokens_file))
    return routes


def drop_faust_views(engine: "Engine") -> None:
    """Serve none of Faust's built-in web views. They answer without a token, outside the workspace
    checks: `/table/record-state/{key}/` returns any record's stored state (fields, memberships) of any
    workspace, `/router/` the cluster's workers and partitions, `/` a status page. The engine's routes
    above (and the Prometheus sensor's /metrics) are all a worker serves."""
    blueprints = engine.app.web.blueprints
    if blueprints.applied:
        raise RuntimeError("Faust's web views were installed before the engine's routes")
    blueprints._enabled.clear()  # Faust has no public switch for all of them once the app exists
