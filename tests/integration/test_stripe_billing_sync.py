"""Stripe's billing resources synced into the real stack from localstripe, fully and then
incrementally through their events: every collection holds what Stripe holds, and the
typed views show each change."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
from test_stripe_sync import KEY, app, stored, sync
from test_stripe_sync import stripe_api as stripe_api  # the fixture: a fresh localstripe

from supasaasy.connectors.stripe import StripeConnector
from supasaasy.db import Database
from supasaasy.devstack.localstripe import held
from supasaasy.devstack.seed import seed_stripe

Pg = psycopg.Connection[tuple[object, ...]]
METADATA = StripeConnector.metadata
TASKS = [r.resource_type for r in METADATA.task_resources]


def view_counts(pg: Pg, app_key: str) -> dict[str, int]:
    """Rows each collection's typed view shows for the app."""
    counts = {}
    for resource in METADATA.resources:
        view = f"stripe_{resource.resource_type}s"
        row = pg.execute(f"select count(*) from supasaasy.{view} where app_key = %s",
                         (app_key,)).fetchone()  # fmt: skip
        assert row is not None
        counts[resource.collection_key] = int(row[0])  # type: ignore[call-overload]
    return counts


def as_stripe_holds(pg: Pg, app_key: str, api: str) -> dict[str, set[str]]:
    """Assert every collection (and its view) holds what Stripe holds; return that."""
    holdings = held(api, KEY)
    for resource in METADATA.resources:
        collection = resource.collection_key
        assert set(stored(pg, app_key, collection)) == holdings[collection], collection
    assert view_counts(pg, app_key) == {c: len(ids) for c, ids in holdings.items()}
    return holdings


def one(pg: Pg, query: str, *params: Any) -> Any:
    row = pg.execute(query, params).fetchone()
    return None if row is None else row[0]


def test_billing_resources_sync_fully_then_incrementally(
    db: Database, pg: Pg, app_key: str, stripe_api: str
) -> None:
    seeded = seed_stripe(stripe_api, KEY, customers=12, products=2, plans_per_product=2,
                         subscriptions=6)  # fmt: skip
    api = httpx.Client(base_url=stripe_api, headers={"Authorization": f"Bearer {KEY}"})

    def post(path: str, **data: Any) -> dict[str, Any]:
        answer = api.post(path, data=data)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    gone = post("/v1/coupons", percent_off=5, duration="once", name="Gone soon")
    # A credit note without a refund (one with a refund cannot be voided), on the open one.
    note = post("/v1/credit_notes", invoice=seeded.billing["invoices"][2], amount=100)
    application = app(app_key, stripe_api, page_size=2)  # many pages even of a few objects
    for resource in TASKS:
        assert sync(db, application, resource).finished, resource
    before = as_stripe_holds(pg, app_key, stripe_api)
    assert all(
        before[f"stripe_{kind}"]
        for kind in (
            "invoice",
            "invoice_line_item",
            "charge",
            "payment_intent",
            "refund",
            "dispute",
            "balance_transaction",
            "coupon",
            "promotion_code",
            "credit_note",
            "tax_rate",
        )
    )

    # Changes upstream, one or more per resource, in a later second than the sync.
    time.sleep(1.05 - time.time() % 1)
    billing = seeded.billing
    customer = seeded.customers[0]
    post(f"/v1/invoices/{billing['invoices'][0]}", **{"metadata[note]": "changed"})
    paid = post("/v1/payment_intents", amount=4200, currency="usd", customer=customer,
                payment_method="pm_card_visa", confirm="true")  # fmt: skip
    post("/v1/refunds", charge=paid["latest_charge"], amount=200)
    post(f"/v1/disputes/{billing['disputes'][0]}/close")
    post(f"/v1/coupons/{billing['coupons'][0]}", name="Renamed")
    assert api.delete(f"/v1/coupons/{gone['id']}").status_code == 200
    post(f"/v1/promotion_codes/{billing['promotion_codes'][0]}", active="false")
    post(f"/v1/credit_notes/{note['id']}/void")
    post(f"/v1/tax_rates/{billing['tax_rates'][0]}", display_name="Sales tax (CA)")
    post("/v1/setup_intents", customer=customer, payment_method="pm_card_visa", confirm="true")
    session = post("/v1/checkout/sessions", mode="setup", customer=customer,
                   success_url="https://example.test/ok")  # fmt: skip
    post(f"/v1/checkout/sessions/{session['id']}/expire")
    schedule = post("/v1/subscription_schedules", from_subscription=seeded.subscriptions[0])
    post(f"/v1/subscription_schedules/{schedule['id']}/release")

    for resource in TASKS:
        assert sync(db, application, resource, mode="incremental").finished, resource
    after = as_stripe_holds(pg, app_key, stripe_api)
    assert gone["id"] in before["stripe_coupon"] and gone["id"] not in after["stripe_coupon"]
    for collection in ("stripe_payment_intent", "stripe_charge", "stripe_refund",
                       "stripe_balance_transaction", "stripe_setup_intent",
                       "stripe_checkout_session", "stripe_subscription_schedule"):  # fmt: skip
        assert after[collection] - before[collection], collection

    # What the views say of the changes.
    assert one(pg, "select metadata ->> 'note' from supasaasy.stripe_invoices where app_key = %s"
               " and external_id = %s", app_key, billing["invoices"][0]) == "changed"  # fmt: skip
    assert one(pg, "select status from supasaasy.stripe_disputes where external_id = %s",
               billing["disputes"][0]) == "lost"  # fmt: skip
    assert one(pg, "select name from supasaasy.stripe_coupons where external_id = %s",
               billing["coupons"][0]) == "Renamed"  # fmt: skip
    assert one(pg, "select archived_at is not null from supasaasy.stripe_promotion_codes"
               " where external_id = %s", billing["promotion_codes"][0]) is True  # fmt: skip
    assert one(pg, "select status from supasaasy.stripe_credit_notes where external_id = %s",
               note["id"]) == "void"  # fmt: skip
    assert one(pg, "select display_name from supasaasy.stripe_tax_rates where external_id = %s",
               billing["tax_rates"][0]) == "Sales tax (CA)"  # fmt: skip
    assert one(pg, "select status from supasaasy.stripe_checkout_sessions where external_id"
               " = %s", session["id"]) == "expired"  # fmt: skip
    assert one(pg, "select status || ' ' || (archived_at is not null) from"
               " supasaasy.stripe_subscription_schedules where external_id = %s",
               schedule["id"]) == "released true"  # fmt: skip
    assert one(pg, "select amount_refunded from supasaasy.stripe_charges where external_id"
               " = %s", paid["latest_charge"]) == 200  # fmt: skip
    assert one(pg, "select count(*) from supasaasy.stripe_failed_payments where app_key = %s",
               app_key) == 1  # fmt: skip
    assert one(pg, "select sum(subscriptions) from supasaasy.stripe_mrr where app_key = %s",
               app_key) > 0  # fmt: skip
