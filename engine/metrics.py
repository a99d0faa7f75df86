"""Prometheus metrics of the engine (served on each worker's /metrics, next to Faust's own `faust_*`).

Labels are bounded: outcome and reason codes, partitions, and segment ids only for at most
SEGMENT_ENGINE_METRICS_MAX_SEGMENTS segments per worker (the rest are summed under `segment="_other"`),
never record ids. Gauges that describe stored state (segment sizes, scheduler backlog, lag, backfill)
are read at scrape time by `engine.observe`, so the hot path pays nothing for them.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from engine.rules.errors import error_codes

disable_created_metrics()  # the *_created series double every counter's series count for no use here

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
REPAIRED_KEYS = Counter(
    "segment_engine_repaired_keys_total",
    "Derived keys (member index, counts, schedule) fixed to agree with the record states after a partition "
    "was restored from its changelog (a crash had cut a commit's records short there)",
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
EVALUATION_SECONDS = Histogram(
    "segment_engine_evaluation_seconds",
    "Time to fold one message's items into their records' states and evaluate the affected segments "
    "(CPU in the agent, before producing and writing), by message kind.",
    ["kind"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CHANGE_TO_EVENT_SECONDS = Histogram(
    "segment_engine_change_to_event_seconds",
    "From a change's time (its Kafka message timestamp, set by the upstream producer) to the broker's "
    "acknowledgement of the membership events it caused; observed once per message that emitted events.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FETCHED_RECORDS = Histogram(
    "segment_engine_fetched_records",
    "Records of one input partition that one fetch handed the agent (it applies them in order and commits "
    "them together when nothing else is queued): near 1 when the worker keeps up, larger under a backlog.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
SEGMENTS_EVALUATED = Histogram(
    "segment_engine_segments_evaluated_per_change",
    "Segments evaluated for one record change (the field index keeps this far below the segment count).",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 10000),
)
SEGMENT_TRANSITIONS = Counter(
    "segment_engine_segment_transitions_total",
    "Joins (entered) and leaves (exited) per segment; segment ids beyond the per-worker label limit are "
    "counted under segment=\"_other\".",
    ["workspace", "segment", "type"],
)
IMPORTED_MEMBERS = Counter(
    "segment_engine_imported_members_total",
    "Static segment memberships added or removed by imports (progress of an import, with consumer lag).",
    ["mode"],
)

# Label values of the outcome families (the dead-letter codes come from the error classes, see start_series).
CHANGE_OUTCOMES = ("applied", "stale", "deadlettered")
BEHAVIOUR_OUTCOMES = ("applied", "ignored")
CONVERSATION_OUTCOMES = ("assigned", "unassigned", "duplicate", "deadlettered")
MEMBERSHIP_CAUSES = ("change", "delete", "backfill", "import", "event", "time")  # membership.Transition.cause
IMPORT_MODES = ("add", "remove")  # schemas/segment-import.json
SEGMENT_STATUSES = ("active", "inactive")
EVALUATION_KINDS = ("tick", "import", "events", "changes", "conversations")


def start_series() -> None:
    """Give every known label value its series at 0 when the worker starts. A labelled series exists only
    once incremented, so before a worker's first dead letter `rate(...{code="x"})` has no data and an alert
    on it cannot tell "none yet" from "not exported"; with every series present from the start a
    dashboard shows 0 and `increase()` counts the first incident too."""
    import engine.assignment  # noqa: F401 - defines InvalidAssignment (dead-lettered assignment rules)
    import engine.errors  # noqa: F401 - defines the stream edge's errors
    from engine.membership import ENTERED, EXITED

    for code in error_codes():
        DEAD_LETTERS.labels(code)
    for family, values in ((CHANGES, CHANGE_OUTCOMES), (BEHAVIOUR_EVENTS, BEHAVIOUR_OUTCOMES),
                           (CONVERSATIONS, CONVERSATION_OUTCOMES), (IMPORTED_MEMBERS, IMPORT_MODES),
                           (SEGMENTS_DEFINED, SEGMENT_STATUSES), (EVALUATION_SECONDS, EVALUATION_KINDS)):
        for value in values:
            family.labels(value)
    for event_type in (ENTERED, EXITED):
        for cause in MEMBERSHIP_CAUSES:
            MEMBERSHIP_EVENTS.labels(event_type, cause)


class CounterTally:
    """Increments of a counter child kept as a plain int until `flush_tallies` (see HistogramTally)."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n = 0
        TALLIES.append(self)

    def inc(self, n: int = 1) -> None:
        self.n += n

    def flush(self) -> None:
        if self.n:
            self.child.inc(self.n)
            self.n = 0


class HistogramTally:
    """Observations of a histogram child kept in plain Python until `flush_tallies`, which the agent calls
    once per fetch: prometheus_client takes a lock per counter increment and two per observation (~2 µs a
    message for the hot path's three metrics, ~0.4 µs tallied). The flush adds each bucket's count and the
    sum to the child's own `_buckets` and `_sum`, as its `observe` does one observation at a time."""

    __slots__ = ("child", "bounds", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = child._upper_bounds  # ascending, the last +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        TALLIES.append(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket with amount <= bound
        self.total += amount

    def flush(self) -> None:
        if not any(self.counts):
            return
        for i, n in enumerate(self.counts):
            if n:
                self.child._buckets[i].inc(n)
                self.counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


TALLIES: list[CounterTally | HistogramTally] = []


def flush_tallies() -> None:
    """Add what the hot path tallied since the last call to the metrics /metrics serves."""
    for tally in TALLIES:
        tally.flush()


# Children the hot path increments, bound once (`labels()` costs a lock and a dict lookup per call), and
# tallied per fetch where a message increments them.
CHANGES_APPLIED = CounterTally(CHANGES.labels("applied"))
CHANGES_STALE = CounterTally(CHANGES.labels("stale"))
CHANGES_DEADLETTERED = CHANGES.labels("deadlettered")
EVALUATION_SECONDS_BY_KIND = {kind: HistogramTally(EVALUATION_SECONDS.labels(kind)) for kind in EVALUATION_KINDS}
BEHAVIOUR_EVENTS_APPLIED = CounterTally(BEHAVIOUR_EVENTS.labels("applied"))
BEHAVIOUR_EVENTS_IGNORED = CounterTally(BEHAVIOUR_EVENTS.labels("ignored"))
SEGMENTS_EVALUATED_PER_CHANGE = HistogramTally(SEGMENTS_EVALUATED)
