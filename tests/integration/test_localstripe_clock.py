"""Customers listed as Stripe lists them, and the test clock (`/_config/clock`) of the
patched localstripe, against a real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from test_localstripe import (
    client_for,
    delivered,
    events,
    ids,
    list_all,
    ok,
    paying_customer,
    webhook_endpoint,
)
from test_localstripe import localstripe_url as localstripe_url  # fixture: one server
from test_localstripe import stripe as stripe  # fixture: a client on it, emptied

from supasaasy.devstack.localstripe import register_webhook, running_localstripe

DAY = 86400


def set_clock(client: httpx.Client, offset: int) -> None:
    assert ok(client.post("/_config/clock", json={"offset_seconds": offset})) == {
        "offset_seconds": offset
    }


@pytest.fixture
def clock(stripe: httpx.Client) -> Iterator[Callable[[int], None]]:
    """Sets the server's test clock; put back to the real time at the end (the server is
    shared by the module's tests)."""
    try:
        yield lambda offset: set_clock(stripe, offset)
    finally:
        set_clock(stripe, 0)


def customer_at(client: httpx.Client, offset: int, **data: str) -> Any:
    """A customer made while the clock is `offset` seconds from the real time; its
    `created` must be that shifted time."""
    before = int(time.time())
    customer = ok(client.post("/v1/customers", data=data))
    after = int(time.time())
    assert before + offset <= customer["created"] <= after + offset
    return customer


def test_customers_come_newest_first_and_page_with_starting_after(stripe: httpx.Client) -> None:
    made = [
        ok(stripe.post("/v1/customers", data={"email": f"c{i % 3}@example.com"}))["id"]
        for i in range(7)
    ]
    assert ids(ok(stripe.get("/v1/customers"))["data"]) == made[::-1]
    first = ok(stripe.get("/v1/customers", params={"limit": "3"}))
    assert ids(first["data"]) == made[:-4:-1] and first["has_more"] is True
    after = ok(stripe.get("/v1/customers", params={"limit": "3", "starting_after": made[4]}))
    assert ids(after["data"]) == made[3::-1][:3] and after["has_more"] is True
    for limit in (1, 2, 3, 7, 100):
        assert ids(list_all(stripe, "/v1/customers", limit=limit)) == made[::-1]
    # `email` is still a filter, newest first and paged.
    same = [made[i] for i in (0, 3, 6)][::-1]
    assert ids(list_all(stripe, "/v1/customers", limit=2, email="c0@example.com")) == same
    assert list_all(stripe, "/v1/customers", email="nobody@example.com") == []


def test_customers_are_selected_by_creation_time(
    stripe: httpx.Client, clock: Callable[[int], None]
) -> None:
    made = []
    for offset in (-3 * DAY, -2 * DAY, -DAY, 0):
        clock(offset)
        made.append(customer_at(stripe, offset))
    newest_first = ids(made)[::-1]
    assert ids(list_all(stripe, "/v1/customers", limit=1)) == newest_first
    for i, customer in enumerate(made):
        t = customer["created"]
        later = list_all(stripe, "/v1/customers", limit=1, **{"created[gte]": str(t)})
        earlier = list_all(stripe, "/v1/customers", limit=1, **{"created[lt]": str(t)})
        assert ids(later) == ids(made[i:])[::-1]
        assert ids(earlier) == ids(made[:i])[::-1]
        assert ids(list_all(stripe, "/v1/customers", created=str(t))) == [customer["id"]]
    two_days = {"created[gt]": str(made[0]["created"]), "created[lte]": str(made[2]["created"])}
    assert ids(list_all(stripe, "/v1/customers", **two_days)) == [made[2]["id"], made[1]["id"]]
    assert ok(stripe.get(f"/v1/customers/{made[0]['id']}"))["created"] == made[0]["created"]


def one_created(client: httpx.Client, customer: str) -> int:
    created: int = ok(client.get(f"/v1/customers/{customer}"))["created"]
    return created


