"""Segment management over HTTP (CRUD, list/filter/search, status, figures)."""
from __future__ import annotations

from engine.api.server import Routes


def register(routes: Routes) -> None:
    """Placeholder until the CRUD routes land."""
