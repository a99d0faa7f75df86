"""The live feed over real HTTP against one real worker and the real broker: a change's segment.entered
arrives within seconds, `segment_id` filters, nothing of another workspace or of a segment hidden from
an agent ever arrives, a conversation's assignment arrives, and a client that goes is cleaned up."""
from __future__ import annotations

import asyncio
import http.client as httpclient
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import orjson
import pytest

from engine.broker import LocalBroker
from engine.feed import QUEUE_LIMIT, Feed, Subscription
from tests.conftest import Harness, shared_harness
from tests.reliability.hostile import http

STREAM = "/v1/workspaces/{ws}/events/stream"
PL = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "PL"}]}
DE = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]}
VIP = {"combinator": "and", "rules": [{"field": "tags", "operator": "hasAny", "value": ["vip"]}]}
ARRIVAL_S = 5.0  # "within seconds": a change's event reaches an open stream by then


class Stream:
    """One server-sent events connection, read on a thread: every `data:` event lands in `events`."""

    def __init__(self, port: int, path: str, token: str) -> None:
        self.connection = httpclient.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.read()[:300]
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")
        # The first comment says the feed is at the topics' ends: what is published from now on arrives.
        assert self.response.readline() == b": subscribed\n"
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self.response.readline():
                self.lines.append(line)
                if line.startswith(b"data: "):
                    self.events.put(orjson.loads(line[6:]))
        except Exception:  # noqa: BLE001 - closed by the test (http.client fails in several ways then)
            pass

    def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = ARRIVAL_S) -> dict[str, Any]:
        """The first event received (before or within `timeout` from now) that passes `check`."""
        for event in self.seen:
            if check(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s; got {self.seen}") from None
            self.seen.append(event)
            if check(event):
                return event

    def drain(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Everything received so far, after waiting `seconds` more."""
        time.sleep(seconds)
        while not self.events.empty():
            self.seen.append(self.events.get())
        return self.seen

    def close(self) -> None:
        if self.connection.sock is not None:
            self.connection.sock.shutdown(2)  # the worker sees the client go, as when a browser tab closes
        self.connection.close()


@dataclass
class Site:
    harness: Harness
    port: int
    streams: list[Stream]

    def open(self, token: str = "acme-admin", ws: str = "acme", query: str = "") -> Stream:
        stream = Stream(self.port, STREAM.format(ws=ws) + query, token)
        self.streams.append(stream)
        return stream

    def change(self, ws: str, record_id: str, fields: dict[str, Any]) -> None:
        self.harness.publisher.publish_change(ws, {"op": "upsert", "object_type": "contact", "id": record_id,
                                                   "version": int(time.time() * 1000), "fields": fields})
        self.harness.publisher.flush()


@pytest.fixture(scope="module")
def site(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with shared_harness(broker, tmp_path_factory, "live-feed") as harness:
        publisher = harness.publisher
        publisher.define_segment("acme", {"id": "poles", "object_type": "contact", "name": "Poles", "rule": PL})
        publisher.define_segment("acme", {"id": "vips", "object_type": "contact", "name": "VIPs", "rule": VIP})
        publisher.define_segment("acme", {"id": "germans", "object_type": "contact", "name": "Germans", "rule": DE,
                                          "hidden_from": ["dave"]})
        publisher.define_segment("globex", {"id": "globex-poles", "object_type": "contact", "name": "Globex Poles",
                                            "rule": PL})
        publisher.flush()
        site = Site(harness, harness.start_worker().web_port, [])
        try:
            yield site
        finally:
            for stream in site.streams:
                stream.close()


def test_an_entered_event_arrives_within_seconds_and_segment_id_filters(site: Site) -> None:
    only_poles = site.open(query="?segment_id=poles")
    everything = site.open()
    started = time.monotonic()
    site.change("acme", "r-fast", {"country": "PL", "tags": ["vip"]})
    event = only_poles.until(lambda e: e["data"].get("record_id") == "r-fast")
    assert time.monotonic() - started < ARRIVAL_S
    assert event["type"] == "segment.entered" and event["data"]["segment_id"] == "poles"
    assert event["workspace"] == "acme" and event["id"] and event["data"]["record_version"] > 0  # the envelope
    everything.until(lambda e: e["data"].get("segment_id") == "vips" and e["data"].get("record_id") == "r-fast")
    site.change("acme", "r-fast", {"country": "DE"})  # leaves poles; enters germans (admins see it)
    only_poles.until(lambda e: e["type"] == "segment.exited" and e["data"].get("record_id") == "r-fast")
    everything.until(lambda e: e["data"].get("segment_id") == "germans")
    assert {e["data"]["segment_id"] for e in only_poles.drain()} == {"poles"}


def test_nothing_of_another_workspace_or_a_hidden_segment_arrives(site: Site) -> None:
    agent = site.open(token="acme-agent")  # dave: "germans" is hidden from him
    globex = site.open(token="globex-admin", ws="globex")
    site.change("acme", "r-secret", {"country": "DE", "tags": ["vip"]})  # enters germans (hidden) and vips
    site.change("globex", "g-1", {"country": "PL"})
    agent.until(lambda e: e["data"].get("record_id") == "r-secret" and e["data"]["segment_id"] == "vips")
    globex.until(lambda e: e["data"].get("record_id") == "g-1")
    site.change("acme", "r-marker", {"tags": ["vip"]})  # published last: once it arrives, the rest has too
    agent.until(lambda e: e["data"].get("record_id") == "r-marker")
    assert all(e["workspace"] == "acme" and e["data"].get("segment_id") != "germans" for e in agent.drain())
    assert not any(b"germans" in line for line in agent.lines)
    assert all(e["workspace"] == "globex" for e in globex.drain(0.5))
    # Naming the hidden segment answers like naming one that does not exist.
    answers = []
    for segment in ("germans", "no-such-segment"):
        status, raw = http(site.port, STREAM.format(ws="acme") + f"?segment_id={segment}&limit=0", "acme-agent")
        answers.append((status, raw.replace(segment.encode(), b"<id>")))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers
    status, _ = http(site.port, STREAM.format(ws="acme") + "?limit=0", "globex-admin")
    assert status == 404


def test_a_conversation_assignment_arrives_and_an_agent_never_learns_a_hidden_segment(site: Site) -> None:
    status, raw = http(site.port, "/v1/workspaces/acme/assignment-rules", "acme-admin", method="PUT",
                       body=orjson.dumps({"rules": [
                           {"id": "german-desk", "segment_id": "germans", "assign_to": {"member": "carol"}},
                           {"id": "polish-desk", "segment_id": "poles", "assign_to": {"member": "dave"}}]}))
    assert status == 200, raw[:300]
    admin = site.open()
    agent = site.open(token="acme-agent")
    site.change("acme", "r-pole", {"country": "PL"})
    site.change("acme", "r-german", {"country": "DE"})
    # The contacts' segments first, so each conversation is decided on them.
    admin.until(lambda e: e["data"].get("record_id") == "r-pole")
    admin.until(lambda e: e["data"].get("record_id") == "r-german")
    publisher = site.harness.publisher
    publisher.publish_conversation("acme", "conv-pl", "r-pole")
    publisher.publish_conversation("acme", "conv-de", "r-german")
    publisher.flush()
    for stream in (admin, agent):
        mine = stream.until(lambda e: e["type"] == "conversation.assigned" and e["data"]["conversation_id"] == "conv-pl")
        assert mine["data"]["assignee"] == "dave" and mine["data"]["segment_id"] == "poles"
    german = admin.until(lambda e: e["type"] == "conversation.assigned" and e["data"]["conversation_id"] == "conv-de")
    assert german["data"]["segment_id"] == "germans" and "germans" in german["data"]["segments"]
    # The agent learns that carol got the conversation, not through which hidden segment.
    seen = agent.until(lambda e: e["type"] == "conversation.assigned" and e["data"]["conversation_id"] == "conv-de")
    assert seen["data"]["assignee"] == "carol" and "segment_id" not in seen["data"]
    assert "germans" not in seen["data"]["segments"] and not any(b"germans" in line for line in agent.lines)


def test_a_client_that_goes_away_is_cleaned_up(site: Site) -> None:
    log = site.harness.workers[0].log_path
    stream = site.open()
    left_before = log.read_text().count("live feed: a subscriber of acme left")
    stream.close()
    site.harness.wait_for(lambda: log.read_text().count("live feed: a subscriber of acme left") > left_before,
                          timeout=10, what="the closed stream's subscriber removed")
    # `limit` closes the stream after that many events: a script can take one and stop.
    status, raw = http(site.port, STREAM.format(ws="acme") + "?limit=0", "acme-admin")
    assert status == 200 and raw == b": subscribed\n\n"


def test_a_subscriber_that_falls_behind_is_dropped_not_waited_for() -> None:
    """The fan-out (no broker involved): a subscriber that stops reading is marked overflowed and dropped
    after QUEUE_LIMIT events, while the one that reads goes on receiving."""

    async def run() -> None:
        feed = Feed("unused:9092", [])
        slow = subscribe(feed, "acme")
        fast = subscribe(feed, "acme")
        other = subscribe(feed, "globex")
        for n in range(QUEUE_LIMIT + 5):
            raw = orjson.dumps({"type": "segment.entered", "workspace": "acme", "data": {"segment_id": "s", "n": n}})
            feed._fan_out(b"acme/contact/r", raw)
            while not fast.queue.empty():
                fast.queue.get_nowait()
        assert slow.overflowed and slow not in feed.subscribers
        assert not fast.overflowed and fast in feed.subscribers
        assert other.queue.empty() and other in feed.subscribers

    def subscribe(feed: Feed, workspace: str) -> Subscription:
        sub = Subscription(workspace, lambda event, raw: raw)
        feed.subscribers.add(sub)
        return sub

    asyncio.run(run())
