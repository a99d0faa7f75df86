"""The builder in a real browser: a rule built with the mouse previews the same count as the API, saves
into the Segments list, places each problem at its condition, hides a segment from an agent, and shows
what an edit would add and remove before it is saved."""
from __future__ import annotations

import json
import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleSite, shot, sign_in

WS = "/v1/workspaces/acme"


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def cond(path: str) -> str:
    return f'[data-path="{path}"]'


def set_condition(page: Any, path: str, field: str, operator: str, value: str | None = None) -> None:
    page.select_option(f"{cond(path)} .cond-field", field)
    page.select_option(f"{cond(path)} .cond-op", operator)
    if value is not None:
        page.fill(f"{cond(path)} .cond-value", value)


def create_segment(site: ConsoleSite, name: str, rule: dict[str, Any]) -> dict[str, Any]:
    status, body = site.api("POST", f"{WS}/segments", body={"object_type": "contact", "name": name, "rule": rule})
    assert status == 201, body
    return body


def last_preview_rule(requests: list[Any]) -> Any:
    previews = [r for r in requests if r.method == "POST" and r.url.endswith("/preview")]
    return json.loads(previews[-1].post_data)["rule"]


def test_build_preview_matches_api_then_save_into_the_list(page: Any, console_site: ConsoleSite) -> None:
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request))
    sign_in(page, console_site, "acme-admin", "builder/contact")
    page.click(f'{cond("")} > .group-head .add-condition')
    set_condition(page, "/rules/0", "country", "=", "PL")
    page.click(f'{cond("")} > .group-head .add-group')
    group = "/rules/1"
    set_condition(page, f"{group}/rules/0", "lifetime_value", ">", "1000")
    page.click(f"{cond(group)} > .group-head .add-condition")
    set_condition(page, f"{group}/rules/1", "tags", "hasAny", "vip, partner")
    rule = {"combinator": "and", "not": False, "rules": [
        {"field": "country", "operator": "=", "value": "PL"},
        {"combinator": "or", "not": False, "rules": [
            {"field": "lifetime_value", "operator": ">", "value": 1000},
            {"field": "tags", "operator": "hasAny", "value": ["vip", "partner"]}]}]}
    status, api = console_site.api("POST", f"{WS}/preview", body={"object_type": "contact", "rule": rule})
    assert status == 200 and api["count"] > 0, api
    expect(page.locator(".preview-count")).to_have_text(str(api["count"]))
    page.wait_for_load_state("networkidle")
    assert last_preview_rule(requests) == rule
    shot(page, "builder-new")

    name = unique("Polish big spenders")
    page.fill("#seg-name", name)
    page.fill("#seg-description", "Built in the browser test")
    page.click("button:has-text('Create segment')")
    expect(page.locator(".backfill-status.done")).to_contain_text(f"{api['count']} member", timeout=30_000)
    shot(page, "builder-saved")
    page.click("text=All segments")
    row = page.locator("tr", has_text=name)
    expect(row).to_contain_text(str(api["count"]))
    shot(page, "segments-after-save")


def test_invalid_value_is_shown_at_its_condition(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, "acme-admin", "builder/contact")
    page.click(f'{cond("")} > .group-head .add-condition')
    set_condition(page, "/rules/0", "country", "=", "PL")
    page.click(f'{cond("")} > .group-head .add-condition')
    set_condition(page, "/rules/1", "lifetime_value", "between")
    page.fill(f'{cond("/rules/1")} .cond-value', "5000")
    page.fill(f'{cond("/rules/1")} .cond-value-hi', "10")
    expect(page.locator(f'{cond("/rules/1")} .problem')).to_contain_text("greater than")
    expect(page.locator(f'{cond("/rules/0")} .problem')).to_have_count(0)
    expect(page.locator("#preview")).to_contain_text("Fix the highlighted condition")
    shot(page, "builder-invalid")


def test_hidden_from_removes_the_segment_from_an_agents_console(page: Any, browser: Any, console_site: ConsoleSite) -> None:
    name = unique("Hide me")
    segment = create_segment(console_site, name, {"combinator": "and", "rules": [
        {"field": "country", "operator": "=", "value": "DE"}]})
    agent = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    try:
        sign_in(agent, console_site, "acme-agent", "segments")
        expect(agent.locator("tr", has_text=name)).to_have_count(1)

        sign_in(page, console_site, "acme-admin", f"builder/contact/{segment['id']}")
        page.check("#hidden-from input[value=dave]")
        page.click("button:has-text('Save changes')")
        expect(page.locator(".backfill-status.done")).to_be_visible(timeout=30_000)
        status, saved = console_site.api("GET", f"{WS}/segments/{segment['id']}")
        assert saved["hidden_from"] == ["dave"]

        agent.reload()
        agent.wait_for_selector("#nav a")
        expect(agent.locator("tr", has_text="High-value customers in Poland")).to_have_count(1)
        expect(agent.locator("tr", has_text=name)).to_have_count(0)
        shot(agent, "segments-agent-after-hide")
    finally:
        agent.context.close()


