"""BASELINE, not the engine: the transport limit. A bare aiokafka consumer (no Faust, no consumer group:
every partition assigned and read from the beginning) that decodes each message with orjson and counts
the changes in it, nothing else.

Reads BENCH_BROKER, BENCH_TOPIC, BENCH_PARTITIONS and BENCH_EXPECT (messages to read), then prints one JSON
line: messages, changes, the monotonic times of the first fetched batch and of the end of the last
message, and its own peak RSS (VmHWM, kB). Exits by itself (BENCH_TIMEOUT seconds at most).
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


def vm_hwm_kb(pid: int | str = "self") -> int | None:
    """Peak resident set size of a process (VmHWM in /proc/<pid>/status), kB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def consume(broker: str, topic: str, partitions: int, expect: int, timeout: float) -> dict[str, object]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=2 * 1_048_576)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        messages = changes = 0
        first = last = None
        deadline = time.monotonic() + timeout
        while messages < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            if batches and first is None:
                first = time.monotonic()
            for records in batches.values():
                for record in records:
                    message = orjson.loads(record.value)
                    changes += len(message["data"]["changes"]) if message["type"] == "record.changes" else 1
                    messages += 1
            if batches:
                last = time.monotonic()
        return {"messages": messages, "changes": changes, "first": first, "last": last, "vm_hwm_kb": vm_hwm_kb()}
    finally:
        await consumer.stop()


def main() -> int:
    env = os.environ
    result = asyncio.run(consume(env["BENCH_BROKER"], env["BENCH_TOPIC"], int(env.get("BENCH_PARTITIONS", "4")),
                                 int(env["BENCH_EXPECT"]), float(env.get("BENCH_TIMEOUT", "120"))))
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if int(str(result["messages"])) >= int(env["BENCH_EXPECT"]) else 1


if __name__ == "__main__":
    sys.exit(main())
