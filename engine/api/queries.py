"""Membership queries over HTTP."""
from __future__ import annotations

from engine.api.server import Routes


def register(routes: Routes) -> None:
    """Placeholder until the query routes land."""
