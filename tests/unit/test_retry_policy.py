"""Retry-After: seconds or an HTTP date; anything else falls back to exponential backoff."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from supasaasy.connectors.http import ProviderClient, RetryPolicy, retry_after_seconds

POLICY = RetryPolicy(base_delay=1.0, max_delay=30.0)
ATTEMPT = 4  # backoff 1.0 * 2**3 = 8, with jitter between 4 and 8
NOW = datetime(2015, 10, 21, 7, 27, 50, tzinfo=UTC)
API = "https://provider.test"


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("2", 2.0), ("1.5", 1.5),
                                                 (" 7 ", 7.0), ("120", 30.0)])  # fmt: skip
def test_seconds_are_honoured_up_to_max_delay(value: str, expected: float) -> None:
    assert POLICY.delay(ATTEMPT, value) == expected


@pytest.mark.parametrize(
    "value",
    ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-5", "-0.1", "soon", "", None],
)
def test_anything_else_falls_back_to_backoff(value: str | None) -> None:
    for _ in range(20):
        delay = POLICY.delay(ATTEMPT, value)
        assert math.isfinite(delay) and 4.0 <= delay <= 8.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 10.0),  # RFC 850, obsolete
        ("Wed Oct 21 07:28:00 2015", 10.0),  # asctime, obsolete
        ("Wed, 21 Oct 2015 07:28:00 -0000", 10.0),
        ("Wed, 21 Oct 2015 09:28:30 +0200", 40.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # past
        ("Wed, 32 Oct 2015 07:28:00 GMT", None),
        ("-5", None),
        ("nan", None),
    ],
)
def test_retry_after_as_seconds_from_now(value: str, expected: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == expected


def test_an_http_date_is_waited_for_up_to_max_delay() -> None:
    assert 8.0 <= POLICY.delay(ATTEMPT, http_date(10)) <= 10.0
    assert POLICY.delay(ATTEMPT, http_date(3600)) == 30.0
    assert POLICY.delay(ATTEMPT, http_date(-3600)) == 0.0


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
@respx.mock(base_url=API, assert_all_called=True)
def test_a_bad_retry_after_does_not_fail_the_request(
    respx_mock: respx.MockRouter, value: str
) -> None:
    respx_mock.get("/things").mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": value}),
        httpx.Response(200, json={"ok": True}),
    ])  # fmt: skip
    slept: list[float] = []
    client = ProviderClient("Provider", httpx.Client(base_url=API), acquire=lambda: None,
                            retry=RetryPolicy(base_delay=0.5), sleep=slept.append)  # fmt: skip
    assert client.get_json("/things") == {"ok": True}
    assert len(slept) == 1 and 0.25 <= slept[0] <= 0.5
