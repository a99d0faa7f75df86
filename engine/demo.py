"""`segment-engine run`: the whole loop on one machine, for a newcomer's first look.

Starts the embedded broker (unless SEGMENT_ENGINE_BROKER is set), a worker process, applies the sample
segments and chat assignment rules, streams sample contact changes (and a conversation now and then)
and prints every entered/exited event and assignment decision until Ctrl-C.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import orjson

from engine.admin import ensure_topics
from engine.broker import LocalBroker, free_port
from engine.client import Publisher
from engine.sample_data import contact_changes, full_contact, purchases
from engine.settings import SAMPLES, Settings
from engine.tail import format_event

SAMPLE_CONTACTS = 300
DEMO_TOKEN = "demo-admin-token"  # engine/samples/tokens.json: admin of the demo workspace
DEMO_BROKER_PORT = 9092  # Kafka's usual port, so the README's subscriber commands work as written


def run_demo(settings: Settings, duration: float = 0, rate: float = 20) -> int:
    broker: LocalBroker | None = None
    if not settings.broker:
        broker = LocalBroker(DEMO_BROKER_PORT if port_is_free(DEMO_BROKER_PORT) else None).start()
        print(f"started local broker on {broker.address}; subscribe from another terminal with "
              f"SEGMENT_ENGINE_BROKER={broker.address} .venv/bin/segment-engine tail --follow", flush=True)
        settings = replace(settings, broker=broker.address)
    data_dir = Path(tempfile.mkdtemp(prefix="segment-engine-demo-"))
    settings = replace(settings, data_dir=data_dir, web_port=settings.web_port if port_is_free(settings.web_port) else free_port())
    env = dict(os.environ, SEGMENT_ENGINE_BROKER=settings.broker, SEGMENT_ENGINE_DATA_DIR=str(data_dir),
               SEGMENT_ENGINE_WEB_PORT=str(settings.web_port))
    # One worker on a local broker: a short session lets it join its group, and print the first events,
    # seconds sooner (tansu holds a first join about half the session timeout). Set it to keep your own.
    env.setdefault("SEGMENT_ENGINE_SESSION_TIMEOUT", "3")
    worker: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        ensure_topics(settings)
        publisher = Publisher(settings, source="segment-engine-demo")
        for segment in orjson.loads((SAMPLES / "segments.json").read_bytes()):
            workspace = segment.pop("workspace")
            data = publisher.define_segment(workspace, segment)
            print(f"segment {workspace}/{data['object_type']}/{data['id']}: {data['name']}", flush=True)
        assignment = orjson.loads((SAMPLES / "assignment.json").read_bytes())
        publisher.set_assignment_rules(assignment.pop("workspace"), assignment)
        print(f"chat assignment rules: {', '.join(r['id'] for r in assignment['rules'])}", flush=True)
        publisher.flush()
        worker = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env)
        print(f"worker started (pid {worker.pid}); HTTP API on http://127.0.0.1:{settings.web_port} "
              f"(token: {DEMO_TOKEN}); publishing sample contact changes, Ctrl-C to stop", flush=True)
        print(f"console: http://127.0.0.1:{settings.web_port}/console/  (sign in with {DEMO_TOKEN})", flush=True)
        threading.Thread(target=_publish_forever, args=(publisher, rate, stop), daemon=True).start()
        _print_events(settings, duration)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
        if broker is not None:
            broker.stop()
        print("stopped", flush=True)
    return 0


def port_is_free(port: int) -> bool:
    """The README's examples use the default ports; fall back to a free one when it is taken."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _publish_forever(publisher: Publisher, rate: float, stop: threading.Event) -> None:
    """An initial load of every sample contact (c0 … c299, so the README's examples find c1), then a
    steady stream of partial updates, alternating single-change messages and small batches, and a few
    purchases a second (behavioural events) for the High-value customer segment, and a chat conversation
    every few seconds, assigned by the contact's segments."""
    rng = random.Random(1)
    publisher.publish_batches("demo", [
        {"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1, "fields": full_contact(rng)}
        for i in range(SAMPLE_CONTACTS)
    ], batch_size=50)
    publisher.flush()
    changes = (dict(c, version=c["version"] + 1) for c in contact_changes(rng, 10**9, records=SAMPLE_CONTACTS))
    while not stop.wait(1.0):
        burst = [next(changes) for _ in range(max(1, int(rate)))]
        publisher.publish_change("demo", burst[0])
        publisher.publish_batches("demo", burst[1:], batch_size=10)
        publisher.publish_events("demo", purchases(rng, max(1, int(rate) // 4), SAMPLE_CONTACTS), batch_size=10)
        if rng.random() < 0.4:
            publisher.publish_conversation("demo", f"conv-{rng.getrandbits(40):010x}", f"c{rng.randrange(SAMPLE_CONTACTS)}")
        publisher.flush()


def _print_events(settings: Settings, duration: float) -> None:
    from kafka import KafkaConsumer

    import topics

    consumer = KafkaConsumer(
        topics.SEGMENT_EVENTS.full_name(settings.topic_prefix),
        topics.CONVERSATION_ASSIGNMENTS.full_name(settings.topic_prefix),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + duration if duration else float("inf")
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    print(format_event(orjson.loads(record.value)), flush=True)
    finally:
        consumer.close()
