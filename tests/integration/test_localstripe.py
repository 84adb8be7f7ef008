"""The patched localstripe launcher and the Stripe seeder, against real server processes."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.processes import StackError
from supasaasy.devstack.seed import build_dataset, form_encode, seed_stripe

API_KEY = "sk_test_supasaasy"
SHARED_PICKLE = Path("/tmp/localstripe.pickle")


def client_for(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30.0)


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    with running_localstripe() as url:
        yield url


@pytest.fixture
def stripe(localstripe_url: str) -> Iterator[httpx.Client]:
    """A client on the module's server, whose store was just emptied."""
    with client_for(localstripe_url) as client:
        client.delete("/_config/data").raise_for_status()
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def list_all(client: httpx.Client, path: str, limit: int = 100, **params: str) -> list[Any]:
    """Every object of a list endpoint, paging with starting_after; each must come once."""
    objects: list[Any] = []
    after: str | None = None
    for _ in range(1000):
        query = {**params, "limit": str(limit)}
        if after is not None:
            query["starting_after"] = after
        page = ok(client.get(path, params=query))
        assert page["object"] == "list"
        assert len(page["data"]) <= limit
        objects += page["data"]
        if not page["has_more"]:
            ids = [o["id"] for o in objects]
            assert len(ids) == len(set(ids)), f"{path} returned an object twice"
            return objects
        after = page["data"][-1]["id"]
    raise AssertionError(f"{path} kept answering has_more")


@contextlib.contextmanager
def webhook_endpoint() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A local endpoint for localstripe's webhooks: its URL, and the (Stripe-Signature,
    body) of each delivery it gets."""
    received: list[tuple[str, bytes]] = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Stripe-Signature"], body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint) as endpoint:
        threading.Thread(target=endpoint.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{endpoint.server_port}/", received
        finally:
            endpoint.shutdown()


def delivered(received: list[tuple[str, bytes]], seconds: float = 10) -> None:
    """Wait until a delivery came (or `seconds` passed)."""
    deadline = time.monotonic() + seconds
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)


def ids(objects: list[Any]) -> list[str]:
    return [o["id"] for o in objects]


def events(client: httpx.Client, **params: str) -> list[Any]:
    return list_all(client, "/v1/events", **params)


def next_second() -> int:
    """Wait for the clock's next whole second and return it (events are stamped in seconds)."""
    start = int(time.time()) + 1
    time.sleep(max(0.0, start - time.time()))
    return start


def create_plan(client: httpx.Client, product: str, amount: int, **extra: str) -> Any:
    data = {"product": product, "amount": str(amount), "currency": "usd", "interval": "month"}
    return ok(client.post("/v1/plans", data={**data, **extra}))


def paying_customer(client: httpx.Client) -> Any:
    return ok(
        client.post(
            "/v1/customers",
            data={
                "email": "payer@example.com",
                "payment_method": "pm_card_visa",
                "invoice_settings[default_payment_method]": "pm_card_visa",
            },
        )
    )


def test_each_server_is_its_own_empty_store_and_nothing_is_written_to_tmp() -> None:
    before = SHARED_PICKLE.stat().st_mtime_ns if SHARED_PICKLE.exists() else None
    with (
        running_localstripe() as first_url,
        running_localstripe() as second_url,
        client_for(first_url) as first,
        client_for(second_url) as second,
    ):
        assert first_url != second_url
        assert ok(first.get("/v1/customers"))["data"] == []
        assert ok(second.get("/v1/customers"))["data"] == []

        created = ok(first.post("/v1/customers", data={"email": "only@first.example"}))
        assert created["id"].startswith("cus_")
        assert ids(ok(first.get("/v1/customers"))["data"]) == [created["id"]]
        assert ok(second.get("/v1/customers"))["data"] == []
        assert second.get(f"/v1/customers/{created['id']}").status_code == 404
        assert ok(second.get("/v1/events"))["data"] == []
    after = SHARED_PICKLE.stat().st_mtime_ns if SHARED_PICKLE.exists() else None
    assert after == before, "the launcher wrote /tmp/localstripe.pickle"


def test_binds_only_the_host_given(localstripe_url: str) -> None:
    port = int(localstripe_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    # localstripe's own start() binds `::`, which answers on every address.
    for other in ("127.0.0.2", "::1"):
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


def test_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=str(port)), running_localstripe(port):
            pass


