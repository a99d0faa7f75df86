"""Known workspaces (tenants) and their custom fields, from the workspaces file.

A record or segment of a workspace not listed here is refused (dead-lettered), so a typo upstream cannot
create a phantom tenant.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import orjson

from engine.rules import Catalog, FieldType, catalog_for
from engine.rules.catalog import OBJECT_TYPES


@dataclass(frozen=True)
class Workspaces:
    """Field catalogs per (workspace, object type)."""

    catalogs: Mapping[tuple[str, str], Catalog]

    def catalog(self, workspace: str, object_type: str) -> Catalog | None:
        return self.catalogs.get((workspace, object_type))

    def __contains__(self, workspace: object) -> bool:
        return any(ws == workspace for ws, _ in self.catalogs)

    @property
    def names(self) -> list[str]:
        return sorted({ws for ws, _ in self.catalogs})


def load_workspaces(path: Path) -> Workspaces:
    """Read `{"workspaces": {name: {"custom_fields": {object_type: {field: type}}}}}`."""
    doc = orjson.loads(path.read_bytes())
    catalogs: dict[tuple[str, str], Catalog] = {}
    for name, spec in doc["workspaces"].items():
        custom = spec.get("custom_fields", {})
        for object_type in OBJECT_TYPES:
            fields = {f: FieldType(t) for f, t in custom.get(object_type, {}).items()}
            catalogs[(name, object_type)] = catalog_for(object_type, fields)
    return Workspaces(catalogs)
