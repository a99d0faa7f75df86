"""Chat assignment on the real broker: rules saved over HTTP, conversations decided by the contact's
segments at that moment (entered before → assigned by that rule; left before → not; rule order breaks
ties; unknown contacts unassigned), one decision per conversation id, group turns that rotate and
survive a SIGKILL and restart with nothing lost or repeated."""
from __future__ import annotations

import dataclasses
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

import topics
from engine.intake import partition_for
from tests.conftest import FIXTURES, Harness

PL = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}
VIP = {"combinator": "and", "rules": [{"field": "tags", "operator": "hasAny", "value": ["vip"]}]}
RULES = {
    "rules": [
        {"id": "vip-to-vera", "segment_id": "vip", "assign_to": {"member": "vera"}},
        {"id": "pl-to-sales", "segment_id": "pl", "assign_to": {"group": "sales"}},
    ],
    "groups": {"sales": ["sam", "sue"]},
}


def call(port: int, method: str, path: str, body: Any = None, token: str = "acme-admin") -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


class Chat:
    """The test's view of the engine as a chat system sees it."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.version = 0

    def change(self, contact: str, **fields: Any) -> None:
        self.version += 1
        self.harness.publisher.publish_change("acme", {"op": "upsert", "object_type": "contact", "id": contact,
                                                       "version": self.version, "fields": fields})
        self.harness.publisher.flush()

    def open(self, conversation: str, contact: str) -> None:
        self.harness.publisher.publish_conversation("acme", conversation, contact)
        self.harness.publisher.flush()

    def decisions(self) -> list[dict[str, Any]]:
        return self.harness.read_topic(topics.CONVERSATION_ASSIGNMENTS)

    def decided(self, *conversations: str) -> dict[str, dict[str, Any]]:
        """Wait until each conversation has a decision; return conversation id -> decision."""
        def ready() -> dict[str, dict[str, Any]] | None:
            found = {d["data"]["conversation_id"]: d for d in self.decisions()}
            return found if all(c in found for c in conversations) else None
        return self.harness.wait_for(ready, timeout=60, what=f"decisions for {conversations}")

    def in_segment(self, contact: str, segment: str, entered: bool) -> None:
        kind = "segment.entered" if entered else "segment.exited"
        self.harness.wait_for(
            lambda: [e for e in self.harness.events() if e["type"] == kind
                     and (e["data"]["record_id"], e["data"]["segment_id"]) == (contact, segment)],
            timeout=60, what=f"{contact} {kind} {segment}")


def summary(decision: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    data = decision["data"]
    return decision["type"], data.get("rule_id"), data.get("assignee"), data.get("reason")


def same_partition_contacts(partitions: int, count: int, prefix: str) -> list[str]:
    """Contact ids whose records share one partition (group turns are counted per partition)."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        cid = f"{prefix}{i}"
        if partition_for(f"acme/contact/{cid}", partitions) == 0:
            found.append(cid)
        i += 1
    return found


