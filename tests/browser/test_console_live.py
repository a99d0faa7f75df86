"""Chat assignment, defaults and the live feed in a real browser: a rule set in the console assigns a
conversation (seen arriving in the feed), a pinned default changes what the agent opens on, and a change
that makes a contact enter a segment shows up in the feed filtered to that segment."""
from __future__ import annotations

import json
import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleSite, shot, sign_in

WS = "/v1/workspaces/acme"


def tagged_segment(site: ConsoleSite, tag: str, name: str) -> dict[str, Any]:
    """A contact segment of the contacts carrying `tag`: only this test's records are in it."""
    status, body = site.api("POST", f"{WS}/segments", body={"object_type": "contact", "name": name, "rule": {
        "combinator": "and", "rules": [{"field": "tags", "operator": "hasAny", "value": [tag]}]}})
    assert status == 201, body
    return body


def publish_contact(site: ConsoleSite, record_id: str, tags: list[str]) -> None:
    site.harness.publisher.publish_batches("acme", [
        {"op": "upsert", "object_type": "contact", "id": record_id, "version": 1, "fields": {"tags": tags}}], batch_size=1)
    site.harness.publisher.flush()


def open_feed(page: Any, segment_id: str | None = None) -> None:
    page.click("#nav a[data-route=feed]")
    if segment_id:
        page.check(f".feed-filter input[value='{segment_id}']")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")


def test_assignment_rule_assigns_a_conversation_seen_in_the_feed(page: Any, console_site: ConsoleSite) -> None:
    run = uuid.uuid4().hex[:6]
    segment = tagged_segment(console_site, f"chat-{run}", f"Chat routing {run}")
    contact = f"chat-{run}"
    publish_contact(console_site, contact, [f"chat-{run}"])
    console_site.harness.wait_for(
        lambda: console_site.api("GET", f"{WS}/segments/{segment['id']}/members/{contact}")[1].get("member"),
        what="the contact in the routing segment")

    sign_in(page, console_site, "acme-admin", "assignment")
    page.click(".add-rule")
    last = page.locator("#assignment-rules tbody tr").last
    last.locator(".assign-segment").select_option(segment["id"])
    last.locator(".assign-target").select_option("dave")
    page.click(".save-rules")
    expect(page.locator("#notice")).to_contain_text("Saved")
    status, rules = console_site.api("GET", f"{WS}/assignment-rules")
    assert {"segment_id": segment["id"], "assign_to": {"member": "dave"}}.items() <= {
        k: v for k, v in rules["rules"][-1].items() if k != "id"}.items()
    shot(page, "assignment")

    open_feed(page)
    conversation = f"conv-{run}"
    console_site.harness.publisher.publish_conversation("acme", conversation, contact)
    console_site.harness.publisher.flush()
    row = page.locator(f"tr.feed-row.assigned[data-conversation='{conversation}']")
    expect(row).to_contain_text("to dave", timeout=30_000)
    expect(row).to_contain_text(segment["name"])
    shot(page, "feed-assigned")


def test_rules_are_saved_in_the_order_shown_with_a_team_group(page: Any, console_site: ConsoleSite) -> None:
    run = uuid.uuid4().hex[:6]
    first = tagged_segment(console_site, f"vip-{run}", f"Order first {run}")
    second = tagged_segment(console_site, f"std-{run}", f"Order second {run}")
    sign_in(page, console_site, "acme-admin", "assignment")
    page.click("button.add-team-group:has-text('sales')")
    for segment, kind, target in ((second, "member", "eve"), (first, "group", "sales")):
        page.click(".add-rule")
        row = page.locator("#assignment-rules tbody tr").last
        row.locator(".assign-segment").select_option(segment["id"])
        row.locator(".assign-kind").select_option(kind)
        page.locator("#assignment-rules tbody tr").last.locator(".assign-target").select_option(target)
    page.locator("#assignment-rules tbody tr").last.locator(".move-up").click()
    page.click(".save-rules")
    expect(page.locator("#notice")).to_contain_text("Saved")
    status, doc = console_site.api("GET", f"{WS}/assignment-rules")
    mine = [(r["segment_id"], r["assign_to"]) for r in doc["rules"] if r["segment_id"] in (first["id"], second["id"])]
    assert mine == [(first["id"], {"group": "sales"}), (second["id"], {"member": "eve"})]
    assert sorted(doc["groups"]["sales"]) == ["bob", "eve", "sam", "sue"]
    shot(page, "assignment-ordered")


def test_stale_version_is_refused_in_words(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, "acme-admin", "assignment")
    page.wait_for_selector(".save-rules")
    status, current = console_site.api("GET", f"{WS}/assignment-rules")
    status, _ = console_site.api("PUT", f"{WS}/assignment-rules", body=current)  # someone else saves meanwhile
    assert status == 200
    page.click(".save-rules")
    expect(page.locator("#notice")).to_contain_text("someone else changed the rules")
    expect(page.locator("button:has-text('Reload their version')")).to_be_visible()


