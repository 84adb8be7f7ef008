"""The shared rate limiter reserves allowance in chunks, not per request, sized to the
worker's pace."""

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
    made, slept = limiter(db, chunk=25)
    for _ in range(100):
        made.acquire()
    assert db.calls == [("stripe_main", 25.0, 25)] * 4
    assert slept == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_chunks_start_small_and_grow_to_a_seconds_worth_at_a_fast_pace() -> None:
    db = Allowance([])
    clock = Clock()
    made, _ = limiter(db, monotonic=clock)
    for _ in range(80):
        made.acquire()
        clock.now += 0.01  # 100 requests a second: each chunk runs out in under 0.5 s
    assert [requests for _, _, requests in db.calls] == [3, 6, 12, 24, 25, 25]
    assert made.chunk == 25  # a second's worth, no more


def test_chunks_shrink_at_a_slow_pace_and_stay_at_a_steady_one() -> None:
    db = Allowance([])
    clock = Clock()
    made, _ = limiter(db, monotonic=clock)
    for _ in range(9):
        made.acquire()
        clock.now += 1.0  # one request a second: a chunk of 3 lasts 3 s
    assert [requests for _, _, requests in db.calls] == [3, 1, 1, 1, 1, 1, 1]
    steady = Allowance([])
    made, _ = limiter(steady, monotonic=clock)
    for _ in range(30):
        made.acquire()
        clock.now += 0.3  # a chunk of 3 lasts about CHUNK_SECONDS
    assert {requests for _, _, requests in steady.calls} == {3}


def test_the_caller_waits_what_the_database_says() -> None:
    db = Allowance([0.0, 0.4, 0.0])
    made, slept = limiter(db, chunk=2)
    for _ in range(6):
        made.acquire()
    assert len(db.calls) == 3
    assert slept == [0.4]


def test_what_is_left_is_given_back() -> None:
    db = Allowance([])
    made, _ = limiter(db, chunk=25)
    for _ in range(30):
        made.acquire()
    made.close()
    made.close()
    assert db.returned == [20]  # 2 chunks of 25 taken, 30 used
