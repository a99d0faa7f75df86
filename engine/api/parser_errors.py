"""JSON answers for requests aiohttp refuses before any route runs (a header past the parser's limit, a
malformed request line), so every error a client gets from a worker is `{"error": {"code", "message"}}`.

aiohttp writes those answers itself, as plain text, from its connection handler: no middleware or route
sees them. The worker's runner builds its server with a handler that answers in JSON instead.
"""
from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from engine.api.errors import ApiError


def parser_error(status: int, exc: BaseException | None) -> ApiError:
    """The JSON error for what the HTTP parser (or the connection handler) refused."""
    if isinstance(exc, LineTooLong):
        return ApiError(431, "header_too_large", "a request line or header field is over the server's limit")
    if isinstance(exc, BadHttpMessage) or 400 <= status < 500:
        return ApiError(status if 400 <= status < 500 else 400, "bad_request", "the request is not valid HTTP")
    return ApiError(500, "internal_error", "internal error")


class _JsonErrorHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a response was sent in part
        error = parser_error(status, exc)
        response = web.Response(status=error.status, body=orjson.dumps(error.body()), content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors in JSON (same application, same options)."""

    async def _make_server(self) -> Server:
        built = await super()._make_server()
        return _JsonErrorServer(built.request_handler, request_factory=built.request_factory,
                                handler_cancellation=built.handler_cancellation, loop=built._loop,
                                **built._kwargs)


def answer_parser_errors_in_json(web_driver: Any) -> None:
    """Give Faust's aiohttp web driver (not started yet) a runner that answers parser errors in JSON."""
    web_driver._runner = JsonErrorRunner(web_driver.web_app, access_log=None)
