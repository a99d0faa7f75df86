"""Which segments can a change to some fields affect?

A segment is re-evaluated for a record only if it reads at least one changed field;
this dict-of-sets is the first cut (predicate indexing can replace it behind the same API).
"""

from __future__ import annotations

from collections.abc import Iterable


class FieldIndex:
    """field -> ids of the segments whose rules read it."""

    __slots__ = ("_by_field", "_by_segment")

    def __init__(self) -> None:
        self._by_field: dict[str, set[str]] = {}
        self._by_segment: dict[str, frozenset[str]] = {}

    def add(self, segment_id: str, fields: Iterable[str]) -> None:
        """Register (or re-register after an edit) a segment with the fields it reads."""
        self.remove(segment_id)
        frozen = frozenset(fields)
        self._by_segment[segment_id] = frozen
        for field in frozen:
            self._by_field.setdefault(field, set()).add(segment_id)

    def remove(self, segment_id: str) -> None:
        """Forget a segment; unknown ids are ignored so deletes are idempotent."""
        fields = self._by_segment.pop(segment_id, None)
        if not fields:
            return
        for field in fields:
            ids = self._by_field.get(field)
            if ids is not None:
                ids.discard(segment_id)
                if not ids:
                    del self._by_field[field]

    def affected(self, changed_fields: Iterable[str]) -> set[str]:
        """Ids of segments reading any of ``changed_fields`` (a new set the caller may keep)."""
        out: set[str] = set()
        by_field = self._by_field
        for field in changed_fields:
            ids = by_field.get(field)
            if ids:
                out |= ids
        return out

    def fields_of(self, segment_id: str) -> frozenset[str]:
        return self._by_segment.get(segment_id, frozenset())

    def __contains__(self, segment_id: object) -> bool:
        return segment_id in self._by_segment

    def __len__(self) -> int:
        return len(self._by_segment)
