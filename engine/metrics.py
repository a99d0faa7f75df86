"""Prometheus metrics of the engine (served on each worker's /metrics).

Labels are bounded: outcome and reason codes, never record ids.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge

CHANGES = Counter(
    "segment_engine_changes_total",
    "Record changes consumed, by outcome (applied, stale, deadlettered).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "segment_engine_dead_letters_total",
    "Messages or changes sent to the dead-letter topic, by reason code.",
    ["code"],
)
MEMBERSHIP_EVENTS = Counter(
    "segment_engine_membership_events_total",
    "segment.entered / segment.exited events emitted, by type and cause.",
    ["type", "cause"],
)
BACKFILLED_RECORDS = Counter(
    "segment_engine_backfill_records_total",
    "Stored records re-evaluated because a segment was created or changed.",
)
SEGMENTS_DEFINED = Gauge(
    "segment_engine_segments",
    "Segments this worker knows, by status.",
    ["status"],
)
OFFSET_GAPS = Counter(
    "segment_engine_offset_gaps_total",
    "Times a partition's next message came after unapplied offsets (the consumer's committed offset was "
    "ahead of the durable state after a SIGKILL); the skipped messages are re-read and applied.",
)
GAP_MESSAGES = Counter(
    "segment_engine_gap_messages_total",
    "Messages re-read and applied because the consumer had skipped them (see offset_gaps_total).",
)
REDELIVERED = Counter(
    "segment_engine_redelivered_messages_total",
    "Messages at or before a partition's applied position (redelivered after a crash or rebalance), skipped.",
)
BEHAVIOUR_EVENTS = Counter(
    "segment_engine_behaviour_events_total",
    "Behavioural events consumed, by outcome (applied; ignored = duplicate id or deleted record). "
    "Dead-lettered ones are in segment_engine_dead_letters_total.",
    ["outcome"],
)
SCHEDULED_RUNS = Counter(
    "segment_engine_scheduled_evaluations_total",
    "Records re-evaluated because time reached their due instant (relative dates, window expiry).",
)
INTERVAL_RECALCULATIONS = Counter(
    "segment_engine_interval_recalculations_total",
    "Segments republished because their recalculation interval passed (the batch-parity safety net).",
)
CONVERSATIONS = Counter(
    "segment_engine_conversations_total",
    "conversation.created messages by outcome: assigned, unassigned, duplicate (already decided), deadlettered",
    ["outcome"],
)
