"""Every Kafka topic the engine reads or writes, declared once.

Code asks this module for names and settings instead of repeating strings; `segment-engine topics create`
creates exactly this list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """Name (without prefix), key, partitioning and retention of one topic."""

    name: str
    key: str
    partitions: int | None  # None: the engine's partition count (co-partitioned with record changes)
    compacted: bool
    retention_ms: int | None  # None: keep forever
    doc: str

    def full_name(self, prefix: str) -> str:
        return prefix + self.name

    def partition_count(self, engine_partitions: int) -> int:
        return self.partitions if self.partitions is not None else engine_partitions

    def config(self) -> Mapping[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        cfg["retention.ms"] = str(self.retention_ms if self.retention_ms is not None else -1)
        return cfg


RECORD_CHANGES = TopicSpec(
    name="record-changes",
    key="workspace/object_type/record_id (of the first change, for batches)",
    partitions=None,
    compacted=False,
    retention_ms=7 * DAY_MS,
    doc="record.change and record.changes (batch) messages from upstream; engine.sync control markers",
)
BEHAVIOUR_EVENTS = TopicSpec(
    name="behaviour-events",
    key="workspace/object_type/record_id (of the first event, for batches)",
    partitions=None,
    compacted=False,
    retention_ms=7 * DAY_MS,
    doc="record.event and record.events (batch) behavioural events (e.g. purchase, page_view); "
        "co-partitioned with record-changes so one worker owns a record's changes and events",
)
SEGMENT_DEFINITIONS = TopicSpec(
    name="segment-definitions",
    key="workspace/object_type/segment_id",
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="segment.defined / segment.removed; compacted, read in full by every worker",
)
SEGMENT_EVENTS = TopicSpec(
    name="segment-events",
    key="workspace/object_type/record_id (segment.deleted: workspace/object_type/segment_id)",
    partitions=None,
    compacted=False,
    retention_ms=7 * DAY_MS,
    doc="segment.entered, segment.exited and segment.deleted events for subscribers",
)
CONVERSATIONS = TopicSpec(
    name="conversations",
    key="workspace/contact/contact_id",
    partitions=None,
    compacted=False,
    retention_ms=7 * DAY_MS,
    doc="conversation.created from the chat system; co-partitioned with record-changes so the worker that "
        "owns a contact decides its conversations from the contact's segments",
)
CONVERSATION_ASSIGNMENTS = TopicSpec(
    name="conversation-assignments",
    key="workspace/contact/contact_id",
    partitions=None,
    compacted=False,
    retention_ms=7 * DAY_MS,
    doc="conversation.assigned or conversation.unassigned, exactly one decision per conversation id "
        "(deterministic event id) for chat routing",
)
ASSIGNMENT_RULES = TopicSpec(
    name="assignment-rules",
    key="workspace",
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="assignment.rules: each workspace's ordered chat assignment rules and groups; compacted, read in "
        "full by every worker",
)
DEFAULT_SEGMENTS = TopicSpec(
    name="default-segments",
    key="workspace/shared/object_type, or workspace/member/member/object_type",
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="default.segment: each workspace's shared default segment per object type and each team member's "
        "pins; compacted, read in full by every worker",
)
DEAD_LETTERS = TopicSpec(
    name="dead-letters",
    key="the original message key",
    partitions=1,
    compacted=False,
    retention_ms=30 * DAY_MS,
    doc="messages the engine could not use: original bytes, reason code, source topic/partition/offset",
)
RECORD_STATE_CHANGELOG = TopicSpec(
    name="record-state-changelog",
    key="workspace/object_type/record_id",
    partitions=None,
    compacted=True,
    retention_ms=None,
    doc="changelog of the RocksDB record-state table (fields, version, memberships); restores a lost worker",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    RECORD_CHANGES,
    BEHAVIOUR_EVENTS,
    SEGMENT_DEFINITIONS,
    SEGMENT_EVENTS,
    CONVERSATIONS,
    CONVERSATION_ASSIGNMENTS,
    ASSIGNMENT_RULES,
    DEFAULT_SEGMENTS,
    DEAD_LETTERS,
    RECORD_STATE_CHANGELOG,
)
