"""A workspace's team over HTTP, and the check that a name written anywhere is one of its members.

The team is declared in the workspaces file (engine/workspaces.py); every signed-in member of the
workspace may list it (the console offers its names for "hidden from", "default for" and assignment).
"""
from __future__ import annotations

from typing import Iterable

from aiohttp import web

from engine.api.errors import ApiError
from engine.api.scope import workspace_of
from engine.api.server import Context, Routes, reply


def register(routes: Routes) -> None:
    routes.add("GET", "/v1/workspaces/{workspace}/team", list_team)


async def list_team(ctx: Context) -> web.StreamResponse:
    workspace = await workspace_of(ctx)
    team = ctx.engine.registry.workspaces.team(workspace)
    return reply({"members": [team[name].to_json() for name in sorted(team)]})


def unknown_member(member: str, workspace: str, **where: str) -> ApiError:
    return ApiError(422, "unknown_team_member", f"{member!r} is not a team member of workspace {workspace!r}",
                    member=member, **where)


def check_team_members(ctx: Context, workspace: str, attribute: str, names: Iterable[str]) -> None:
    """422 `unknown_team_member` naming the attribute and the first name not in the workspace's team."""
    team = ctx.engine.registry.workspaces.team(workspace)
    for name in names:
        if name not in team:
            raise unknown_member(name, workspace, attribute=attribute)
