"""The edit's diff preview: before a dynamic segment's rule is changed, what saving the new rule would do
to its members now (added, removed, with samples), on a real worker over 4 partitions, equal to an
oracle computed from the published records; and saving it then does exactly that."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterator

import orjson
import pytest

from engine.broker import LocalBroker
from engine.sample_data import contact_changes
from tests.conftest import Harness, shared_harness
from tests.naive_eval import naive_matches
from tests.oracle import Oracle, fold_events
from tests.reliability.hostile import call_json

SEGMENTS = "/v1/workspaces/acme/segments"
# pl-high-value today: country = PL and lifetime_value > 1000. The edit widens the country and raises the bar.
EDIT = {"combinator": "and", "rules": [{"field": "country", "operator": "in", "value": ["PL", "DE"]},
                                       {"field": "lifetime_value", "operator": ">", "value": 2000}]}


@dataclass
class Site:
    harness: Harness
    port: int
    oracle: Oracle

    def call(self, method: str, path: str, body: Any = None, token: str = "acme-admin") -> tuple[int, Any]:
        return call_json(self.port, method, path, token, body)


@pytest.fixture(scope="module")
def site(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with shared_harness(broker, tmp_path_factory, "edit-preview") as harness:
        rules = harness.define_fixture_segments()
        harness.publisher.define_segment("acme", {"id": "vip-list", "object_type": "contact", "name": "VIP list",
                                                  "kind": "static"})
        harness.publisher.define_segment("acme", {"id": "hidden-de", "object_type": "contact", "name": "Hidden",
                                                  "hidden_from": ["dave"], "rule": {"combinator": "and", "rules": [
                                                      {"field": "country", "operator": "=", "value": "DE"}]}})
        changes = list(contact_changes(random.Random(180), 700, records=250))
        harness.publisher.publish_batches("acme", changes, batch_size=25)
        harness.publisher.flush()
        port = harness.start_worker().web_port
        oracle = Oracle(harness.catalog(), rules).apply_all(changes)
        harness.wait_for(lambda: {m for m in fold_events(harness.events()) if m[1] != "hidden-de"}
                         == oracle.membership(), what="stream settled")
        yield Site(harness, port, oracle)


def test_the_diff_preview_equals_the_oracle_and_saving_does_what_it_said(site: Site) -> None:
    catalog = site.harness.catalog()
    members = {rid for rid, sid in site.oracle.membership() if sid == "pl-high-value"}
    matching = {rid for rid, fields in site.oracle.records.items() if naive_matches(EDIT, fields, catalog)}
    added, removed = sorted(matching - members), sorted(members - matching)
    assert added and removed, "the edit must both add and remove, or the test proves little"

    status, diff = site.call("POST", f"{SEGMENTS}/pl-high-value/preview", {"rule": EDIT, "sample_size": 5})
    assert status == 200, diff
    assert diff["segment_id"] == "pl-high-value"
    assert (diff["count"], diff["sample"]) == (len(matching), sorted(matching)[:5])
    assert diff["added"] == {"count": len(added), "sample": added[:5]}
    assert diff["removed"] == {"count": len(removed), "sample": removed[:5]}
    assert diff["scanned"] == len(site.oracle.records) and diff["took_ms"] >= 0

    # The unchanged rule changes nothing; an agent may preview (reading is theirs), like the rule preview.
    current = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"},
                                              {"field": "lifetime_value", "operator": ">", "value": 1000}]}
    status, same = site.call("POST", f"{SEGMENTS}/pl-high-value/preview", {"rule": current}, token="acme-agent")
    assert status == 200 and same["added"]["count"] == same["removed"]["count"] == 0
    assert same["count"] == len(members)

    # Saved, the segment's members become exactly the preview's count, by adding and removing those records.
    status, saved = site.call("PATCH", f"{SEGMENTS}/pl-high-value", {"rule": EDIT})
    assert status == 200, saved

    def count() -> Any:
        status, body = site.call("GET", f"{SEGMENTS}/pl-high-value/count")
        return status == 200 and body["member_count"] == len(matching)

    site.harness.wait_for(count, what="the edit backfilled")
    events = [e for e in site.harness.events() if e["data"].get("segment_version") == saved["version"]]
    assert sorted(e["data"]["record_id"] for e in events if e["type"] == "segment.entered") == added
    assert sorted(e["data"]["record_id"] for e in events if e["type"] == "segment.exited") == removed


def test_the_diff_preview_refuses_what_cannot_be_saved(site: Site) -> None:
    status, body = site.call("POST", f"{SEGMENTS}/vip-list/preview", {"rule": EDIT})
    assert status == 409 and body["error"]["code"] == "not_dynamic", body
    bad = {"combinator": "and", "rules": [{"field": "lifetime_value", "operator": "contains", "value": "1"}]}
    status, body = site.call("POST", f"{SEGMENTS}/warm-leads/preview", {"rule": bad})
    assert status == 422 and body["error"]["code"] == "invalid_rule"
    assert [(p["path"], p["field"], p["operator"]) for p in body["error"]["problems"]] == [
        ("/rules/0", "lifetime_value", "contains")]
    # A rule that reads the segment it is for would be a cycle.
    loop = {"combinator": "and", "rules": [{"field": "segment", "operator": "memberOf", "value": "warm-leads"}]}
    status, body = site.call("POST", f"{SEGMENTS}/warm-leads/preview", {"rule": loop})
    assert status == 422 and body["error"]["problems"][0]["code"] == "reference_cycle", body
    # `memberOf` a segment hidden from the agent answers like one that does not exist.
    answers = []
    for segment in ("hidden-de", "no-such-segment"):
        rule = {"combinator": "and", "rules": [{"field": "segment", "operator": "memberOf", "value": segment}]}
        status, body = site.call("POST", f"{SEGMENTS}/warm-leads/preview", {"rule": rule}, token="acme-agent")
        answers.append((status, orjson.dumps(body).replace(segment.encode(), b"<id>")))
    assert answers[0] == answers[1] and answers[0][0] == 422, answers
    status, body = site.call("POST", f"{SEGMENTS}/warm-leads/preview", {"rule": EDIT, "sample_size": 101})
    assert status == 400 and body["error"]["code"] == "bad_request"
