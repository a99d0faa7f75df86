"""Errors of the stream edge: each carries a stable code that becomes the dead-letter reason code."""
from __future__ import annotations

from engine.rules.errors import EngineError


class BadMessage(EngineError):
    """A message (or one change of a batch) the engine cannot use; it is dead-lettered, never dropped."""

    code = "bad_message"
    codes = ()  # never raised as such: each problem has its own subclass


class MessageTooLarge(BadMessage):
    code = "message_too_large"


class MalformedJson(BadMessage):
    code = "malformed_json"


class SchemaViolation(BadMessage):
    code = "schema_violation"


class UnknownWorkspace(BadMessage):
    code = "unknown_workspace"


class WrongPartition(BadMessage):
    code = "wrong_partition"


class NotImportable(BadMessage):
    """An import for a segment that is unknown, dynamic (rule-based) or inactive."""

    code = "not_importable"


class InternalError(BadMessage):
    """A bug met by one change: dead-lettered with the exception so the partition keeps flowing."""

    code = "internal_error"


class StateTooLarge(BadMessage):
    """Applying the item would grow the record's state past what one changelog message may carry."""

    code = "state_too_large"
