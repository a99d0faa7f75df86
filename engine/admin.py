"""Create the declared topics idempotently (kafka-python's admin client)."""
from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

import topics
from engine.settings import Settings


def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic of topics.ALL_TOPICS that does not exist yet; return the names created."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.full_name(settings.topic_prefix),
                num_partitions=spec.partition_count(settings.partitions),
                replication_factor=1,
                topic_configs=dict(spec.config()),
            )
            for spec in topics.ALL_TOPICS
            if spec.full_name(settings.topic_prefix) not in existing
        ]
        check_partitions(admin, settings, existing)
        created: list[str] = []
        for topic in wanted:  # one by one: a concurrent creator must not fail the others
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def check_partitions(admin: KafkaAdminClient, settings: Settings, existing: set[str]) -> None:
    """Refuse to start against co-partitioned topics whose partition count differs from the setting:
    records would be checked against the wrong partitioning and all dead-lettered."""
    specs = {spec.full_name(settings.topic_prefix): spec for spec in topics.ALL_TOPICS}
    names = [name for name in specs if name in existing]
    for description in admin.describe_topics(names) if names else []:
        expected = specs[description["name"]].partition_count(settings.partitions)
        actual = len(description["partitions"])
        if actual != expected:
            raise SystemExit(
                f"topic {description['name']} has {actual} partitions but SEGMENT_ENGINE_PARTITIONS "
                f"implies {expected}; set SEGMENT_ENGINE_PARTITIONS={actual} or recreate the topic"
            )
