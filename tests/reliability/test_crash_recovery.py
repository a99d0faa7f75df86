"""Scenario 1: a worker is killed with SIGKILL at random points while changes flow (while it starts,
recovers its state, works through a backlog or keeps up live), several times, and each time restarted
either on its own data directory (RocksDB survives, the changelog tail is restored) or on an empty one
(all state comes back from the changelog). Nothing a user relies on may differ from a run without faults."""
from __future__ import annotations

import random
import time

from engine.sample_data import contact_changes
from tests.conftest import Harness
from tests.oracle import Oracle
from tests.reliability.invariants import fixed_definition_problems, fold, settle
from tests.reliability.workload import FIXTURE_RULES, Stream, define_fixture_segments, health

KILLS = 4
CHANGES, RECORDS = 6000, 300


def test_kill_9_at_random_points_then_restart_on_the_same_or_an_empty_data_directory(harness: Harness,
                                                                                     seed: int) -> None:
    """Invariants after the last restart (see invariants.py): the API's members, counts and stored records
    equal the oracle's from-scratch evaluation; the deduplicated events fold to the same membership; the
    emitted transitions are exactly the sequential oracle's, each under one id, however often the kills
    made the engine emit it."""
    rng = random.Random(seed)
    version = int(time.time() * 1000)
    define_fixture_segments(harness, version)
    changes = list(contact_changes(rng, CHANGES, records=RECORDS))
    # Each restart gets the same or a new data directory (both at least once); one kill of a restarted
    # worker lands while it starts (registry load, group join, changelog recovery), the others once it
    # is processing.
    restarts = rng.sample(["same", "same", "new", "new"], KILLS)
    during_start = rng.randrange(1, KILLS)

    data_dir = "data-0"
    worker = harness.start_worker(data_dir)
    stream = Stream(harness, changes, chunk=30, pause=0.1).start()  # about 20 s of changes
    kills: list[str] = []
    for n, how in enumerate(restarts):
        if n == during_start:
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            worker.wait_ready()
            time.sleep(rng.uniform(0.2, 3.0))
        status = health(worker)
        kills.append(f"kill {n + 1}: {'ready' if status and status['ready'] else 'starting'}, "
                     f"{len(stream.published)} changes published, stream {'flowing' if stream.flowing else 'done'}")
        worker.kill()
        if how == "new":
            data_dir = f"data-{n + 1}"
        worker = harness.launch_worker(data_dir)
    published = stream.finish()
    print("\n".join(kills), f"\nrestarts: {restarts}")
    assert sum("flowing" in k for k in kills) >= 2, f"seed {seed}: the kills did not overlap the stream: {kills}"
    worker.wait_ready(timeout=90)

    oracle = Oracle(harness.catalog(), dict(FIXTURE_RULES)).apply_all(published)
    assert len(oracle.membership()) > 50, "workload too unselective to prove anything"
    settle(harness, seed, "membership after the kills",
           lambda: fixed_definition_problems(harness, [worker.web_port], oracle, dict.fromkeys(FIXTURE_RULES, version)))
    folded = fold(harness.events())
    print(f"{len(folded.ids)} transitions, {folded.redelivered} redelivered duplicates")

