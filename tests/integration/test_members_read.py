"""Members you can read: a segment's members page and export with chosen fields, a case-insensitive search
and an extra filter rule, over 4 partitions held by two real workers (so every page is merged over HTTP
from both), compared with an oracle computed from the records the test published."""
from __future__ import annotations

import csv
import io
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterator

import orjson
import pytest

from engine.api.queries import merge_partials
from engine.broker import LocalBroker
from engine.sample_data import contact_changes
from tests.conftest import Harness, shared_harness
from tests.naive_eval import naive_matches
from tests.oracle import Oracle, fold_events
from tests.reliability.hostile import http

BASE = "/v1/workspaces/acme/segments"
HIDDEN_RULE = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]}
# Records whose text makes search and CSV quoting earn their keep.
TRICKY = {
    "t-comma": {"first_name": "Anna, Maria", "city": "Straße 5", "email": "anna@Example.com", "country": "PL",
                "lifetime_value": 5000, "tags": ["vip", "a,b"]},
    "t-quote": {"first_name": 'Jan "Johnny" Nowak', "city": "KRAKÓW", "email": "jan@example.com", "country": "PL",
                "lifetime_value": 4000, "tags": ["vip"]},
    "t-newline": {"first_name": "Line\nbreak", "city": "Łódź", "email": None, "country": "PL",
                  "lifetime_value": 3000},
    "t-formula": {"first_name": '=HYPERLINK("http://evil.example","x")', "city": "@SUM(A1)", "country": "PL",
                  "lifetime_value": 2500, "tags": ["-1+1"]},
}


@dataclass
class Site:
    harness: Harness
    ports: list[int]
    oracle: Oracle

    def get(self, path: str, token: str = "acme-admin", port: int | None = None) -> tuple[int, Any, bytes]:
        status, raw = http(port or self.ports[0], path, token)
        try:
            return status, orjson.loads(raw), raw
        except orjson.JSONDecodeError:
            return status, None, raw


