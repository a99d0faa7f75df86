"""Segment detail, record profile and static segments in a real browser: a CSV imported into a new static
segment shows its members (count equal to the API's) and loses one removed by hand; a member's "why"
reads condition by condition like the API's explanation; the record profile lists the same segments and
current results as the API."""
from __future__ import annotations

import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleSite, shot, sign_in
from tests.reliability.hostile import http

WS = "/v1/workspaces/acme"


def api(site: ConsoleSite, path: str) -> Any:
    status, body = site.api("GET", WS + path)
    assert status == 200, (path, body)
    return body


def a_member(site: ConsoleSite, segment_id: str) -> str:
    members = api(site, f"/segments/{segment_id}/members?limit=1")["members"]
    assert members, f"{segment_id} has no members in the sample contacts"
    return members[0]


def test_import_a_csv_into_a_new_static_segment_then_remove_a_member(page: Any, console_site: ConsoleSite) -> None:
    name = f"Trade fair {uuid.uuid4().hex[:6]}"
    ids = [f"c{i}" for i in range(10, 40)]  # more than one page (25)
    csv = "email,record_id\n" + "".join(f"x{i}@example.com,{rid}\n" for i, rid in enumerate(ids)) + "dup@example.com,c10\n"
    sign_in(page, console_site, "acme-admin", "static")
    page.wait_for_selector("#import-csv")
    page.set_input_files("#import-file", files=[{"name": "fair.csv", "mimeType": "text/csv", "buffer": csv.encode()}])
    expect(page.locator("#import-target")).to_have_value("")  # a new list
    page.fill("#import-name", name)
    page.click("#import-start")
    expect(page.locator("#import-progress .done")).to_contain_text(f"Added 30 record ids to “{name}”. It now has 30 members", timeout=30_000)
    shot(page, "static-imported")
    segment = next(s for s in api(console_site, "/segments")["segments"] if s["name"] == name)
    assert segment["kind"] == "static"
    assert api(console_site, f"/segments/{segment['id']}/count")["member_count"] == 30  # the view waited for it
    expect(page.locator(f"#static-table tr[data-id='{segment['id']}'] td.count")).to_have_text("30")

    page.click("#import-open")
    expect(page.locator("#member-count")).to_have_text("30")
    expect(page.locator("#segment-kind")).to_contain_text("Static list")
    rows = page.locator("#members-table tbody tr[data-id]")
    expect(rows).to_have_count(25)
    first_page = rows.evaluate_all("rows => rows.map(r => r.dataset.id)")
    page.click("#next-page")
    expect(rows).to_have_count(5)
    assert sorted(first_page + rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == sorted(ids)
    page.click("#previous-page")
    expect(rows).to_have_count(25)
    page.locator("#members-table tr[data-id='c10'] button.why").click()
    expect(page.locator(".why-row")).to_contain_text("imported into this list")
    shot(page, "segment-static-detail")

    page.goto(console_site.url + "#/static")
    page.click(f"#static-table tr[data-id='{segment['id']}'] button.show-members")
    page.click("#static-member-list tr[data-id='c11'] button.remove")
    expect(page.locator("#notice.ok")).to_contain_text("Removed c11")
    expect(page.locator("#static-member-list tr[data-id='c11']")).to_have_count(0)
    expect(page.locator(f"#static-table tr[data-id='{segment['id']}'] td.count")).to_have_text("29")
    assert api(console_site, f"/segments/{segment['id']}/members/c11")["member"] is False
    shot(page, "static")


def test_why_reads_like_the_apis_explanation(page: Any, console_site: ConsoleSite) -> None:
    record = a_member(console_site, "warm-leads")
    explained = api(console_site, f"/segments/warm-leads/explain/{record}")
    sign_in(page, console_site, "acme-admin", "segment/warm-leads")
    expect(page.locator("#member-count")).to_have_text(f"{api(console_site, '/segments/warm-leads')['member_count']:,}")
    page.click("#segment-rule summary")
    expect(page.locator("#segment-rule")).to_contain_text("Source is one of ads, webinar")
    expect(page.locator("#segment-rule")).to_contain_text("None of these")
    page.locator(f"#members-table tr[data-id='{record}'] button.why").click()
    why = page.locator(".why-row")
    expect(why).to_contain_text(f"{record} is a member of “Warm leads”")
    conditions = why.locator("li.why-condition")
    expected = [c for g in [explained["explanation"]] for c in flatten(g)]
    expect(conditions).to_have_count(len(expected))
    for line, node in zip(conditions.all(), expected):
        text = line.inner_text()
        assert text.startswith("✓" if node["result"] else "✗"), (text, node)
    expect(why).to_contain_text("Status is lead")
    expect(why).to_contain_text("None of these hold")  # the NOT(OR) group, in words
    shot(page, "segment-why")


def flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    if node["kind"] == "condition":
        return [node]
    return [c for child in node["children"] for c in flatten(child)]


def test_record_profile_lists_the_same_segments_as_the_api(page: Any, console_site: ConsoleSite) -> None:
    record = a_member(console_site, "subscribed-vips")
    profile = api(console_site, f"/records/contact/{record}")
    evaluated = api(console_site, f"/records/contact/{record}/evaluate")
    sign_in(page, console_site, "acme-admin", "record")
    page.fill("#record-id", record)
    page.click("#view button[type=submit]")
    page.wait_for_url(f"**#/record/contact/{record}")
    expect(page.locator("#record-segments li")).to_have_count(len(profile["segments"]))
    shown = page.locator("#record-segments li").evaluate_all("items => items.map(i => i.dataset.id)")
    assert sorted(shown) == sorted(s["id"] for s in profile["segments"])
    expect(page.locator("#current-results tbody tr")).to_have_count(len(evaluated["results"]))
    for result in evaluated["results"]:
        expect(page.locator(f"#current-results tr[data-id='{result['id']}'] td").nth(1)).to_have_text(
            "yes" if result["matches"] else "no")
    expect(page.locator("#record-fields")).to_contain_text(profile["fields"]["country"])
    shot(page, "record")
    page.fill("#record-id", "no-such-contact")
    page.click("#view button[type=submit]")
    expect(page.locator("#notice.error")).to_contain_text("knows no contact with the id “no-such-contact”")


def test_detail_searches_filters_picks_fields_and_exports_like_the_api(page: Any, console_site: ConsoleSite) -> None:
    seg = "enterprise-de-pl"
    fields = "first_name,last_name,email,country"
    records = api(console_site, f"/segments/{seg}/members?limit=100&fields=email,country")["records"]
    sign_in(page, console_site, "acme-admin", f"segment/{seg}")
    rows = page.locator("#members-table tbody tr[data-id]")
    expect(rows).to_have_count(len(records))
    shown = lambda: rows.evaluate_all("rows => rows.map(r => r.dataset.id)")  # noqa: E731

    email = next(r["fields"]["email"] for r in records if r["fields"]["email"])
    page.fill("#member-search", email.split("@")[0].upper())
    expect(rows).to_have_count(1)
    assert shown() == [r["id"] for r in records if r["fields"]["email"] == email]
    page.fill("#member-search", "")
    expect(rows).to_have_count(len(records))

    country = records[0]["fields"]["country"]
    page.select_option("#filter-field", "country")
    page.select_option("#filter-operator", "=")
    page.fill("#filter-value", country)
    page.click("form.filter-line button[type=submit]")
    expected = [r["id"] for r in records if r["fields"]["country"] == country]
    expect(rows).to_have_count(len(expected))
    assert shown() == expected
    page.select_option("#filter-field", "lifetime_value")
    page.select_option("#filter-operator", ">")
    page.fill("#filter-value", "lots")
    page.click("form.filter-line button[type=submit]")
    expect(page.locator("#filter-problem")).to_contain_text("expected a number")
    shot(page, "segment-filter-problem")
    page.click("form.filter-line button:has-text('Clear')")
    expect(rows).to_have_count(len(records))

    # The column picker lists the workspace's catalog (GET .../catalog/<type>), custom fields included.
    catalog = api(console_site, "/catalog/contact")
    expect(page.locator("details.picker input[type=checkbox]")).to_have_count(len(catalog["fields"]))
    assert console_site.api("GET", f"{WS}/catalog/widget")[0] == 404
    page.click("details.picker summary")
    page.check("details.picker input[value='custom.plan']")
    expect(page.locator("#members-table thead")).to_contain_text("Plan (custom)")
    page.click("details.picker summary")
    with page.expect_download() as download:
        page.click("#export-csv")
    got = open(download.value.path(), encoding="utf-8").read()
    status, raw = http(console_site.port, f"{WS}/segments/{seg}/export?format=csv&fields={fields},custom.plan", "acme-admin")
    assert status == 200 and got == raw.decode() and got.count("\n") == len(records) + 1, got[:300]
    shot(page, "segment-detail")


def test_views_fit_a_1024_wide_window(page: Any, console_site: ConsoleSite) -> None:
    page.set_viewport_size({"width": 1024, "height": 768})
    sign_in(page, console_site, "acme-admin", "segments/contact")
    member = a_member(console_site, "subscribed-vips")
    for route, ready in (("segments/contact", "#segments-table tr[data-id]"), ("manage", "#manage-table tr[data-id]"),
                         ("segment/subscribed-vips", "#members-table tr[data-id]"), ("static", "#import-csv"),
                         (f"record/contact/{member}", "#current-results tr[data-id]")):
        page.goto(console_site.url + f"#/{route}")
        page.wait_for_selector(ready)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"#/{route} is {overflow}px wider than a 1024 px window"
        shot(page, f"narrow-{route.split('/')[0]}")
