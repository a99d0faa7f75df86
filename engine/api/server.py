"""Route table for the HTTP API: authentication, body limits and JSON errors in one place.

Handlers are plain `async def handler(ctx) -> Response`; `Routes.install` turns them into Faust views
(one view class per path, one method per HTTP verb).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from aiohttp import web

from engine.api.auth import Principal, Tokens
from engine.api.errors import ApiError, bad_request, from_engine_error
from engine.rules.errors import EngineError

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger("segment_engine.api")

FORWARDED_HEADER = "X-Segment-Engine-Forwarded"
APPLY_TIMEOUT = 10.0  # seconds a write waits for this worker to apply what it published


@dataclass
class Context:
    """One request as a handler sees it."""

    engine: "Engine"
    request: web.Request
    principal: Principal
    params: dict[str, str]

    async def json(self) -> Any:
        """The request body as JSON; 413 beyond the body limit, 400 when it is not JSON."""
        limit = self.engine.settings.max_request_bytes
        if (self.request.content_length or 0) > limit:
            raise ApiError(413, "payload_too_large", f"request body over {limit} bytes")
        raw = await self.request.content.read(limit + 1)
        if len(raw) > limit:
            raise ApiError(413, "payload_too_large", f"request body over {limit} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"body is not JSON: {exc}") from None

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query.get(name, default)

    @property
    def forwarded(self) -> bool:
        return FORWARDED_HEADER in self.request.headers


class ExportInterrupted(Exception):
    """A streamed answer lost a partition after its first bytes were sent: the connection is broken off
    (no final chunk), so a client cannot take the part it got for the whole answer."""


Handler = Callable[[Context], Awaitable[web.StreamResponse]]


async def until_applied(applied: Callable[[], bool], what: str, version: int) -> None:
    """Read-your-writes: a write publishes to a compacted topic every worker follows, then waits here until
    this worker has applied it (`applied()`), so a read right after it sees it; 504 `not_applied` past
    APPLY_TIMEOUT."""
    deadline = time.monotonic() + APPLY_TIMEOUT
    while not applied():
        if time.monotonic() > deadline:
            raise ApiError(504, "not_applied", f"version {version} of {what} was published but not applied by this "
                           f"worker within {APPLY_TIMEOUT:.0f} s", version=version)
        await asyncio.sleep(0.02)


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


@dataclass
class Routes:
    """Collects (method, path) → handler; `public` paths skip authentication."""

    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)

    def add(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        self.handlers.setdefault(path, {})[method.lower()] = handler
        if public:
            self.public.add(path)

    def install(self, engine: "Engine", tokens: Tokens) -> None:
        from faust.web import View

        for path, methods in self.handlers.items():
            attrs = {
                verb: _wrap(engine, tokens, handler, path in self.public) for verb, handler in methods.items()
            }
            view = type(f"View{abs(hash(path))}", (View,), attrs)
            engine.app.page(path)(view)


def _wrap(engine: "Engine", tokens: Tokens, handler: Handler, public: bool) -> Callable[..., Awaitable[Any]]:
    async def method(view: Any, request: web.Request, **params: str) -> web.StreamResponse:
        try:
            principal = Principal(None, "public", None) if public else tokens.authenticate(request.headers)
            return await handler(Context(engine, request, principal, params))
        except ApiError as exc:
            return reply(exc.body(), exc.status, exc.headers())
        except EngineError as exc:
            error = from_engine_error(exc)
            return reply(error.body(), error.status)
        except ExportInterrupted:
            log.warning("%s %s: streamed answer broken off", request.method, request.path, exc_info=True)
            raise  # aiohttp closes the connection: the response was sent in part
        except Exception:  # noqa: BLE001 - a bug answers 500 JSON, never a stack trace
            log.exception("%s %s failed", request.method, request.path)
            return reply(ApiError(500, "internal_error", "internal error").body(), 500)

    return method
