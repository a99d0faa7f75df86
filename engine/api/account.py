"""Who is calling and which workspaces they may act in: what a client (the console) asks first.

A superadmin sees every configured workspace (the "All companies" filter) and may act in any; everyone
else sees exactly their own.
"""
from __future__ import annotations

from aiohttp import web

from engine.api.server import Context, Routes, reply


def register(routes: Routes) -> None:
    routes.add("GET", "/v1/me", me)
    routes.add("GET", "/v1/workspaces", list_workspaces)


def visible_workspaces(ctx: Context) -> list[str]:
    return [name for name in ctx.engine.registry.workspaces.names if ctx.principal.can_see(name)]


async def me(ctx: Context) -> web.StreamResponse:
    p = ctx.principal
    return reply({"role": p.role, "member": p.member, "workspace": p.workspace, "workspaces": visible_workspaces(ctx)})


async def list_workspaces(ctx: Context) -> web.StreamResponse:
    registry = ctx.engine.registry
    return reply({"workspaces": [{"name": name, "segments": len(registry.in_workspace(name))}
                                 for name in visible_workspaces(ctx)]})
