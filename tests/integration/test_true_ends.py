"""End offsets confirmed by reading, on the real broker: records produced in one batch are all counted,
so a worker's table recovery neither stops early nor refuses to start after a restart."""
from __future__ import annotations

import asyncio
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from engine.broker import LocalBroker
from engine.true_ends import true_ends


def test_true_ends_count_every_record_of_a_batch(broker: LocalBroker) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.address)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.address, linger_ms=200)
    for i in range(5):  # one batch (linger) on partition 0; partition 1 stays empty
        producer.send(topic, f"r{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = KafkaConsumer(bootstrap_servers=broker.address)
    reported = consumer.end_offsets([p0, p1])
    consumer.close()
    ends = asyncio.run(true_ends([broker.address], {(topic, 0): reported[p0], (topic, 1): reported[p1]}))
    assert ends == {(topic, 0): 5, (topic, 1): 0}
