"""Membership queries over real HTTP against real workers: counts, pages, export, explain, preview and
profiles agree with the naive oracle; foreign and anonymous tokens see nothing; hidden stays hidden."""
from __future__ import annotations

import random
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import orjson
import pytest

from engine.sample_data import contact_changes
from tests.conftest import FIXTURES, Harness
from tests.naive_eval import naive_matches
from tests.oracle import Oracle, fold_events

HIDDEN_RULE = {"combinator": "and", "rules": [{"field": "country", "operator": "in", "value": ["PL", "DE"]}]}


def call(port: int, method: str, path: str, token: str | None = "acme-admin", body: Any = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else orjson.dumps(body))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status = response.status
            ctype = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        raw, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
    return status, orjson.loads(raw) if ctype.startswith("application/json") and raw else None, raw


def settle_stream(harness: Harness, n_workers: int) -> tuple[Oracle, list[dict[str, Any]], list[int]]:
    harness.settings = replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    rules = harness.define_fixture_segments()
    harness.publisher.define_segment("acme", {"id": "hidden-dach", "object_type": "contact", "name": "Hidden",
                                              "rule": HIDDEN_RULE, "hidden_from": ["dave"]})
    rules["hidden-dach"] = HIDDEN_RULE
    changes = list(contact_changes(random.Random(21), 600, records=150))
    ports = [harness.start_worker(f"data-{i}").web_port for i in range(n_workers)]
    harness.publisher.publish_batches("acme", changes, batch_size=20)
    harness.publisher.flush()
    oracle = Oracle(harness.catalog(), rules).apply_all(changes)
    harness.wait_for(lambda: fold_events(harness.events()) == oracle.membership(), what="stream settled")
    # Every worker must own partitions (the group is stable) before we query.
    def stable() -> bool:
        answers = [call(p, "GET", "/health", token=None) for p in ports]
        return all(status == 200 and body["partitions"] and len(body["workers"]) == n_workers
                   for status, body, _ in answers)

    harness.wait_for(stable, what="every worker owning partitions")
    return oracle, changes, ports


def members_of(oracle: Oracle, segment_id: str) -> list[str]:
    return sorted(rid for rid, sid in oracle.membership() if sid == segment_id)


