"""Static segments: members come from imports (CLI CSV or HTTP), change only by import, removal or
record deletion, and every change is an entered/exited event like any other."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tests.conftest import FIXTURES, REPO, Harness
from tests.integration.test_api_queries import call
from tests.oracle import fold_events


def test_static_segment_import_append_remove_and_delete(harness: Harness, tmp_path: Path) -> None:
    harness.settings = replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    port = harness.start_worker().web_port
    csv = tmp_path / "vip-list.csv"
    csv.write_text("record_id\n" + "".join(f"c{i}\n" for i in range(100_000)))
    env = dict(os.environ, SEGMENT_ENGINE_BROKER=harness.settings.broker,
               SEGMENT_ENGINE_TOPIC_PREFIX=harness.settings.topic_prefix,
               SEGMENT_ENGINE_WORKSPACES_FILE=str(harness.settings.workspaces_file))
    result = subprocess.run([sys.executable, "-m", "engine.cli", "segments", "import", str(csv), "--workspace", "acme",
                             "--segment", "vip-list", "--name", "VIP list"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    base = "/v1/workspaces/acme/segments/vip-list"

    def count() -> int | None:
        status, body, _ = call(port, "GET", base + "/count")
        return body["member_count"] if status == 200 else None

    harness.wait_for(lambda: count() == 100_000, timeout=300, what="100k imported members counted")
    status, segment, _ = call(port, "GET", base)
    assert status == 200 and segment["kind"] == "static" and segment["rule"] is None

    # Append: two new ids and one that is already a member.
    status, body, _ = call(port, "POST", base + "/members", body={"record_ids": ["c1", "x1", "x2"], "mode": "add"})
    assert status == 202 and body["accepted"] == 3
    harness.wait_for(lambda: count() == 100_002, what="append counted")
    # Removal of one member, and deletion of another record: both leave.
    assert call(port, "DELETE", base + "/members/x1")[0] == 202
    harness.publisher.publish_change("acme", {"op": "delete", "object_type": "contact", "id": "c7", "version": 5})
    # A field change keeps a static membership: rules do not apply to static segments.
    harness.publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": "c8", "version": 3,
                                              "fields": {"country": "PL"}})
    harness.publisher.flush()
    harness.wait_for(lambda: count() == 100_000, what="removal and deletion counted")
    assert call(port, "GET", base + "/members/c8")[1]["member"] is True
    assert call(port, "GET", base + "/members/c7")[1]["member"] is False
    # Re-importing a removed id is a new transition with a new event id.
    call(port, "POST", base + "/members", body={"record_ids": ["x1"]})
    harness.wait_for(lambda: count() == 100_001, what="re-import counted")

    events = [e for e in harness.events() if e["data"].get("segment_id") == "vip-list"]
    x1 = [(e["type"], e["data"]["cause"]) for e in events if e["data"].get("record_id") == "x1"]
    assert x1 == [("segment.entered", "import"), ("segment.exited", "import"), ("segment.entered", "import")]
    assert len({e["id"] for e in events if e["data"].get("record_id") == "x1"}) == 3
    assert ("segment.exited", "delete") in [(e["type"], e["data"]["cause"]) for e in events if e["data"].get("record_id") == "c7"]
    assert len({m for m in fold_events(harness.events()) if m[1] == "vip-list"}) == 100_001

    # Only static segments import; agents may not.
    harness.publisher.define_segment("acme", {"id": "dyn", "object_type": "contact", "name": "dyn",
                                              "rule": {"combinator": "and", "rules": [{"field": "country", "operator": "notNull"}]}})
    harness.publisher.flush()
    harness.wait_for(lambda: call(port, "GET", "/v1/workspaces/acme/segments/dyn")[0] == 200, what="dyn defined")
    status, err, _ = call(port, "POST", "/v1/workspaces/acme/segments/dyn/members", body={"record_ids": ["c1"]})
    assert status == 409 and err["error"]["code"] == "not_static"
    status, err, _ = call(port, "POST", base + "/members", token="acme-agent", body={"record_ids": ["c1"]})
    assert status == 403 and err["error"]["code"] == "forbidden"
