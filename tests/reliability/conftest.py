"""Fixtures of the reliability suite: every scenario draws its workload and its fault points from one seed,
random per run (so runs explore) unless RELIABILITY_SEED pins it; a failing test names its seed."""
from __future__ import annotations

import os
import random
from typing import Any, Iterator

import pytest

SEED_VARIABLE = "RELIABILITY_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The test's seed: RELIABILITY_SEED if set, else a fresh random one (reported when the test fails)."""
    value = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**31))
    request.node.user_properties.append(("seed", value))
    print(f"seed {value} (rerun with {SEED_VARIABLE}={value})")
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Add the seed to a failed test's report, so it is printed with the failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("reliability seed", f"{SEED_VARIABLE}={value}"))
