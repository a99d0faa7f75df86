"""A worker killed with SIGKILL mid-stream is replaced by one with an empty data directory: state comes
back from the changelog, no transition is lost, and redelivered transitions carry identical ids."""
from __future__ import annotations

import random
import threading

import pytest
import time
from collections import defaultdict

from engine.sample_data import contact_changes
from tests.conftest import Harness, WorkerProcess
from tests.oracle import Oracle, fold_events


@pytest.mark.parametrize("moment", ["backlog", "live"])
def test_kill_9_mid_stream_then_a_fresh_worker_catches_up(harness: Harness, moment: str) -> None:
    rules = harness.define_fixture_segments()
    changes = list(contact_changes(random.Random(11), 5000, records=600))
    before_kill, after_kill = changes[:3500], changes[3500:]
    oracle = Oracle(harness.catalog(), rules).apply_all(changes)

    # "backlog": the stream is published while the first worker is still starting, so it is killed while
    # working through a backlog. "live": the worker is ready first and killed while consuming live; then
    # Faust's committed offsets can be ahead of the state that reached the changelog, and the fresh
    # worker must re-read the offsets it would otherwise skip (see README, Guarantees).
    if moment == "live":
        first = harness.start_worker("data-a")
    else:
        first = WorkerProcess(harness.settings, harness.tmp / "data-a", harness.tmp / "worker-0.log").start()
        harness.workers.append(first)
    stop = threading.Event()

    def trickle() -> None:  # a steady stream, so the kill lands in the middle of it
        for i in range(0, len(before_kill), 50):
            chunk = before_kill[i : i + 50]
            if (i // 50) % 2:
                harness.publisher.publish_batches("acme", chunk, batch_size=10)
            else:
                for change in chunk:
                    harness.publisher.publish_change("acme", change)
            harness.publisher.flush()
            if stop.wait(0.05):
                return

    publisher = threading.Thread(target=trickle)
    publisher.start()
    harness.wait_for(lambda: len(harness.events()) > 300, what="first events")
    first.kill()
    killed_with = len(harness.events())
    publisher.join()
    assert killed_with < len(oracle.transitions), "the kill came after everything was processed"

    harness.start_worker("data-b")  # empty data directory: state must come from the changelog
    harness.publisher.publish_batches("acme", after_kill[:700], batch_size=20)
    for change in after_kill[700:]:
        harness.publisher.publish_change("acme", change)
    harness.publisher.flush()

    expected = oracle.membership()
    harness.wait_for(lambda: fold_events(harness.events()) == expected, timeout=120, what="folded events == oracle")
    time.sleep(1)
    events = harness.events()
    assert fold_events(events) == expected

    ids_by_transition: dict[tuple[str, str, str, int, int], set[str]] = defaultdict(set)
    for e in events:
        d = e["data"]
        ids_by_transition[(e["type"], d["record_id"], d["segment_id"], d["record_version"], d["segment_version"])].add(e["id"])
    assert all(len(ids) == 1 for ids in ids_by_transition.values()), "a redelivered transition changed its id"
    emitted = {key[:4] for key in ids_by_transition}
    missing = set(oracle.transitions) - emitted
    assert not missing, f"{len(missing)} transitions never emitted, e.g. {sorted(missing)[:3]}"
