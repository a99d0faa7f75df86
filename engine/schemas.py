"""JSON Schemas from schemas/, compiled once.

Each message type has its own schema file; `$ref`s between them use the `schema:` scheme, resolved here
from the same folder, so the files stay the single source of truth.

Two libraries read the same files: jsonschema-rs decides whether a document is valid (compiled Rust:
~0.6 µs for a record.change message, where fastjsonschema's generated Python took ~4.6 µs, a sixth of the
engine's fixed cost per message), and fastjsonschema explains a refusal, in the words dead letters, the
client and the API use. Neither fills in schema defaults: code reads optional fields with their default.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import jsonschema_rs
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
    schema = load_schema(name)
    # `time` is checked where it is parsed; format checks cost per message
    decide = jsonschema_rs.validator_for(schema, retriever=load_schema, validate_formats=False)
    explain = fastjsonschema.compile(schema, handlers={"schema": load_schema}, use_formats=False,
                                     use_default=False)
    is_valid = decide.is_valid

    def check(document: Any) -> Any:
        if not is_valid(document):
            explain(document)
            raise _refused(decide, document)
        return document

    return check


def _refused(decide: Any, document: Any) -> fastjsonschema.JsonSchemaValueException:
    """jsonschema-rs's reason, for a document it refused and fastjsonschema accepted (they are meant to
    agree; tests/unit/test_schemas.py holds them to it)."""
    error = next(decide.iter_errors(document))
    path = "".join(f".{part}" for part in error.instance_path)
    return fastjsonschema.JsonSchemaValueException(f"data{path} {error.message}", name=f"data{path}",
                                                   rule="jsonschema-rs")


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
    kind = message.get("type")
    name = MESSAGE_SCHEMAS.get(kind) if isinstance(kind, str) else None  # ([] or {} would raise TypeError)
    if name is None:
        raise SchemaViolation(f"unknown message type {kind!r}")
    try:
        validator(name)(message)
    except fastjsonschema.JsonSchemaException as exc:
        raise SchemaViolation(f"{name}: {exc.message}") from None
