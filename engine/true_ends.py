"""End offsets confirmed by reading: the first offset at which a fetch finds nothing.

Faust's table recovery trusts the broker's reported end offsets (ListOffsets "latest"). The local
broker (tansu 0.6) reports the base offset of the last record batch plus one, ignoring the batch's
other records (measured: a batch of 5 on an empty partition reports 1). Recovery then either refuses to
start ("persisted offset > highwater", after a restart on the same data directory) or stops early and
loses the last changelog records. Reading on from the reported end finds the real one; on Apache Kafka
that read is simply empty.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer

K = TypeVar("K")
PROBE_WAIT_MS = 200


async def true_ends(bootstrap_servers: list[str], reported: Mapping[K, int]) -> dict[K, int]:
    """`reported` end offsets (keys are (topic, partition) tuples), moved past any record found beyond them."""
    ends = dict(reported)
    if not ends:
        return ends
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=PROBE_WAIT_MS)
    await consumer.start()
    try:
        by_tp = {TopicPartition(*key): key for key in ends}  # type: ignore[misc]
        consumer.assign(list(by_tp))
        for tp, key in by_tp.items():
            consumer.seek(tp, ends[key])
        while batch := await consumer.getmany(timeout_ms=PROBE_WAIT_MS):
            for tp, records in batch.items():
                if records:
                    ends[by_tp[tp]] = max(ends[by_tp[tp]], records[-1].offset + 1)
        return ends
    finally:
        await consumer.stop()


class TrueEndConsumer(FaustConsumer):
    """Faust's aiokafka consumer whose `highwaters` (used by table recovery) are confirmed by reading."""

    async def highwaters(self, *partitions: Any) -> Mapping[Any, int]:
        reported = await super().highwaters(*partitions)
        servers = [f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker]
        return await true_ends(servers, reported)
