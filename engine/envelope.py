"""Message envelopes, keys and deterministic event ids.

Every message is a CloudEvents-style JSON object (`specversion`, `id`, `source`, `type`, `time`,
`workspace`, `data`) serialised with orjson; this module is the one place that builds them.
"""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson

SPECVERSION = "1.0"
ENGINE_SOURCE = "segment-engine"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(
    type_: str,
    data: Any,
    *,
    workspace: str | None = None,
    source: str = ENGINE_SOURCE,
    id_: str | None = None,
    time: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": id_ or uuid.uuid4().hex,
        "source": source,
        "type": type_,
        "time": time or utc_now_iso(),
    }
    if workspace is not None:
        message["workspace"] = workspace
    message["data"] = data
    return message


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def record_key(workspace: str, object_type: str, record_id: str) -> str:
    """Kafka key of a record: its changes, state and events all live on the partition this hashes to."""
    return f"{workspace}/{object_type}/{record_id}"


def split_record_key(key: str) -> tuple[str, str, str]:
    workspace, object_type, record_id = key.split("/", 2)
    return workspace, object_type, record_id


def segment_key(workspace: str, object_type: str, segment_id: str) -> str:
    return f"{workspace}/{object_type}/{segment_id}"


def transition_id(
    workspace: str,
    object_type: str,
    record_id: str,
    segment_id: str,
    segment_version: int,
    record_version: int,
    event_type: str,
    nonce: str = "",
) -> str:
    """Deterministic id: the same transition reprocessed after a crash hashes to the same id."""
    parts = (workspace, object_type, record_id, segment_id, str(segment_version), str(record_version), event_type)
    if nonce:
        parts += (nonce,)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