def test_pinning_a_default_changes_what_i_open_on(page: Any, console_site: ConsoleSite) -> None:
    run = uuid.uuid4().hex[:6]
    segment = tagged_segment(console_site, f"pin-{run}", f"Pinned {run}")
    sign_in(page, console_site, "acme-agent", "defaults")
    opens_on = page.locator("#resolved-table tr[data-object-type=contact] .opens-on")
    expect(opens_on).not_to_have_text(segment["name"])
    page.select_option("select.default-mine[data-object-type=contact]", segment["id"])
    expect(opens_on).to_have_text(segment["name"])
    expect(page.locator("#resolved-table tr[data-object-type=contact] .source")).to_have_text("your pin")
    status, resolved = console_site.api("GET", f"{WS}/defaults/resolved", "acme-agent")
    assert resolved["defaults"]["contact"] == {"segment_id": segment["id"], "source": "pin"}
    shot(page, "defaults")
    page.select_option("select.default-mine[data-object-type=contact]", "")  # leave dave unpinned
    expect(opens_on).not_to_have_text(segment["name"])


def test_defaults_per_agent_come_from_the_segments_default_for(page: Any, console_site: ConsoleSite) -> None:
    run = uuid.uuid4().hex[:6]
    status, segment = console_site.api("POST", f"{WS}/segments", body={
        "object_type": "deal", "name": f"Bob's deals {run}", "default_for": ["bob"],
        "rule": {"combinator": "and", "rules": [{"field": "owner", "operator": "=", "value": "bob"}]}})
    assert status == 201, segment
    sign_in(page, console_site, "acme-admin", "defaults")
    row = page.locator("#member-defaults tr", has_text=segment["name"])
    expect(row).to_contain_text("bob")
    expect(row.locator("a")).to_have_attribute("href", f"#/builder/deal/{segment['id']}")
    page.select_option("#resolved-member", "bob")
    bob = page.locator("#resolved-table tr[data-object-type=deal]")
    expect(bob.locator(".opens-on")).to_have_text(segment["name"])
    expect(bob.locator(".source")).to_have_text("set for them on the segment")
    status, resolved = console_site.api("GET", f"{WS}/defaults/resolved?member=bob")
    assert resolved["defaults"]["deal"] == {"segment_id": segment["id"], "source": "member"}
    shot(page, "defaults-admin")


def test_entered_event_arrives_in_the_feed_filtered_by_segment(page: Any, console_site: ConsoleSite) -> None:
    run = uuid.uuid4().hex[:6]
    watched = tagged_segment(console_site, f"feed-{run}", f"Feed watched {run}")
    other = tagged_segment(console_site, f"other-{run}", f"Feed other {run}")
    sign_in(page, console_site, "acme-admin", "segments")
    open_feed(page, watched["id"])
    # One record enters both segments in one change: only the watched one's event is shown.
    publish_contact(console_site, f"feed-{run}", [f"feed-{run}", f"other-{run}"])
    row = page.locator(f"tr.feed-row.entered[data-record='feed-{run}']")
    expect(row).to_contain_text(watched["name"], timeout=30_000)
    expect(row).to_contain_text("the record changed")
    expect(page.locator(f"tr.feed-row[data-segment='{other['id']}']")).to_have_count(0)
    shot(page, "feed")
    # Leaving the view closes the stream (the console aborts its fetch); it is not left open in the background.
    with page.expect_event("requestfailed", lambda request: "/events/stream" in request.url, timeout=5_000) as aborted:
        page.click("#nav a[data-route=segments]")
    assert f"segment_id={watched['id']}" in aborted.value.url


def test_feed_reconnects_after_the_stream_drops(page: Any, console_site: ConsoleSite) -> None:
    """The first stream ends after one event (as when a worker restarts); the console says so, reconnects
    to the real stream by itself and keeps the event it had."""
    event = {"specversion": "1.0", "id": "e-drop", "source": "segment-engine", "type": "segment.exited",
             "time": "2026-12-05T08:00:00Z", "workspace": "acme", "data": {
                 "object_type": "contact", "segment_id": "warm-leads", "record_id": "c1", "record_version": 2,
                 "segment_version": 1, "cause": "time", "at": 0}}
    streams: list[str] = []

    def first_one_drops(route: Any) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                          body=f": subscribed\n\ndata: {json.dumps(event)}\n\n")
        else:
            route.continue_()

    page.route("**/events/stream*", first_one_drops)
    sign_in(page, console_site, "acme-admin", "feed")
    expect(page.locator("tr.feed-row.exited[data-record=c1]")).to_contain_text("Warm leads")
    expect(page.locator("tr.feed-row.exited[data-record=c1]")).to_contain_text("time passed")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "waiting")
    expect(page.locator("#feed-state")).to_contain_text("Reconnecting")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live", timeout=10_000)
    assert len(streams) == 2
    expect(page.locator("tr.feed-row.exited[data-record=c1]")).to_have_count(1)
