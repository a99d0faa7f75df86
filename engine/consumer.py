"""The Faust consumer the engine's workers use: Faust's aiokafka consumer with confirmed end offsets
(engine/true_ends.py), a short fetch wait, and the input topics delivered a fetch at a time.

**A fetch at a time.** Faust delivers one stream event per Kafka message: two tasks in its fetcher, a
channel hand-over and a stream step each, which capped a worker at ~12k messages/s before it did any
work. For the topics in `grouped_topics` this consumer hands the agent each partition's records of one
fetch as one message (`Fetched`): its offset is the last record's, its `records` the aiokafka records in
order (merged by timestamp with the other grouped topics' records of the same partition number). Faust's commit then needs the earlier offsets accounted for: they are marked as a gap (Faust's
`_add_gap`, which its drain loop calls between two messages of a partition), so acknowledging the
`Fetched` message commits through its last record, exactly as if each record had been acknowledged.
Other topics (the table's changelog during recovery) keep Faust's per-message delivery. This leans on
Faust internals (`getmany`, `_wait_next_records`, `_add_gap`, `_read_offset`), which is why
pyproject.toml pins faust-streaming; the engine's own applied position per partition stays the safety
net (a record it applied already is skipped, a skipped one is re-read).

**The fetch wait.** Faust builds its consumer with a fixed `fetch_max_wait_ms=1500`. Apache Kafka answers
a waiting fetch as soon as data arrives, so there the wait only bounds an idle fetch; the local broker
(tansu) answers a fetch that found nothing only after about half its wait, even when data arrives
meanwhile, which put 0-750 ms into every change's latency. A 20 ms wait costs an idle worker about 50
empty fetches a second.
"""
from __future__ import annotations

import heapq
from typing import Any, AsyncIterator

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from engine.true_ends import TrueEndConsumer

FETCH_MAX_WAIT_MS = 20


class Fetched(ConsumerMessage):
    """One partition's records of one fetch, as one Faust message (offset: the last record's)."""

    __slots__ = ("records",)

    records: list[Any]  # aiokafka ConsumerRecords, in offset order


class _ShortWaitThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


class EngineConsumer(TrueEndConsumer):
    grouped_topics: frozenset[str] = frozenset()  # set per worker by grouping_consumer()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ShortWaitThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """Faust's getmany, with the grouped topics' records of one fetch delivered per partition number.
        The grouped topics are co-partitioned (a record's changes, behavioural events and conversations
        share its partition number), so their records are merged by timestamp, as Kafka Streams orders
        the records of one task: a conversation published after its contact's change is decided after
        it, whichever topic the fetch listed first. Each topic's own order is kept (the merge never
        reorders within a topic). The first `Fetched` message of a partition carries the merged records;
        the other topics' messages carry none and are there for Faust's acknowledgements."""
        if not self.grouped_topics:
            async for item in super().getmany(timeout):
                yield item
            return
        records, active = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:  # Faust's answer: a rebalance paused the flow, seek back to the committed offsets
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 - as Faust: logged, the next fetch retries
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        by_partition: dict[int, list[tuple[TP, list[Any]]]] = {}
        for tp, tp_records in records.items():
            if not tp_records or not (active is None or tp in active or tp in self._buffered_partitions):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic in self.grouped_topics:
                by_partition.setdefault(tp.partition, []).append((tp, tp_records))
                continue
            for record in tp_records:
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    return  # a rebalance began: the rest of this fetch is read again after it
                yield tp, self._to_message(tp, record)
        for parts in by_partition.values():
            merged = parts[0][1] if len(parts) == 1 else list(heapq.merge(*(r for _, r in parts), key=_timestamp))
            for tp, tp_records in parts:
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    return
                first, last = tp_records[0].offset, tp_records[-1].offset
                if last > first and not self._read_offset[tp]:
                    # Faust's drain loop marks the offsets between the previous message and this one
                    # itself, except for the first message after an assignment (no previous read offset).
                    await self._add_gap(tp, first, last - 1)
                yield tp, self._fetched(tp, tp_records, merged, generation_id)
                merged = []

    @staticmethod
    def _fetched(tp: TP, tp_records: list[Any], records: list[Any], generation_id: int) -> Fetched:
        record = tp_records[-1]
        fetched = Fetched(
            record.topic, record.partition, record.offset,
            record.timestamp / 1000.0 if record.timestamp is not None else None, record.timestamp_type,
            record.headers, record.key, record.value, record.checksum,
            serialized_value_size=sum(r.serialized_value_size for r in tp_records), tp=tp, generation_id=generation_id,
        )
        fetched.records = records
        return fetched

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's, without rebuilding the gap's interval tree on every call: its `merge_overlaps` took a
        tenth of a busy worker's CPU once every fetch added an interval. Merged only when the new interval
        overlaps one already there, which leaves the same tree Faust's would."""
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed + 1)
        if offset_from <= offset_to:
            gap = self._gap[tp]
            overlapping = gap.overlaps(offset_from, offset_to + 1)
            gap.addi(offset_from, offset_to + 1)  # intervaltree intervals exclude their end
            if overlapping:
                gap.merge_overlaps()


def _timestamp(record: Any) -> int:
    return record.timestamp if record.timestamp is not None else 0


def grouping_consumer(topics: frozenset[str]) -> type[EngineConsumer]:
    """The engine's consumer class delivering `topics` a fetch at a time (Faust builds the instance)."""
    return type("GroupingEngineConsumer", (EngineConsumer,), {"grouped_topics": topics})
