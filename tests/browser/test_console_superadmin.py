"""A superadmin in the console: the header offers every workspace (the "All companies" filter) and the
views act in the one picked; an admin of one workspace gets no such choice."""
from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleSite, shot, sign_in


def test_a_superadmin_picks_any_workspace_and_acts_in_it(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, token="platform", route="segments/contact")
    picker = page.locator("select#workspace")
    expect(picker).to_be_visible()
    status, listed = console_site.api("GET", "/v1/workspaces", token="platform")
    assert status == 200
    assert picker.locator("option").all_inner_texts() == [w["name"] for w in listed["workspaces"]]
    picker.select_option("acme")
    expect(page.locator("#view table")).to_contain_text("High-value customers in Poland")
    shot(page, "superadmin-acme")
    picker.select_option("globex")  # globex has no segments: acme's must not linger on the page
    expect(page.locator("#view")).not_to_contain_text("High-value customers in Poland")
    expect(page.locator("#who")).to_contain_text("root (superadmin)")
    shot(page, "superadmin-globex")


def test_an_admin_of_one_workspace_gets_no_workspace_choice(page: Any, console_site: ConsoleSite) -> None:
    sign_in(page, console_site, token="acme-admin")
    expect(page.locator("#who")).to_contain_text("acme")
    assert page.locator("select#workspace").count() == 0
