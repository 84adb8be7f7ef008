"""Checks every paging loop makes, so that a provider that contradicts itself fails the
task clearly instead of ending a listing early (a full sync would then sweep away what
it did not see) or looping forever."""

from __future__ import annotations

from .base import ProviderError


class CursorTrail:
    """The cursors one listing has moved through. A cursor that comes back means the
    provider is looping: ProviderError."""

    def __init__(self, where: str, start: str | None = None) -> None:
        self.where = where
        self.seen: set[str] = {start} if start else set()

    def advance(self, cursor: str) -> str:
        if cursor in self.seen:
            raise ProviderError(
                f"{self.where} returned a cursor it had already returned ({cursor[:64]!r}): "
                "its paging loops"
            )
        self.seen.add(cursor)
        return cursor


def more_without_objects(where: str) -> ProviderError:
    """The error for a page with no objects that says more follow, and no way on."""
    return ProviderError(
        f"{where} returned an empty page that says more follow: the listing cannot go on "
        "and is not complete"
    )
