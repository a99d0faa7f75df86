"""The per-partition processor: stored record states and decoded messages in; transitions, new states and
outgoing messages (entered/exited events, assignment decisions, dead letters) out, collected in a `Work`.

No Faust and no I/O: reads go through the `StateStore` (RocksDB plus the uncommitted writes of the open
group), writes and messages wait in the `Work` until engine/commit.py commits them. The engine's agent
(engine/app.py) decides when a message is applied (positions, gaps, backfills, the partition clock); this
module decides what applying it means. Metrics are in-process counters.
"""
from __future__ import annotations

import base64
import logging
from typing import Any, Iterable

from engine import metrics
from engine.assignment import ASSIGNED, AssignmentBook, Decision, assign_conversation
from engine.envelope import encode, envelope, record_key, segment_key, split_record_key, transition_id, utc_now_iso
from engine.errors import InternalError, NotImportable, StateTooLarge, UnknownWorkspace, WrongPartition
from engine.intake import message_changes, message_events, parse_change, parse_conversation, parse_event, partition_for
from engine.membership import RecordState, Transition, apply_change, apply_event, apply_import, apply_time, backfill
from engine.registry import SegmentRegistry
from engine.rules.errors import EngineError
from engine.settings import Settings
from engine.state import Scoped, StateStore

log = logging.getLogger("segment_engine")

Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value
DUE_PER_MESSAGE = 2_000  # due records re-evaluated per tick message; the rest on the next one
LABELS = {"engine.tick": "tick", "segment.import": "import", "record.event": "events", "record.events": "events",
          "record.change": "changes", "record.changes": "changes", "conversation.created": "conversations"}


class Work:
    """What one message does: events to produce, record states to write, membership changes to index.
    Everything is produced and acknowledged before any of it is written."""

    __slots__ = ("state", "out", "pending", "serialised", "membership", "more_due", "turns")

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.out: list[Outgoing] = []
        self.pending: dict[bytes, RecordState] = {}
        self.serialised: dict[bytes, bytes] = {}  # pending states already serialised (for the size check)
        self.membership: list[Scoped] = []
        self.more_due = False
        self.turns: dict[str, int] | None = None  # the partition's group turns, once a conversation used them

    def load(self, key: bytes) -> RecordState | None:
        """The record's state as this message left it so far."""
        pending = self.pending.get(key)
        return pending if pending is not None else self.state.load(key)


