"""HTTP errors as JSON with a stable code: `{"error": {"code", "message", ...details}}`."""
from __future__ import annotations

from typing import Any

from engine.rules.errors import EngineError, InvalidRule


class ApiError(Exception):
    """An error a client can act on; `code` is stable API, `message` is for humans."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str] | None:
        """`Retry-After` (seconds) when the error says when to retry (503 not_ready)."""
        retry = self.details.get("retry_after")
        return {"Retry-After": str(retry)} if retry is not None else None

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


def from_engine_error(exc: EngineError) -> ApiError:
    """Map a core error to HTTP: an invalid rule lists every problem with its path, field and operator."""
    if isinstance(exc, InvalidRule):
        return ApiError(422, "invalid_rule", str(exc), problems=[p.to_json() for p in exc.problems])
    return ApiError(422, exc.code, str(exc))


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def bad_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "bad_request", message, **details)
