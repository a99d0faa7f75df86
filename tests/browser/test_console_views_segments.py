"""The Segments and Management views in a real browser: signing in, the list with the API's counts, search
and sort, the delete confirmation (records are never deleted) and a refusal in words, an agent's view
without the segment hidden from them, and Recalculate with its progress until done."""
from __future__ import annotations

import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleSite, shot, sign_in

WS = "/v1/workspaces/acme"
FIXTURE_IDS = ["pl-high-value", "subscribed-vips", "warm-leads", "enterprise-de-pl"]
DE = {"combinator": "and", "rules": [{"field": "country", "operator": "=", "value": "DE"}]}


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def create(site: ConsoleSite, name: str, rule: dict[str, Any] = DE, **extra: Any) -> dict[str, Any]:
    status, body = site.api("POST", f"{WS}/segments", body={"object_type": "contact", "name": name, "rule": rule, **extra})
    assert status == 201, body
    return body


def listed(site: ConsoleSite, query: str = "") -> list[dict[str, Any]]:
    status, body = site.api("GET", f"{WS}/segments?object_type=contact{query}")
    assert status == 200, body
    return body["segments"]


def test_wrong_token_is_refused_in_words(page: Any, console_site: ConsoleSite) -> None:
    page.goto(console_site.url)
    page.fill("#token", "not-a-real-token")
    page.click("button[type=submit]")
    error = page.locator(".signin .error")
    expect(error).to_contain_text("That token was not accepted")
    assert "{" not in error.inner_text() and "unauthenticated" not in error.inner_text()
    shot(page, "signin-wrong-token")


def test_list_shows_the_fixture_segments_with_the_apis_counts(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, "acme-admin", "segments/contact")
    page.wait_for_selector("#segments-table tbody tr[data-id]")
    api = {s["id"]: s for s in listed(console_site)}
    for segment_id in FIXTURE_IDS:
        row = page.locator(f"#segments-table tr[data-id='{segment_id}']")
        expect(row.locator("td.name")).to_contain_text(api[segment_id]["name"])
        expect(row.locator("td.count")).to_have_text(f"{api[segment_id]['member_count']:,}")
    assert sum(api[i]["member_count"] for i in FIXTURE_IDS) > 0, api
    expect(page.locator(".tabs a.active")).to_have_text("Contacts")
    shot(page, "segments-contact")
    page.click(".tabs a:has-text('Companies')")
    expect(page.locator("#segments-table td.empty")).to_contain_text("No company segments yet")
    expect(page.locator("#new-segment")).to_be_visible()
    page.click("#new-segment")
    page.wait_for_url("**#/builder/company")


def test_search_as_you_type_and_sort_both_ways(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, "acme-admin", "segments/contact")
    page.wait_for_selector("#segments-table tbody tr[data-id]")
    page.type("#segment-search", "POLAND")  # name and description, any case
    rows = page.locator("#segments-table tbody tr[data-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", "pl-high-value")
    expect(page.locator("#segment-summary")).to_contain_text("1 of")
    shot(page, "segments-search")
    page.fill("#segment-search", "")

    def shown() -> list[str]:
        return rows.evaluate_all("rows => rows.map(r => r.dataset.id)")

    for button, sort in (("name", "-name"), ("created_at", "created_at"), ("created_at", "-created_at"), ("name", "name")):
        page.click(f"th button[data-sort='{button}']")
        expected = [s["id"] for s in listed(console_site, f"&sort={sort}")]
        assert shown() == expected, (sort, shown(), expected)
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Name")