def test_customer_lists_refuse_a_bad_created_and_unknown_filters(stripe: httpx.Client) -> None:
    one = ok(stripe.post("/v1/customers", data={"email": "one@example.com"}))["id"]
    # Good ones are taken: the same parameters, well formed.
    for good in ({"created[gte]": "1"}, {"created": str(one_created(stripe, one))}):
        assert ids(ok(stripe.get("/v1/customers", params=good))["data"]) == [one], good
    for bad in (
        {"created[after]": "1"},
        {"created": "yesterday"},
        {"created[gte]": "soon"},
        {"unknown": "1"},
        {"customer": "cus_nope"},
    ):
        response = stripe.get("/v1/customers", params=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["message"], bad


def test_the_clock_stamps_new_objects_and_their_events(
    stripe: httpx.Client, clock: Callable[[int], None]
) -> None:
    now = customer_at(stripe, 0)
    clock(-2 * DAY)
    assert ok(stripe.get("/_config/clock")) == {"offset_seconds": -2 * DAY}
    past = customer_at(stripe, -2 * DAY, email="past@example.com")
    clock(3600)
    future = customer_at(stripe, 3600)

    created = {e["data"]["object"]["id"]: e for e in events(stripe, type="customer.created")}
    for customer in (now, past, future):
        assert created[customer["id"]]["created"] == customer["created"]
    # What was made before the clock moved is unchanged.
    assert ok(stripe.get(f"/v1/customers/{now['id']}"))["created"] == now["created"]
    # The events' `created` ranges select by the shifted time too.
    since = {"created[lt]": str(now["created"])}
    assert [e["data"]["object"]["id"] for e in events(stripe, **since)] == [past["id"]]

    # The other stamps localstripe takes (a subscription's period, from time.time()) and
    # the ones the patches take (a payment intent's `canceled_at`) follow the clock.
    clock(-DAY)
    before = int(time.time()) - DAY
    payer = paying_customer(stripe)["id"]
    product = ok(stripe.post("/v1/products", data={"name": "Clocked"}))["id"]
    plan = ok(
        stripe.post(
            "/v1/plans",
            data={"product": product, "amount": "900", "currency": "usd", "interval": "month"},
        )
    )["id"]
    subscription = ok(
        stripe.post("/v1/subscriptions", data={"customer": payer, "items[0][plan]": plan})
    )
    intent = ok(stripe.post("/v1/payment_intents", data={"amount": "100", "currency": "usd"}))
    intent = ok(stripe.post(f"/v1/payment_intents/{intent['id']}/cancel"))
    after = int(time.time()) - DAY
    for stamp in (
        subscription["created"],
        subscription["start_date"],
        subscription["current_period_start"],
        intent["created"],
        intent["canceled_at"],
    ):
        assert before <= stamp <= after


def test_the_clock_refuses_bad_bodies(stripe: httpx.Client, clock: Callable[[int], None]) -> None:
    clock(-DAY)
    for body, named in (
        ("[]", "JSON object"),
        ("null", "JSON object"),
        ("not json", "JSON object"),
        ("", "JSON object"),
        ("{}", "offset_seconds is required"),
        ('{"offset": 5}', "offset_seconds is required"),
        ('{"offset_seconds": "5"}', "integer"),
        ('{"offset_seconds": 1.5}', "integer"),
        ('{"offset_seconds": null}', "integer"),
        ('{"offset_seconds": true}', "integer"),
        ('{"offset_seconds": false}', "integer"),
        ('{"offset_seconds": 10000000000}', "within"),
        ('{"offset_seconds": 5, "frozen_time": 1}', "frozen_time"),
    ):
        response = stripe.post(
            "/_config/clock", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (body, response.text)
        assert named in response.json()["error"], (body, response.text)
    # Nothing was changed by the refused bodies.
    assert ok(stripe.get("/_config/clock")) == {"offset_seconds": -DAY}
    customer_at(stripe, -DAY)


def test_the_clock_resets_to_the_real_time(
    stripe: httpx.Client, clock: Callable[[int], None]
) -> None:
    clock(-5 * DAY)
    customer_at(stripe, -5 * DAY)
    clock(0)
    assert ok(stripe.get("/_config/clock")) == {"offset_seconds": 0}
    customer_at(stripe, 0)
    assert events(stripe, **{"created[lt]": str(int(time.time()) - DAY)})  # the earlier one


def test_webhooks_are_signed_with_the_real_time_whatever_the_clock() -> None:
    with (
        webhook_endpoint() as (endpoint, received),
        running_localstripe() as url,
        client_for(url) as client,
    ):
        register_webhook(url, endpoint, "whsec_test")
        set_clock(client, -3 * DAY)
        sent = int(time.time())
        customer = customer_at(client, -3 * DAY)
        delivered(received)
    assert len(received) == 1
    signature, body = received[0]
    event = json.loads(body)
    assert (event["type"], event["data"]["object"]["id"]) == ("customer.created", customer["id"])
    assert event["created"] == customer["created"]
    stamps = dict(part.split("=", 1) for part in signature.split(","))
    assert sent <= int(stamps["t"]) <= int(time.time())
    expected = hmac.new(b"whsec_test", stamps["t"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(stamps["v1"], expected.hexdigest())
