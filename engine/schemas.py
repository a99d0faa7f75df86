"""JSON Schemas from schemas/, compiled once with fastjsonschema.

Each message type has its own schema file; `$ref`s between them use the `schema:` scheme, resolved here
from the same folder, so the files stay the single source of truth.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import orjson

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

Validator = Callable[[Any], Any]


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """Parse schemas/<name> (name may carry the `schema:` prefix used in $ref and $id)."""
    file = name.removeprefix("schema:")
    data: dict[str, Any] = orjson.loads((SCHEMA_DIR / file).read_bytes())
    return data


@lru_cache(maxsize=None)
def validator(name: str) -> Validator:
    """A compiled validator for schemas/<name>; raises fastjsonschema.JsonSchemaException on bad input."""
    return fastjsonschema.compile(
        load_schema(name),
        handlers={"schema": load_schema},
        use_formats=False,  # `time` is checked where it is parsed; format checks cost per message
    )


MESSAGE_SCHEMAS: dict[str, str] = {
    "record.change": "record-change.json",
    "record.changes": "record-changes.json",
    "engine.sync": "engine-sync.json",
    "engine.tick": "engine-tick.json",
    "record.event": "record-event.json",
    "record.events": "record-events.json",
    "segment.import": "segment-import.json",
    "segment.defined": "segment-defined.json",
    "segment.removed": "segment-removed.json",
    "segment.entered": "segment-membership.json",
    "segment.exited": "segment-membership.json",
    "segment.deleted": "segment-deleted.json",
    "conversation.created": "conversation-created.json",
    "conversation.assigned": "conversation-assignment.json",
    "conversation.unassigned": "conversation-assignment.json",
    "assignment.rules": "assignment-rules.json",
    "default.segment": "default-segment.json",
    "deadletter": "dead-letter.json",
}


def validate_message(message: Any) -> None:
    """Check a decoded message against the schema of its `type`; raises SchemaViolation."""
    from engine.errors import SchemaViolation

    if not isinstance(message, dict):
        raise SchemaViolation("message is not a JSON object")
    name = MESSAGE_SCHEMAS.get(message.get("type"))  # type: ignore[arg-type]
    if name is None:
        raise SchemaViolation(f"unknown message type {message.get('type')!r}")
    try:
        validator(name)(message)
    except fastjsonschema.JsonSchemaException as exc:
        raise SchemaViolation(f"{name}: {exc.message}") from None