def test_edit_preview_shows_what_the_edit_adds_and_removes(page: Any, console_site: ConsoleSite) -> None:
    segment = create_segment(console_site, unique("Germans"), {"combinator": "and", "rules": [
        {"field": "country", "operator": "=", "value": "DE"}]})
    sign_in(page, console_site, "acme-admin", f"builder/contact/{segment['id']}")
    expect(page.locator(".preview-added .count")).to_have_text("0")
    page.select_option(f'{cond("/rules/0")} .cond-op', "in")
    page.fill(f'{cond("/rules/0")} .cond-value', "PL, FR")
    rule = {"combinator": "and", "not": False, "rules": [{"field": "country", "operator": "in", "value": ["PL", "FR"]}]}
    status, api = console_site.api("POST", f"{WS}/segments/{segment['id']}/preview", body={"rule": rule})
    assert status == 200 and api["added"]["count"] > 0 and api["removed"]["count"] > 0, api
    expect(page.locator(".preview-added .count")).to_have_text(str(api["added"]["count"]))
    expect(page.locator(".preview-removed .count")).to_have_text(str(api["removed"]["count"]))
    expect(page.locator(".preview-count")).to_have_text(str(api["count"]))
    expect(page.locator(".preview-removed li").first).to_be_visible()
    shot(page, "builder-edit-diff")


def test_behaviour_and_segment_conditions_build_the_documented_rule(page: Any, console_site: ConsoleSite) -> None:
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request))
    sign_in(page, console_site, "acme-admin", "builder/contact")
    page.click(f'{cond("")} > .group-head .add-condition')
    page.select_option(f'{cond("/rules/0")} .cond-field', "events.")
    page.select_option(f'{cond("/rules/0")} .agg-measure', "sum")
    page.fill(f'{cond("/rules/0")} .agg-property', "amount")
    page.select_option(f'{cond("/rules/0")} .cond-op', ">=")
    page.fill(f'{cond("/rules/0")} .cond-value', "100")
    page.fill(f'{cond("/rules/0")} .agg-window', "30")
    page.fill(f'{cond("/rules/0")} .agg-where-key', "currency")
    page.fill(f'{cond("/rules/0")} .agg-where-value', "EUR")
    page.select_option(f'{cond("")} > .group-head .group-combinator', "or")
    page.click(f'{cond("")} > .group-head .add-condition')
    page.select_option(f'{cond("/rules/1")} .cond-field', "segment")
    page.select_option(f'{cond("/rules/1")} .cond-value', "subscribed-vips")
    page.click(f'{cond("")} > .group-head .add-condition')
    set_condition(page, "/rules/2", "last_contact_at", "withinLast")
    page.fill(f'{cond("/rules/2")} .cond-value', "7")
    page.click(f'{cond("")} > .group-head .add-condition')
    set_condition(page, "/rules/3", "created_at", "between")
    page.fill(f'{cond("/rules/3")} .cond-value', "2026-01-01")
    page.fill(f'{cond("/rules/3")} .cond-value-hi', "2026-01-31")
    rule = {"combinator": "or", "not": False, "rules": [
        {"field": "events.purchase.sum.amount", "operator": ">=", "value": 100, "window": "30 days",
         "where": {"currency": "EUR"}},
        {"field": "segment", "operator": "memberOf", "value": "subscribed-vips"},
        {"field": "last_contact_at", "operator": "withinLast", "value": "7 days"},
        # A day picked as the upper bound means the whole day.
        {"field": "created_at", "operator": "between", "value": ["2026-01-01", "2026-01-31T23:59:59.999"]}]}
    status, api = console_site.api("POST", f"{WS}/preview", body={"object_type": "contact", "rule": rule})
    assert status == 200 and api["count"] > 0, api
    expect(page.locator(".preview-count")).to_have_text(str(api["count"]))
    page.wait_for_load_state("networkidle")
    assert last_preview_rule(requests) == rule
    shot(page, "builder-behaviour")