@pytest.fixture(scope="module")
def site(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with shared_harness(broker, tmp_path_factory, "members-read") as harness:
        rules = harness.define_fixture_segments()
        harness.publisher.define_segment("acme", {"id": "hidden-de", "object_type": "contact", "name": "Hidden DE",
                                                  "rule": HIDDEN_RULE, "hidden_from": ["dave"]})
        rules["hidden-de"] = HIDDEN_RULE
        changes = list(contact_changes(random.Random(18), 900, records=300))
        changes += [{"op": "upsert", "object_type": "contact", "id": rid, "version": 1, "fields": fields}
                    for rid, fields in TRICKY.items()]
        workers = [harness.launch_worker(f"data-{i}") for i in range(2)]
        ports = [w.wait_ready().web_port for w in workers]
        harness.publisher.publish_batches("acme", changes, batch_size=25)
        harness.publisher.flush()
        oracle = Oracle(harness.catalog(), rules).apply_all(changes)
        harness.wait_for(lambda: fold_events(harness.events()) == oracle.membership(), what="stream settled")

        def both_own_partitions() -> bool:
            answers = [http(port, "/health") for port in ports]
            return all(status == 200 and orjson.loads(raw)["partitions"] for status, raw in answers)

        harness.wait_for(both_own_partitions, what="both workers owning partitions")
        yield Site(harness, ports, oracle)


def oracle_text(value: Any) -> str:
    """How the test expects a string or tag value to be searched (the queries below search only those)."""
    if isinstance(value, list):
        return " ".join(value)
    return value if isinstance(value, str) else ""


def expected_members(site: Site, segment_id: str, fields: list[str], q: str, rule: Any) -> list[str]:
    catalog = site.harness.catalog()
    found = []
    for record_id, values in sorted(site.oracle.records.items()):
        members = site.oracle.members_of(record_id)
        if segment_id not in members:
            continue
        if rule is not None and not naive_matches(rule, values, catalog, members=members):
            continue
        names = fields or list(values)
        if q and q.casefold() not in record_id.casefold() and not any(
                q.casefold() in oracle_text(values.get(name)).casefold() for name in names):
            continue
        found.append(record_id)
    return found


def query_string(**params: Any) -> str:
    return urllib.parse.urlencode({k: (orjson.dumps(v).decode() if k == "filter" else v)
                                   for k, v in params.items() if v not in (None, "", [])})


def read_pages(site: Site, segment_id: str, limit: int, port: int, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, followed by cursor; each must be a valid page."""
    pages, cursor = [], None
    for _ in range(1_000):
        query = query_string(limit=limit, cursor=cursor, **params)
        status, page, raw = site.get(f"{BASE}/{segment_id}/members?{query}", port=port)
        assert status == 200, raw[:300]
        assert len(page["members"]) <= limit and page["members"] == sorted(page["members"])
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("paging never ended")


CASES = [
    # (segment, fields, q, filter)
    ("pl-high-value", ["first_name", "email", "city", "lifetime_value", "tags"], "", None),
    ("pl-high-value", ["first_name", "city"], "strasse", None),  # ß casefolds to ss
    ("pl-high-value", ["first_name", "city"], "kraków", None),
    ("subscribed-vips", [], "USER1", None),  # no fields chosen: every field searched (only emails hold "user1")
    ("subscribed-vips", ["email"], "", {"combinator": "and", "rules": [
        {"field": "lead_score", "operator": ">=", "value": 50}]}),
    ("warm-leads", ["email", "country", "tags"], "EXAMPLE", {"combinator": "or", "rules": [
        {"field": "country", "operator": "in", "value": ["PL", "DE"]},
        {"field": "tags", "operator": "hasAny", "value": ["vip"]}]}),
    ("pl-high-value", ["custom.plan", "language"], "", {"combinator": "and", "rules": [
        {"field": "segment", "operator": "memberOf", "value": "subscribed-vips"}]}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pages_with_fields_search_and_filter_agree_with_the_oracle(site: Site, case: int) -> None:
    segment_id, fields, q, rule = CASES[case]
    expected = expected_members(site, segment_id, fields, q, rule)
    assert expected, "the case selects nobody: it proves nothing"
    if q or rule:
        assert len(expected) < len(expected_members(site, segment_id, [], "", None)), "q/filter removes nobody"
    for port, limit in zip(site.ports, (7, 1000)):  # both workers answer; small pages and one big one
        pages = read_pages(site, segment_id, limit, port, fields=",".join(fields), q=q, filter=rule)
        listed = [rid for page in pages for rid in page["members"]]
        assert listed == expected, (segment_id, q, rule)
        if fields:
            records = [record for page in pages for record in page["records"]]
            assert [r["id"] for r in records] == expected
            for record in records:
                values = site.oracle.records[record["id"]]
                assert record["fields"] == {name: values.get(name) for name in fields}, record
        else:
            assert all("records" not in page for page in pages)


def test_export_writes_the_fields_as_csv_columns_and_ndjson_keys(site: Site) -> None:
    fields = ["first_name", "city", "email", "tags", "lifetime_value", "created_at"]
    rule = {"combinator": "and", "rules": [{"field": "lifetime_value", "operator": ">=", "value": 2000}]}
    expected = expected_members(site, "pl-high-value", [], "", rule)
    assert {"t-comma", "t-quote", "t-newline"} <= set(expected)
    query = query_string(fields=",".join(fields), filter=rule)
    status, _, raw = site.get(f"{BASE}/pl-high-value/export?format=csv&{query}", port=site.ports[1])
    assert status == 200
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[0] == ["record_id", *fields]
    assert [row[0] for row in rows[1:]] == expected
    by_id = {row[0]: dict(zip(fields, row[1:])) for row in rows[1:]}
    assert by_id["t-comma"]["first_name"] == "Anna, Maria" and by_id["t-comma"]["tags"] == '["a,b","vip"]'
    assert by_id["t-quote"]["first_name"] == 'Jan "Johnny" Nowak'
    assert by_id["t-newline"]["first_name"] == "Line\nbreak" and by_id["t-newline"]["email"] == ""
    # Text a spreadsheet would run as a formula is defused with a leading quote (lists are JSON text: safe).
    assert by_id["t-formula"]["first_name"] == "'" + TRICKY["t-formula"]["first_name"]
    assert by_id["t-formula"]["city"] == "'@SUM(A1)" and by_id["t-formula"]["tags"] == '["-1+1"]'

    for record_id, cells in by_id.items():
        values = site.oracle.records[record_id]
        assert cells["city"] in (values.get("city", ""), "'" + values.get("city", "")) \
            and cells["lifetime_value"] == str(values["lifetime_value"])
        if "created_at" in values:  # dates as ISO-8601 UTC, not epoch milliseconds
            assert cells["created_at"].endswith("Z") and cells["created_at"][:4].isdigit()
    status, _, raw = site.get(f"{BASE}/pl-high-value/export?format=ndjson&{query}", port=site.ports[0])
    assert status == 200
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert lines == [{"record_id": rid, **{name: site.oracle.records[rid].get(name) for name in fields}}
                     for rid in expected]


def test_a_filter_naming_an_unknown_field_is_an_invalid_rule_naming_it(site: Site) -> None:
    rule = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"},
                                           {"field": "shoe_size", "operator": ">", "value": 40}]}
    for route in ("members", "export"):
        status, body, _ = site.get(f"{BASE}/pl-high-value/{route}?{query_string(filter=rule)}")
        assert status == 422 and body["error"]["code"] == "invalid_rule", body
        (problem,) = body["error"]["problems"]
        assert (problem["path"], problem["field"], problem["operator"]) == ("/rules/1", "shoe_size", ">")
    status, body, _ = site.get(f"{BASE}/pl-high-value/members?filter=%7Bnot%20json")
    assert status == 400 and body["error"]["parameter"] == "filter"
    status, body, _ = site.get(f"{BASE}/pl-high-value/members?fields=email,shoe_size")
    assert status == 400 and body["error"]["parameter"] == "fields" and "shoe_size" in body["error"]["message"]


def test_an_agent_cannot_filter_by_a_segment_hidden_from_them(site: Site) -> None:
    """`memberOf` a hidden segment in a filter is refused exactly like a segment that does not exist."""
    answers = {}
    for segment in ("hidden-de", "no-such-segment"):
        rule = {"combinator": "and", "rules": [{"field": "segment", "operator": "memberOf", "value": segment}]}
        status, _, raw = site.get(f"{BASE}/pl-high-value/members?{query_string(filter=rule)}", token="acme-agent")
        answers[segment] = (status, raw.replace(segment.encode(), b"<id>"))
    assert answers["hidden-de"] == answers["no-such-segment"] and answers["hidden-de"][0] == 422, answers
    rule = {"combinator": "and", "rules": [{"field": "segment", "operator": "memberOf", "value": "hidden-de"}]}
    status, body, _ = site.get(f"{BASE}/pl-high-value/members?{query_string(filter=rule)}")
    assert status == 200, "the admin sees the segment (the check above proves something)"


def test_partial_answers_merge_into_exact_pages() -> None:
    """The merge behind every page: partitions that stopped at different places (a bounded walk, a full
    page, the end) give exactly the sorted matches, page after page, however the frontiers fall."""
    rng = random.Random(5)
    members = [sorted(f"r{rng.randrange(10**6):06d}" for _ in range(rng.randrange(0, 60))) for _ in range(4)]
    matches = [[rid for rid in part if int(rid[1:]) % 3 == 0] for part in members]
    for limit in (1, 2, 5, 17):
        for budget in (3, 10, 1_000):
            listed: list[str] = []
            after: str | None = None
            for _ in range(10_000):
                partials = []
                for part, hits in zip(members, matches):
                    walked = [rid for rid in part if after is None or rid > after][:budget]
                    found = [[rid, None] for rid in hits if rid in walked][:limit + 1]
                    if len(found) > limit:
                        frontier: str | None = found[-1][0]
                    elif len(walked) == budget:
                        frontier = walked[-1]
                    else:
                        frontier = None
                    partials.append((found, frontier))
                items, frontier = merge_partials(partials, limit + 1)
                page, after = (items[:limit], items[limit - 1][0]) if len(items) > limit else (items, frontier)
                listed += [item[0] for item in page]
                if after is None:
                    break
            assert listed == sorted(rid for hits in matches for rid in hits), (limit, budget)


def test_a_selective_search_over_a_big_segment_answers_partial_pages(site: Site) -> None:
    """Over 5,000 members per partition, a search that matches a few examines at most 5,000 per partition
    for one page: the first pages come back short (maybe empty) with a next_cursor, each quickly, and
    following the cursors lists exactly the matches. (In globex, so the other tests' oracle is untouched.)"""
    publisher = site.harness.publisher
    publisher.define_segment("globex", {"id": "everyone", "object_type": "contact", "name": "Everyone",
                                        "rule": {"combinator": "and", "rules": [
                                            {"field": "country", "operator": "notNull"}]}})
    publisher.flush()
    needles = {f"g{n:05d}" for n in range(0, 24_000, 1_777)}
    changes = [{"op": "upsert", "object_type": "contact", "id": f"g{n:05d}", "version": 1,
                "fields": {"country": "PL", "city": "Needle Town" if f"g{n:05d}" in needles else "Haystack"}}
               for n in range(24_000)]
    site.harness.wait_for(lambda: site.get("/v1/workspaces/globex/segments/everyone",
                                           token="globex-admin")[0] == 200, what="segment defined")
    publisher.publish_batches("globex", changes, batch_size=500)
    publisher.flush()
    site.harness.wait_for(lambda: site.get("/v1/workspaces/globex/segments/everyone/count", token="globex-admin")[1]
                          ["member_count"] == 24_000, what="24,000 members")
    pages, cursor, slowest = [], None, 0.0
    while True:
        query = query_string(limit=50, q="needle", fields="city", cursor=cursor)
        started = time.monotonic()
        status, page, raw = site.get(f"/v1/workspaces/globex/segments/everyone/members?{query}", token="globex-admin")
        slowest = max(slowest, time.monotonic() - started)
        assert status == 200, raw[:300]
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [rid for page in pages for rid in page["members"]] == sorted(needles)
    assert all(r["fields"] == {"city": "Needle Town"} for page in pages for r in page["records"])
    short = [page for page in pages if len(page["members"]) < 50 and page["next_cursor"]]
    assert short and len(pages) >= 2, [len(p["members"]) for p in pages]
    print(f"\n24,000 members, {len(needles)} matches: pages of {[len(p['members']) for p in pages]}, "
          f"slowest {slowest * 1000:.0f} ms")
    assert slowest < 5, "a page is bounded work (loose: the machine is shared)"
