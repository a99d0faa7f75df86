"""The console in a real browser: Debian's headless Chromium driven by Playwright, against one real worker
and the real broker shared by every browser test of the session (a worker per test would cost ~10 s each).

Tests must leave the shared workspace usable for the others: create their own segments with unique
names rather than editing the fixture ones. Screenshots land in .artifacts/console/ (gitignored): look at them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from engine.broker import LocalBroker
from engine.sample_data import full_contact
from tests.conftest import REPO, Harness, shared_harness
from tests.reliability.hostile import call_json
from tests.tools import chromium_binary

SHOTS = REPO / ".artifacts" / "console"
CONTACTS = 60  # c0 … c59 in acme, full sample contacts


@dataclass
class ConsoleSite:
    harness: Harness
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/console/"

    def api(self, method: str, path: str, token: str = "acme-admin", body: Any = None) -> tuple[int, Any]:
        """The HTTP API, to compare what the console shows with what the API says."""
        return call_json(self.port, method, path, token, body)


@pytest.fixture(scope="session")
def console_site(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    with shared_harness(broker, tmp_path_factory, "console") as harness:
        harness.define_fixture_segments("acme")
        rng = random.Random(7)
        harness.publisher.publish_batches("acme", [
            {"op": "upsert", "object_type": "contact", "id": f"c{i}", "version": 1, "fields": full_contact(rng)}
            for i in range(CONTACTS)], batch_size=20)
        harness.publisher.flush()
        worker = harness.start_worker()
        site = ConsoleSite(harness, worker.web_port)
        harness.wait_for(lambda: site.api("GET", "/v1/workspaces/acme/records/contact/c59")[0] == 200,
                         what="the sample contacts applied")
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API keeps an asyncio loop running in this thread while
    it is open, and later tests that call asyncio.run() would fail with "cannot be called from a running
    event loop"."""
    from playwright.sync_api import sync_playwright

    executable = chromium_binary()
    with sync_playwright() as playwright:
        # Flags as measured on these machines: without the background-networking ones Chromium keeps
        # trying to reach Google's hosts, which this closed network refuses.
        launched = playwright.chromium.launch(executable_path=str(executable), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, console_site: ConsoleSite) -> Iterator[Any]:
    """A fresh browser tab (own storage, so no token carries over), 1366x900, failing on a page error."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def sign_in(page: Any, site: ConsoleSite, token: str = "acme-admin", route: str = "") -> None:
    """Open the console, enter the token on the sign-in form, and wait for the navigation to appear."""
    page.goto(site.url + (f"#/{route}" if route else ""))
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#nav a")


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot kept as a test artefact: .artifacts/console/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
