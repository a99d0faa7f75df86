"""The Faust worker: record changes in, membership in RocksDB, entered/exited events out. This module is
the wiring: the Faust app, its topics, the state table, the agent and the timers.

The data path, in the order a message takes it:
1. engine/consumer.py: Faust's consumer hands the agent each partition's records of one fetch at once;
2. `Engine._agent` here: per record, the applied-position check (skip what was applied, re-read what the
   consumer skipped), the partition's sync when segments changed (engine/sync.py), the partition clock;
3. engine/intake.py: bytes -> validated changes, events, conversations;
4. engine/processor.py: stored states + decoded messages -> transitions, new states, outgoing events;
5. engine/commit.py: events produced and acknowledged, then one RocksDB write batch per partition, then
   its changelog. State is never ahead of the events it implies, so replaying a message after a crash
   re-emits the same events with the same deterministic ids.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any, Iterable

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.sensors.prometheus import setup_prometheus_sensors
from mode.utils.tracebacks import format_task_stack
from prometheus_client import REGISTRY

import topics
from engine import metrics
from engine.api.auth import HEADER_FIELD_LIMIT
from engine.api.cluster import Cluster
from engine.api.routes import install_routes
from engine.assignment import AssignmentBook
from engine.commit import Checkpoint
from engine.consumer import grouping_consumer
from engine.defaults import DefaultsBook
from engine.envelope import encode, envelope, segment_key
from engine.errors import (BadMessage, InternalError, MalformedJson, MessageTooLarge, SchemaViolation,
                           UnknownWorkspace)
from engine.feed import Feed
from engine.intake import decode_message
from engine.monitor import EngineMonitor
from engine.observe import EngineCollector, consumer_lag
from engine.processor import Outgoing, Processor, Work
from engine.registry import SegmentRegistry
from engine.rules.errors import EngineError
from engine.schemas import validate_message
from engine.settings import Settings
from engine.state import PromptTableManager, RecordStateTable, StateStore
from engine.storage import store_url
from engine.sync import PartitionSync
from engine.true_ends import true_ends
from engine.workspaces import load_workspaces

log = logging.getLogger("segment_engine")

RECALCULATION_CHECK_S = 10.0  # how often the owner of partition 0 looks for segments due a recalculation
MAX_CLOCK_LEAD_MS = 60_000  # system clock: how far ahead of this worker's wall clock a message may move time
GROUP_RECORDS = 1_000  # records applied before their writes are committed together, at most
# Outgoing messages (events, decisions, dead letters) a group holds before it is committed, even inside a
# fetch: one fetch of 100-change batches at 10,000 segments implies ~400,000 events, held in memory until
# acknowledged. MAX_LANDING + 1 groups can be in memory (engine/commit.py: those landing and the open one).
GROUP_OUTGOING = 10_000
# The agent hands the event loop back at least this often inside a fetch: the previous group's commit (its
# sends, the acknowledgements, the RocksDB write) and the web server run on the same loop, and a fetch
# applied in one go (~100 ms at 1,000 segments) held a group's acknowledgement up for several fetches.
YIELD_S = 0.002
STALL_CHECK_S = 5.0  # how often partitions that lag without moving are nudged (see _nudge_stalled)
# The cyclic collector's young-generation threshold (CPython's default: 700 allocations). See freeze_long_lived.
GC_YOUNG_THRESHOLD = 10_000


def freeze_long_lived() -> None:
    """Move every object alive now (Faust, the libraries, the compiled segment rules) out of the cyclic
    collector's view, once the registry is loaded or changed: a full collection traversed them all, a
    stall of the whole worker (~90 ms at 1,000 segments, ~400 ms at 10,000) that every change waiting in a
    fetch sees. Frozen objects are still freed by their reference counts. With the long-lived heap out of
    the count, full collections are due far more often (CPython runs one when a quarter more than the
    last one left has survived), so young collections run every GC_YOUNG_THRESHOLD allocations instead of
    700: messages in flight (a group's events, held until acknowledged) die before they are promoted."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()


def agent_stacks() -> str:
    """Where the record agent waits now, innermost await last (for a log line when partitions stop moving)."""
    stacks = (format_task_stack(task) for task in asyncio.all_tasks())
    return "\n".join(stack for stack in stacks if ", in _agent\n" in stack) or "(no agent task)"


class Engine:
    """Wires the Faust app, the state table and the segment registry of one worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SegmentRegistry(load_workspaces(settings.workspaces_file))
        self.assignment = AssignmentBook()
        self.defaults = DefaultsBook()
        self.registry_ready = asyncio.Event()
        self.clocks: dict[int, int] = {}  # partition -> its time (epoch ms), see advance_clock
        prefix = settings.topic_prefix
        self.records_topic_name = topics.RECORD_CHANGES.full_name(prefix)
        self.behaviour_topic_name = topics.BEHAVIOUR_EVENTS.full_name(prefix)
        self.conversations_topic_name = topics.CONVERSATIONS.full_name(prefix)
        self.assignments_topic_name = topics.CONVERSATION_ASSIGNMENTS.full_name(prefix)
        self.assignment_rules_topic_name = topics.ASSIGNMENT_RULES.full_name(prefix)
        self.defaults_topic_name = topics.DEFAULT_SEGMENTS.full_name(prefix)
        # Per-workspace documents every worker follows beside the definitions: topic -> (message type, book, name).
        self.workspace_books: dict[str, tuple[str, Any, str]] = {
            self.assignment_rules_topic_name: ("assignment.rules", self.assignment, "assignment rules"),
            self.defaults_topic_name: ("default.segment", self.defaults, "default segments"),
        }
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
            # aiokafka keeps one produce request in flight per broker, one record batch per partition in it:
            # a group's ~2 MB of events in its default 16 KiB batches took ~35 round trips. Half the message
            # limit keeps a batch under the broker's message.max.bytes.
            producer_max_batch_size=settings.max_message_bytes // 2,
            broker_session_timeout=settings.session_timeout,
            broker_rebalance_timeout=settings.session_timeout,
            broker_heartbeat_interval=max(0.5, settings.session_timeout / 10),
            autodiscover=False,
            TableManager=PromptTableManager,
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
        # The data path, in the order a message takes it: engine/consumer.py (a fetch at a time), the agent
        # below (positions, gaps, the partition clock), engine/intake.py (bytes -> changes), the processor
        # (changes -> transitions, states, events), engine/sync.py (backfills when segments change), and
        # the checkpoint (events acknowledged, then RocksDB, then the changelog).
        self.processor = Processor(settings, self.registry, self.assignment, {
            "events": self.events_topic_name, "assignments": self.assignments_topic_name,
            "dead_letters": self.dead_letter_topic_name})
        self.checkpoint = Checkpoint(self.app, self.state, self.table, self.changelog_topic_name, self.partition_counts)
        self.sync = PartitionSync(self.registry, self.state, self.processor, self.checkpoint, self.now_of)
        self.backfill_pending = self.sync.pending  # partition -> records left to scan (for /health and metrics)
        self.cluster = Cluster(self)
        # The live feed's reader (engine/feed.py): started by its first subscriber, ended with the web server.
        self.feed = Feed(settings.bootstrap_servers, [(self.events_topic_name, n), (self.assignments_topic_name, n)])
        self.app.agent(self.records_topic, name="apply-record-changes")(self._agent)
        self.app.task(self._read_definitions)
        if settings.clock == "system":
            self.app.timer(interval=settings.tick_ms / 1000)(self._tick)
        self.app.timer(interval=RECALCULATION_CHECK_S)(self._recalculate_on_interval)
        self.app.timer(interval=STALL_CHECK_S)(self._nudge_stalled)
        self.stalled: dict[tuple[str, int], int] = {}  # (topic, partition) -> applied position seen lagging
        self.nudged: set[tuple[str, int]] = set()  # input partitions the last check nudged
        # Faust's own monitor (rebalances, offsets, send latency, ...) as faust_*, and the engine's
        # metrics (engine.metrics, engine.observe) from the same registry, on /metrics.
        setup_prometheus_sensors(self.app, pattern="/metrics", name_prefix="faust")
        self.app.monitor = EngineMonitor(metrics=self.app.monitor._metrics)  # type: ignore[attr-defined]
        REGISTRY.register(EngineCollector(self))
        metrics.start_series()
        install_routes(self)
        self.app.web.web_app.on_shutdown.append(lambda _: self.feed.stop())  # open streams end, not time out
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
        agent, else after GROUP_RECORDS records or GROUP_OUTGOING outgoing messages, and before anything
        that reads committed state. A record's events are acknowledged before any of its state is
        committed; Faust acknowledges the fetch (and may commit its offsets) only when the agent asks for
        the next one."""
        await self.registry_ready.wait()
        await self.checkpoint.reset()
        for dropped in self.state.discard():  # a crashed agent's uncommitted writes: their messages are re-read
            log.warning("partition %d: dropping %d uncommitted writes of a crashed agent", dropped.partition,
                        len(dropped.pending))
        queued = stream.channel.queue  # type: ignore[attr-defined]
        async for event in stream.events():
            records = event.message.records  # type: ignore[attr-defined]
            if records:  # (the other topics' messages of a merged fetch carry none)
                metrics.FETCHED_RECORDS.observe(len(records))
            yielded = time.perf_counter()
            for record in records:
                await self.apply_record(record)
                if time.perf_counter() - yielded > YIELD_S:
                    await asyncio.sleep(0)
                    yielded = time.perf_counter()
                if len(self.checkpoint.group.out) >= GROUP_OUTGOING:
                    await self.checkpoint.commit_behind()
            self.processor.flush_metrics()
            if self.checkpoint.group.records >= GROUP_RECORDS or queued.empty():
                await self.checkpoint.commit_behind()

    async def apply_record(self, record: Any) -> None:
        """Apply one record unless it was applied already; records the consumer skipped come first."""
        last = self.state.applied_position(record.partition, record.topic)
        if last is not None and record.offset <= last:
            # Applied already (its state and events are in place): redelivered after a crash or rebalance.
            metrics.REDELIVERED.inc()
            return
        if record.offset > (last if last is not None else -1) + 1:
            await self.checkpoint.commit_pending()
            await self.repair_gap(record, (last if last is not None else -1) + 1)
        await self.apply_message(record)

    async def apply_message(self, msg: Any) -> None:
        """Apply one record into the open group: its writes (state, position) wait in the partition's
        overlay and its events in the group until the group is committed (Checkpoint)."""
        self.state.begin(msg.partition)
        await self.handle(msg)
        self.state.set_position(msg.topic, msg.offset)
        self.checkpoint.group.records += 1

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
                    await self.checkpoint.commit_pending()
                    metrics.GAP_MESSAGES.inc()
        finally:
            await consumer.stop()

    async def handle(self, msg: Any) -> None:
        """Apply one message (an aiokafka record): record changes, behavioural events, an import, a tick or
        a sync marker. The steps that read committed state (a backfill, the schedule scan, an import that
        may wait for its segment) commit the open group first."""
        partition = msg.partition
        checkpoint = self.checkpoint
        if self.sync.due(partition):
            await checkpoint.commit_first(partition)
            await self.sync.sync(partition, msg.topic, msg.offset)
        try:
            message = decode_message(msg.value, self.settings.max_message_bytes)
        except BadMessage as exc:
            metrics.CHANGES_DEADLETTERED.inc()
            checkpoint.group.out.append(self.processor.dead_letter(msg, exc))
            return
        kind = message["type"]
        if kind in ("engine.tick", "segment.import"):
            await checkpoint.commit_first(partition)
            if kind == "segment.import" and message["workspace"] in self.registry.workspaces:
                data = message["data"]  # the processor dead-letters an import of an unknown workspace at once
                await self.registry_reaches(segment_key(message["workspace"], data["object_type"], data["segment_id"]),
                                            data.get("segment_version", 0))
        now = self.advance_clock(partition, msg, message)
        work = Work(self.state)
        started = time.perf_counter()
        label = self.processor.apply(msg, message, now, work)
        if label:
            metrics.EVALUATION_SECONDS_BY_KIND[label].observe(time.perf_counter() - started)
        checkpoint.group.out.extend(work.out)
        if work.membership and label in ("changes", "events", "conversations") and msg.timestamp and msg.timestamp > 0:
            checkpoint.group.stamps.append(msg.timestamp / 1000)
        self.state.write((msg.topic, msg.offset, 1), work.membership, work.pending.items(), work.serialised)
        if work.turns is not None:
            self.state.set_turns(work.turns)
        if work.more_due:  # a bounded share of due records per message; nudge the partition for the rest
            await self.send_ticks([partition])

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
        await self.checkpoint.send_markers(marker, [(self.records_topic_name, p) for p in partitions])

    async def registry_reaches(self, key: str, version: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until the registry has applied `version` of a segment: an import published right
        after creating its segment may overtake the definition, which travels on another topic."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.registry.stamps.get(key, [0])[0] < version and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    # ---- rebalances and stalled partitions -------------------------------------------------------

    async def _nudge_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Put a marker at the end of every input partition this worker now owns. Around a rebalance the
        consumer can resume past messages that were never applied; the marker's offset reveals that gap
        (see repair_gap) even on a partition where nothing else arrives."""
        try:
            await self.checkpoint.send_markers(
                encode(envelope("engine.sync", {})),
                [(tp.topic, tp.partition) for tp in assigned if tp.topic in self.input_topic_names])
        except Exception:  # noqa: BLE001 - best effort: the next message reveals a gap anyway
            log.exception("could not send markers to newly assigned partitions")

    async def _nudge_stalled(self) -> None:
        """Put a marker at the end of every owned input partition that lags behind what the consumer has
        seen and whose applied position has not moved since the last check. The consumer can resume past
        the last messages of a partition that were acknowledged to Faust but never committed here (a kill
        between the two); with nothing after them, no gap would show and they would wait for the next
        message on that partition forever. The marker is that next message (see repair_gap).

        A partition restored from its changelog is repaired on its next message too (PartitionSync.sync),
        and the worker is not ready until then, so one that waits for repair is nudged even without lag.
        Only the worker's own readiness gates this: a partition waiting here is what keeps it unready."""
        if not self.is_ready() or self.app.rebalancing:
            self.stalled.clear()
            return
        try:
            lags = consumer_lag(self, self.cluster.local_partitions())
            waiting = {(self.records_topic_name, p) for p in self.cluster.repairing()}
        except Exception:  # noqa: BLE001 - rebalancing: the next check will do
            return
        stuck, seen = [], {}
        for topic, partition in sorted(waiting | {tp for tp, lag in lags.items() if lag > 0}):
            position = self.state.applied_position(partition, topic)
            seen[(topic, partition)] = -1 if position is None else position
            if self.stalled.get((topic, partition)) == seen[(topic, partition)]:
                stuck.append((topic, partition))
        if stuck and set(stuck) <= self.nudged:
            # Nudged last time and still not moving: the agent itself may be waiting; say where.
            log.warning("input partitions still stalled after a nudge; the agent is at:\n%s", agent_stacks())
        self.stalled, self.nudged = seen, set(stuck)
        if stuck:
            log.warning("nudging %d input partition(s) lagging or awaiting repair without progress: %s",
                        len(stuck), stuck)
            await self.checkpoint.send_markers(encode(envelope("engine.sync", {})), stuck)

    async def _forget_synced(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Faust sends this once the agent finished its current message (stream_wait_empty): a group it
        # left open (the buffer was cleared under it) is committed before the partitions move.
        await self.checkpoint.commit_pending()
        self.sync.synced.clear()
        self.clocks.clear()

    # ---- segment definitions ---------------------------------------------------------------------

    async def _read_definitions(self) -> None:
        """Follow the compacted definitions, assignment-rules and default-segments topics from the start;
        the agent waits until it caught up."""
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
            tps += [TopicPartition(self.defaults_topic_name, p) for p in range(topics.DEFAULT_SEGMENTS.partitions or 1)]
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
                await self.checkpoint.flush(rejected)
                if not self.registry_ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps)):
                        self._count_segments()
                        self.registry_ready.set()
                        log.info("segment registry loaded: generation %d", self.registry.generation)
                        freeze_long_lived()
                        await self.send_sync_markers()
                elif changed:
                    self._count_segments()
                    freeze_long_lived()
                    await self.send_sync_markers()
        finally:
            await consumer.stop()

    def _apply_definition(self, record: Any, rejected: list[Outgoing]) -> bool:
        """Apply one definition (or assignment rules, or default segment) message; an invalid one is
        dead-lettered (by every worker, same id). True if the segment registry changed."""
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
                if (followed := self.workspace_books.get(record.topic)) is not None:
                    type_, book, what = followed
                    if message["type"] != type_:
                        raise SchemaViolation(f"unexpected message type {message['type']!r} on the {what} topic")
                    if message["workspace"] not in self.registry.workspaces:
                        raise UnknownWorkspace(f"workspace {message['workspace']!r} is not configured")
                    book.apply(message["workspace"], message["data"])
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
            self.processor.dead_letter_for(record.topic, record.partition, record.offset, record.key, record.value, error)
        )
        return False

    def _count_segments(self) -> None:
        active = sum(1 for group in self.registry.sets.values() for seg in group.segments.values() if seg.active)
        total = sum(len(s.segments) for s in self.registry.sets.values())
        metrics.SEGMENTS_DEFINED.labels("active").set(active)
        metrics.SEGMENTS_DEFINED.labels("inactive").set(total - active)

    async def send_sync_markers(self) -> None:
        """Nudge every partition so that idle ones backfill too (the agent syncs on any message)."""
        await self.checkpoint.send_markers(encode(envelope("engine.sync", {})),
                                [(self.records_topic_name, p) for p in range(self.settings.partitions)])


