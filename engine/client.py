"""Publishing helpers for upstream systems and the CLI: record changes, behavioural events, segment
definitions, imports and (manual clock) time.

Changes and events are keyed `workspace/object_type/record_id` and partitioned with Kafka's default
partitioner; batches are formed per partition, because a record.changes / record.events message may
only carry records of the partition it is sent to.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from kafka import KafkaProducer

import topics
from engine.envelope import encode, envelope, record_key, segment_key
from engine.intake import partition_for
from engine.settings import Settings

Change = Mapping[str, Any]  # {"op", "object_type", "id", "version", "fields"}
BehaviourEvent = Mapping[str, Any]  # {"id", "object_type", "record_id", "name", "at", "properties"}
T = TypeVar("T")
IMPORT_CHUNK = 5000  # record ids per segment.import message


class Publisher:
    """A kafka-python producer that knows the engine's topics, keys and batch shape."""

    def __init__(self, settings: Settings, source: str = "segment-engine-cli") -> None:
        self.settings = settings
        self.source = source
        self.producer = KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            linger_ms=5,
            max_request_size=settings.max_message_bytes * 2,
            acks="all",
        )
        self.records_topic = topics.RECORD_CHANGES.full_name(settings.topic_prefix)
        self.behaviour_topic = topics.BEHAVIOUR_EVENTS.full_name(settings.topic_prefix)
        self.definitions_topic = topics.SEGMENT_DEFINITIONS.full_name(settings.topic_prefix)

    def publish_change(self, workspace: str, change: Change) -> None:
        """One change per message (type record.change)."""
        key = record_key(workspace, change["object_type"], change["id"])
        message = envelope("record.change", dict(change), workspace=workspace, source=self.source)
        self.producer.send(
            self.records_topic,
            key=key.encode(),
            value=encode(message),
            partition=partition_for(key, self.settings.partitions),
        )

    def publish_batches(self, workspace: str, changes: Iterable[Change], batch_size: int) -> int:
        """Group changes by partition into record.changes messages of at most `batch_size`; returns messages sent."""
        sent = 0
        for partition, chunk in batches_by_partition(workspace, changes, self.settings.partitions, batch_size):
            first = chunk[0]
            key = record_key(workspace, first["object_type"], first["id"])
            message = envelope("record.changes", {"changes": [dict(c) for c in chunk]}, workspace=workspace, source=self.source)
            self.producer.send(self.records_topic, key=key.encode(), value=encode(message), partition=partition)
            sent += 1
        return sent

    def publish_events(self, workspace: str, events: Iterable[BehaviourEvent], batch_size: int = 1) -> int:
        """Behavioural events: one per record.event message, or record.events batches per partition."""
        sent = 0
        key_of = lambda e: record_key(workspace, e["object_type"], e["record_id"])  # noqa: E731
        for partition, chunk in group_by_partition(events, key_of, self.settings.partitions, batch_size):
            if batch_size == 1:
                message = envelope("record.event", dict(chunk[0]), workspace=workspace, source=self.source)
            else:
                message = envelope("record.events", {"events": [dict(e) for e in chunk]}, workspace=workspace,
                                   source=self.source)
            self.producer.send(self.behaviour_topic, key=key_of(chunk[0]).encode(), value=encode(message),
                               partition=partition)
            sent += 1
        return sent

    def set_clock(self, now_ms: int) -> None:
        """Manual clock: move every partition's time to `now_ms` (it never moves back) and run what is due."""
        message = encode(envelope("engine.tick", {"now": now_ms}, source=self.source))
        for partition in range(self.settings.partitions):
            self.producer.send(self.records_topic, value=message, partition=partition)

    def publish_raw(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        """Put arbitrary bytes on the record-change topic (tests and replays of dead letters)."""
        self.producer.send(self.records_topic, key=key, value=value, partition=partition)

    def define_segment(self, workspace: str, segment: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a segment.defined message; the version defaults to the current time in ms."""
        data = dict(segment)
        data.setdefault("version", int(time.time() * 1000))
        data.setdefault("status", "active")
        key = segment_key(workspace, data["object_type"], data["id"])
        self.producer.send(
            self.definitions_topic,
            key=key.encode(),
            value=encode(envelope("segment.defined", data, workspace=workspace, source=self.source)),
        )
        return data

    def remove_segment(self, workspace: str, object_type: str, segment_id: str, version: int | None = None) -> None:
        data = {"id": segment_id, "object_type": object_type, "version": version or int(time.time() * 1000)}
        key = segment_key(workspace, object_type, segment_id)
        self.producer.send(
            self.definitions_topic,
            key=key.encode(),
            value=encode(envelope("segment.removed", data, workspace=workspace, source=self.source)),
        )

    def import_members(
        self, workspace: str, object_type: str, segment_id: str, record_ids: Iterable[str], *, add: bool = True,
        segment_version: int | None = None,
    ) -> int:
        """Add ids to (or remove them from) a static segment: segment.import messages grouped by partition."""
        sent = 0
        key_of = lambda rid: record_key(workspace, object_type, rid)  # noqa: E731
        for partition, ids in group_by_partition(record_ids, key_of, self.settings.partitions, IMPORT_CHUNK):
            data = {"object_type": object_type, "segment_id": segment_id, "mode": "add" if add else "remove",
                    "record_ids": ids}
            if segment_version is not None:
                data["segment_version"] = segment_version
            message = envelope("segment.import", data, workspace=workspace, source=self.source)
            self.producer.send(self.records_topic, key=key_of(ids[0]).encode(), value=encode(message), partition=partition)
            sent += len(ids)
        return sent

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


def batches_by_partition(
    workspace: str, changes: Iterable[Change], partitions: int, batch_size: int
) -> Iterator[tuple[int, list[Change]]]:
    """Yield (partition, changes) chunks, preserving each record's order within its partition."""
    return group_by_partition(
        changes, lambda c: record_key(workspace, c["object_type"], c["id"]), partitions, batch_size
    )


def group_by_partition(
    items: Iterable[T], key_of: Callable[[T], str], partitions: int, size: int
) -> Iterator[tuple[int, list[T]]]:
    """Chunks of at most `size` items whose keys hash to the same partition, in input order."""
    open_groups: dict[int, list[T]] = defaultdict(list)
    for item in items:
        p = partition_for(key_of(item), partitions)
        group = open_groups[p]
        group.append(item)
        if len(group) >= size:
            yield p, group
            open_groups[p] = []
    for p, group in open_groups.items():
        if group:
            yield p, group