def test_conversations_are_assigned_by_the_contacts_segments_at_that_moment(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    pub = harness.publisher
    pub.define_segment("acme", {"id": "pl", "object_type": "contact", "name": "Poland", "rule": PL})
    pub.define_segment("acme", {"id": "vip", "object_type": "contact", "name": "VIP", "rule": VIP})
    pub.flush()
    worker = harness.start_worker()
    base = "/v1/workspaces/acme/assignment-rules"
    harness.wait_for(lambda: call(worker.web_port, "GET", base)[0] == 200, timeout=60, what="HTTP API")
    status, saved = call(worker.web_port, "PUT", base, RULES)
    assert status == 200, saved
    assert saved["rules"] == RULES["rules"] and saved["groups"] == RULES["groups"] and saved["version"] > 0
    # An agent may read the rules but not change them; a segment a rule routes by cannot be deleted.
    assert call(worker.web_port, "GET", base, token="acme-agent") == (200, saved)
    assert call(worker.web_port, "PUT", base, RULES, token="acme-agent")[0] == 403
    status, body = call(worker.web_port, "DELETE", "/v1/workspaces/acme/segments/pl")
    assert (status, body["error"]["code"], body["error"]["assignment_rules"]) == (409, "segment_in_use", ["pl-to-sales"])

    chat = Chat(harness)
    chat.change("entered", country="PL")  # enters pl before its conversation
    chat.change("left", country="PL")
    chat.change("both", country="PL", tags=["vip"])  # in pl and vip: the first rule (vip) wins
    chat.in_segment("entered", "pl", entered=True)
    chat.in_segment("both", "vip", entered=True)
    chat.in_segment("left", "pl", entered=True)
    chat.change("left", country="DE")  # leaves pl before its conversation
    chat.in_segment("left", "pl", entered=False)
    for conversation, contact in [("conv-entered", "entered"), ("conv-left", "left"), ("conv-both", "both"),
                                  ("conv-stranger", "stranger")]:
        chat.open(conversation, contact)
    chat.open("conv-entered", "entered")  # the chat system re-sends a conversation.created
    decided = chat.decided("conv-entered", "conv-left", "conv-both", "conv-stranger")

    assert summary(decided["conv-entered"])[:2] == ("conversation.assigned", "pl-to-sales")
    assert decided["conv-entered"]["data"]["assignee"] in ("sam", "sue")
    assert decided["conv-entered"]["data"]["group"] == "sales"
    assert decided["conv-entered"]["data"]["segments"] == ["pl"]
    assert summary(decided["conv-left"]) == ("conversation.unassigned", None, None, "no_rule_matched")
    assert summary(decided["conv-both"]) == ("conversation.assigned", "vip-to-vera", "vera", None)
    assert summary(decided["conv-stranger"]) == ("conversation.unassigned", None, None, "unknown_contact")
    assert {d["data"]["rules_version"] for d in decided.values()} == {saved["version"]}
    for decision in decided.values():  # keyed like every event of the contact, so it is ordered with them
        assert decision["workspace"] == "acme"

    # Group turns: consecutive conversations of one partition alternate over the group's members,
    # and the turn survives a SIGKILL and restart of the worker (it is in the partition's state).
    regulars = same_partition_contacts(harness.settings.partitions, 4, "regular-")
    for contact in regulars:
        chat.change(contact, country="PL")
    for contact in regulars:
        chat.in_segment(contact, "pl", entered=True)
    chat.open("turn-0", regulars[0])
    chat.open("turn-1", regulars[1])
    before = chat.decided("turn-0", "turn-1")
    time.sleep(2)  # let the worker write its state after the last decision
    worker.kill()
    chat.open("turn-2", regulars[2])
    chat.change("newcomer", country="PL")  # arrives while no worker runs
    chat.open("conv-newcomer", "newcomer")
    chat.open("conv-both", "both")  # and a repeat of an old conversation
    harness.start_worker()
    after = chat.decided("turn-2", "conv-newcomer")
    assignees = [before["turn-0"]["data"]["assignee"], before["turn-1"]["data"]["assignee"],
                 after["turn-2"]["data"]["assignee"]]
    assert assignees in (["sam", "sue", "sam"], ["sue", "sam", "sue"])
    assert summary(after["conv-newcomer"])[:2] == ("conversation.assigned", "pl-to-sales")

    time.sleep(2)
    decisions = chat.decisions()
    per_conversation: dict[str, list[str]] = {}
    for d in decisions:
        per_conversation.setdefault(d["data"]["conversation_id"], []).append(d["id"])
    # Exactly one decision per conversation id: none lost, none repeated (re-sent or redelivered).
    assert {c: len(ids) for c, ids in per_conversation.items()} == {
        c: 1 for c in ("conv-entered", "conv-left", "conv-both", "conv-stranger", "turn-0", "turn-1", "turn-2",
                       "conv-newcomer")}


def test_invalid_rules_are_refused_naming_the_rule_and_problem(harness: Harness) -> None:
    harness.settings = dataclasses.replace(harness.settings, tokens_file=FIXTURES / "tokens.json")
    harness.publisher.define_segment("acme", {"id": "pl", "object_type": "contact", "name": "Poland", "rule": PL})
    harness.publisher.flush()
    worker = harness.start_worker()
    base = "/v1/workspaces/acme/assignment-rules"
    harness.wait_for(lambda: call(worker.web_port, "GET", base)[0] == 200, timeout=60, what="HTTP API")
    assert call(worker.web_port, "GET", base)[1] == {"version": 0, "rules": [], "groups": {}}
    bad = {"rules": [{"id": "r1", "segment_id": "nope", "assign_to": {"group": "ghosts"}}], "groups": {}}
    status, body = call(worker.web_port, "PUT", base, bad)
    assert status == 422 and body["error"]["code"] == "invalid_assignment_rules"
    assert {(p["code"], p["path"]) for p in body["error"]["problems"]} == {
        ("unknown_segment", "/rules/0/segment_id"), ("unknown_group", "/rules/0/assign_to/group")}
    good = {"rules": [{"id": "r1", "segment_id": "pl", "assign_to": {"member": "ada"}}]}
    status, first = call(worker.web_port, "PUT", base, good)
    assert status == 200
    status, body = call(worker.web_port, "PUT", base, {**good, "version": first["version"] - 1})
    assert (status, body["error"]["code"]) == (409, "version_conflict")
    status, second = call(worker.web_port, "PUT", base, {**good, "version": first["version"]})
    assert status == 200 and second["version"] > first["version"]
    assert call(worker.web_port, "GET", "/v1/workspaces/acme/assignment-rules", token="globex-admin")[0] == 404
