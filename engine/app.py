"""The Faust worker: record changes in, membership in RocksDB, entered/exited events out.

One agent consumes the record-change topic. Per message it decodes and validates every change, folds
each into the record's state (a RocksDB-backed Faust table with a changelog), re-evaluates only the
affected segments, produces the resulting events and waits for the broker's acknowledgement, and only
then writes the new states. That order is what makes a crash safe: state is never ahead of the events
it implies, so replaying a message re-emits the same events with the same deterministic ids.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Iterable

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import REGISTRY

import topics
from engine import metrics
from engine.api.auth import HEADER_FIELD_LIMIT
from engine.api.cluster import Cluster
from engine.api.routes import install_routes
from engine.assignment import ASSIGNED, AssignmentBook, Decision, assign_conversation
from engine.consumer import grouping_consumer
from engine.envelope import (encode, envelope, record_key, segment_key, split_record_key, transition_id,
                             utc_now_iso)
from engine.errors import (BadMessage, InternalError, MalformedJson, MessageTooLarge, NotImportable, SchemaViolation,
                           StateTooLarge, UnknownWorkspace, WrongPartition)
from engine.intake import (decode_message, message_changes, message_events, parse_change, parse_conversation, parse_event,
                           partition_for)
from engine.monitor import EngineMonitor
from engine.observe import EngineCollector, consumer_lag
from engine.membership import RecordState, Transition, apply_change, apply_event, apply_import, apply_time, backfill
from engine.registry import SegmentRegistry
from engine.rules.errors import EngineError
from engine.schemas import validate_message
from engine.settings import Settings
from engine.state import PartitionWrites, RecordStateTable, Scoped, StateStore
from engine.storage import store_url
from engine.true_ends import true_ends
from engine.workspaces import load_workspaces

log = logging.getLogger("segment_engine")


Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value
DUE_PER_MESSAGE = 2_000  # due records re-evaluated per tick message; the rest on the next one
RECALCULATION_CHECK_S = 10.0  # how often the owner of partition 0 looks for segments due a recalculation
MAX_CLOCK_LEAD_MS = 60_000  # system clock: how far ahead of this worker's wall clock a message may move time
GROUP_RECORDS = 1_000  # records applied before their writes are committed together, at most
STALL_CHECK_S = 5.0  # how often partitions that lag without moving are nudged (see _nudge_stalled)
BACKFILL_CHUNK = 1_000  # records a backfill scans between two yields to the event loop


class Work:
    """What one message does: events to produce, record states to write, membership changes to index.
    Everything is produced and acknowledged before any of it is written."""

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

    def record(self, key: bytes, state: RecordState, workspace: str, object_type: str, record_id: str,
               transitions: list[Transition], engine: "Engine", now: int, raw: bytes | None = None) -> None:
        """Keep the record's new state (and its bytes, when the size check made them: the commit writes
        those instead of serialising the state again)."""
        self.pending[key] = state
        if raw is not None:
            self.serialised[key] = raw
        else:
            self.serialised.pop(key, None)
        if transitions:
            self.membership.append((workspace, object_type, record_id, transitions))
            self.out.extend(engine.membership_events(workspace, object_type, record_id, transitions, now))


@dataclass
class Group:
    """Records applied since the last commit: how many, their events, and the Kafka timestamps (seconds) of
    those that changed a membership (for the change-to-event latency, observed when the events are
    acknowledged)."""

    records: int = 0
    out: list[Outgoing] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)


class Engine:
    """Wires the Faust app, the state table and the segment registry of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SegmentRegistry(load_workspaces(settings.workspaces_file))
        self.assignment = AssignmentBook()
        self.registry_ready = asyncio.Event()
        self.synced: dict[int, int] = {}  # partition -> registry generation it was synced at
        self.clocks: dict[int, int] = {}  # partition -> its time (epoch ms), see advance_clock
        self.group = Group()  # messages applied and not committed yet (see _agent)
        self.committing: asyncio.Future[None] | None = None  # a group's commit in flight
        self.backfill_pending: dict[int, int] = {}  # partition -> records left to scan in a running backfill
        self.transition_counters: dict[tuple[str, str, str], Any] = {}  # bounded per-segment metric children
        self.event_counters: dict[tuple[str, str], Any] = {}
        self.labelled_segments: set[tuple[str, str]] = set()  # (workspace, segment) given their own label
        prefix = settings.topic_prefix
        self.records_topic_name = topics.RECORD_CHANGES.full_name(prefix)
        self.behaviour_topic_name = topics.BEHAVIOUR_EVENTS.full_name(prefix)
        self.conversations_topic_name = topics.CONVERSATIONS.full_name(prefix)
        self.assignments_topic_name = topics.CONVERSATION_ASSIGNMENTS.full_name(prefix)
        self.assignment_rules_topic_name = topics.ASSIGNMENT_RULES.full_name(prefix)
        self.input_topic_names = (self.records_topic_name, self.behaviour_topic_name, self.conversations_topic_name)
        self.partition_counts = {spec.full_name(prefix): spec.partition_count(settings.partitions)
                                 for spec in topics.ALL_TOPICS}
        self.events_topic_name = topics.SEGMENT_EVENTS.full_name(prefix)
        self.dead_letter_topic_name = topics.DEAD_LETTERS.full_name(prefix)
        self.definitions_topic_name = topics.SEGMENT_DEFINITIONS.full_name(prefix)
        n = settings.partitions

        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_url,
            store=store_url(settings.memory_budget_mb),  # one RocksDB memory budget for all partitions
            datadir=str(settings.data_dir),
            topic_partitions=n,
            topic_replication_factor=1,
            web_port=settings.web_port,
            web_bind=settings.web_bind,
            web_host=settings.web_host,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            table_standby_replicas=0,
            producer_max_request_size=settings.max_message_bytes * 2,
            broker_session_timeout=settings.session_timeout,
            broker_rebalance_timeout=settings.session_timeout,
            broker_heartbeat_interval=max(0.5, settings.session_timeout / 10),
            autodiscover=False,
            # aiohttp's parser answers a header field over 8190 bytes with a plain-text 400 before any
            # route runs; a larger limit lets an oversized token reach the JSON refusal in engine.api.auth.
            web_application_options={"handler_args": {"max_field_size": HEADER_FIELD_LIMIT,
                                                       "max_line_size": HEADER_FIELD_LIMIT}},
        )
        # Real end offsets for table recovery, a short fetch wait, and the input topics a fetch at a time.
        self.app.transport.Consumer = grouping_consumer(frozenset(self.input_topic_names))
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        # One agent reads record changes, behavioural events and conversations (co-partitioned), so a
        # record's state has a single writer and no two coroutines interleave on it.
        self.records_topic = self.app.topic(self.records_topic_name, self.behaviour_topic_name,
                                            self.conversations_topic_name, partitions=n, **raw)
        # Same options Faust gives its own changelog topics, under the name declared in topics/.
        self.changelog_topic_name = topics.RECORD_STATE_CHANGELOG.full_name(prefix)
        changelog = self.app.topic(
            self.changelog_topic_name,
            partitions=n,
            compacting=True,
            deleting=False,
            acks=False,
            internal=True,
            maxsize=131_072,
            allow_empty=True,
            **raw,
        )
        self.table = self.app.tables.add(RecordStateTable(
            self.app, name="record-state", beacon=self.app.tables.beacon, partitions=n, key_type=bytes,
            value_type=bytes, changelog_topic=changelog,
        ))
        self.state = StateStore(self.table)
        self.cluster = Cluster(self)
        self.app.agent(self.records_topic, name="apply-record-changes")(self._agent)
        self.app.task(self._read_definitions)
        if settings.clock == "system":
            self.app.timer(interval=settings.tick_ms / 1000)(self._tick)
        self.app.timer(interval=RECALCULATION_CHECK_S)(self._recalculate_on_interval)
        self.app.timer(interval=STALL_CHECK_S)(self._nudge_stalled)
        self.stalled: dict[tuple[str, int], int] = {}  # (topic, partition) -> applied position seen lagging
        # Faust's own monitor (rebalances, offsets, send latency, ...) as faust_*, and the engine's
        # metrics (engine.metrics, engine.observe) from the same registry, on /metrics.
        setup_prometheus_sensors(self.app, pattern="/metrics", name_prefix="faust")
        self.app.monitor = EngineMonitor(metrics=self.app.monitor._metrics)  # type: ignore[attr-defined]
        REGISTRY.register(EngineCollector(self))
        metrics.start_series()
        install_routes(self)
        self.app.on_partitions_revoked.connect(self._forget_synced)
        self.app.on_partitions_assigned.connect(self._nudge_assigned)

    def is_ready(self) -> bool:
        """Serving correct answers: segment registry loaded and this worker's tables recovered."""
        if not self.registry_ready.is_set():
            return False
        try:
            recovery = self.app.tables.recovery
        except Exception:  # noqa: BLE001 - app not started
            return False
        return recovery.completed.is_set() and not recovery.in_recovery

    # ---- the record agent ------------------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT) -> None:
        """Apply each partition's fetched records in order (engine/consumer.py delivers them as one
        message), committing their writes together: after a fetch when nothing else is queued for the
        agent, else after GROUP_RECORDS records, and before anything that reads committed state. A
        record's events are acknowledged before any of its state is committed; Faust acknowledges the
        fetch (and may commit its offsets) only when the agent asks for the next one."""
        await self.registry_ready.wait()
        for dropped in self.state.end():  # a crashed agent's uncommitted writes: their messages are re-read
            log.warning("partition %d: dropping %d uncommitted writes of a crashed agent", dropped.partition,
                        len(dropped.pending))
        self.group = Group()
        queued = stream.channel.queue  # type: ignore[attr-defined]
        async for event in stream.events():
            for record in event.message.records:  # type: ignore[attr-defined]
                await self.apply_record(record)
            if self.group.records >= GROUP_RECORDS or queued.empty():
                await self.commit_pending()

    async def apply_record(self, record: Any) -> None:
        """Apply one record unless it was applied already; records the consumer skipped come first."""
        last = self.state.applied_position(record.partition, record.topic)
        if last is not None and record.offset <= last:
            # Applied already (its state and events are in place): redelivered after a crash or rebalance.
            metrics.REDELIVERED.inc()
            return
        if record.offset > (last if last is not None else -1) + 1:
            await self.commit_pending()
            await self.repair_gap(record, (last if last is not None else -1) + 1)
        await self.apply_message(record)

    async def apply_message(self, msg: Any) -> None:
        """Apply one record into the open group: its writes (state, position) wait in the partition's
        overlay and its events in the group until commit_pending."""
        await self.committed()  # a commit from outside the agent (a revocation): reads must see what it writes
        self.state.begin(msg.partition)
        await self.handle(msg)
        self.state.set_position(msg.topic, msg.offset)
        self.group.records += 1

    async def commit_pending(self) -> None:
        """Produce the group's events and wait for their acknowledgement, then commit every partition's
        writes (one RocksDB write batch and changelog record batches each)."""
        await self.committed()
        group, self.group = self.group, Group()
        ended = self.state.end()
        if not group.out and not ended:
            return
        done = self.committing = asyncio.get_running_loop().create_future()
        try:
            await self.flush(group.out)
            now = time.time()
            for stamp in group.stamps:
                metrics.CHANGE_TO_EVENT_SECONDS.observe(max(0.0, now - stamp))
            for writes in ended:
                await self.commit(writes)
        finally:
            self.committing = None
            done.set_result(None)

    async def committed(self) -> None:
        """Until no group's commit is in flight."""
        while self.committing is not None:
            await asyncio.shield(self.committing)

    async def commit_first(self, partition: int) -> None:
        """Commit the open group before a step that reads committed state, then go on in `partition`."""
        await self.commit_pending()
        self.state.begin(partition)

    async def commit(self, writes: PartitionWrites) -> None:
        """One RocksDB write batch, then the same keys as record batches on the changelog partition
        (Faust's recovery format: key, value or a tombstone). The changelog is not awaited here: Faust
        flushes the producer before it commits consumer offsets. Its offset is recorded in RocksDB once
        acknowledged, so a restart on the same data directory replays only what came after."""
        if not writes.pending:
            return
        writes.apply_locally()
        tp = TP(self.changelog_topic_name, writes.partition)
        for future, count in await self.send_batches(tp.topic, tp.partition, writes.changelog_order()):
            future.add_done_callback(lambda done, count=count: self._persisted(tp, done, count))

    def _persisted(self, tp: TP, done: Any, count: int) -> None:
        """A changelog batch was acknowledged: remember its last offset as restored-up-to in RocksDB. On
        every acknowledgement: an older mark would make a restart on this data directory replay acked
        changelog records over newer local writes of a group whose own records never reached the
        changelog (a count could then lose that group's delta)."""
        if done.cancelled() or done.exception() is not None:
            return
        try:
            self.table.data.set_persisted_offset(tp, done.result().offset + count - 1)
        except Exception:  # noqa: BLE001 - the partition moved away meanwhile: its next owner restores
            pass

    async def send_batches(self, topic: str, partition: int,
                           records: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[Any, int]]:
        """Produce `records` (key, value) to one partition as record batches, one send per batch instead of
        one per record (a send costs tens of µs); returns each batch's future with its record count."""
        producer = self.app.producer._producer  # aiokafka's producer: it builds and sends record batches
        sent: list[tuple[Any, int]] = []
        batch, count = producer.create_batch(), 0
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append((await producer.send_batch(batch, topic, partition=partition), count))
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)
            count += 1
        if count:
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
        return sent

    async def repair_gap(self, msg: Any, start: int) -> None:
        """Apply the messages between the partition's applied position and this one, which the consumer
        skipped.

        The position per topic (last applied offset) lives in the partition's own state, written after all
        else a message changed, so it is exactly as durable as that state. After a SIGKILL, Faust's
        committed offset can be ahead of it (the changelog had not reached the broker when the offset
        was committed) and the consumer resumes past messages whose state was lost. Those messages are
        read again here, with a consumer of our own, and applied in order before this one; the events
        they imply carry the same deterministic ids as the first time.
        """
        metrics.OFFSET_GAPS.inc()
        log.warning("%s[%d]: offset %d follows applied offset %d: re-reading %d skipped message(s)",
                    msg.topic, msg.partition, msg.offset, start - 1, msg.offset - start)
        tp = TopicPartition(msg.topic, msg.partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=self.settings.max_message_bytes * 2)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            while (await consumer.position(tp)) < msg.offset:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
                for record in batch.get(tp, []):
                    if record.offset >= msg.offset:
                        return
                    await self.apply_message(record)
                    await self.commit_pending()
                    metrics.GAP_MESSAGES.inc()
        finally:
            await consumer.stop()

    async def handle(self, msg: Any) -> None:
        """Apply one message (an aiokafka record): record changes, behavioural events, an import, a tick or
        a sync marker."""
        partition = msg.partition
        if self.synced.get(partition) != self.registry.generation:
            await self.commit_first(partition)  # the backfill scans committed state
            await self.sync_partition(partition, msg.topic, msg.offset)
        try:
            message = decode_message(msg.value, self.settings.max_message_bytes)
        except BadMessage as exc:
            metrics.CHANGES_DEADLETTERED.inc()
            self.group.out.append(self.dead_letter(msg, exc))
            return
        kind = message["type"]
        if kind in ("engine.tick", "segment.import"):
            await self.commit_first(partition)  # the schedule scan reads committed state; an import may wait
        now = self.advance_clock(partition, msg, message)
        work = Work(self.state)
        started = time.perf_counter()
        if kind == "engine.tick":
            self.run_due(partition, now, work)
            label = "tick"
        elif kind == "segment.import":
            await self.handle_import(msg, message, now, work)
            label = "import"
        elif kind in ("record.event", "record.events"):
            self.apply_events(msg, message, now, work)
            label = "events"
        elif kind in ("record.change", "record.changes"):
            self.apply_changes(msg, message, now, work)
            label = "changes"
        elif kind == "conversation.created":
            self.assign(msg, message, now, work)
            label = "conversations"
        else:
            label = ""
        if label:
            metrics.EVALUATION_SECONDS_BY_KIND[label].observe(time.perf_counter() - started)
        self.group.out.extend(work.out)
        if work.membership and label in ("changes", "events", "conversations") and msg.timestamp and msg.timestamp > 0:
            self.group.stamps.append(msg.timestamp / 1000)
        self.state.write((msg.topic, msg.offset, 1), work.membership, work.pending.items(), work.serialised)
        if work.turns is not None:
            self.state.set_turns(work.turns)
        if work.more_due:  # a bounded share of due records per message; nudge the partition for the rest
            await self.send_ticks([partition])

    def apply_changes(self, msg: Any, message: dict[str, Any], now: int, work: "Work") -> None:
        workspace = message["workspace"]
        batch = message["type"] == "record.changes"
        for index, item in enumerate(message_changes(message)):
            try:
                change = parse_change(item, workspace, self.registry.workspaces, msg.partition, self.settings.partitions)
                key = record_key(workspace, change.object_type, change.record_id).encode()
                outcome = apply_change(work.load(key), change, self.registry.segment_set(workspace, change.object_type), now)
                raw = self.fitting_state(key, outcome.state, "change")
            except Exception as exc:  # noqa: BLE001 - nothing a change contains may stall its partition
                work.out.append(self.failed_item(msg, exc, index if batch else None))
                continue
            if outcome.state is None:
                metrics.CHANGES_STALE.inc()
                continue
            metrics.CHANGES_APPLIED.inc()
            metrics.SEGMENTS_EVALUATED.observe(outcome.evaluated)
            work.record(key, outcome.state, workspace, change.object_type, change.record_id, outcome.transitions, self,
                        now, raw)

    def apply_events(self, msg: Any, message: dict[str, Any], now: int, work: "Work") -> None:
        workspace = message["workspace"]
        batch = message["type"] == "record.events"
        for index, item in enumerate(message_events(message)):
            try:
                behaviour = parse_event(item, workspace, self.registry.workspaces, msg.partition, self.settings.partitions)
                key = record_key(workspace, behaviour.object_type, behaviour.record_id).encode()
                segments = self.registry.segment_set(workspace, behaviour.object_type)
                outcome = apply_event(work.load(key), behaviour, segments, now)
                raw = self.fitting_state(key, outcome.state, "event")
            except Exception as exc:  # noqa: BLE001 - nothing an event contains may stall its partition
                work.out.append(self.failed_item(msg, exc, index if batch else None))
                continue
            if outcome.state is None:
                metrics.BEHAVIOUR_EVENTS_IGNORED.inc()
                continue
            metrics.BEHAVIOUR_EVENTS_APPLIED.inc()
            work.record(key, outcome.state, workspace, behaviour.object_type, behaviour.record_id,
                        outcome.transitions, self, now, raw)

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

    def assign(self, msg: Any, message: dict[str, Any], now: int, work: "Work") -> None:
        """Decide a new conversation from its contact's segments now: one assigned or unassigned event."""
        workspace = message["workspace"]
        try:
            conversation = parse_conversation(message["data"], workspace, self.registry.workspaces, msg.partition,
                                              self.settings.partitions)
            key = record_key(workspace, "contact", conversation.contact_id).encode()
            if work.turns is None:
                work.turns = self.state.turns()
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
        work.record(key, outcome.state, workspace, "contact", conversation.contact_id, outcome.transitions, self, now)
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

    # ---- time: the partition clock and the schedule ---------------------------------------------

    def advance_clock(self, partition: int, msg: Any, message: dict[str, Any]) -> int:
        """The partition's time for this message. It never moves back. With the system clock it follows
        message timestamps (so a replay sees the same time); a tick's `now` sets it in either mode.
        Ticks persist it, so a worker taking the partition over starts from the same time."""
        now = self.clocks.get(partition)
        if now is None:
            now = self.state.clock(partition) or 0
        moved = now
        wall = time.time_ns() // 1_000_000
        if message["type"] == "engine.tick" and "now" in message.get("data", {}):
            moved = max(now, message["data"]["now"])
        elif self.settings.clock == "system":
            moved = max(now, msg.timestamp if msg.timestamp and msg.timestamp > 0 else wall)
        if self.settings.clock == "system" and moved > wall + MAX_CLOCK_LEAD_MS:
            # A producer with a wrong clock, or a forged tick, must not move the partition's time for
            # good (it never moves back): every relative date on it would be wrong until the wall clock
            # caught up. The wall clock, plus some skew between machines, is the limit.
            moved = max(now, wall)
        self.clocks[partition] = moved
        if message["type"] == "engine.tick" and moved != self.state.clock(partition):
            self.state.set_clock(moved)
        return moved

    def now_of(self, partition: int) -> int:
        """The time of a partition as last seen (for queries and backfills between messages)."""
        if partition in self.clocks:
            return self.clocks[partition]
        stored = self.state.clock(partition)
        if stored is not None:
            return stored
        return 0 if self.settings.clock == "manual" else time.time_ns() // 1_000_000

    def run_due(self, partition: int, now: int, work: "Work") -> None:
        """Re-evaluate the time-dependent segments of every record whose due instant has come."""
        keys = self.state.due(partition, now, DUE_PER_MESSAGE + 1)
        work.more_due = len(keys) > DUE_PER_MESSAGE
        for key in keys[:DUE_PER_MESSAGE]:
            state = work.load(key)
            if state is None or state.scheduled is None or state.scheduled > now:
                continue
            workspace, object_type, record_id = split_record_key(key.decode())
            transitions = apply_time(state, self.registry.segment_set(workspace, object_type), now)
            metrics.SCHEDULED_RUNS.inc()
            work.record(key, state, workspace, object_type, record_id, transitions, self, now)

    async def _tick(self) -> None:
        """System clock: nudge each partition this worker owns whose earliest scheduled record is due, so
        it flips without traffic. Partitions with nothing due get no tick (and no writes)."""
        if not self.registry_ready.is_set():
            return
        now = time.time_ns() // 1_000_000
        try:
            due = [p for p in self.cluster.local_partitions()
                   if (first := self.state.next_due(p)) is not None and first <= now]
        except Exception:  # noqa: BLE001 - not started or rebalancing: the next tick will do
            return
        if due:
            await self.send_ticks(due)

    async def _recalculate_on_interval(self) -> None:
        """The per-segment recalculation interval, a safety net for parity with batch products: an active
        dynamic segment whose version is older than its interval is republished under a new version, so
        every partition backfills it and emits any difference. Only the owner of partition 0 does this,
        on the wall clock (versions are wall-clock ms)."""
        if not self.registry_ready.is_set():
            return
        try:
            if 0 not in self.cluster.local_partitions():
                return
        except Exception:  # noqa: BLE001 - not started or rebalancing
            return
        now = time.time_ns() // 1_000_000
        for group in list(self.registry.sets.values()):
            for segment in list(group.segments.values()):
                minutes = segment.definition.get("recalculation_interval_minutes")
                if not segment.evaluated or not minutes or now - segment.version < minutes * 60_000:
                    continue
                data = dict(segment.definition, version=max(now, segment.version + 1))
                key = segment_key(segment.workspace, segment.object_type, segment.id)
                message = envelope("segment.defined", data, workspace=segment.workspace, source="segment-engine-interval")
                await (await self.app.producer.send(self.definitions_topic_name, key.encode(), encode(message),
                                                    None, None, None))
                metrics.INTERVAL_RECALCULATIONS.inc()

    async def send_ticks(self, partitions: Iterable[int], now: int | None = None) -> None:
        marker = encode(envelope("engine.tick", {} if now is None else {"now": now}))
        await self.send_markers(marker, [(self.records_topic_name, p) for p in partitions])

    async def send_markers(self, marker: bytes, partitions: Iterable[tuple[str, int]]) -> None:
        """One control message (tick or sync, no key) to each (topic, partition), acknowledged."""
        futures = [future for topic, partition in partitions
                   for future, _ in await self.send_batches(topic, partition, [(None, marker)])]
        await asyncio.gather(*futures)

    async def handle_import(self, msg: Any, message: dict[str, Any], now: int, work: "Work") -> None:
        """Add records to (or remove them from) a static segment; ids on the wrong partition are dead-lettered."""
        workspace, data = message["workspace"], message["data"]
        object_type, segment_id = data["object_type"], data["segment_id"]
        if workspace not in self.registry.workspaces:
            work.out.append(self.dead_letter(msg, UnknownWorkspace(f"workspace {workspace!r} is not configured")))
            return
        await self.registry_reaches(segment_key(workspace, object_type, segment_id), data.get("segment_version", 0))
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
                work.record(key, outcome.state, workspace, object_type, record_id, outcome.transitions, self,  # type: ignore[arg-type]
                            now, raw)

    async def registry_reaches(self, key: str, version: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until the registry has applied `version` of a segment: an import published right
        after creating its segment may overtake the definition, which travels on another topic."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.registry.stamps.get(key, [0])[0] < version and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    # ---- backfill: bring a partition up to the registry's segment versions -----------------------

    async def sync_partition(self, partition: int, topic: str, offset: int) -> None:
        """Backfill this partition's records over segments created or changed since it last synced.

        Runs inside the agent, on an event of `partition` (at `offset`), so table writes land in that
        partition's RocksDB and changelog. Which versions were applied is stored in the same partition,
        so a worker that takes the partition over knows what is left to do.
        """
        if self.state.needs_repair(partition):
            # Restored from the changelog: a crash may have cut a group's records short there. The
            # bookkeeping came last, so its messages are re-read; derived keys are made to agree with the
            # record states before anything builds on them (and before the partition answers queries).
            self.backfill_pending[partition] = self.state.record_estimate(partition)
            try:
                fixed = await self.state.repair(partition)
            finally:
                self.backfill_pending[partition] = 0
            if fixed:
                metrics.REPAIRED_KEYS.inc(fixed)
                log.warning("partition %d: repaired %d derived keys after restoring from the changelog", partition, fixed)
        generation = self.registry.generation
        stamps = {k: list(v) for k, v in self.registry.stamps.items()}
        applied = self.state.applied()
        todo = {k: v for k, v in stamps.items() if applied.get(k) != v}
        if todo:
            out: list[Outgoing] = []
            scopes: dict[tuple[str, str], set[str]] = {}
            removed_keys: list[str] = []
            reborn: dict[tuple[str, str], set[str]] = {}  # scope -> re-created segment ids
            for key, (version, removed) in todo.items():
                workspace, object_type, segment_id = split_record_key(key)
                segment_ids = scopes.setdefault((workspace, object_type), set())
                # Segments that reference a changed or removed one are re-evaluated too.
                segment_ids |= self.registry.segment_set(workspace, object_type).dependents.get(segment_id, frozenset())
                if removed:
                    # Memberships go without events (a re-created id starts empty); one worker owns
                    # partition 0 and announces the deletion.
                    removed_keys.append(key)
                    if partition == 0:
                        out.append(self.segment_deleted_event(workspace, object_type, segment_id, version))
                    continue
                if self.registry.recreated_since(key, applied.get(key)):
                    # Removed and re-created under the same id since this partition last synced (its owner
                    # was down, or nothing reached it in between): the old incarnation's memberships go
                    # first, without events, so the new one starts empty and its members enter.
                    removed_keys.append(key)
                    reborn.setdefault((workspace, object_type), set()).add(segment_id)
                segment = self.registry.get(workspace, object_type, segment_id)
                if segment is not None and segment.evaluated:
                    segment_ids.add(segment_id)
            membership, changed = await self._backfill_partition(partition, scopes, out, self.now_of(partition),
                                                                 reborn)
            await self.flush(out)
            marker = (topic, offset, 0)
            for key in removed_keys:
                self.state.drop_segment(partition, key, marker)
            self.state.write(marker, membership, changed)
            self.state.set_applied(stamps)
        self.synced[partition] = generation

    async def _backfill_partition(
        self, partition: int, scopes: dict[tuple[str, str], set[str]], out: list[Outgoing], now: int,
        reborn: dict[tuple[str, str], set[str]],
    ) -> tuple[list[Scoped], list[tuple[bytes, RecordState]]]:
        """Re-evaluate the stored records of `scopes` (scope -> segment ids to evaluate), after forgetting
        their memberships of `reborn` segments (scope -> ids re-created since the partition synced).

        Yields to the event loop every BACKFILL_CHUNK records, so health checks, metrics (progress in
        segment_engine_backfill_pending_records) and queries are answered during a long backfill."""
        membership: list[Scoped] = []
        changed: list[tuple[bytes, RecordState]] = []
        estimate = self.state.record_estimate(partition)
        scanned = 0
        self.backfill_pending[partition] = estimate
        try:
            for key, raw in self.state.records(partition):
                scanned += 1
                if scanned % BACKFILL_CHUNK == 0:
                    self.backfill_pending[partition] = max(0, estimate - scanned)
                    await asyncio.sleep(0)
                self._backfill_record(key, raw, scopes, out, now, membership, changed, reborn)
        finally:
            self.backfill_pending[partition] = 0
        return membership, changed

    def _backfill_record(self, key: bytes, raw: bytes, scopes: dict[tuple[str, str], set[str]], out: list[Outgoing],
                         now: int, membership: list[Scoped], changed: list[tuple[bytes, RecordState]],
                         reborn: dict[tuple[str, str], set[str]] | None = None) -> None:
        workspace, object_type, record_id = split_record_key(key.decode())
        segment_ids = scopes.get((workspace, object_type))
        if segment_ids is None:
            return
        metrics.BACKFILLED_RECORDS.inc()
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

    async def _nudge_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Put a marker at the end of every input partition this worker now owns. Around a rebalance the
        consumer can resume past messages that were never applied; the marker's offset reveals that gap
        (see repair_gap) even on a partition where nothing else arrives."""
        try:
            await self.send_markers(encode(envelope("engine.sync", {})),
                                    [(tp.topic, tp.partition) for tp in assigned if tp.topic in self.input_topic_names])
        except Exception:  # noqa: BLE001 - best effort: the next message reveals a gap anyway
            log.exception("could not send markers to newly assigned partitions")

    async def _nudge_stalled(self) -> None:
        """Put a marker at the end of every owned input partition that lags behind what the consumer has
        seen and whose applied position has not moved since the last check. The consumer can resume past
        the last messages of a partition that were acknowledged to Faust but never committed here (a kill
        between the two); with nothing after them, no gap would show and they would wait for the next
        message on that partition forever. The marker is that next message (see repair_gap)."""
        if not self.cluster.ready():
            self.stalled.clear()
            return
        try:
            lags = consumer_lag(self, self.cluster.local_partitions())
        except Exception:  # noqa: BLE001 - rebalancing: the next check will do
            return
        stuck, seen = [], {}
        for (topic, partition), lag in lags.items():
            if lag <= 0:
                continue
            position = self.state.applied_position(partition, topic)
            seen[(topic, partition)] = -1 if position is None else position
            if self.stalled.get((topic, partition)) == seen[(topic, partition)]:
                stuck.append((topic, partition))
        self.stalled = seen
        if stuck:
            log.warning("nudging %d input partition(s) whose last messages were not applied: %s", len(stuck), stuck)
            await self.send_markers(encode(envelope("engine.sync", {})), stuck)

    async def _forget_synced(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Faust sends this once the agent finished its current message (stream_wait_empty): a group it
        # left open (the buffer was cleared under it) is committed before the partitions move.
        await self.commit_pending()
        self.synced.clear()
        self.clocks.clear()

    # ---- output ----------------------------------------------------------------------------------

    def membership_events(
        self, workspace: str, object_type: str, record_id: str, transitions: list[Transition], now: int
    ) -> Iterable[Outgoing]:
        key = record_key(workspace, object_type, record_id).encode()
        stamp = utc_now_iso()  # one clock read per record, not per event
        for t in transitions:
            events_counter = self.event_counters.get((t.event_type, t.cause))
            if events_counter is None:
                events_counter = self.event_counters[(t.event_type, t.cause)] = metrics.MEMBERSHIP_EVENTS.labels(
                    t.event_type, t.cause)
            events_counter.inc()
            self.count_transition(workspace, t.segment_id, t.event_type)
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

    def count_transition(self, workspace: str, segment_id: str, event_type: str) -> None:
        """Joins and leaves per segment, labelled by segment id for the first METRICS_MAX_SEGMENTS segments
        this worker sees (Prometheus cost grows with label values), the rest under "_other"."""
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
        counter.inc()

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

    async def flush(self, out: list[Outgoing]) -> None:
        """Produce everything and wait for the broker's acknowledgement before state moves on."""
        if not out:
            return
        # Grouped per (topic, partition), in order, into record batches; the partition is the one
        # Kafka's default partitioner gives the key.
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in out:
            partition = partition_for(key.decode(), self.partition_counts[topic]) if key is not None else 0
            groups.setdefault((topic, partition), []).append((key, value))
        futures: list[Awaitable[Any]] = []
        for (topic, partition), records in groups.items():
            futures.extend(future for future, _ in await self.send_batches(topic, partition, records))
        await asyncio.gather(*futures)

    # ---- segment definitions ---------------------------------------------------------------------

    async def _read_definitions(self) -> None:
        """Follow the compacted definitions and assignment-rules topics from the start; the agent waits
        until it caught up."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.definitions_topic_name, p) for p in range(topics.SEGMENT_DEFINITIONS.partitions or 1)]
            tps += [TopicPartition(self.assignment_rules_topic_name, p)
                    for p in range(topics.ASSIGNMENT_RULES.partitions or 1)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await true_ends(self.settings.bootstrap_servers, await consumer.end_offsets(tps))
            while True:
                changed = False
                rejected: list[Outgoing] = []
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        changed |= self._apply_definition(record, rejected)
                await self.flush(rejected)
                if not self.registry_ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps)):
                        self._count_segments()
                        self.registry_ready.set()
                        log.info("segment registry loaded: generation %d", self.registry.generation)
                        await self.send_sync_markers()
                elif changed:
                    self._count_segments()
                    await self.send_sync_markers()
        finally:
            await consumer.stop()

    def _apply_definition(self, record: Any, rejected: list[Outgoing]) -> bool:
        """Apply one definition (or assignment rules) message; an invalid one is dead-lettered (by every
        worker, same id). True if the segment registry changed."""
        size, limit = len(record.value or b""), self.settings.max_message_bytes
        try:
            if size > limit:  # every worker holds every definition: the limit holds on this topic too
                raise MessageTooLarge(f"message is {size} bytes, limit {limit}")
            message = orjson.loads(record.value)
        except MessageTooLarge as exc:
            error: EngineError = exc
        except orjson.JSONDecodeError as exc:
            error = MalformedJson(f"not JSON: {exc}")
        else:
            try:
                validate_message(message)
                if record.topic == self.assignment_rules_topic_name:
                    if message["type"] != "assignment.rules":
                        raise SchemaViolation(f"unexpected message type {message['type']!r} on the assignment rules topic")
                    if message["workspace"] not in self.registry.workspaces:
                        raise UnknownWorkspace(f"workspace {message['workspace']!r} is not configured")
                    self.assignment.apply(message["workspace"], message["data"])
                    return False
                if message["type"] not in ("segment.defined", "segment.removed"):
                    raise SchemaViolation(f"unexpected message type {message['type']!r} on the definitions topic")
                return self.registry.apply(message)
            except EngineError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a bug met by one definition must not stop the registry
                log.exception("definition at %s[%s]@%s failed", record.topic, record.partition, record.offset)
                error = InternalError(f"{type(exc).__name__}: {exc}")
        log.warning("rejected segment definition at offset %s: %s", record.offset, error)
        rejected.append(
            self.dead_letter_for(record.topic, record.partition, record.offset, record.key, record.value, error)
        )
        return False

    def _count_segments(self) -> None:
        active = sum(1 for group in self.registry.sets.values() for seg in group.segments.values() if seg.active)
        total = sum(len(s.segments) for s in self.registry.sets.values())
        metrics.SEGMENTS_DEFINED.labels("active").set(active)
        metrics.SEGMENTS_DEFINED.labels("inactive").set(total - active)

    async def send_sync_markers(self) -> None:
        """Nudge every partition so that idle ones backfill too (the agent syncs on any message)."""
        await self.send_markers(encode(envelope("engine.sync", {})),
                                [(self.records_topic_name, p) for p in range(self.settings.partitions)])


