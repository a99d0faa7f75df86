"""The segment manager's web console: static files served by every worker under /console/.

The files call the public HTTP API with the bearer token the user enters in the page, so the routes here
are public and serve only files of the package's `console` folder (names checked, no paths).
"""
from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from engine.api.errors import not_found
from engine.api.server import Context, Routes

FOLDER = Path(__file__).resolve().parent.parent / "console"
FILE_NAME = re.compile(r"^[a-z0-9-]+\.(html|js|css|svg)$")
CONTENT_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
# The page talks only to this worker: no script, style or connection elsewhere (works offline, no CDN).
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def register(routes: Routes) -> None:
    routes.add("GET", "/console", redirect_to_console, public=True)
    routes.add("GET", "/console/", console_file, public=True)
    routes.add("GET", "/console/{file}", console_file, public=True)


async def redirect_to_console(ctx: Context) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/console/"})


async def console_file(ctx: Context) -> web.StreamResponse:
    name = ctx.params.get("file") or "index.html"
    path = FOLDER / name
    if not FILE_NAME.match(name) or not path.is_file():
        raise not_found(f"console file {name!r}")
    return web.Response(body=path.read_bytes(), content_type=CONTENT_TYPES[name.rsplit(".", 1)[1]], charset="utf-8",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": POLICY,
                                 "X-Content-Type-Options": "nosniff"})