def test_customer_pagination_returns_each_customer_once(stripe: httpx.Client) -> None:
    created = [
        ok(stripe.post("/v1/customers", data={"email": f"c{i}@example.com"}))["id"]
        for i in range(23)
    ]
    pages = 0
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "5"} | ({"starting_after": after} if after else {})
        page = ok(stripe.get("/v1/customers", params=params))
        pages += 1
        seen += ids(page["data"])
        if not page["has_more"]:
            break
        assert len(page["data"]) == 5
        after = page["data"][-1]["id"]
    assert pages == 5
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


def test_events_filter_by_types_and_created(stripe: httpx.Client) -> None:
    early = ok(stripe.post("/v1/customers", data={"email": "early@example.com"}))["id"]
    ok(stripe.post(f"/v1/customers/{early}", data={"metadata[step]": "1"}))
    since = next_second()
    late = ok(stripe.post("/v1/customers", data={"email": "late@example.com"}))["id"]
    ok(stripe.post(f"/v1/customers/{late}", data={"metadata[step]": "2"}))
    ok(stripe.delete(f"/v1/customers/{late}"))

    both = {"types[0]": "customer.updated", "types[1]": "customer.deleted"}
    found = events(stripe, **both, **{"created[gte]": str(since)})
    assert sorted((e["type"], e["data"]["object"]["id"]) for e in found) == [
        ("customer.deleted", late),
        ("customer.updated", late),
    ]
    assert all(e["created"] >= since for e in found)
    assert sorted((e["type"], e["data"]["object"]["id"]) for e in events(stripe, **both)) == sorted(
        [("customer.deleted", late), ("customer.updated", early), ("customer.updated", late)]
    )
    # Paging keeps the filter.
    assert len(events(stripe, limit=1, **both)) == 3
    assert events(stripe, **both, **{"created[gte]": str(since + 3600)}) == []

    # The single `type` still works, with and without `created`.
    updated = events(stripe, type="customer.updated")
    assert sorted(e["data"]["object"]["id"] for e in updated) == sorted([early, late])
    assert ids(events(stripe, type="customer.updated", **{"created[gte]": str(since)})) == [
        e["id"] for e in updated if e["data"]["object"]["id"] == late
    ]
    created = events(stripe, **{"types[0]": "customer.created"})
    assert sorted(e["data"]["object"]["id"] for e in created) == sorted([early, late])

    for bad in (
        {"types[0]": "customer.updated", "type": "customer.deleted"},  # not both
        {f"types[{i}]": f"customer.t{i}" for i in range(21)},  # at most 20
        {"types": "customer.updated"},  # an array, not a string
        {"unknown": "1"},
    ):
        assert stripe.get("/v1/events", params=bad).status_code == 400, bad


