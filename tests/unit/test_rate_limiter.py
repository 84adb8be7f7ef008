"""The shared rate limiter reserves allowance in chunks, not per request."""

from __future__ import annotations

from typing import Any, cast

from supasaasy.db import Database
from supasaasy.sync import SharedRateLimiter


class Allowance:
    """Stands in for Database.take_rate_allowance and records its calls."""

    def __init__(self, waits: list[float]) -> None:
        self.calls: list[tuple[str, float, int]] = []
        self.returned: list[int] = []
        self.waits = waits

    def take_rate_allowance(self, key: str, per_second: float, requests: int) -> float:
        self.calls.append((key, per_second, requests))
        return self.waits.pop(0) if self.waits else 0.0

    def return_rate_allowance(self, key: str, per_second: float, requests: int) -> None:
        self.returned.append(requests)


def limiter(db: Any, **kwargs: Any) -> tuple[SharedRateLimiter, list[float]]:
    slept: list[float] = []
    made = SharedRateLimiter(cast(Database, db), "stripe_main", 25.0, sleep=slept.append,
                             **kwargs)  # fmt: skip
    return made, slept


def test_one_reservation_per_chunk_of_requests() -> None:
    db = Allowance([])
    made, slept = limiter(db)
    for _ in range(100):
        made.acquire()
    assert made.chunk == 25  # a second's worth
    assert db.calls == [("stripe_main", 25.0, 25)] * 4
    assert slept == []


def test_the_caller_waits_what_the_database_says() -> None:
    db = Allowance([0.0, 0.4, 0.0])
    made, slept = limiter(db, chunk=2)
    for _ in range(6):
        made.acquire()
    assert len(db.calls) == 3
    assert slept == [0.4]


def test_what_is_left_is_given_back() -> None:
    db = Allowance([])
    made, _ = limiter(db)
    for _ in range(30):
        made.acquire()
    made.close()
    made.close()
    assert db.returned == [20]  # 2 chunks of 25 taken, 30 used