class Processor:
    """Applies decoded messages of any partition this worker owns (one instance per worker)."""

    def __init__(self, settings: Settings, registry: SegmentRegistry, assignment: AssignmentBook,
                 topic_names: dict[str, str]) -> None:
        self.settings = settings
        self.registry = registry
        self.assignment = assignment
        self.events_topic_name = topic_names["events"]
        self.assignments_topic_name = topic_names["assignments"]
        self.dead_letter_topic_name = topic_names["dead_letters"]
        self.transition_counters: dict[tuple[str, str, str], Any] = {}  # bounded per-segment metric children
        self.event_counters: dict[tuple[str, str], Any] = {}
        self.labelled_segments: set[tuple[str, str]] = set()  # (workspace, segment) given their own label
        self.flips: dict[tuple[str, str, str, str], int] = {}  # (workspace, segment, event type, cause) -> flips

    def apply(self, msg: Any, message: dict[str, Any], now: int, work: Work) -> str:
        """Apply one decoded message (`msg` is its Kafka record) into `work`; its kind's metric label, or ""
        for a sync marker (nothing to apply: the agent synced the partition already)."""
        kind = message["type"]
        if kind == "engine.tick":
            self.run_due(msg.partition, now, work)
        elif kind == "segment.import":
            self.apply_import(msg, message, now, work)
        elif kind in ("record.event", "record.events"):
            self.apply_items(msg, message, now, work, changes=False)
        elif kind in ("record.change", "record.changes"):
            self.apply_items(msg, message, now, work, changes=True)
        elif kind == "conversation.created":
            self.assign(msg, message, now, work)
        return LABELS.get(kind, "")

    def keep(self, work: Work, key: bytes, state: RecordState, workspace: str, object_type: str, record_id: str,
             transitions: list[Transition], now: int, raw: bytes | None = None) -> None:
        """Keep the record's new state in `work` (and its bytes, when the size check made them: the commit
        writes those instead of serialising the state again), with its transitions' events."""
        work.pending[key] = state
        if raw is not None:
            work.serialised[key] = raw
        else:
            work.serialised.pop(key, None)
        if transitions:
            work.membership.append((workspace, object_type, record_id, transitions))
            work.out.extend(self.membership_events(workspace, object_type, record_id, transitions, now))

    def apply_items(self, msg: Any, message: dict[str, Any], now: int, work: Work, changes: bool) -> None:
        """Fold a message's record changes (or behavioural events) into their records, one item at a time:
        an item that cannot be applied is dead-lettered alone (with its index in a batch)."""
        workspace = message["workspace"]
        batch = message["type"] in ("record.changes", "record.events")
        items, parse, fold = ((message_changes(message), parse_change, apply_change) if changes
                              else (message_events(message), parse_event, apply_event))
        skipped, applied = ((metrics.CHANGES_STALE, metrics.CHANGES_APPLIED) if changes
                            else (metrics.BEHAVIOUR_EVENTS_IGNORED, metrics.BEHAVIOUR_EVENTS_APPLIED))
        for index, raw_item in enumerate(items):
            try:
                item = parse(raw_item, workspace, self.registry.workspaces, msg.partition, self.settings.partitions)
                key = record_key(workspace, item.object_type, item.record_id).encode()
                outcome = fold(work.load(key), item, self.registry.segment_set(workspace, item.object_type), now)
                raw = self.fitting_state(key, outcome.state, "change" if changes else "event")
            except Exception as exc:  # noqa: BLE001 - nothing an item contains may stall its partition
                work.out.append(self.failed_item(msg, exc, index if batch else None))
                continue
            if outcome.state is None:  # stale change, duplicate event, or an event of a deleted record
                skipped.inc()
                continue
            applied.inc()
            if changes:
                metrics.SEGMENTS_EVALUATED_PER_CHANGE.observe(outcome.evaluated)
            self.keep(work, key, outcome.state, workspace, item.object_type, item.record_id, outcome.transitions,
                      now, raw)

    def fitting_state(self, key: bytes, state: RecordState | None, item: str) -> bytes | None:
        """The new state's bytes (what the commit writes), or StateTooLarge when they would not fit in one
        changelog message: Faust's recovery could not restore the record, and the producer would fail the
        whole commit group. None for an ignored item (no new state)."""
        if state is None:
            return None
        raw = state.to_bytes()
        if len(raw) > self.settings.max_message_bytes:
            raise StateTooLarge(f"record {key.decode()!r} would keep {len(raw)} bytes of state "
                                f"(limit {self.settings.max_message_bytes}); {item} not applied")
        return raw

    def assign(self, msg: Any, message: dict[str, Any], now: int, work: Work) -> None:
        """Decide a new conversation from its contact's segments now: one assigned or unassigned event."""
        workspace = message["workspace"]
        try:
            conversation = parse_conversation(message["data"], workspace, self.registry.workspaces, msg.partition,
                                              self.settings.partitions)
            key = record_key(workspace, "contact", conversation.contact_id).encode()
            if work.turns is None:
                work.turns = work.state.turns()
            turns = {name.split("/", 1)[1]: n for name, n in work.turns.items() if name.startswith(workspace + "/")}
            outcome = assign_conversation(work.load(key), conversation, self.registry.segment_set(workspace, "contact"),
                                          self.assignment.get(workspace), turns, now, first_turn=msg.partition)
        except Exception as exc:  # noqa: BLE001 - nothing a conversation contains may stall its partition
            metrics.CONVERSATIONS.labels("deadlettered").inc()
            work.out.append(self.failed_item(msg, exc, None))
            return
        decision = outcome.decision
        if outcome.state is None or decision is None:
            metrics.CONVERSATIONS.labels("duplicate").inc()
            return
        self.keep(work, key, outcome.state, workspace, "contact", conversation.contact_id, outcome.transitions, now)
        if decision.group is not None:
            turn_key = f"{workspace}/{decision.group}"
            work.turns[turn_key] = work.turns.get(turn_key, msg.partition) + 1
        metrics.CONVERSATIONS.labels("assigned" if decision.event_type == ASSIGNED else "unassigned").inc()
        work.out.append(self.assignment_event(workspace, conversation.id, conversation.contact_id, conversation.at,
                                              outcome.state, decision, now))

    def assignment_event(self, workspace: str, conversation_id: str, contact_id: str, conversation_at: int | None,
                         state: RecordState, decision: Decision, now: int) -> Outgoing:
        data: dict[str, Any] = {
            "conversation_id": conversation_id,
            "contact_id": contact_id,
            "record_version": state.version,
            "rules_version": decision.rules_version,
            "at": now,
            "segments": sorted(state.members),
        }
        if conversation_at is not None:
            data["conversation_at"] = conversation_at
        if decision.rule is not None:
            data.update(rule_id=decision.rule.id, segment_id=decision.rule.segment_id, assignee=decision.member)
            if decision.group is not None:
                data["group"] = decision.group
        else:
            data["reason"] = decision.reason
        # One id per conversation whatever the decision: a subscriber keeps the first and drops repeats.
        event_id = transition_id(workspace, "contact", "", conversation_id, 0, 0, "conversation.assignment")
        key = record_key(workspace, "contact", contact_id).encode()
        return self.assignments_topic_name, key, encode(envelope(decision.event_type, data, workspace=workspace,
                                                                  id_=event_id))

    def failed_item(self, msg: Any, exc: Exception, index: int | None) -> Outgoing:
        """The dead letter of one change or event that could not be applied (an unexpected error included)."""
        if not isinstance(exc, EngineError):
            log.exception("item %s at %s[%s]@%s failed", index, msg.topic, msg.partition, msg.offset)
            exc = InternalError(f"{type(exc).__name__}: {exc}")
        metrics.CHANGES_DEADLETTERED.inc()
        return self.dead_letter(msg, exc, index)

    def run_due(self, partition: int, now: int, work: Work) -> None:
        """Re-evaluate the time-dependent segments of every record whose due instant has come."""
        keys = work.state.due(partition, now, DUE_PER_MESSAGE + 1)
        work.more_due = len(keys) > DUE_PER_MESSAGE
        for key in keys[:DUE_PER_MESSAGE]:
            state = work.load(key)
            if state is None or state.scheduled is None or state.scheduled > now:
                continue
            workspace, object_type, record_id = split_record_key(key.decode())
            transitions = apply_time(state, self.registry.segment_set(workspace, object_type), now)
            metrics.SCHEDULED_RUNS.inc()
            self.keep(work, key, state, workspace, object_type, record_id, transitions, now)

    def apply_import(self, msg: Any, message: dict[str, Any], now: int, work: Work) -> None:
        """Add records to (or remove them from) a static segment; ids on the wrong partition are dead-lettered."""
        workspace, data = message["workspace"], message["data"]
        object_type, segment_id = data["object_type"], data["segment_id"]
        if workspace not in self.registry.workspaces:
            work.out.append(self.dead_letter(msg, UnknownWorkspace(f"workspace {workspace!r} is not configured")))
            return
        segment = self.registry.get(workspace, object_type, segment_id)
        if segment is None or segment.rule is not None or not segment.active:
            work.out.append(self.dead_letter(msg, NotImportable(
                f"segment {workspace}/{object_type}/{segment_id} is not an active static segment")))
            return
        segments = self.registry.segment_set(workspace, object_type)
        for index, record_id in enumerate(data["record_ids"]):
            key_text = record_key(workspace, object_type, record_id)
            if (expected := partition_for(key_text, self.settings.partitions)) != msg.partition:
                work.out.append(self.dead_letter(msg, WrongPartition(
                    f"record {key_text!r} belongs to partition {expected}, message arrived on {msg.partition}"), index))
                continue
            key = key_text.encode()
            outcome = apply_import(work.load(key), segment_id, segment.version, data["mode"] == "add",
                                   message["id"], segments, now)
            if outcome.transitions:
                try:
                    raw = self.fitting_state(key, outcome.state, "import")
                except StateTooLarge as exc:
                    work.out.append(self.dead_letter(msg, exc, index))
                    continue
                metrics.IMPORTED_MEMBERS.labels(data["mode"]).inc()
                self.keep(work, key, outcome.state, workspace, object_type, record_id,  # type: ignore[arg-type]
                          outcome.transitions, now, raw)

    def backfill_record(self, key: bytes, raw: bytes, scopes: dict[tuple[str, str], set[str]], out: list[Outgoing],
                        now: int, membership: list[Scoped], changed: list[tuple[bytes, RecordState]],
                        reborn: dict[tuple[str, str], set[str]] | None = None) -> bool:
        """One stored record of a backfill: its memberships of the `scopes`' segments re-evaluated (after
        forgetting those of `reborn` ones); events into `out`, a changed state into `changed`. False when
        the record is outside the scopes (the caller counts the others in segment_engine_backfill_records:
        a counter increment per record cost ~7% of a backfill)."""
        workspace, object_type, record_id = split_record_key(key.decode())
        segment_ids = scopes.get((workspace, object_type))
        if segment_ids is None:
            return False
        state = RecordState.from_bytes(raw)
        member_count = len(state.members)
        if reborn and (gone := reborn.get((workspace, object_type))):
            state.members -= gone
        segments = self.registry.segment_set(workspace, object_type)
        transitions = backfill(state, segment_ids & segments.evaluated_ids, segments, now)
        if transitions:
            membership.append((workspace, object_type, record_id, transitions))
            out.extend(self.membership_events(workspace, object_type, record_id, transitions, now))
        if transitions or len(state.members) != member_count or state.due != state.scheduled:
            changed.append((key, state))
        return True

    def membership_events(
        self, workspace: str, object_type: str, record_id: str, transitions: list[Transition], now: int
    ) -> Iterable[Outgoing]:
        """The entered/exited events of a record's transitions (tallied for the metrics, see flush_metrics)."""
        key = record_key(workspace, object_type, record_id).encode()
        stamp = utc_now_iso()  # one clock read per record, not per event
        flips = self.flips
        for t in transitions:
            tally = (workspace, t.segment_id, t.event_type, t.cause)
            flips[tally] = flips.get(tally, 0) + 1
            event_id = transition_id(
                workspace, object_type, record_id, t.segment_id, t.segment_version, t.record_version, t.event_type,
                t.nonce,
            )
            data = {
                "object_type": object_type,
                "segment_id": t.segment_id,
                "record_id": record_id,
                "record_version": t.record_version,
                "segment_version": t.segment_version,
                "cause": t.cause,
                "at": now,
            }
            yield self.events_topic_name, key, encode(envelope(t.event_type, data, workspace=workspace, id_=event_id,
                                                               time=stamp))

    def flush_metrics(self) -> None:
        """Add what was tallied since the last call to the metrics (engine.metrics.flush_tallies), and the
        flips: joins and leaves per segment, labelled by segment id for the first METRICS_MAX_SEGMENTS
        segments this worker sees (Prometheus cost grows with label values), the rest under "_other". Once
        per fetch, not per flip (a counter's increment costs about a fifth of encoding the event)."""
        metrics.flush_tallies()
        flips, self.flips = self.flips, {}
        for (workspace, segment_id, event_type, cause), n in flips.items():
            events_counter = self.event_counters.get((event_type, cause))
            if events_counter is None:
                events_counter = self.event_counters[(event_type, cause)] = metrics.MEMBERSHIP_EVENTS.labels(
                    event_type, cause)
            events_counter.inc(n)
            key = (workspace, segment_id, event_type)
            counter = self.transition_counters.get(key)
            if counter is None:
                labelled = (workspace, segment_id) in self.labelled_segments
                if not labelled and len(self.labelled_segments) < self.settings.metrics_max_segments:
                    self.labelled_segments.add((workspace, segment_id))
                    labelled = True
                kind = "entered" if event_type == "segment.entered" else "exited"
                counter = metrics.SEGMENT_TRANSITIONS.labels(workspace, segment_id if labelled else "_other", kind)
                self.transition_counters[key] = counter
            counter.inc(n)

    def segment_deleted_event(self, workspace: str, object_type: str, segment_id: str, version: int) -> Outgoing:
        event_id = transition_id(workspace, object_type, "", segment_id, version, 0, "segment.deleted")
        data = {"object_type": object_type, "segment_id": segment_id, "segment_version": version}
        key = segment_key(workspace, object_type, segment_id).encode()
        return self.events_topic_name, key, encode(envelope("segment.deleted", data, workspace=workspace, id_=event_id))

    def dead_letter(self, msg: Any, exc: EngineError, change_index: int | None = None) -> Outgoing:
        return self.dead_letter_for(msg.topic, msg.partition, msg.offset, msg.key, msg.value, exc, change_index)

    def dead_letter_for(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        exc: EngineError,
        change_index: int | None = None,
    ) -> Outgoing:
        """The dead letter of a message (or of one change of a batch): original bytes, code, reason, origin."""
        metrics.DEAD_LETTERS.labels(exc.code).inc()
        data: dict[str, Any] = {
            "code": exc.code,
            "reason": str(exc),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": base64.b64encode(key).decode() if key is not None else None,
            "value_b64": base64.b64encode(value or b"").decode(),
        }
        if change_index is not None:
            data["change_index"] = change_index
        # Deterministic id: a replayed bad message (or one seen by every worker) is the same dead letter.
        dl_id = transition_id(topic, str(partition), str(offset), str(change_index), 0, 0, "deadletter")
        return self.dead_letter_topic_name, key, encode(envelope("deadletter", data, id_=dl_id))