def test_plans_are_listed_and_retrieved_as_prices(stripe: httpx.Client) -> None:
    first = ok(stripe.post("/v1/products", data={"name": "First"}))["id"]
    second = ok(stripe.post("/v1/products", data={"name": "Second"}))["id"]
    monthly = create_plan(
        stripe, first, 1500, nickname="First Monthly", **{"metadata[tier]": "pro"}
    )
    yearly = create_plan(stripe, first, 15000, interval="year", active="false")
    quarterly = create_plan(stripe, second, 700, interval_count="3")

    prices = {p["id"]: p for p in list_all(stripe, "/v1/prices")}
    assert set(prices) == {monthly["id"], yearly["id"], quarterly["id"]}
    price = prices[monthly["id"]]
    assert price == {
        "id": monthly["id"],
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": monthly["created"],
        "currency": "usd",
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {"tier": "pro"},
        "nickname": "First Monthly",
        "product": first,
        "recurring": {
            "aggregate_usage": None,
            "interval": "month",
            "interval_count": 1,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
    }
    assert prices[yearly["id"]]["unit_amount"] == 15000
    assert prices[yearly["id"]]["active"] is False
    assert prices[yearly["id"]]["recurring"]["interval"] == "year"
    assert prices[quarterly["id"]]["recurring"]["interval_count"] == 3

    assert ids(list_all(stripe, "/v1/prices", active="false")) == [yearly["id"]]
    assert sorted(ids(list_all(stripe, "/v1/prices", active="true"))) == sorted(
        [monthly["id"], quarterly["id"]]
    )
    assert ids(list_all(stripe, "/v1/prices", product=second)) == [quarterly["id"]]
    assert ids(list_all(stripe, "/v1/prices", product=first, active="true")) == [monthly["id"]]
    assert sorted(ids(list_all(stripe, "/v1/prices", limit=1))) == sorted(prices)

    assert ok(stripe.get(f"/v1/prices/{monthly['id']}")) == price
    assert stripe.get("/v1/prices/plan_doesnotexist").status_code == 404
    assert stripe.get("/v1/prices", params={"lookup_keys[0]": "x"}).status_code == 400
    assert stripe.get("/v1/prices", params={"limit": "0"}).status_code == 400

    # Stripe sends price.* events along with plan.* events.
    created = events(stripe, type="price.created")
    assert sorted(e["data"]["object"]["id"] for e in created) == sorted(prices)
    assert all(e["data"]["object"]["object"] == "price" for e in created)


def test_product_and_plan_changes_emit_events(stripe: httpx.Client) -> None:
    product = ok(stripe.post("/v1/products", data={"name": "Before"}))["id"]
    updated = ok(stripe.post(f"/v1/products/{product}", data={"name": "After"}))
    assert updated["name"] == "After"
    plan = create_plan(stripe, product, 900)["id"]
    # Stripe refuses to delete a product with prices; localstripe would orphan them.
    assert stripe.delete(f"/v1/products/{product}").status_code == 400
    assert ids(list_all(stripe, "/v1/plans")) == [plan]

    ok(stripe.post(f"/v1/plans/{plan}", data={"nickname": "Renamed"}))
    assert ok(stripe.delete(f"/v1/plans/{plan}"))["deleted"] is True
    assert ok(stripe.delete(f"/v1/products/{product}"))["deleted"] is True
    assert stripe.get(f"/v1/products/{product}").status_code == 404
    assert stripe.get(f"/v1/prices/{plan}").status_code == 404

    kinds = [
        "product.updated",
        "product.deleted",
        "plan.updated",
        "plan.deleted",
        "price.updated",
        "price.deleted",
    ]
    found = events(stripe, **{f"types[{i}]": kind for i, kind in enumerate(kinds)})
    assert sorted(e["type"] for e in found) == sorted(kinds)
    by_type = {e["type"]: e["data"]["object"] for e in found}
    assert by_type["product.updated"]["id"] == by_type["product.deleted"]["id"] == product
    assert by_type["product.updated"]["name"] == "After"
    assert by_type["plan.updated"]["id"] == by_type["plan.deleted"]["id"] == plan
    assert by_type["plan.updated"]["nickname"] == "Renamed"
    assert by_type["price.updated"]["object"] == "price"
    assert by_type["price.deleted"]["id"] == plan


def test_subscriptions_with_several_items_and_their_events(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    plans = [
        create_plan(stripe, ok(stripe.post("/v1/products", data={"name": f"P{i}"}))["id"], 100)[
            "id"
        ]
        for i in range(3)
    ]
    subscription = ok(
        stripe.post(
            "/v1/subscriptions",
            data={
                "customer": customer,
                "items[0][plan]": plans[0],
                "items[1][price]": plans[1],  # what Stripe's clients send today
                "items[1][quantity]": "2",
                "items[2][plan]": plans[2],
            },
        )
    )
    sid = subscription["id"]
    assert subscription["status"] == "active"
    items = subscription["items"]["data"]
    assert [i["plan"]["id"] for i in items] == plans
    assert [i["price"]["id"] for i in items] == plans
    assert [i["quantity"] for i in items] == [1, 2, 1]
    assert {i["subscription"] for i in items} == {sid}
    listed = list_all(stripe, "/v1/subscription_items", subscription=sid)
    assert ids(listed) == ids(items)
    assert (
        stripe.get("/v1/subscription_items", params={"subscription": "sub_nope"}).status_code == 404
    )

    # A bad extra item creates nothing.
    before = ids(list_all(stripe, "/v1/subscriptions", status="all"))
    refused = stripe.post(
        "/v1/subscriptions",
        data={"customer": customer, "items[0][plan]": plans[0], "items[1][plan]": "plan_nope"},
    )
    assert refused.status_code == 404
    duplicate = stripe.post(
        "/v1/subscriptions",
        data={"customer": customer, "items[0][plan]": plans[0], "items[1][plan]": plans[0]},
    )
    assert duplicate.status_code == 400
    assert ids(list_all(stripe, "/v1/subscriptions", status="all")) == before

    ok(stripe.post(f"/v1/subscriptions/{sid}", data={"metadata[note]": "changed"}))
    canceled = ok(stripe.delete(f"/v1/subscriptions/{sid}"))
    assert canceled["status"] == "canceled"

    kinds = ["created", "updated", "deleted"]
    found = events(
        stripe, **{f"types[{i}]": f"customer.subscription.{k}" for i, k in enumerate(kinds)}
    )
    by_type = {e["type"]: e["data"]["object"] for e in found}
    assert len(found) == 3
    assert {o["id"] for o in by_type.values()} == {sid}
    assert ids(by_type["customer.subscription.created"]["items"]["data"]) == ids(items)
    assert by_type["customer.subscription.updated"]["metadata"] == {"note": "changed"}
    assert by_type["customer.subscription.deleted"]["status"] == "canceled"


def test_seeding_creates_exactly_the_dataset(stripe: httpx.Client, localstripe_url: str) -> None:
    summary = seed_stripe(
        localstripe_url,
        API_KEY,
        customers=300,
        products=20,
        plans_per_product=2,
        subscriptions=60,
        seed=7,
    )
    assert summary.counts() == {
        "customers": 300,
        "products": 20,
        "plans": 40,
        "subscriptions": 60,
        "subscription_items": len(summary.subscription_items),
    }

    customers = list_all(stripe, "/v1/customers")
    assert sorted(ids(customers)) == sorted(summary.customers)
    first = next(c for c in customers if c["id"] == summary.customers[0])
    assert first["metadata"]["seed"] == "7"
    assert first["metadata"]["index"] == "0"
    assert first["address"]["country"] == "US"
    assert first["email"].endswith(".0@example.com")

    products = list_all(stripe, "/v1/products")
    assert sorted(ids(products)) == sorted(summary.products)
    assert len(list_all(stripe, "/v1/products", active="false")) == 2

    plans = list_all(stripe, "/v1/plans")
    assert sorted(ids(plans)) == sorted(summary.plans)
    assert sorted(ids(list_all(stripe, "/v1/prices"))) == sorted(summary.plans)
    assert {p["interval"] for p in plans} == {"month", "year"}
    assert len(list_all(stripe, "/v1/plans", active="false")) == 4  # inactive products' plans

    subscriptions = list_all(stripe, "/v1/subscriptions")
    assert sorted(ids(subscriptions)) == sorted(summary.subscriptions)
    assert {s["status"] for s in subscriptions} == {"active"}
    assert len({s["customer"] for s in subscriptions}) == 60
    item_ids: list[str] = []
    sizes: set[int] = set()
    for subscription in subscriptions:
        items = subscription["items"]["data"]
        assert 1 <= len(items) <= 3
        sizes.add(len(items))
        assert len({i["plan"]["id"] for i in items}) == len(items)
        assert len({i["plan"]["product"] for i in items}) == len(items)
        assert len({i["plan"]["interval"] for i in items}) == 1
        assert all(i["plan"]["active"] for i in items)
        listed = list_all(stripe, "/v1/subscription_items", subscription=subscription["id"])
        assert ids(listed) == ids(items)
        item_ids += ids(items)
    assert sizes == {1, 2, 3}
    assert sorted(item_ids) == sorted(summary.subscription_items)


def test_dataset_content_depends_only_on_sizes_and_seed() -> None:
    sizes = {"customers": 50, "products": 10, "plans_per_product": 3, "subscriptions": 20}
    first = build_dataset(**sizes, seed=1)
    assert first == build_dataset(**sizes, seed=1)
    assert first != build_dataset(**sizes, seed=2)
    assert len(first.customers) == 50
    assert len(first.plans) == 30
    assert sum(1 for p in first.products if not p["active"]) == 1
    subscribers = [s.customer for s in first.subscriptions]
    assert len(set(subscribers)) == 20
    assert all("payment_method" in first.customers[i] for i in subscribers)
    with pytest.raises(ValueError):
        build_dataset(customers=1, products=1, plans_per_product=1, subscriptions=2)


def test_form_encoding_is_stripes() -> None:
    assert form_encode(
        {
            "email": "a@b.c",
            "active": False,
            "metadata": {"k": "v"},
            "items": [{"plan": "p1", "quantity": 2}, {"plan": "p2"}],
            "address": {"city": "Paris", "line2": None},
        }
    ) == [
        ("email", "a@b.c"),
        ("active", "false"),
        ("metadata[k]", "v"),
        ("items[0][plan]", "p1"),
        ("items[0][quantity]", "2"),
        ("items[1][plan]", "p2"),
        ("address[city]", "Paris"),
    ]
