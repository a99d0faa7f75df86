"""What an SRE relies on: liveness answers as soon as the worker serves, readiness only once its answers
are complete (definitions loaded, tables recovered), and `segment-engine progress` reports backfills and
lag until the workers are caught up."""
from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from tests.conftest import FIXTURES, REPO, Harness, WorkerProcess
from tests.oracle import Oracle

RECORDS = 8000


def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def contacts(rng: random.Random) -> list[dict[str, Any]]:
    return [{"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1,
             "fields": {"country": rng.choice(["PL", "DE", "FR"]), "lifetime_value": rng.randrange(0, 3000),
                        "is_subscribed": rng.random() < 0.5, "tags": rng.sample(["vip", "partner", "lead"], 1)}}
            for i in range(RECORDS)]


def test_ready_only_with_complete_answers_and_progress_until_caught_up(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    rules = harness.define_fixture_segments()
    changes = contacts(random.Random(11))
    harness.publisher.publish_batches("acme", changes, batch_size=100)
    harness.publisher.flush()
    oracle = Oracle(harness.catalog(), rules).apply_all(changes)
    expected = {sid: sum(1 for _, s in oracle.membership() if s == sid) for sid in rules}
    first = harness.start_worker("data-first")

    # `progress --wait` returns once every worker is ready, no backfill runs and nothing is left to apply.
    progress = subprocess.run([sys.executable, "-m", "engine.cli", "progress", "--wait", "--interval", "0.5",
                               "--timeout", "120", "--url", f"http://127.0.0.1:{first.web_port}"],
                              cwd=REPO, capture_output=True, text=True, timeout=180)
    assert progress.returncode == 0, progress.stdout + progress.stderr
    last = progress.stdout.strip().splitlines()[-1]
    assert "ready" in last and "backfill pending=0" in last and "lag=0" in last, progress.stdout
    for sid, count in expected.items():
        assert get(first.web_port, f"/v1/workspaces/acme/segments/{sid}/count", "acme-admin")[1]["member_count"] == count
    first.stop()

    # A replacement with an empty data directory restores every partition from the changelog. It is live
    # as soon as it serves, ready only after that: the first answer it gives when ready is complete.
    second = WorkerProcess(harness.settings, harness.tmp / "data-second", harness.tmp / "worker-second.log").start()
    harness.workers.append(second)
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            live = get(second.web_port, "/health/live")[0]
            ready, body = get(second.web_port, "/health/ready")
        except OSError:
            time.sleep(0.05)
            continue
        seen.append((live, ready))
        if ready == 200:
            assert get(second.web_port, "/health")[1]["partitions"] == [0, 1, 2, 3]
            counts = {sid: get(second.web_port, f"/v1/workspaces/acme/segments/{sid}/count", "acme-admin")[1]["member_count"]
                      for sid in rules}
            assert counts == expected
            break
        assert body["ready"] is False and (body["recovering"] or not body["registry_loaded"]
                                           or body["unowned_partitions"] or body["repairing_partitions"]), body
        time.sleep(0.05)
    assert seen and seen[-1] == (200, 200), seen[-5:]
    assert (200, 503) in seen  # live while not ready yet
    status, health = get(second.web_port, "/health")
    assert status == 200 and health["partitions"] == [0, 1, 2, 3] and health["backfill_pending"] == {}
