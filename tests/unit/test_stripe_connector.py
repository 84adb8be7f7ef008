"""The Stripe connector against respx-mocked Stripe pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from supasaasy.config import AppConfig
from supasaasy.connectors import ConfigError, ProviderError, create_connector, known_connectors
from supasaasy.connectors.stripe import API_VERSION, StripeConnector

API = "https://stripe.test"
KEY = "sk_test_unit_secret_123"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_KEY_UNIT", KEY)


def connector(
    sync_from: datetime | None = None, **config: Any
) -> tuple[StripeConnector, list[float]]:
    app = AppConfig(
        app_key="stripe_unit",
        connector="stripe",
        config={"api_key_env": "STRIPE_KEY_UNIT", "api_base": API, **config},
        sync_from=sync_from,
    )
    made = create_connector(app)
    assert isinstance(made, StripeConnector)
    slept: list[float] = []
    made.http.sleep = slept.append
    return made, slept


def page(objects: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": objects, "has_more": has_more, "url": "/v1/x"}


def customer(n: int) -> dict[str, Any]:
    return {"id": f"cus_{n:03d}", "object": "customer", "email": f"c{n}@example.com",
            "created": 1_700_000_000 + n}  # fmt: skip


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


@respx.mock(base_url=API, assert_all_called=True)
def test_full_sync_pages_through_every_object(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/v1/customers").mock(side_effect=[
        httpx.Response(200, json=page([customer(1), customer(2)], has_more=True)),
        httpx.Response(200, json=page([customer(3), customer(4)], has_more=True)),
        httpx.Response(200, json=page([customer(5)], has_more=False)),
    ])  # fmt: skip
    stripe, _ = connector(page_size=2)
    pages = list(stripe.full_sync("customer"))

    assert [[r.external_id for r in p.records] for p in pages] == [
        ["cus_001", "cus_002"], ["cus_003", "cus_004"], ["cus_005"]]  # fmt: skip
    assert [p.cursor for p in pages] == ["cus_002", "cus_004", None]
    assert {r.collection_key for p in pages for r in p.records} == {"stripe_customer"}
    sent = [query(call.request) for call in route.calls]
    assert [q.get("starting_after") for q in sent] == [None, ["cus_002"], ["cus_004"]]
    assert all(q["limit"] == ["2"] for q in sent)
    first = route.calls[0].request
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    assert first.headers["Stripe-Version"] == API_VERSION


@respx.mock(base_url=API, assert_all_called=True)
def test_full_sync_resumes_after_a_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/v1/customers").mock(
        return_value=httpx.Response(200, json=page([customer(9)], has_more=False))
    )
    stripe, _ = connector()
    pages = list(stripe.full_sync("customer", cursor="cus_008"))
    assert query(route.calls.last.request)["starting_after"] == ["cus_008"]
    assert [r.external_id for p in pages for r in p.records] == ["cus_009"]


@respx.mock(base_url=API, assert_all_called=True)
def test_empty_list_is_one_empty_final_page(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/products").mock(return_value=httpx.Response(200, json=page([], False)))
    stripe, _ = connector()
    pages = list(stripe.full_sync("product"))
    assert len(pages) == 1 and pages[0].records == [] and pages[0].cursor is None


@respx.mock(base_url=API, assert_all_called=True)
def test_sync_from_limits_the_list_and_inactive_objects_are_archived(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get("/v1/prices").mock(return_value=httpx.Response(200, json=page([
        {"id": "price_a", "active": True, "created": 1}, {"id": "price_b", "active": False},
    ], False)))  # fmt: skip
    stripe, _ = connector(sync_from=datetime(2024, 1, 1, tzinfo=UTC))
    records = [r for p in stripe.full_sync("price") for r in p.records]
    assert query(route.calls.last.request)["created[gte]"] == ["1704067200"]
    assert [(r.external_id, r.archived) for r in records] == [("price_a", False), ("price_b", True)]


@respx.mock(base_url=API, assert_all_called=True)
def test_subscriptions_bring_all_their_items(respx_mock: respx.MockRouter) -> None:
    subs = respx_mock.get("/v1/subscriptions").mock(return_value=httpx.Response(200, json=page([
        {"id": "sub_1", "items": {"data": [{"id": "si_1", "subscription": "sub_1"}],
                                   "has_more": False}},
        {"id": "sub_2", "items": {"data": [{"id": "si_2"}], "has_more": True}},
    ], False)))  # fmt: skip
    items = respx_mock.get("/v1/subscription_items").mock(side_effect=[
        httpx.Response(200, json=page([{"id": "si_2"}, {"id": "si_3"}], True)),
        httpx.Response(200, json=page([{"id": "si_4"}], False)),
    ])  # fmt: skip
    stripe, _ = connector()
    records = [(r.collection_key, r.external_id) for p in stripe.full_sync("subscription")
               for r in p.records]  # fmt: skip
    assert records == [
        ("stripe_subscription", "sub_1"), ("stripe_subscription_item", "si_1"),
        ("stripe_subscription", "sub_2"), ("stripe_subscription_item", "si_2"),
        ("stripe_subscription_item", "si_3"), ("stripe_subscription_item", "si_4"),
    ]  # fmt: skip
    assert query(subs.calls.last.request)["status"] == ["all"]
    assert [query(c.request).get("starting_after") for c in items.calls] == [None, ["si_3"]]
    assert query(items.calls[0].request)["subscription"] == ["sub_2"]


@respx.mock(base_url=API, assert_all_called=True)
def test_429_is_retried_after_the_time_stripe_asks(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/customers").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "3"},
                       json={"error": {"message": "Too many requests"}}),
        httpx.Response(503),
        httpx.Response(200, json=page([customer(1)], False)),
    ])  # fmt: skip
    stripe, slept = connector()
    records = [r for p in stripe.full_sync("customer") for r in p.records]
    assert [r.external_id for r in records] == ["cus_001"]
    assert slept[0] == 3.0
    assert len(slept) == 2 and 0 < slept[1] <= 1.0


@respx.mock(base_url=API, assert_all_called=True)
def test_5xx_until_retries_run_out_fails_with_a_clear_message(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get("/v1/plans").mock(
        return_value=httpx.Response(500, json={"error": {"message": "Stripe is down"}})
    )
    stripe, slept = connector(max_retries=3)
    with pytest.raises(ProviderError) as err:
        list(stripe.full_sync("plan"))
    assert str(err.value) == "Stripe GET /v1/plans failed after 3 retries: 500 Stripe is down"
    assert err.value.status == 500
    assert route.call_count == 4 and len(slept) == 3
    assert KEY not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_other_errors_fail_at_once_without_the_key(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/customers").mock(
        return_value=httpx.Response(
            401, json={"error": {"message": "Invalid API Key provided: sk_test_****_123"}}
        )
    )
    stripe, slept = connector()
    with pytest.raises(ProviderError, match="failed: 401 Invalid API Key") as err:
        list(stripe.full_sync("customer"))
    assert slept == [] and KEY not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_transport_errors_are_retried(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/customers").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=page([], False))]
    )
    stripe, slept = connector()
    assert [p.records for p in stripe.full_sync("customer")] == [[]]
    assert len(slept) == 1


@pytest.mark.parametrize("body", [
    page([{"object": "customer", "email": "no id"}], False),
    page(["cus_1"], False),
    {"data": "nope", "has_more": False},
    {"object": "list", "data": []},
])  # fmt: skip
@respx.mock(base_url=API)
def test_a_malformed_page_or_object_fails_the_resource(
    respx_mock: respx.MockRouter, body: dict[str, Any]
) -> None:
    respx_mock.get("/v1/customers").mock(return_value=httpx.Response(200, json=body))
    stripe, _ = connector()
    with pytest.raises(ProviderError, match=r"malformed|without data/has_more"):
        list(stripe.full_sync("customer"))


def event(n: int, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"evt_{n}", "object": "event", "type": kind, "created": 1_800_000_000 + n,
            "api_version": "2024-06-20", "data": {"object": obj}}  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_incremental_applies_the_newest_state_and_deletions(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get("/v1/events").mock(side_effect=[
        httpx.Response(200, json=page([
            event(9, "customer.updated", {"id": "cus_1", "name": "newest"}),
            event(8, "customer.deleted", {"id": "cus_2"}),
        ], True)),
        httpx.Response(200, json=page([
            event(7, "customer.updated", {"id": "cus_1", "name": "older"}),
            event(6, "customer.created", {"id": "cus_3", "name": "new"}),
        ], False)),
    ])  # fmt: skip
    stripe, _ = connector()
    since = datetime(2027, 1, 1, tzinfo=UTC)
    pages = list(stripe.incremental_sync("customer", since=since))

    sent = query(route.calls[0].request)
    assert sent["created[gte]"] == [str(int(since.timestamp()))]
    assert sorted(v[0] for k, v in sent.items() if k.startswith("types[")) == [
        "customer.created", "customer.deleted", "customer.updated"]  # fmt: skip
    assert query(route.calls[1].request)["starting_after"] == ["evt_8"]
    records = [(r.external_id, r.raw_payload["name"]) for p in pages for r in p.records]
    assert records == [("cus_1", "newest"), ("cus_3", "new")]  # the older cus_1 state is skipped
    assert [(d.external_id, d.observed_at) for p in pages for d in p.deletions] == [
        ("cus_2", datetime.fromtimestamp(1_800_000_008, UTC))]  # fmt: skip
    assert pages[0].records[0].observed_at == datetime.fromtimestamp(1_800_000_009, UTC)
    assert pages[0].records[0].api_version == "2024-06-20"
    assert [p.cursor for p in pages] == ["evt_8", None]


@respx.mock(base_url=API, assert_all_called=True)
def test_a_canceled_subscription_is_kept_with_its_final_state(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/v1/events").mock(return_value=httpx.Response(200, json=page([
        event(5, "customer.subscription.deleted", {
            "id": "sub_1", "status": "canceled",
            "items": {"data": [{"id": "si_1", "subscription": "sub_1"}], "has_more": False}}),
    ], False)))  # fmt: skip
    stripe, _ = connector()
    [only] = list(stripe.incremental_sync("subscription", since=datetime(2027, 1, 1, tzinfo=UTC)))
    assert [(r.external_id, r.raw_payload.get("status"), r.archived) for r in only.records] == [
        ("sub_1", "canceled", True), ("si_1", None, False)]  # fmt: skip
    assert only.deletions == []
    assert [(c.collection_key, c.parent_id) for c in only.child_sets] == [
        ("stripe_subscription_item", "sub_1")]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_subscriptions_that_ended_are_archived(respx_mock: respx.MockRouter) -> None:
    statuses = ["active", "canceled", "incomplete_expired", "past_due", "trialing"]
    respx_mock.get("/v1/subscriptions").mock(return_value=httpx.Response(200, json=page([
        {"id": f"sub_{s}", "status": s, "items": {"data": [], "has_more": False}}
        for s in statuses], False)))  # fmt: skip
    stripe, _ = connector()
    [only] = list(stripe.full_sync("subscription"))
    assert [(r.external_id, r.archived) for r in only.records] == [
        ("sub_active", False), ("sub_canceled", True), ("sub_incomplete_expired", True),
        ("sub_past_due", False), ("sub_trialing", False)]  # fmt: skip


@pytest.mark.parametrize(("key", "config", "rate"), [
    ("sk_test_abc", {}, 25.0), ("rk_test_abc", {}, 25.0),
    ("sk_live_abc", {}, 100.0), ("rk_live_abc", {}, 100.0),
    ("sk_live_abc", {"requests_per_second": 40}, 40.0),
])  # fmt: skip
def test_the_default_request_rate_follows_the_keys_mode(
    monkeypatch: pytest.MonkeyPatch, key: str, config: dict[str, Any], rate: float
) -> None:
    monkeypatch.setenv("STRIPE_KEY_UNIT", key)
    stripe, _ = connector(**config)
    assert stripe.requests_per_second == rate


def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_API_KEY_BILLING", raising=False)
    app = AppConfig(app_key="billing", connector="stripe")
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    assert str(err.value) == (
        "app 'billing' (stripe): environment variable STRIPE_API_KEY_BILLING "
        "(config.api_key_env) is not set")  # fmt: skip


def test_bad_settings_are_named_and_secrets_never_shown() -> None:
    app = AppConfig(
        app_key="billing",
        connector="stripe",
        config={"api_key_env": "STRIPE_KEY_UNIT", "page_size": 500, "api_key": KEY},
    )
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    message = str(err.value)
    assert "config.page_size" in message and "config.api_key" in message
    assert KEY not in message


def test_unknown_connector_names_the_known_ones() -> None:
    app = AppConfig(app_key="crm", connector="salesforce")
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    assert str(err.value) == (
        "app 'crm': unknown connector 'salesforce'; known connectors: "
        + ", ".join(known_connectors()))  # fmt: skip
    assert "stripe" in known_connectors()


def test_metadata_describes_the_resources() -> None:
    metadata = StripeConnector.metadata
    assert metadata.api_version == API_VERSION
    assert [r.resource_type for r in metadata.task_resources] == [
        "customer", "product", "price", "plan", "subscription", "invoice", "charge",
        "payment_intent", "refund", "dispute", "balance_transaction", "coupon",
        "promotion_code", "credit_note", "tax_rate", "setup_intent", "checkout_session",
        "subscription_schedule"]  # fmt: skip
    assert all(r.collection_key == f"stripe_{r.resource_type}" for r in metadata.resources)
    item = metadata.resource("subscription_item")
    assert item.synced_with_parent == "subscription" and not item.supports_incremental
    lines = metadata.resource("invoice_line_item")
    assert lines.synced_with_parent == "invoice" and not lines.supports_incremental
    with pytest.raises(ConfigError, match="no resource 'payout'"):
        metadata.resource("payout")


def invoice(n: int, lines: list[dict[str, Any]], more: bool = False) -> dict[str, Any]:
    return {"id": f"in_{n}", "object": "invoice", "customer": "cus_1", "status": "paid",
            "created": 1_700_000_000 + n,
            "lines": {"object": "list", "data": lines, "has_more": more}}  # fmt: skip


def line(n: int) -> dict[str, Any]:
    return {"id": f"il_{n}", "object": "line_item", "amount": 100 * n, "currency": "eur"}


@respx.mock(base_url=API, assert_all_called=True)
def test_invoices_bring_all_their_lines_each_naming_its_invoice(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/v1/invoices").mock(return_value=httpx.Response(200, json=page(
        [invoice(1, [line(1)]), invoice(2, [line(2)], more=True)], has_more=False)))  # fmt: skip
    rest = respx_mock.get("/v1/invoices/in_2/lines").mock(side_effect=[
        httpx.Response(200, json=page([line(2), line(3)], has_more=True)),
        httpx.Response(200, json=page([line(4)], has_more=False)),
    ])  # fmt: skip
    stripe, _ = connector()
    records = [r for p in stripe.full_sync("invoice") for r in p.records]
    assert [(r.collection_key, r.external_id) for r in records] == [
        ("stripe_invoice", "in_1"), ("stripe_invoice_line_item", "il_1"),
        ("stripe_invoice", "in_2"), ("stripe_invoice_line_item", "il_2"),
        ("stripe_invoice_line_item", "il_3"), ("stripe_invoice_line_item", "il_4")]  # fmt: skip
    assert [r.raw_payload["invoice"] for r in records[1:] if "line" in r.collection_key] == [
        "in_1", "in_2", "in_2", "in_2"]  # fmt: skip
    assert query(rest.calls[1].request) == {"limit": ["100"], "starting_after": ["il_3"]}
    assert records[0].created_at == datetime.fromtimestamp(1_700_000_001, UTC)


def newest_first(n: int, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"evt_{n}", "object": "event", "type": kind, "created": 1_800_000_000 - n,
            "data": {"object": obj}}  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_billing_events_reach_their_resources(respx_mock: respx.MockRouter) -> None:
    dispute = {"id": "dp_1", "object": "dispute", "charge": "ch_1", "status": "won"}
    refund = {"id": "re_1", "object": "refund", "charge": "ch_1", "status": "succeeded"}
    coupon = {"id": "SPRING", "object": "coupon", "valid": False}
    routes = respx_mock.get("/v1/events").mock(side_effect=[
        httpx.Response(200, json=page([newest_first(1, "charge.dispute.closed", dispute)], False)),
        httpx.Response(200, json=page([newest_first(1, "charge.refund.updated", refund)], False)),
        httpx.Response(200, json=page([newest_first(1, "coupon.updated", coupon),
                                       newest_first(2, "coupon.deleted", {**coupon, "id": "OLD"})],
                                      False)),
        httpx.Response(200, json=page([newest_first(1, "invoice.deleted", invoice(9, [line(9)]))],
                                      False)),
    ])  # fmt: skip
    stripe, _ = connector()
    since = datetime(2027, 1, 1, tzinfo=UTC)
    disputes = list(stripe.incremental_sync("dispute", since=since))
    assert [r.external_id for r in disputes[0].records] == ["dp_1"]
    assert "charge.dispute.closed" in query(routes.calls[0].request)["types[2]"]
    refunds = next(iter(stripe.incremental_sync("refund", since=since)))
    assert [r.external_id for r in refunds.records] == ["re_1"]
    coupons = next(iter(stripe.incremental_sync("coupon", since=since)))
    assert [(r.external_id, r.archived) for r in coupons.records] == [("SPRING", True)]
    assert [d.external_id for d in coupons.deletions] == ["OLD"]
    invoices = next(iter(stripe.incremental_sync("invoice", since=since)))
    assert [d.external_id for d in invoices.deletions] == ["in_9"] and not invoices.records


@respx.mock(base_url=API, assert_all_called=True)
def test_an_invoice_event_replaces_the_set_of_its_lines(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/events").mock(return_value=httpx.Response(200, json=page(
        [newest_first(1, "invoice.updated", invoice(5, [line(7)]))], False)))  # fmt: skip
    stripe, _ = connector()
    found = next(iter(stripe.incremental_sync("invoice", since=datetime(2027, 1, 1, tzinfo=UTC))))
    assert [(r.collection_key, r.external_id) for r in found.records] == [
        ("stripe_invoice", "in_5"), ("stripe_invoice_line_item", "il_7")]  # fmt: skip
    assert [(c.collection_key, c.parent_field, c.parent_id) for c in found.child_sets] == [
        ("stripe_invoice_line_item", "invoice", "in_5")]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_balance_transactions_sync_incrementally_by_creation_with_a_settling_window(
    respx_mock: respx.MockRouter,
) -> None:
    txn = {"id": "txn_1", "object": "balance_transaction", "status": "available",
           "created": 1_800_000_000}  # fmt: skip
    route = respx_mock.get("/v1/balance_transactions").mock(
        return_value=httpx.Response(200, json=page([txn], False)))  # fmt: skip
    stripe, _ = connector()
    since = datetime.fromtimestamp(1_800_000_000, UTC)
    pages = list(stripe.incremental_sync("balance_transaction", since=since))
    assert [r.external_id for p in pages for r in p.records] == ["txn_1"]
    assert query(route.calls[0].request)["created[gte]"] == [str(1_800_000_000 - 14 * 86400)]


@respx.mock(base_url=API, assert_all_called=True)
def test_schedules_that_are_over_and_inactive_codes_and_rates_are_archived(
    respx_mock: respx.MockRouter,
) -> None:
    for path, objects in {
        "/v1/subscription_schedules": [{"id": "sub_sched_1", "status": "released"},
                                       {"id": "sub_sched_2", "status": "active"}],
        "/v1/promotion_codes": [{"id": "promo_1", "active": False}, {"id": "promo_2"}],
        "/v1/tax_rates": [{"id": "txr_1", "active": False}, {"id": "txr_2", "active": True}],
    }.items():  # fmt: skip
        respx_mock.get(path).mock(return_value=httpx.Response(200, json=page(objects, False)))
    stripe, _ = connector()
    for resource in ("subscription_schedule", "promotion_code", "tax_rate"):
        records = [r for p in stripe.full_sync(resource) for r in p.records]
        assert [r.archived for r in records] == [True, False], resource
