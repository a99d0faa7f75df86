"""Known workspaces (tenants): their custom fields and their team, from the workspaces file.

A record or segment of a workspace not listed here is refused (dead-lettered), so a typo upstream cannot
create a phantom tenant. The team is who `hidden_from`, `default_for` and chat assignment may name, so a
misspelt name is refused when it is written instead of silently matching nobody.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import orjson

from engine.rules import Catalog, FieldType, catalog_for
from engine.rules.catalog import OBJECT_TYPES

TEAM_ROLES = ("admin", "agent")
# A team member's (or group's) name; chat assignment takes the same for its rule ids, so any team member
# can be named everywhere.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")


@dataclass(frozen=True)
class TeamMember:
    name: str
    role: str  # "admin" | "agent"
    group: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "role": self.role, "group": self.group}


@dataclass(frozen=True)
class Workspaces:
    """Field catalogs per (workspace, object type), and each workspace's team by member name."""

    catalogs: Mapping[tuple[str, str], Catalog]
    teams: Mapping[str, Mapping[str, TeamMember]] = field(default_factory=dict)

    def catalog(self, workspace: str, object_type: str) -> Catalog | None:
        return self.catalogs.get((workspace, object_type))

    def team(self, workspace: str) -> Mapping[str, TeamMember]:
        """The workspace's team members by name (empty when the file declares none)."""
        return self.teams.get(workspace, {})

    def __contains__(self, workspace: object) -> bool:
        return any(ws == workspace for ws, _ in self.catalogs)

    @property
    def names(self) -> list[str]:
        return sorted({ws for ws, _ in self.catalogs})


def load_team(workspace: str, spec: object) -> dict[str, TeamMember]:
    """`{name: {"role": "admin"|"agent", "group": str|null}}`; a bad entry stops the worker at start."""
    if not isinstance(spec, dict):
        raise ValueError(f"workspace {workspace!r}: `team` must be an object of team members by name")
    team: dict[str, TeamMember] = {}
    for name, member in spec.items():
        where = f"workspace {workspace!r}, team member {name!r}"
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{where}: a name is 1-100 letters, digits or `_.@+-`")
        if not isinstance(member, dict) or member.get("role") not in TEAM_ROLES:
            raise ValueError(f"{where}: `role` must be one of {', '.join(TEAM_ROLES)}")
        group = member.get("group")
        if group is not None and (not isinstance(group, str) or not NAME_PATTERN.match(group)):
            raise ValueError(f"{where}: `group` must be null or 1-100 letters, digits or `_.@+-`")
        team[name] = TeamMember(name, member["role"], group)
    return team


def load_workspaces(path: Path) -> Workspaces:
    """Read `{"workspaces": {name: {"custom_fields": {object_type: {field: type}}, "team": {...}}}}`."""
    doc = orjson.loads(path.read_bytes())
    catalogs: dict[tuple[str, str], Catalog] = {}
    teams: dict[str, dict[str, TeamMember]] = {}
    for name, spec in doc["workspaces"].items():
        custom = spec.get("custom_fields", {})
        for object_type in OBJECT_TYPES:
            fields = {f: FieldType(t) for f, t in custom.get(object_type, {}).items()}
            catalogs[(name, object_type)] = catalog_for(object_type, fields)
        teams[name] = load_team(name, spec.get("team", {}))
    return Workspaces(catalogs, teams)
