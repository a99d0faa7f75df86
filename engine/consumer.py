"""The Faust consumer the engine's workers use: Faust's aiokafka consumer with confirmed end offsets
(engine/true_ends.py) and a short fetch wait.

Faust builds its consumer with a fixed `fetch_max_wait_ms=1500`. Apache Kafka answers a waiting fetch as
soon as data arrives, so there the wait only bounds an idle fetch; the local broker (tansu) answers a fetch
that found nothing only after about half its wait, even when data arrives meanwhile, which put 0-750 ms
into every change's latency. A 20 ms wait costs an idle worker about 50 empty fetches a second.
"""
from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from engine.true_ends import TrueEndConsumer

FETCH_MAX_WAIT_MS = 20


class _ShortWaitThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


class EngineConsumer(TrueEndConsumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ShortWaitThread(self, loop=self.loop, beacon=self.beacon)
