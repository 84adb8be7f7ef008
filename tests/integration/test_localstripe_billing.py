"""Billing and payment resources of the patched localstripe, against a real server: each
is created, listed page by page, retrieved, changed, and its events listed as Stripe's."""

from __future__ import annotations

import json
from typing import Any

import httpx
from test_localstripe import (
    API_KEY,
    client_for,
    create_plan,
    delivered,
    events,
    ids,
    list_all,
    next_second,
    ok,
    paying_customer,
    webhook_endpoint,
)
from test_localstripe import localstripe_url as localstripe_url  # fixture: one server
from test_localstripe import stripe as stripe  # fixture: a client on it, emptied

from supasaasy.devstack.localstripe import register_webhook, running_localstripe
from supasaasy.devstack.seed import seed_stripe


def post(client: httpx.Client, path: str, **data: Any) -> Any:
    return ok(client.post(path, data={k: str(v) for k, v in data.items()}))


def listed_as_stripe(
    client: httpx.Client, path: str, created: list[str], **params: str
) -> list[Any]:
    """The list at `path` pages (2 a page) through exactly `created`, newest first; each
    object retrieves as listed; `created` ranges split the list where they should."""
    listed = list_all(client, path, limit=2, **params)
    assert ids(listed) == created[::-1]
    for obj in listed:
        assert ok(client.get(f"{path}/{obj['id']}")) == obj
        assert obj["livemode"] is False
    times = sorted({obj["created"] for obj in listed})
    for t in times:
        later = ids(list_all(client, path, limit=2, **params, **{"created[gte]": str(t)}))
        earlier = ids(list_all(client, path, limit=2, **params, **{"created[lt]": str(t)}))
        assert later == [o["id"] for o in listed if o["created"] >= t]
        assert earlier == [o["id"] for o in listed if o["created"] < t]
        exactly = ids(list_all(client, path, **params, created=str(t)))
        assert exactly == [o["id"] for o in listed if o["created"] == t]
    assert client.get(path, params={"created[after]": "1"}).status_code == 400
    assert client.get(path, params={"unknown": "1"}).status_code == 400
    assert client.get(f"{path}/nope_0").status_code == 404
    return listed


def emitted(client: httpx.Client, happened: list[tuple[str, str]]) -> list[Any]:
    """The events of the types in `happened` (type, object id, in the order they
    happened), listed with `types[]`: exactly those, newest first. Their objects."""
    kinds = sorted({kind for kind, _ in happened})
    found = events(client, limit=3, **{f"types[{i}]": kind for i, kind in enumerate(kinds)})
    assert [(e["type"], e["data"]["object"]["id"]) for e in found] == happened[::-1]
    assert [e["created"] for e in found] == sorted((e["created"] for e in found), reverse=True)
    return [e["data"]["object"] for e in found[::-1]]


def customer_with_card(client: httpx.Client, card: str) -> str:
    data = {"payment_method": card, "invoice_settings[default_payment_method]": card}
    return str(ok(client.post("/v1/customers", data=data))["id"])