def test_delete_says_records_stay_and_explains_a_refusal(page: Any, console_site: ConsoleSite) -> None:
    used = create(console_site, unique("Used by another"))
    user = create(console_site, unique("Uses it"), {"combinator": "and", "rules": [
        {"field": "segment", "operator": "memberOf", "value": used["id"]}]})
    sign_in(page, console_site, "acme-admin", "segments/contact")
    messages: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        messages.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.click(f"tr[data-id='{user['id']}'] button:has-text('Delete')")
    assert "never deletes records" in messages[-1] and user["name"] in messages[-1]
    assert console_site.api("GET", f"{WS}/segments/{user['id']}")[0] == 200  # dismissed: nothing happened

    page.once("dialog", lambda d: answer(d, True))
    page.click(f"tr[data-id='{used['id']}'] button:has-text('Delete')")
    notice = page.locator("#notice.error")
    expect(notice).to_contain_text(f"“{user['name']}” use it in their rules")
    assert "segment_in_use" not in notice.inner_text()
    shot(page, "segments-delete-refused")

    page.once("dialog", lambda d: answer(d, True))
    page.click(f"tr[data-id='{user['id']}'] button:has-text('Delete')")
    expect(page.locator(f"tr[data-id='{user['id']}']")).to_have_count(0)
    expect(page.locator("#notice.ok")).to_contain_text("No record was deleted")
    assert console_site.api("GET", f"{WS}/segments/{user['id']}")[0] == 404


def test_an_agent_never_sees_a_segment_hidden_from_them(page: Any, console_site: ConsoleSite) -> None:
    hidden = create(console_site, unique("Not for dave"), hidden_from=["dave"])
    sign_in(page, console_site, "acme-agent", "segments/contact")
    page.wait_for_selector("#segments-table tr[data-id='pl-high-value']")
    expect(page.locator(f"tr[data-id='{hidden['id']}']")).to_have_count(0)
    expect(page.locator("#new-segment")).to_have_count(0)  # agents only read
    expect(page.locator("#segments-table button:has-text('Delete')")).to_have_count(0)
    shot(page, "segments-agent")
    page.goto(console_site.url + "#/manage")
    page.wait_for_selector("#manage-table tr[data-id='pl-high-value']")
    expect(page.locator(f"tr[data-id='{hidden['id']}']")).to_have_count(0)
    page.goto(console_site.url + f"#/segment/{hidden['id']}")
    expect(page.locator("#view .error")).to_contain_text("not visible to you")


def test_management_recalculates_with_progress_and_edits_the_interval(page: Any, console_site: ConsoleSite) -> None:
    segment = create(console_site, unique("Recalculate me"))
    sign_in(page, console_site, "acme-admin", "manage")
    row = page.locator(f"#manage-table tr[data-id='{segment['id']}']")
    expect(row).to_have_count(1)
    expect(row.locator("td.heavy")).to_contain_text("ms CPU/s")

    row.locator("input.interval").fill("45")
    row.locator("input.interval").press("Tab")
    expect(page.locator("#notice.ok")).to_contain_text("every 45 minutes")
    assert console_site.api("GET", f"{WS}/segments/{segment['id']}")[1]["recalculation_interval_minutes"] == 45
    row.locator("input.interval").fill("")
    row.locator("input.interval").press("Tab")
    expect(page.locator("#notice.ok")).to_contain_text("no longer recalculated")
    assert console_site.api("GET", f"{WS}/segments/{segment['id']}")[1]["recalculation_interval_minutes"] is None

    before = console_site.api("GET", f"{WS}/segments/{segment['id']}")[1]["version"]
    row.locator("button.recalculate").click()
    expect(page.locator("#recalc-progress h2")).to_contain_text(segment["name"])
    expect(page.locator("#recalc-progress .recalc-status.done")).to_contain_text("Done", timeout=30_000)
    after = console_site.api("GET", f"{WS}/segments/{segment['id']}")[1]
    assert after["version"] > before
    expect(page.locator(f"#manage-table tr[data-id='{segment['id']}'] td.count")).to_have_text(f"{after['member_count']:,}")
    shot(page, "manage")

    page.click("#recalculate-all")
    expect(page.locator("#recalc-progress h2")).to_have_text("Recalculating every active segment")
    expect(page.locator("#recalc-progress .recalc-status.done")).to_contain_text("Done", timeout=30_000)
    assert console_site.api("GET", f"{WS}/segments/{segment['id']}")[1]["version"] > after["version"]
