"""Reference subscriber: print segment events as they arrive."""
from __future__ import annotations

from typing import Any

import orjson
from kafka import KafkaConsumer

import topics
from engine.settings import Settings

ARROWS = {"segment.entered": "ENTERED", "segment.exited": "EXITED ", "segment.deleted": "DELETED"}


def format_event(event: dict[str, Any]) -> str:
    data = event["data"]
    kind = ARROWS.get(event["type"], event["type"])
    scope = f"{event.get('workspace')}/{data.get('object_type')}"
    if event["type"] == "segment.deleted":
        return f"{event['time']}  {kind}  segment {scope}/{data['segment_id']} (v{data['segment_version']})"
    return (
        f"{event['time']}  {kind}  {scope}/{data['record_id']:<8} {'→' if kind == 'ENTERED' else '←'} "
        f"{data['segment_id']}  (record v{data['record_version']}, segment v{data['segment_version']}, {data['cause']})"
    )


def tail(settings: Settings, *, follow: bool, from_beginning: bool, as_json: bool, segment: str | None) -> int:
    consumer = KafkaConsumer(
        topics.SEGMENT_EVENTS.full_name(settings.topic_prefix),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        consumer_timeout_ms=float("inf") if follow else 3000,
        enable_auto_commit=False,
    )
    shown = 0
    try:
        for record in consumer:
            event = orjson.loads(record.value)
            if segment and event["data"].get("segment_id") != segment:
                continue
            print(record.value.decode() if as_json else format_event(event), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return shown
