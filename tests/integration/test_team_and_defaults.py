"""Team members, default segments and import without a segment, over HTTP against one real worker and the
real broker (one worker for the module; the restart test starts a second from an empty data directory).

The team is tests/fixtures/workspaces.json's: acme has alice (admin), bob and eve (agents in sales) ...;
names outside it are refused wherever a segment or an assignment rule names a member. Defaults resolve
pin -> per-member default (`default_for`) -> shared, and live on a compacted topic, so a worker that
starts later answers the same.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from kafka import KafkaProducer

import topics

from engine.broker import LocalBroker
from engine.envelope import encode, envelope
from tests.conftest import Harness, WorkerProcess, shared_harness
from tests.reliability.hostile import call_json

TOKENS = {
    "admin": {"workspace": "acme", "role": "admin", "member": "alice"},
    "bob": {"workspace": "acme", "role": "agent", "member": "bob"},
    "eve": {"workspace": "acme", "role": "agent", "member": "eve"},
    "stranger": {"workspace": "acme", "role": "agent", "member": "mallory"},  # a token, but not on the team
    "globex": {"workspace": "globex", "role": "admin", "member": "gina"},
    "super": {"role": "superadmin", "member": "root"},
}
PL = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}
WS = "/v1/workspaces/acme"


@dataclass
class Site:
    harness: Harness
    worker: WorkerProcess

    def call(self, method: str, path: str, token: str = "admin", body: Any = None) -> tuple[int, Any]:
        return call_json(self.worker.web_port, method, path, token, body)

    def ok(self, method: str, path: str, token: str = "admin", body: Any = None, status: int = 200) -> Any:
        got, answer = self.call(method, path, token, body)
        assert got == status, (method, path, got, answer)
        return answer

    def create(self, **attrs: Any) -> dict[str, Any]:
        body = {"object_type": "contact", "name": f"seg {uuid.uuid4().hex[:6]}", "rule": PL, **attrs}
        return self.ok("POST", f"{WS}/segments", body=body, status=201)  # type: ignore[no-any-return]

    def resolved(self, token: str = "admin", member: str | None = None) -> dict[str, tuple[str, str]]:
        query = f"?member={member}" if member else ""
        answer = self.ok("GET", f"{WS}/defaults/resolved{query}", token)
        return {ot: (d["segment_id"], d["source"]) for ot, d in answer["defaults"].items()}


def error(got: tuple[int, Any]) -> tuple[int, str]:
    return got[0], got[1]["error"]["code"]


@pytest.fixture(scope="module")
def site(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with shared_harness(broker, tmp_path_factory, "team", tokens=TOKENS) as harness:
        yield Site(harness, harness.start_worker())


def test_the_team_is_listed_per_workspace(site: Site) -> None:
    members = site.ok("GET", f"{WS}/team", "bob")["members"]  # agents may read it
    assert [m["name"] for m in members] == sorted(m["name"] for m in members)
    by_name = {m["name"]: m for m in members}
    assert by_name["alice"] == {"name": "alice", "role": "admin", "group": None}
    assert by_name["bob"] == {"name": "bob", "role": "agent", "group": "sales"}
    assert site.ok("GET", "/v1/workspaces/globex/team", "globex")["members"] == [
        {"name": "gil", "role": "agent", "group": None}, {"name": "gina", "role": "admin", "group": None},
        {"name": "gus", "role": "admin", "group": None}]
    assert error(site.call("GET", f"{WS}/team", "globex")) == (404, "not_found")


def test_names_outside_the_team_are_refused(site: Site) -> None:
    for attribute in ("hidden_from", "default_for"):
        got = site.call("POST", f"{WS}/segments", body={"object_type": "contact", "name": f"typo in {attribute}",
                                                        "rule": PL, attribute: ["bob", "mallory"]})
        assert error(got) == (422, "unknown_team_member"), got
        assert (got[1]["error"]["attribute"], got[1]["error"]["member"]) == (attribute, "mallory")
    got = site.call("POST", f"{WS}/segments", body={"object_type": "contact", "name": "both", "rule": PL,
                                                    "hidden_from": ["bob"], "default_for": ["bob"]})
    assert error(got) == (422, "invalid_default_for"), got
    made = site.create(default_for=["sam", "sue"], hidden_from=["zed"])
    assert made["default_for"] == ["sam", "sue"] and made["hidden_from"] == ["zed"]
    got = site.call("PATCH", f"{WS}/segments/{made['id']}", body={"default_for": ["sue", "ghost"]})
    assert error(got) == (422, "unknown_team_member") and got[1]["error"]["member"] == "ghost"
    assert site.ok("GET", f"{WS}/segments/{made['id']}")["default_for"] == ["sam", "sue"]  # unchanged
    # Chat assignment names team members too: a member or a group member outside the team is refused.
    rules = {"rules": [{"id": "r1", "segment_id": made["id"], "assign_to": {"member": "mallory"}},
                       {"id": "r2", "segment_id": made["id"], "assign_to": {"group": "desk"}}],
             "groups": {"desk": ["bob", "trudy"]}}
    got = site.call("PUT", f"{WS}/assignment-rules", body=rules)
    assert error(got) == (422, "invalid_assignment_rules"), got
    assert {(p["code"], p["path"]) for p in got[1]["error"]["problems"]} == {
        ("unknown_team_member", "/rules/0/assign_to/member"), ("unknown_team_member", "/groups/desk"),
        ("unknown_group", "/rules/1/assign_to/group")}  # the refused group is not there for its rule either


def test_defaults_resolve_pin_then_per_member_default_then_shared(site: Site) -> None:
    shared, bobs, pinned = site.create(), site.create(default_for=["bob"]), site.create()
    secret = site.create(hidden_from=["bob"])
    deals = site.create(object_type="deal", rule={"combinator": "and", "rules": [
        {"field": "status", "operator": "=", "value": "won"}]}, hidden_from=["bob"])
    # Only an admin sets the shared default; an agent is refused and nothing changes.
    assert error(site.call("PUT", f"{WS}/defaults/shared/contact", "bob", {"segment_id": pinned["id"]})) == (
        403, "forbidden")
    after = site.ok("PUT", f"{WS}/defaults/shared/contact", body={"segment_id": shared["id"]})
    assert after["shared"]["contact"] == shared["id"]
    site.ok("PUT", f"{WS}/defaults/shared/deal", body={"segment_id": deals["id"]})
    assert site.resolved("eve") == {"contact": (shared["id"], "shared"), "deal": (deals["id"], "shared")}
    # bob: his per-member default beats the shared one; the deal default is hidden from him, so he has none.
    assert site.resolved("bob") == {"contact": (bobs["id"], "member")}
    # An agent pins their own default, which beats both; a hidden or unknown segment cannot be pinned.
    for bad in (secret["id"], "no-such-segment", deals["id"]):
        assert error(site.call("PUT", f"{WS}/defaults/mine/contact", "bob", {"segment_id": bad})) == (
            422, "unknown_segment"), bad
    mine = site.ok("PUT", f"{WS}/defaults/mine/contact", "bob", {"segment_id": pinned["id"]})
    assert mine["mine"] == {"contact": pinned["id"]}
    assert site.resolved("bob") == {"contact": (pinned["id"], "pin")}
    assert site.resolved("admin", member="bob") == {"contact": (pinned["id"], "pin")}  # an admin asks for bob
    assert site.resolved("eve")["contact"] == (shared["id"], "shared")  # bob's pin is his alone
    # What each may see of the stored defaults: an agent never sees a segment hidden from them.
    as_bob = site.ok("GET", f"{WS}/defaults", "bob")
    assert as_bob == {"shared": {"contact": shared["id"]}, "mine": {"contact": pinned["id"]},
                      "for_members": {"bob": {"contact": bobs["id"]}}}
    as_admin = site.ok("GET", f"{WS}/defaults")
    assert as_admin["shared"] == {"contact": shared["id"], "deal": deals["id"]} and as_admin["mine"] == {}
    assert as_admin["for_members"]["bob"] == {"contact": bobs["id"]}
    # Refusals: an agent resolving someone else, a name outside the team, a token whose member is not on it.
    assert error(site.call("GET", f"{WS}/defaults/resolved?member=eve", "bob")) == (403, "forbidden")
    assert error(site.call("GET", f"{WS}/defaults/resolved?member=mallory")) == (422, "unknown_team_member")
    assert error(site.call("PUT", f"{WS}/defaults/mine/contact", "stranger", {"segment_id": shared["id"]})) == (
        403, "not_team_member")
    assert error(site.call("PUT", f"{WS}/defaults/mine/planet", "bob", {"segment_id": None})) == (
        400, "invalid_parameter")
    assert error(site.call("PUT", f"{WS}/defaults/mine/contact", "bob", {"segment": pinned["id"]})) == (
        400, "bad_request")
    # Unpinning falls back to the per-member default; deleting that segment falls back to the shared one.
    site.ok("PUT", f"{WS}/defaults/mine/contact", "bob", {"segment_id": None})
    assert site.resolved("bob") == {"contact": (bobs["id"], "member")}
    site.ok("DELETE", f"{WS}/segments/{bobs['id']}", status=204)
    assert site.resolved("bob") == {"contact": (shared["id"], "shared")}


def test_import_without_a_segment_creates_a_static_segment_named_after_it(site: Site) -> None:
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    body = {"object_type": "contact", "record_ids": ["imp-1", "imp-2", "imp-3"]}
    first = site.ok("POST", f"{WS}/imports", body=body, status=202)
    assert re.fullmatch(r"Import \d{4}-\d\d-\d\d \d\d:\d\d", first["name"]) and first["accepted"] == 3, first
    assert before <= datetime.strptime(first["name"], "Import %Y-%m-%d %H:%M").replace(tzinfo=timezone.utc) \
        <= datetime.now(timezone.utc)
    segment = site.ok("GET", f"{WS}/segments/{first['segment_id']}")
    assert (segment["name"], segment["kind"], segment["object_type"]) == (first["name"], "static", "contact")
    site.harness.wait_for(lambda: sorted(site.ok("GET", f"{WS}/segments/{first['segment_id']}/members")["members"])
                          == ["imp-1", "imp-2", "imp-3"], what="the imported ids as members")
    # A taken name gets a number, whichever case it was taken in.
    named = [site.ok("POST", f"{WS}/imports", body={**body, "name": name}, status=202)["name"]
             for name in ("Trade fair leads", "trade fair LEADS", "Trade fair leads")]
    assert named == ["Trade fair leads", "trade fair LEADS (2)", "Trade fair leads (3)"]
    # Agents may not import; a bad body names what is wrong.
    assert error(site.call("POST", f"{WS}/imports", "bob", body)) == (403, "forbidden")
    assert error(site.call("POST", f"{WS}/imports", body={"record_ids": ["x"]})) == (422, "missing_object_type")
    assert error(site.call("POST", f"{WS}/imports", body={"object_type": "contact", "record_ids": []})) == (
        400, "bad_request")


def test_bad_default_messages_are_dead_lettered_and_later_ones_still_apply(site: Site) -> None:
    """The default-segments topic is read by the same reader as the segment registry: a bad message must
    not wedge it, nor be applied."""
    segment = site.create(object_type="task", rule={"combinator": "and", "rules": [
        {"field": "is_completed", "operator": "=", "value": False}]})
    name = topics.DEFAULT_SEGMENTS.full_name(site.harness.settings.topic_prefix)

    def default(workspace: str = "acme", **data: Any) -> bytes:
        return encode(envelope("default.segment", {"scope": "shared", "member": None, "object_type": "task",
                                                   "segment_id": segment["id"], "version": 10, **data},
                               workspace=workspace))

    pills = {
        b"{not json": "malformed_json",
        default(scope="member"): "schema_violation",  # a pin without its member
        default(object_type="planet"): "schema_violation",
        default(workspace="initech"): "unknown_workspace",
        encode(envelope("segment.removed", {"id": "x", "object_type": "task", "version": 1}, workspace="acme")):
            "schema_violation",
    }
    producer = KafkaProducer(bootstrap_servers=site.harness.settings.bootstrap_servers)
    try:
        offsets = {producer.send(name, value, key=b"acme/shared/task", partition=0).get(timeout=30).offset: code
                   for value, code in pills.items()}
        producer.send(name, default(version=int(time.time() * 1000)), key=b"acme/shared/task", partition=0).get(30)
    finally:
        producer.close()
    site.harness.wait_for(lambda: site.resolved("eve").get("task") == (segment["id"], "shared"),
                          what="the good default after the bad ones")

    def letters() -> dict[int, str]:
        return {d["data"]["offset"]: d["data"]["code"] for d in site.harness.read_topic(topics.DEAD_LETTERS)
                if d["data"]["topic"] == name}
    assert site.harness.wait_for(lambda: letters() if len(letters()) == len(pills) else None,
                                 what="dead letters") == offsets


def test_defaults_survive_a_worker_restart(site: Site) -> None:
    segment = site.create(default_for=["eve"])
    site.ok("PUT", f"{WS}/defaults/mine/company", "eve", {"segment_id": None})
    pinned = site.create(name="eve's own view")
    site.ok("PUT", f"{WS}/defaults/mine/contact", "eve", {"segment_id": pinned["id"]})
    before = {who: site.resolved(who) for who in ("admin", "bob", "eve")}
    assert before["eve"]["contact"] == (pinned["id"], "pin") and segment["default_for"] == ["eve"]
    site.worker.kill()
    site.worker = site.harness.start_worker(data_dir="data-after-restart")  # nothing local survives
    assert {who: site.resolved(who) for who in ("admin", "bob", "eve")} == before