def test_invoices(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    tax = post(stripe, "/v1/tax_rates", display_name="VAT", percentage=10, inclusive="false")
    for i, amount in enumerate((1000, 2000, 3000)):
        post(
            stripe,
            "/v1/invoiceitems",
            customer=customer,
            amount=amount,
            currency="usd",
            description=f"item {i}",
        )
    paid = post(
        stripe,
        "/v1/invoices",
        customer=customer,
        pending_invoice_items_behavior="include",
        **{"default_tax_rates[0]": tax["id"], "metadata[order]": "7"},
    )
    assert paid["status"] == "draft" and paid["number"] is None
    assert paid["lines"]["object"] == "list" and paid["lines"]["has_more"] is False
    assert [line["amount"] for line in paid["lines"]["data"]] == [1000, 2000, 3000]
    assert (paid["subtotal"], paid["tax"], paid["total"]) == (6000, 600, 6600)
    assert paid["metadata"] == {"order": "7"} and paid["currency"] == "usd"
    lines = list_all(stripe, f"/v1/invoices/{paid['id']}/lines", limit=2)
    assert ids(lines) == ids(paid["lines"]["data"])

    # Stripe's default: pending items stay out; invoice items can name a draft invoice.
    sent = post(
        stripe,
        "/v1/invoices",
        customer=customer,
        collection_method="send_invoice",
        days_until_due=30,
    )
    assert sent["lines"]["data"] == [] and sent["due_date"] == sent["created"] + 30 * 86400
    post(
        stripe,
        "/v1/invoiceitems",
        customer=customer,
        amount=500,
        currency="usd",
        invoice=sent["id"],
    )
    draft = post(stripe, "/v1/invoices", customer=customer)
    assert ok(stripe.get(f"/v1/invoices/{sent['id']}"))["total"] == 500

    updated = post(stripe, f"/v1/invoices/{paid['id']}", description="Thanks")
    assert updated["description"] == "Thanks"
    assert stripe.post(f"/v1/invoices/{paid['id']}", data={"total": "1"}).status_code == 400
    finalized = post(stripe, f"/v1/invoices/{paid['id']}/finalize")
    assert finalized["status"] == "open" and finalized["number"].endswith("-0001")
    assert stripe.post(f"/v1/invoices/{paid['id']}/finalize").status_code == 400
    paid = post(stripe, f"/v1/invoices/{paid['id']}/pay")
    assert paid["status"] == "paid" and paid["paid"] is True and paid["amount_paid"] == 6600
    assert paid["charge"].startswith("ch_") and paid["payment_intent"].startswith("pi_")
    assert ok(stripe.get(f"/v1/charges/{paid['charge']}"))["invoice"] == paid["id"]
    sent = post(stripe, f"/v1/invoices/{sent['id']}/finalize")
    assert sent["number"].endswith("-0002")
    voided = post(stripe, f"/v1/invoices/{sent['id']}/void")
    assert voided["status"] == "void" and voided["status_transitions"]["voided_at"]
    deleted = ok(stripe.delete(f"/v1/invoices/{draft['id']}"))
    assert deleted == {"id": draft["id"], "object": "invoice", "deleted": True}

    # A declined card: 402, and the invoice stays open.
    declined = customer_with_card(stripe, "pm_card_chargeCustomerFail")
    post(stripe, "/v1/invoiceitems", customer=declined, amount=700, currency="usd")
    failed = post(
        stripe, "/v1/invoices", customer=declined, pending_invoice_items_behavior="include"
    )
    answer = stripe.post(f"/v1/invoices/{failed['id']}/pay")
    assert answer.status_code == 402, answer.text
    assert answer.json()["error"]["code"] == "card_declined"
    failed = ok(stripe.get(f"/v1/invoices/{failed['id']}"))
    assert failed["status"] == "open" and failed["amount_remaining"] == 700

    listed = listed_as_stripe(stripe, "/v1/invoices", [paid["id"], sent["id"], failed["id"]])
    assert ids(list_all(stripe, "/v1/invoices", customer=customer)) == [sent["id"], paid["id"]]
    assert ids(list_all(stripe, "/v1/invoices", status="open")) == [failed["id"]]
    assert listed[0]["lines"]["url"] == f"/v1/invoices/{failed['id']}/lines"

    happened = [
        ("invoice.created", paid["id"]),
        ("invoice.created", sent["id"]),
        ("invoice.created", draft["id"]),
        ("invoice.updated", paid["id"]),
        ("invoice.finalized", paid["id"]),
        ("invoice.payment_succeeded", paid["id"]),
        ("invoice.paid", paid["id"]),
        ("invoice.finalized", sent["id"]),
        ("invoice.voided", sent["id"]),
        ("invoice.deleted", draft["id"]),
        ("invoice.created", failed["id"]),
        ("invoice.finalized", failed["id"]),
        ("invoice.payment_failed", failed["id"]),
    ]
    snapshots = emitted(stripe, happened)
    by_event = dict(zip(happened, snapshots, strict=True))
    assert by_event[("invoice.updated", paid["id"])]["description"] == "Thanks"
    assert by_event[("invoice.finalized", paid["id"])]["status"] == "open"
    assert by_event[("invoice.paid", paid["id"])]["status_transitions"]["paid_at"]
    assert by_event[("invoice.voided", sent["id"])]["status"] == "void"
    assert by_event[("invoice.deleted", draft["id"])]["status"] == "draft"


def test_charges_and_payment_intents(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    paid = post(
        stripe,
        "/v1/payment_intents",
        amount=2500,
        currency="usd",
        customer=customer,
        payment_method="pm_card_visa",
        confirm="true",
    )
    assert paid["status"] == "succeeded" and paid["latest_charge"].startswith("ch_")
    assert "charges" not in paid
    charged = ok(stripe.get(f"/v1/charges/{paid['latest_charge']}"))
    assert (charged["status"], charged["paid"], charged["captured"]) == ("succeeded", True, True)
    assert charged["payment_intent"] == paid["id"] and charged["amount_captured"] == 2500
    assert charged["disputed"] is False and "refunds" not in charged

    declined = stripe.post(
        "/v1/payment_intents",
        data={
            "amount": "900",
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_chargeCustomerFail",
            "confirm": "true",
        },
    )
    assert declined.status_code == 402, declined.text
    failed_charge = declined.json()["error"]["charge"]
    failed = ok(stripe.get("/v1/charges/" + failed_charge))["payment_intent"]

    held = post(
        stripe,
        "/v1/payment_intents",
        amount=4000,
        currency="usd",
        customer=customer,
        payment_method="pm_card_visa",
        capture_method="manual",
        confirm="true",
    )
    assert held["status"] == "requires_capture"
    held_charge = held["latest_charge"]
    assert ok(stripe.get(f"/v1/charges/{held_charge}"))["captured"] is False
    held = post(stripe, f"/v1/payment_intents/{held['id']}/capture")
    assert held["status"] == "succeeded"

    abandoned = post(stripe, "/v1/payment_intents", amount=100, currency="usd")
    assert abandoned["status"] == "requires_payment_method"
    abandoned = post(
        stripe, f"/v1/payment_intents/{abandoned['id']}/cancel", cancellation_reason="abandoned"
    )
    assert abandoned["status"] == "canceled" and abandoned["canceled_at"]
    assert stripe.post(f"/v1/payment_intents/{abandoned['id']}/cancel").status_code == 400

    direct = stripe.post(
        "/v1/charges",
        data={
            "amount": "300",
            "currency": "usd",
            "customer": customer,
            "source": "pm_card_chargeCustomerFail",
        },
    )
    assert direct.status_code == 402
    direct_charge = direct.json()["error"]["charge"]
    noted = post(stripe, f"/v1/charges/{charged['id']}", **{"metadata[note]": "vip"})
    assert noted["metadata"] == {"note": "vip"}
    assert stripe.post(f"/v1/charges/{charged['id']}", data={"amount": "1"}).status_code == 400

    intents = [paid["id"], failed, held["id"], abandoned["id"]]
    listed = listed_as_stripe(stripe, "/v1/payment_intents", intents)
    assert listed[-1]["status"] == "succeeded"
    assert ids(list_all(stripe, "/v1/payment_intents", customer=customer)) == intents[2::-1]
    charges = [charged["id"], failed_charge, held_charge, direct_charge]
    listed = listed_as_stripe(stripe, "/v1/charges", charges)
    assert [c["status"] for c in listed] == ["failed", "succeeded", "failed", "succeeded"]
    assert listed[0]["failure_code"] == "card_declined"
    assert ids(list_all(stripe, "/v1/charges", payment_intent=held["id"])) == [held_charge]

    happened = [
        ("payment_intent.created", paid["id"]),
        ("charge.succeeded", charged["id"]),
        ("payment_intent.succeeded", paid["id"]),
        ("payment_intent.created", failed),
        ("charge.failed", failed_charge),
        ("payment_intent.payment_failed", failed),
        ("payment_intent.created", held["id"]),
        ("charge.succeeded", held_charge),
        ("payment_intent.succeeded", held["id"]),
        ("charge.captured", held_charge),
        ("payment_intent.created", abandoned["id"]),
        ("payment_intent.canceled", abandoned["id"]),
        ("charge.failed", direct_charge),
        ("charge.updated", charged["id"]),
    ]
    snapshots = dict(zip(happened, emitted(stripe, happened), strict=True))
    assert snapshots[("charge.succeeded", held_charge)]["captured"] is False
    assert snapshots[("charge.captured", held_charge)]["captured"] is True
    assert snapshots[("payment_intent.created", paid["id"])]["status"] in (
        "requires_payment_method",
        "requires_confirmation",
    )
    assert snapshots[("payment_intent.payment_failed", failed)]["last_payment_error"]["code"]
    assert snapshots[("payment_intent.canceled", abandoned["id"])]["cancellation_reason"] == (
        "abandoned"
    )
    assert snapshots[("charge.updated", charged["id"])]["metadata"] == {"note": "vip"}


def test_refunds_and_balance_transactions(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    intents = [
        post(
            stripe,
            "/v1/payment_intents",
            amount=amount,
            currency="usd",
            customer=customer,
            payment_method="pm_card_visa",
            confirm="true",
        )
        for amount in (1000, 5000)
    ]
    first, second = (intent["latest_charge"] for intent in intents)
    full = post(stripe, "/v1/refunds", charge=first, reason="requested_by_customer")
    assert (full["amount"], full["status"], full["reason"]) == (
        1000,
        "succeeded",
        "requested_by_customer",
    )
    assert full["payment_intent"] == intents[0]["id"]
    part = post(stripe, "/v1/refunds", payment_intent=intents[1]["id"], amount=1500)
    rest = post(stripe, "/v1/refunds", charge=second, amount=500)
    assert stripe.post("/v1/refunds", data={"charge": second, "amount": "3001"}).status_code == 400
    assert stripe.post("/v1/refunds", data={"charge": first}).status_code == 400
    noted = post(stripe, f"/v1/refunds/{part['id']}", **{"metadata[ticket]": "42"})
    assert noted["metadata"] == {"ticket": "42"}
    assert stripe.post(f"/v1/refunds/{part['id']}", data={"amount": "1"}).status_code == 400
    charge = ok(stripe.get(f"/v1/charges/{second}"))
    assert (charge["amount_refunded"], charge["refunded"]) == (2000, False)
    assert ok(stripe.get(f"/v1/charges/{first}"))["refunded"] is True

    listed_as_stripe(stripe, "/v1/refunds", [full["id"], part["id"], rest["id"]])
    assert ids(list_all(stripe, "/v1/refunds", charge=second)) == [rest["id"], part["id"]]
    happened = [
        ("refund.created", full["id"]),
        ("charge.refunded", first),
        ("refund.created", part["id"]),
        ("charge.refunded", second),
        ("refund.created", rest["id"]),
        ("charge.refunded", second),
        ("refund.updated", part["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert [s["amount_refunded"] for s in snapshots[1::2]] == [1000, 1500, 2000]
    assert snapshots[-1]["metadata"] == {"ticket": "42"}

    # One balance transaction per successful charge and refund, with Stripe's card fee.
    sources = [first, second, full["id"], part["id"], rest["id"]]
    transactions = [ok(stripe.get(f"/v1/charges/{first}"))["balance_transaction"]]
    transactions.append(ok(stripe.get(f"/v1/charges/{second}"))["balance_transaction"])
    transactions += [r["balance_transaction"] for r in (full, part, rest)]
    listed = listed_as_stripe(stripe, "/v1/balance_transactions", transactions)
    assert [t["source"] for t in listed] == sources[::-1]
    fees = {t["source"]: (t["type"], t["amount"], t["fee"], t["net"]) for t in listed}
    assert fees[second] == ("charge", 5000, 175, 4825)
    assert fees[part["id"]] == ("refund", -1500, 0, -1500)
    assert {t["reporting_category"] for t in listed} == {"charge", "refund"}
    assert all(t["status"] == "available" and t["available_on"] for t in listed)
    charges_only = list_all(stripe, "/v1/balance_transactions", type="charge")
    assert ids(charges_only) == transactions[1::-1]
    assert ids(list_all(stripe, "/v1/balance_transactions", source=first)) == transactions[:1]
    assert stripe.post("/v1/balance_transactions", data={"amount": "1"}).status_code == 405
    assert events(stripe, type="balance_transaction.created") == []


def test_disputes(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    charges = [
        post(
            stripe,
            "/v1/payment_intents",
            amount=amount,
            currency="usd",
            customer=customer,
            payment_method="pm_card_visa",
            confirm="true",
        )["latest_charge"]
        for amount in (8000, 3000)
    ]
    assert stripe.post("/v1/disputes", data={"charge": charges[0]}).status_code == 405
    won = post(stripe, "/_config/disputes", charge=charges[0], reason="product_not_received")
    assert won["id"].startswith("dp_") and won["object"] == "dispute"
    assert (won["amount"], won["currency"], won["charge"]) == (8000, "usd", charges[0])
    assert (won["status"], won["reason"], won["is_charge_refundable"]) == (
        "needs_response",
        "product_not_received",
        False,
    )
    assert won["evidence_details"]["due_by"] > won["created"]
    assert won["evidence"]["uncategorized_text"] is None
    withdrawal = won["balance_transactions"][0]
    assert (withdrawal["type"], withdrawal["amount"], withdrawal["fee"]) == (
        "adjustment",
        -8000,
        1500,
    )
    assert ok(stripe.get(f"/v1/charges/{charges[0]}"))["disputed"] is True
    assert stripe.post("/_config/disputes", data={"charge": charges[0]}).status_code == 400
    assert stripe.post("/v1/refunds", data={"charge": charges[0]}).status_code == 400

    lost = post(stripe, "/_config/disputes", charge=charges[1], amount=1000)
    # Stripe's test card whose payments are disputed.
    auto = post(
        stripe,
        "/v1/payment_intents",
        amount=2000,
        currency="usd",
        payment_method="pm_card_createDispute",
        confirm="true",
    )
    automatic = list_all(stripe, "/v1/disputes", charge=auto["latest_charge"])
    assert [(d["reason"], d["payment_intent"]) for d in automatic] == [("fraudulent", auto["id"])]

    staged = post(
        stripe,
        f"/v1/disputes/{won['id']}",
        submit="false",
        **{"evidence[uncategorized_text]": "Delivered", "metadata[case]": "1"},
    )
    assert staged["status"] == "needs_response" and staged["evidence_details"]["has_evidence"]
    submitted = post(stripe, f"/v1/disputes/{won['id']}", **{"evidence[receipt]": "file_1"})
    assert submitted["status"] == "under_review"
    assert submitted["evidence_details"]["submission_count"] == 1
    assert submitted["metadata"] == {"case": "1"}
    assert stripe.post(f"/v1/disputes/{won['id']}/close").status_code == 400
    closed = post(stripe, f"/v1/disputes/{lost['id']}/close")
    assert closed["status"] == "lost"
    bad = {"evidence[nope]": "x"}
    assert stripe.post(f"/v1/disputes/{automatic[0]['id']}", data=bad).status_code == 400

    disputes = [won["id"], lost["id"], automatic[0]["id"]]
    listed_as_stripe(stripe, "/v1/disputes", disputes)
    happened = [
        ("charge.dispute.created", won["id"]),
        ("charge.dispute.funds_withdrawn", won["id"]),
        ("charge.dispute.created", lost["id"]),
        ("charge.dispute.funds_withdrawn", lost["id"]),
        ("charge.dispute.created", automatic[0]["id"]),
        ("charge.dispute.funds_withdrawn", automatic[0]["id"]),
        ("charge.dispute.updated", won["id"]),
        ("charge.dispute.updated", won["id"]),
        ("charge.dispute.closed", lost["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert [s["status"] for s in snapshots[-3:]] == ["needs_response", "under_review", "lost"]


def test_coupons_and_promotion_codes(stripe: httpx.Client) -> None:
    spring = post(
        stripe,
        "/v1/coupons",
        percent_off=25,
        duration="repeating",
        duration_in_months=3,
        name="Spring",
        max_redemptions=10,
    )
    assert len(spring["id"]) == 8 and spring["name"] == "Spring" and spring["valid"] is True
    fixed = post(
        stripe, "/v1/coupons", id="TENOFF", amount_off=1000, currency="usd", duration="once"
    )
    gone = post(stripe, "/v1/coupons", percent_off=5, duration="forever")
    renamed = post(stripe, f"/v1/coupons/{spring['id']}", name="Spring sale")
    assert renamed["name"] == "Spring sale"
    assert stripe.post(f"/v1/coupons/{spring['id']}", data={"percent_off": "9"}).status_code == 400
    assert ok(stripe.delete(f"/v1/coupons/{gone['id']}"))["deleted"] is True
    coupons = [spring["id"], fixed["id"]]
    listed_as_stripe(stripe, "/v1/coupons", coupons)

    customer = paying_customer(stripe)["id"]
    spring_code = post(
        stripe,
        "/v1/promotion_codes",
        coupon=spring["id"],
        code="SPRING25",
        max_redemptions=5,
        **{"restrictions[minimum_amount]": 2000, "restrictions[minimum_amount_currency]": "usd"},
    )
    assert spring_code["id"].startswith("promo_") and spring_code["coupon"]["id"] == spring["id"]
    assert spring_code["coupon"]["name"] == "Spring sale"
    assert (spring_code["active"], spring_code["times_redeemed"]) == (True, 0)
    assert spring_code["restrictions"] == {
        "first_time_transaction": False,
        "minimum_amount": 2000,
        "minimum_amount_currency": "usd",
    }
    personal = post(stripe, "/v1/promotion_codes", coupon=fixed["id"], customer=customer)
    assert personal["code"].isalnum() and personal["customer"] == customer
    taken = {"coupon": fixed["id"], "code": "spring25"}
    assert stripe.post("/v1/promotion_codes", data=taken).status_code == 400
    paused = post(stripe, f"/v1/promotion_codes/{spring_code['id']}", active="false")
    assert paused["active"] is False
    again = post(stripe, "/v1/promotion_codes", coupon=fixed["id"], code="SPRING25")
    codes = [spring_code["id"], personal["id"], again["id"]]
    listed_as_stripe(stripe, "/v1/promotion_codes", codes)
    assert ids(list_all(stripe, "/v1/promotion_codes", active="false")) == [spring_code["id"]]
    assert ids(list_all(stripe, "/v1/promotion_codes", code="SPRING25")) == codes[::-2]
    assert ids(list_all(stripe, "/v1/promotion_codes", coupon=fixed["id"])) == codes[:0:-1]
    assert ids(list_all(stripe, "/v1/promotion_codes", customer=customer)) == [personal["id"]]

    happened = [
        ("coupon.created", spring["id"]),
        ("coupon.created", fixed["id"]),
        ("coupon.created", gone["id"]),
        ("coupon.updated", spring["id"]),
        ("coupon.deleted", gone["id"]),
        ("promotion_code.created", spring_code["id"]),
        ("promotion_code.created", personal["id"]),
        ("promotion_code.updated", spring_code["id"]),
        ("promotion_code.created", again["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert snapshots[3]["name"] == "Spring sale" and snapshots[4]["percent_off"] == 5
    assert snapshots[7]["active"] is False


def test_tax_rates(stripe: httpx.Client) -> None:
    vat = post(
        stripe,
        "/v1/tax_rates",
        display_name="VAT",
        percentage=20,
        inclusive="true",
        country="FR",
        tax_type="vat",
        jurisdiction="FR",
    )
    assert (vat["percentage"], vat["effective_percentage"], vat["inclusive"]) == (20.0, 20.0, True)
    assert (vat["country"], vat["state"], vat["tax_type"]) == ("FR", None, "vat")
    sales = post(
        stripe,
        "/v1/tax_rates",
        display_name="Sales tax",
        percentage=8.25,
        inclusive="false",
        country="US",
        state="CA",
    )
    old = post(stripe, "/v1/tax_rates", display_name="Old", percentage=5, inclusive="false")
    retired = post(
        stripe, f"/v1/tax_rates/{old['id']}", active="false", **{"metadata[why]": "replaced"}
    )
    assert retired["active"] is False and retired["metadata"] == {"why": "replaced"}
    assert stripe.post(f"/v1/tax_rates/{old['id']}", data={"percentage": "6"}).status_code == 400

    rates = [vat["id"], sales["id"], old["id"]]
    listed_as_stripe(stripe, "/v1/tax_rates", rates)
    assert ids(list_all(stripe, "/v1/tax_rates", active="true")) == rates[1::-1]
    assert ids(list_all(stripe, "/v1/tax_rates", inclusive="true")) == [vat["id"]]
    happened = [("tax_rate.created", rate) for rate in rates] + [("tax_rate.updated", old["id"])]
    assert emitted(stripe, happened)[-1]["active"] is False


def test_credit_notes(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    invoices = []
    for amounts in ((4000, 1000), (2500,)):
        for amount in amounts:
            post(stripe, "/v1/invoiceitems", customer=customer, amount=amount, currency="usd")
        invoice = post(
            stripe, "/v1/invoices", customer=customer, pending_invoice_items_behavior="include"
        )
        invoices.append(post(stripe, f"/v1/invoices/{invoice['id']}/finalize"))
    paid = post(stripe, f"/v1/invoices/{invoices[0]['id']}/pay")
    opened = invoices[1]
    seats = paid["lines"]["data"][1]

    refunded = post(
        stripe,
        "/v1/credit_notes",
        invoice=paid["id"],
        reason="product_unsatisfactory",
        refund_amount=1000,
        **{"lines[0][type]": "invoice_line_item", "lines[0][invoice_line_item]": seats["id"]},
    )
    assert refunded["id"].startswith("cn_") and refunded["number"] == paid["number"] + "-CN-01"
    assert (refunded["type"], refunded["status"], refunded["total"]) == (
        "post_payment",
        "issued",
        1000,
    )
    assert (refunded["amount"], refunded["subtotal"], refunded["currency"]) == (1000, 1000, "usd")
    assert refunded["customer"] == customer and refunded["voided_at"] is None
    refund = ok(stripe.get(f"/v1/refunds/{refunded['refund']}"))
    assert (refund["charge"], refund["amount"]) == (paid["charge"], 1000)
    line = refunded["lines"]["data"][0]
    assert (line["object"], line["invoice_line_item"], line["amount"]) == (
        "credit_note_line_item",
        seats["id"],
        1000,
    )
    assert stripe.post(f"/v1/credit_notes/{refunded['id']}/void").status_code == 400

    custom = {
        f"lines[{i}][{key}]": value
        for i, line in enumerate(({"unit_amount": 300, "quantity": 2}, {"unit_amount": 100}))
        for key, value in {
            "type": "custom_line_item",
            "description": f"goodwill {i}",
            **line,
        }.items()
    }
    goodwill = post(stripe, "/v1/credit_notes", invoice=opened["id"], memo="Sorry", **custom)
    assert (goodwill["type"], goodwill["total"], goodwill["memo"]) == ("pre_payment", 700, "Sorry")
    lines = list_all(stripe, f"/v1/credit_notes/{goodwill['id']}/lines", limit=1)
    assert [(x["quantity"], x["unit_amount"], x["amount"]) for x in lines] == [
        (2, 300, 600),
        (1, 100, 100),
    ]
    small = post(stripe, "/v1/credit_notes", invoice=opened["id"], amount=800)
    too_much = {"invoice": opened["id"], "amount": "1001"}
    assert stripe.post("/v1/credit_notes", data=too_much).status_code == 400
    draft = post(stripe, "/v1/invoices", customer=customer)
    assert (
        stripe.post("/v1/credit_notes", data={"invoice": draft["id"], "amount": "1"}).status_code
        == 400
    )
    noted = post(stripe, f"/v1/credit_notes/{goodwill['id']}", memo="Very sorry")
    assert noted["memo"] == "Very sorry"
    voided = post(stripe, f"/v1/credit_notes/{small['id']}/void")
    assert voided["status"] == "void" and voided["voided_at"]
    assert post(stripe, "/v1/credit_notes", invoice=opened["id"], amount=1800)["total"] == 1800
    opened = ok(stripe.get(f"/v1/invoices/{opened['id']}"))
    assert opened["pre_payment_credit_notes_amount"] == 2500
    assert ok(stripe.get(f"/v1/invoices/{paid['id']}"))["post_payment_credit_notes_amount"] == 1000

    notes = ids(list_all(stripe, "/v1/credit_notes"))[::-1]
    listed_as_stripe(stripe, "/v1/credit_notes", notes)
    assert notes[:3] == [refunded["id"], goodwill["id"], small["id"]]
    assert ids(list_all(stripe, "/v1/credit_notes", invoice=paid["id"])) == [refunded["id"]]
    happened = [
        ("credit_note.created", refunded["id"]),
        ("credit_note.created", goodwill["id"]),
        ("credit_note.created", small["id"]),
        ("credit_note.updated", goodwill["id"]),
        ("credit_note.voided", small["id"]),
        ("credit_note.created", notes[3]),
    ]
    snapshots = emitted(stripe, happened)
    assert snapshots[3]["memo"] == "Very sorry" and snapshots[4]["status"] == "void"
    assert [e["data"]["object"]["amount"] for e in events(stripe, type="refund.created")] == [1000]


def test_setup_intents(stripe: httpx.Client) -> None:
    customer = post(stripe, "/v1/customers", email="saver@example.com")["id"]
    saved = post(
        stripe,
        "/v1/setup_intents",
        customer=customer,
        payment_method="pm_card_visa",
        confirm="true",
        description="Save a card",
    )
    assert (saved["status"], saved["description"]) == ("succeeded", "Save a card")
    card = ok(stripe.get(f"/v1/payment_methods/{saved['payment_method']}"))
    assert card["customer"] == customer
    later = post(stripe, "/v1/setup_intents", customer=customer)
    assert later["status"] == "requires_payment_method"
    later = post(stripe, f"/v1/setup_intents/{later['id']}/cancel", cancellation_reason="abandoned")
    assert (later["status"], later["cancellation_reason"]) == ("canceled", "abandoned")
    assert stripe.post(f"/v1/setup_intents/{later['id']}/cancel").status_code == 400
    declined = post(stripe, "/v1/setup_intents", customer=customer)
    answer = stripe.post(
        f"/v1/setup_intents/{declined['id']}/confirm",
        data={"payment_method": "pm_card_visa_chargeDeclined"},
    )
    assert answer.status_code == 402
    declined = ok(stripe.get(f"/v1/setup_intents/{declined['id']}"))
    assert declined["status"] == "requires_payment_method"
    assert declined["last_setup_error"]["code"] == "card_declined"

    intents = [saved["id"], later["id"], declined["id"]]
    listed_as_stripe(stripe, "/v1/setup_intents", intents)
    assert ids(list_all(stripe, "/v1/setup_intents", customer=customer)) == intents[::-1]
    paid_with = {"payment_method": saved["payment_method"]}
    assert ids(list_all(stripe, "/v1/setup_intents", **paid_with)) == [saved["id"]]
    happened = [
        ("setup_intent.created", saved["id"]),
        ("setup_intent.succeeded", saved["id"]),
        ("setup_intent.created", later["id"]),
        ("setup_intent.canceled", later["id"]),
        ("setup_intent.created", declined["id"]),
        ("setup_intent.setup_failed", declined["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert [s["status"] for s in snapshots] == [
        "requires_confirmation",
        "succeeded",
        "requires_payment_method",
        "canceled",
        "requires_payment_method",
        "requires_payment_method",
    ]


def test_checkout_sessions(stripe: httpx.Client) -> None:
    product = post(stripe, "/v1/products", name="Pro")["id"]
    plan = create_plan(stripe, product, 1200)["id"]
    one_off = {
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "1500",
        "line_items[0][quantity]": "2",
    }
    paying = post(
        stripe,
        "/v1/checkout/sessions",
        mode="payment",
        customer_email="a@example.com",
        success_url="https://example.com/ok",
        **one_off,
    )
    assert paying["id"].startswith("cs_test_") and paying["object"] == "checkout.session"
    assert (paying["status"], paying["payment_status"], paying["amount_total"]) == (
        "open",
        "unpaid",
        3000,
    )
    assert (
        paying["url"].endswith(paying["id"]) and paying["expires_at"] == paying["created"] + 86400
    )
    subscribing = post(
        stripe,
        "/v1/checkout/sessions",
        mode="subscription",
        **{"line_items[0][price]": plan, "line_items[0][quantity]": "3"},
    )
    assert (subscribing["amount_subtotal"], subscribing["currency"]) == (3600, "usd")
    leaving = post(stripe, "/v1/checkout/sessions", mode="payment", **one_off)
    assert stripe.post("/v1/checkout/sessions", data={"mode": "payment"}).status_code == 400

    paid = post(stripe, f"/_config/checkout/sessions/{paying['id']}/complete")
    assert (paid["status"], paid["payment_status"], paid["url"]) == ("complete", "paid", None)
    assert paid["customer_details"]["email"] == "a@example.com" and paid["customer"] is None
    intent = ok(stripe.get(f"/v1/payment_intents/{paid['payment_intent']}"))
    assert (intent["status"], intent["amount"]) == ("succeeded", 3000)
    subscribed = post(
        stripe,
        f"/_config/checkout/sessions/{subscribing['id']}/complete",
        email="b@example.com",
        name="B",
    )
    subscription = ok(stripe.get(f"/v1/subscriptions/{subscribed['subscription']}"))
    assert subscription["status"] == "active" and subscription["customer"] == subscribed["customer"]
    assert ok(stripe.get(f"/v1/invoices/{subscribed['invoice']}"))["amount_paid"] == 3600
    assert ok(stripe.get(f"/v1/customers/{subscribed['customer']}"))["email"] == "b@example.com"
    declined = {"payment_method": "pm_card_chargeCustomerFail"}
    answer = stripe.post(f"/_config/checkout/sessions/{leaving['id']}/complete", data=declined)
    assert answer.status_code == 402
    expired = post(stripe, f"/v1/checkout/sessions/{leaving['id']}/expire")
    assert (expired["status"], expired["url"]) == ("expired", None)
    assert stripe.post(f"/v1/checkout/sessions/{leaving['id']}/expire").status_code == 400

    sessions = [paying["id"], subscribing["id"], leaving["id"]]
    listed_as_stripe(stripe, "/v1/checkout/sessions", sessions)
    assert ids(list_all(stripe, "/v1/checkout/sessions", status="complete")) == sessions[1::-1]
    found = list_all(stripe, "/v1/checkout/sessions", subscription=subscription["id"])
    assert ids(found) == [subscribing["id"]]
    happened = [
        ("checkout.session.completed", paying["id"]),
        ("checkout.session.completed", subscribing["id"]),
        ("checkout.session.expired", leaving["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert snapshots[1]["subscription"] == subscription["id"]


def test_subscription_schedules(stripe: httpx.Client) -> None:
    customer = paying_customer(stripe)["id"]
    product = post(stripe, "/v1/products", name="Team")["id"]
    monthly, bigger = (create_plan(stripe, product, amount)["id"] for amount in (1000, 2500))
    phases = {
        "phases[0][items][0][price]": monthly,
        "phases[0][iterations]": "2",
        "phases[1][items][0][price]": bigger,
        "phases[1][items][0][quantity]": "2",
    }
    now = post(
        stripe, "/v1/subscription_schedules", customer=customer, end_behavior="cancel", **phases
    )
    assert now["id"].startswith("sub_sched_") and now["status"] == "active"
    first, second = now["phases"]
    assert first["end_date"] == second["start_date"] > first["start_date"]
    assert [i["price"] for p in now["phases"] for i in p["items"]] == [monthly, bigger]
    assert now["current_phase"] == {
        "start_date": first["start_date"],
        "end_date": first["end_date"],
    }
    subscription = ok(stripe.get(f"/v1/subscriptions/{now['subscription']}"))
    assert subscription["schedule"] == now["id"] and subscription["status"] == "active"

    later = post(
        stripe,
        "/v1/subscription_schedules",
        customer=customer,
        start_date=subscription["current_period_end"],
        **{"phases[0][items][0][price]": monthly},
    )
    assert (later["status"], later["subscription"], later["current_phase"]) == (
        "not_started",
        None,
        None,
    )
    existing = post(stripe, "/v1/subscriptions", customer=customer, **{"items[0][plan]": monthly})
    adopted = post(stripe, "/v1/subscription_schedules", from_subscription=existing["id"])
    assert (adopted["status"], adopted["subscription"]) == ("active", existing["id"])
    assert adopted["phases"][0]["start_date"] == existing["current_period_start"]
    taken = {"from_subscription": existing["id"]}
    assert stripe.post("/v1/subscription_schedules", data=taken).status_code == 400

    noted = post(
        stripe,
        f"/v1/subscription_schedules/{later['id']}",
        end_behavior="cancel",
        **{"metadata[plan]": "upgrade"},
    )
    assert (noted["end_behavior"], noted["metadata"]) == ("cancel", {"plan": "upgrade"})
    canceled = post(stripe, f"/v1/subscription_schedules/{now['id']}/cancel")
    assert canceled["status"] == "canceled" and canceled["canceled_at"]
    assert ok(stripe.get(f"/v1/subscriptions/{now['subscription']}"))["status"] == "canceled"
    released = post(stripe, f"/v1/subscription_schedules/{adopted['id']}/release")
    assert (released["status"], released["subscription"]) == ("released", None)
    assert released["released_subscription"] == existing["id"] and released["released_at"]
    assert ok(stripe.get(f"/v1/subscriptions/{existing['id']}"))["schedule"] is None
    assert stripe.post(f"/v1/subscription_schedules/{now['id']}/release").status_code == 400

    schedules = [now["id"], later["id"], adopted["id"]]
    listed_as_stripe(stripe, "/v1/subscription_schedules", schedules)
    listed = list_all(stripe, "/v1/subscription_schedules", customer=customer)
    assert ids(listed) == schedules[::-1]
    happened = [
        ("subscription_schedule.created", now["id"]),
        ("subscription_schedule.created", later["id"]),
        ("subscription_schedule.created", adopted["id"]),
        ("subscription_schedule.updated", later["id"]),
        ("subscription_schedule.canceled", now["id"]),
        ("subscription_schedule.released", adopted["id"]),
    ]
    snapshots = emitted(stripe, happened)
    assert [s["status"] for s in snapshots] == [
        "active",
        "not_started",
        "active",
        "not_started",
        "canceled",
        "released",
    ]


def test_a_webhook_gets_the_events_made_after_it_is_registered() -> None:
    with (
        webhook_endpoint() as (endpoint, received),
        running_localstripe() as url,
        client_for(url) as client,
    ):
        post(client, "/v1/coupons", percent_off=5, duration="once")
        register_webhook(url, endpoint, "whsec_test")
        coupon = post(client, "/v1/coupons", percent_off=10, duration="once")
        delivered(received)
    # The earlier event would have come first (each is sent a second after it is made).
    assert [
        (e["type"], e["data"]["object"]["id"]) for e in (json.loads(b) for _, b in received)
    ] == [("coupon.created", coupon["id"])]
    assert received[0][0].startswith("t=")


def test_created_ranges_filter_each_list(stripe: httpx.Client) -> None:
    early = [
        post(stripe, "/v1/coupons", percent_off=i + 1, duration="once")["id"] for i in range(3)
    ]
    since = next_second()
    late = [post(stripe, "/v1/coupons", percent_off=i + 5, duration="once")["id"] for i in range(2)]
    assert (
        ids(list_all(stripe, "/v1/coupons", limit=2, **{"created[gte]": str(since)})) == late[::-1]
    )
    assert (
        ids(list_all(stripe, "/v1/coupons", limit=2, **{"created[lt]": str(since)})) == early[::-1]
    )
    both = {"created[gt]": str(since - 2), "created[lte]": str(since)}
    assert ids(list_all(stripe, "/v1/coupons", limit=2, **both)) == (early + late)[::-1]
    assert list_all(stripe, "/v1/coupons", **{"created[gt]": str(since)}) == []
    found = events(stripe, type="coupon.created", **{"created[gte]": str(since)})
    assert [e["data"]["object"]["id"] for e in found] == late[::-1]


def test_seeding_adds_billing_objects(stripe: httpx.Client, localstripe_url: str) -> None:
    summary = seed_stripe(
        localstripe_url,
        API_KEY,
        customers=12,
        products=3,
        plans_per_product=2,
        subscriptions=5,
        seed=3,
    )
    billing = summary.billing
    assert {kind: len(found) for kind, found in billing.items()} == {
        "tax_rates": 1,
        "coupons": 1,
        "promotion_codes": 1,
        "invoices": 3,
        "payment_intents": 5,
        "charges": 5,
        "refunds": 3,
        "disputes": 1,
        "credit_notes": 1,
    }
    for kind, path in (
        ("tax_rates", "/v1/tax_rates"),
        ("coupons", "/v1/coupons"),
        ("promotion_codes", "/v1/promotion_codes"),
        ("refunds", "/v1/refunds"),
        ("disputes", "/v1/disputes"),
        ("credit_notes", "/v1/credit_notes"),
    ):
        assert ids(list_all(stripe, path)) == list(billing[kind])[::-1]
    intents = ids(list_all(stripe, "/v1/payment_intents"))  # with those paying invoices
    assert [i for i in intents if i in billing["payment_intents"]] == list(
        billing["payment_intents"]
    )[::-1]
    invoices = {i["id"]: i for i in list_all(stripe, "/v1/invoices")}
    assert len(invoices) == 5 + 3  # one per subscription, and the seeded ones
    seeded = sorted((invoices[i]["total"], invoices[i]["status"]) for i in billing["invoices"])
    assert seeded == [(3900, "paid"), (12000, "open"), (29500 + 2063 + 371, "paid")]  # taxed
    charges = {c["id"]: c for c in list_all(stripe, "/v1/charges")}
    assert set(billing["charges"]) <= set(charges)
    assert sorted(charges[c]["status"] for c in billing["charges"]) == [
        "failed",
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    dispute = ok(stripe.get(f"/v1/disputes/{billing['disputes'][0]}"))
    assert dispute["charge"] in billing["charges"] and charges[dispute["charge"]]["disputed"]
    promo = ok(stripe.get(f"/v1/promotion_codes/{billing['promotion_codes'][0]}"))
    assert promo["coupon"]["id"] == billing["coupons"][0]
    note = ok(stripe.get(f"/v1/credit_notes/{billing['credit_notes'][0]}"))
    assert note["invoice"] in billing["invoices"] and note["refund"] in billing["refunds"]
    assert "billing:" in str(summary)
    nobody = seed_stripe(localstripe_url, API_KEY, customers=1, products=0, subscriptions=0)
    assert nobody.billing == {}  # nothing to bill without a paying customer