def test_queries_agree_with_the_oracle(harness: Harness) -> None:
    oracle, changes, (port,) = settle_stream(harness, 1)
    base = "/v1/workspaces/acme"
    for segment_id in oracle.segments:
        expected = members_of(oracle, segment_id)
        status, body, _ = call(port, "GET", f"{base}/segments/{segment_id}/count")
        assert status == 200 and body["member_count"] == len(expected)
        # Pages of 7 visit every member once, in order.
        seen: list[str] = []
        cursor = ""
        while True:
            status, page, _ = call(port, "GET", f"{base}/segments/{segment_id}/members?limit=7" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200
            seen += page["members"]
            if not page["next_cursor"]:
                break
            cursor = page["next_cursor"]
        assert seen == expected
        status, _, csv = call(port, "GET", f"{base}/segments/{segment_id}/export?format=csv")
        assert status == 200 and csv.decode().splitlines() == ["record_id", *expected]
        _, _, ndjson = call(port, "GET", f"{base}/segments/{segment_id}/export?format=ndjson")
        assert [orjson.loads(line)["record_id"] for line in ndjson.splitlines()] == expected

    catalog = harness.catalog()
    for record_id in sorted(oracle.records)[:25]:
        fields = oracle.records[record_id]
        status, profile, _ = call(port, "GET", f"{base}/records/contact/{record_id}")
        assert status == 200 and profile["fields"] == fields
        assert {s["id"] for s in profile["segments"]} == oracle.members_of(record_id)
        _, now, _ = call(port, "GET", f"{base}/records/contact/{record_id}/evaluate")
        assert {r["id"]: r["matches"] for r in now["results"]} == {
            sid: naive_matches(rule, fields, catalog) for sid, rule in oracle.segments.items()}
        for segment_id in oracle.segments:
            _, member, _ = call(port, "GET", f"{base}/segments/{segment_id}/members/{record_id}")
            _, why, _ = call(port, "GET", f"{base}/segments/{segment_id}/explain/{record_id}")
            in_oracle = segment_id in oracle.members_of(record_id)
            assert member["member"] == in_oracle == why["member"] == why["matches"]
            assert why["explanation"]["result"] == in_oracle

    rule = {"combinator": "or", "rules": [{"field": "lead_score", "operator": ">=", "value": 90},
                                          {"field": "tags", "operator": "hasAll", "value": ["vip", "beta"]}]}
    status, preview, _ = call(port, "POST", f"{base}/preview", body={"object_type": "contact", "rule": rule, "sample_size": 5})
    matching = {rid for rid, f in oracle.records.items() if naive_matches(rule, f, catalog)}
    assert status == 200 and preview["count"] == len(matching) and set(preview["sample"]) <= matching
    assert len(preview["sample"]) == min(5, len(matching)) and preview["took_ms"] >= 0
    status, bad, _ = call(port, "POST", f"{base}/preview", body={"object_type": "contact", "rule": {
        "combinator": "and", "rules": [{"field": "lifetime_value", "operator": "contains", "value": "1"}]}})
    assert status == 422 and bad["error"]["code"] == "invalid_rule"
    assert bad["error"]["problems"][0]["field"] == "lifetime_value" and bad["error"]["problems"][0]["operator"] == "contains"


def test_foreign_anonymous_and_hidden_access_see_nothing(harness: Harness) -> None:
    oracle, _, (port,) = settle_stream(harness, 1)
    record_id = sorted(oracle.records)[0]
    paths = [
        ("GET", "/v1/workspaces/acme/records/contact/" + record_id),
        ("GET", "/v1/workspaces/acme/records/contact/" + record_id + "/evaluate"),
        ("GET", "/v1/workspaces/acme/segments/pl-high-value/members/" + record_id),
        ("GET", "/v1/workspaces/acme/segments/pl-high-value/explain/" + record_id),
        ("GET", "/v1/workspaces/acme/segments/pl-high-value/count"),
        ("GET", "/v1/workspaces/acme/segments/pl-high-value/members"),
        ("GET", "/v1/workspaces/acme/segments/pl-high-value/export"),
        ("GET", "/v1/workspaces/acme/segment-figures"),
        ("POST", "/v1/workspaces/acme/preview"),
        ("POST", "/v1/workspaces/acme/segments/pl-high-value/members"),
        ("DELETE", "/v1/workspaces/acme/segments/pl-high-value/members/" + record_id),
    ]
    body = {"object_type": "contact", "rule": {"combinator": "and", "rules": [{"field": "country", "operator": "notNull"}]}}
    for method, path in paths:
        status, err, raw = call(port, method, path, token="globex-admin", body=body if method == "POST" else None)
        assert status == 404 and err["error"]["code"] == "not_found", path
        assert record_id.encode() not in raw and b"PL" not in raw
        status, err, _ = call(port, method, path, token=None, body=body if method == "POST" else None)
        assert status == 401 and err["error"]["code"] == "unauthenticated", path
        status, _, _ = call(port, method, path, token="platform", body=body if method == "POST" else None)
        # The platform admin reaches every route (an import into a dynamic segment is a 409 not_static).
        assert status == (409 if method in ("POST", "DELETE") and "/members" in path else 200), path
    for path in ("count", "members", "export", f"members/{record_id}", f"explain/{record_id}"):
        status, _, _ = call(port, "GET", f"/v1/workspaces/acme/segments/hidden-dach/{path}", token="acme-agent")
        assert status == 404, path
        assert call(port, "GET", f"/v1/workspaces/acme/segments/hidden-dach/{path}", token="acme-admin")[0] == 200
    dach_member = next(rid for rid, sid in oracle.membership() if sid == "hidden-dach")
    _, profile, _ = call(port, "GET", f"/v1/workspaces/acme/records/contact/{dach_member}", token="acme-agent")
    assert "hidden-dach" not in {s["id"] for s in profile["segments"]}
    _, now, _ = call(port, "GET", f"/v1/workspaces/acme/records/contact/{dach_member}/evaluate", token="acme-agent")
    assert "hidden-dach" not in {r["id"] for r in now["results"]}


def test_two_workers_route_and_merge(harness: Harness) -> None:
    oracle, _, ports = settle_stream(harness, 2)
    base = "/v1/workspaces/acme"
    for port in ports:  # every worker answers for every record and every segment
        for record_id in sorted(oracle.records)[:20]:
            status, profile, _ = call(port, "GET", f"{base}/records/contact/{record_id}")
            assert status == 200 and {s["id"] for s in profile["segments"]} == oracle.members_of(record_id)
        for segment_id in oracle.segments:
            _, count, _ = call(port, "GET", f"{base}/segments/{segment_id}/count")
            assert count["member_count"] == len(members_of(oracle, segment_id))
            _, _, csv = call(port, "GET", f"{base}/segments/{segment_id}/export")
            assert csv.decode().splitlines()[1:] == members_of(oracle, segment_id)


def test_pagination_visits_each_steady_member_once_while_membership_changes(harness: Harness) -> None:
    oracle, changes, (port,) = settle_stream(harness, 1)
    segment_id = "subscribed-vips"
    before = set(members_of(oracle, segment_id))
    # Flip memberships of other records while paging; records of `steady` are never touched.
    rng = random.Random(4)
    steady = set(rng.sample(sorted(before), len(before) // 2))
    churn = [rid for rid in sorted(oracle.records) if rid not in steady]
    version = max(c["version"] for c in changes) + 1
    seen: list[str] = []
    cursor = ""
    while True:
        status, page, _ = call(port, "GET", f"/v1/workspaces/acme/segments/{segment_id}/members?limit=3"
                               + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += page["members"]
        flips = [{"op": "upsert", "object_type": "contact", "id": rid, "version": version,
                  "fields": {"is_subscribed": rng.random() < 0.5, "tags": ["vip"]}} for rid in rng.sample(churn, 5)]
        version += 1
        for change in flips:
            harness.publisher.publish_change("acme", change)
        harness.publisher.flush()
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert seen == sorted(set(seen)), "a member was listed twice or out of order"
    assert steady <= set(seen), "a member present throughout was skipped"
