"""What a rule sees besides the record's fields: the time, the record's other memberships and its
behavioural activity. Kept apart from the fields so plain field conditions stay one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Set
from typing import Any

EMPTY_ACTIVITY: Mapping[str, Any] = {}


class Context:
    """Evaluation context: ``now`` (epoch ms), segment ids the record is in, activity (see activity.py)."""

    __slots__ = ("now", "members", "activity")

    def __init__(
        self,
        now: int,
        members: Set[str] = frozenset(),
        activity: Mapping[str, Any] = EMPTY_ACTIVITY,
    ) -> None:
        self.now = now
        self.members = members
        self.activity = activity


class _WallClockContext(Context):
    """The default for callers that pass no context: wall-clock now, no memberships, no activity."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    @property
    def now(self) -> int:  # type: ignore[override]
        return time.time_ns() // 1_000_000

    @property
    def members(self) -> Set[str]:  # type: ignore[override]
        return frozenset()

    @property
    def activity(self) -> Mapping[str, Any]:  # type: ignore[override]
        return EMPTY_ACTIVITY


WALL_CLOCK: Context = _WallClockContext()
