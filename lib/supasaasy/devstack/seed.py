"""Seed a Stripe-compatible API (localstripe, or Stripe in test mode) with a realistic dataset.

Customers (name, email, phone, description, address, metadata), products (about 10%
inactive), plans per product (alternately monthly and yearly, usd; plans of inactive
products are inactive too) and subscriptions for a subset of the customers, each with
1-3 items on plans of different products that share one billing interval (Stripe
requires that). Customers that subscribe get the test card `pm_card_visa` as their
default payment method, so their first invoice is paid and the subscription is active.

Then, unless `billing=False`, a few billing objects on the first paying customers (see
`seed_billing`): a tax rate, a coupon with a promotion code, one-off invoices (paid and
open), payments (paid, one declined, one disputed), refunds and a credit note.

The content is a pure function of the sizes and `seed`; the ids are the server's.
Requests run concurrently over one pooled HTTP client.

Run: python -m supasaasy.devstack.seed --api-base http://127.0.0.1:8420 \
        --api-key sk_test_x --customers 1000 --products 100 --subscriptions 300
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from ..errors import SeedError as SeedError

T = TypeVar("T")
R = TypeVar("R")

TEST_PAYMENT_METHOD = "pm_card_visa"
INACTIVE_SHARE = 0.1
MAX_ATTEMPTS = 5  # on 429 (Stripe's rate limit); nothing else is retried

FIRST_NAMES = (
    "Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "Hedy",
    "Ivan", "Joan", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Shafi", "Tim",
    "Ursula", "Vint", "Whitfield", "Xiaoyun", "Yukihiro", "Zhores",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper",
    "Lamarr", "Sutherland", "Clarke", "Thompson", "Lamport", "Hamilton", "Wirth",
    "Perlman", "Goldwasser", "Berners-Lee", "Franklin", "Cerf", "Diffie", "Wang",
    "Matsumoto", "Alferov",
)  # fmt: skip
CITIES = (
    ("San Francisco", "CA", "94107"), ("New York", "NY", "10013"), ("Austin", "TX", "78701"),
    ("Seattle", "WA", "98101"), ("Boston", "MA", "02110"), ("Denver", "CO", "80202"),
    ("Chicago", "IL", "60601"), ("Portland", "OR", "97205"),
)  # fmt: skip
STREETS = ("Market", "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Lake", "Hill", "Park")
SEGMENTS = ("self-serve", "smb", "mid-market", "enterprise")
ADJECTIVES = ("Core", "Pro", "Team", "Scale", "Edge", "Cloud", "Insight", "Secure", "Rapid")
NOUNS = ("Analytics", "Storage", "Messaging", "Search", "Backup", "Monitoring", "Billing")
CATEGORIES = ("platform", "add-on", "support", "usage")
MONTHLY_AMOUNTS = (500, 900, 1500, 2900, 4900, 9900, 19900)

# The billing objects of `seed_billing`; Stripe's test cards pay, decline or get disputed.
TAX_RATE = {
    "display_name": "Sales tax",
    "description": "California sales tax",
    "percentage": 8.25,
    "inclusive": False,
    "country": "US",
    "state": "CA",
    "jurisdiction": "US - CA",
    "tax_type": "sales_tax",
}
COUPON = {"name": "Welcome 20%", "percent_off": 20, "duration": "repeating",
          "duration_in_months": 3, "max_redemptions": 100}  # fmt: skip
PROMOTION_CODE = "WELCOME20"
# Per invoice: its items (description, amount in cents), whether it is taxed, and
# whether it is paid (charged to the card) or open (sent, due in 30 days).
INVOICES = (
    ((("Onboarding workshop", 25000), ("Extra seats", 4500)), True, True),
    ((("Consulting hours", 12000),), False, False),
    ((("Data export", 3900),), False, True),
)
DECLINED_CARD = "pm_card_chargeCustomerFail"
DISPUTED_CARD = "pm_card_createDispute"
PAYMENTS = ((1999, TEST_PAYMENT_METHOD), (4900, TEST_PAYMENT_METHOD),
            (12900, TEST_PAYMENT_METHOD), (2500, DECLINED_CARD), (7500, DISPUTED_CARD))  # fmt: skip


@dataclass(frozen=True)
class PlanSpec:
    product: int  # index into Dataset.products
    params: dict[str, Any]


@dataclass(frozen=True)
class SubscriptionSpec:
    customer: int  # index into Dataset.customers
    plans: tuple[int, ...]  # indexes into Dataset.plans, one per item
    quantities: tuple[int, ...]
    metadata: dict[str, str]


@dataclass(frozen=True)
class Dataset:
    """What to create, with references by index (the server assigns the ids)."""

    customers: list[dict[str, Any]]
    products: list[dict[str, Any]]
    plans: list[PlanSpec]
    subscriptions: list[SubscriptionSpec]


@dataclass(frozen=True)
class SeedSummary:
    """The ids created, per kind, in the dataset's order; and how long it took."""

    customers: tuple[str, ...]
    products: tuple[str, ...]
    plans: tuple[str, ...]
    subscriptions: tuple[str, ...]
    subscription_items: tuple[str, ...]
    seconds: float
    # What `seed_billing` made, by kind ("invoices", "charges", ...), in order.
    billing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "customers": len(self.customers),
            "products": len(self.products),
            "plans": len(self.plans),
            "subscriptions": len(self.subscriptions),
            "subscription_items": len(self.subscription_items),
        }

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts().items())
        billing = ", ".join(f"{len(ids)} {kind}" for kind, ids in self.billing.items())
        made = f"{counts}; billing: {billing}" if billing else counts
        return f"seeded {made} in {self.seconds:.2f} s"


def build_dataset(
    *, customers: int, products: int, plans_per_product: int, subscriptions: int, seed: int = 0
) -> Dataset:
    """The dataset for these sizes; the same arguments give the same content."""
    if min(customers, products, plans_per_product, subscriptions) < 0:
        raise ValueError("sizes must not be negative")
    if subscriptions > customers:
        raise ValueError(f"{subscriptions} subscriptions need as many customers, not {customers}")
    rng = random.Random(seed)
    tag = str(seed)

    subscribers = sorted(rng.sample(range(customers), subscriptions))
    paying = set(subscribers)
    customer_params = [_customer(rng, i, tag, i in paying) for i in range(customers)]

    inactive = set(rng.sample(range(products), round(products * INACTIVE_SHARE)))
    product_params: list[dict[str, Any]] = []
    plans: list[PlanSpec] = []
    for p in range(products):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {p + 1}"
        product_params.append(
            {
                "name": name,
                "description": f"{name}: seeded product {p + 1} of {products}",
                "active": p not in inactive,
                "metadata": {"seed": tag, "index": str(p), "category": rng.choice(CATEGORIES)},
            }
        )
        monthly = rng.choice(MONTHLY_AMOUNTS)
        for j in range(plans_per_product):
            interval = "month" if j % 2 == 0 else "year"
            version = j // 2 + 1
            amount = monthly * version * (10 if interval == "year" else 1)
            suffix = "" if version == 1 else f" v{version}"
            params = {
                "amount": amount,
                "currency": "usd",
                "interval": interval,
                "interval_count": 1,
                "nickname": f"{name} {'Monthly' if interval == 'month' else 'Yearly'}{suffix}",
                "active": p not in inactive,
                "metadata": {"seed": tag, "product_index": str(p), "version": str(version)},
            }
            plans.append(PlanSpec(product=p, params=params))

    # Active plans by interval, then by product: one subscription uses one interval and
    # at most one plan per product.
    by_interval: dict[str, dict[int, list[int]]] = {}
    for index, plan in enumerate(plans):
        if plan.params["active"]:
            products_plans = by_interval.setdefault(plan.params["interval"], {})
            products_plans.setdefault(plan.product, []).append(index)
    if subscriptions and not by_interval:
        raise ValueError("subscriptions need at least one active plan")
    intervals = sorted(by_interval)
    weights = [3 if interval == "month" else 1 for interval in intervals]

    subscription_specs: list[SubscriptionSpec] = []
    for n, customer in enumerate(subscribers):
        choices = by_interval[rng.choices(intervals, weights)[0]]
        wanted = rng.choices((1, 2, 3), (5, 3, 2))[0]
        chosen = rng.sample(sorted(choices), min(wanted, len(choices)))
        subscription_specs.append(
            SubscriptionSpec(
                customer=customer,
                plans=tuple(rng.choice(choices[p]) for p in chosen),
                quantities=tuple(rng.choice((1, 1, 1, 2, 5)) for _ in chosen),
                metadata={"seed": tag, "index": str(n)},
            )
        )
    return Dataset(customer_params, product_params, plans, subscription_specs)


def _customer(rng: random.Random, i: int, tag: str, paying: bool) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, state, postal_code = rng.choice(CITIES)
    address = {
        "line1": f"{rng.randint(1, 9999)} {rng.choice(STREETS)} St",
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "country": "US",
    }
    if rng.random() < 0.3:
        address["line2"] = f"Suite {rng.randint(100, 999)}"
    segment = rng.choice(SEGMENTS)
    params: dict[str, Any] = {
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}.{i}@example.com",
        "phone": f"+1555{rng.randint(0, 9_999_999):07d}",
        "description": f"Seeded {segment} customer {i}",
        "address": address,
        "metadata": {"seed": tag, "index": str(i), "segment": segment},
    }
    if paying:
        params["payment_method"] = TEST_PAYMENT_METHOD
        params["invoice_settings"] = {"default_payment_method": TEST_PAYMENT_METHOD}
    return params


def form_encode(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: `metadata[k]=v`, `items[0][plan]=p`, booleans as true/false."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        pairs.extend(_encode_value(name, value))
    return pairs


def _encode_value(name: str, value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return form_encode(value, name)
    if isinstance(value, list | tuple):
        return [pair for i, v in enumerate(value) for pair in _encode_value(f"{name}[{i}]", v)]
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    return [(name, str(value))]


def seed_stripe(
    api_base: str,
    api_key: str,
    *,
    customers: int,
    products: int,
    plans_per_product: int = 2,
    subscriptions: int,
    concurrency: int = 8,
    seed: int = 0,
    timeout: float = 30.0,
    billing: bool = True,
) -> SeedSummary:
    """Create the dataset for these sizes on the API at `api_base` (without `/v1`).

    Customers and products go first (concurrently), then plans, then subscriptions,
    then (with `billing`) the billing objects of `seed_billing`, one request at a time.
    The first failed request stops the seeding with a SeedError; what was created
    before stays.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    data = build_dataset(
        customers=customers,
        products=products,
        plans_per_product=plans_per_product,
        subscriptions=subscriptions,
        seed=seed,
    )
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(
            base_url=api_base.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            limits=limits,
            timeout=timeout,
        ) as client,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="seed") as pool,
    ):

        def post(path: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
            return lambda params: _post(client, path, params)

        customer_futures = _submit(pool, post("/v1/customers"), data.customers)
        product_futures = _submit(pool, post("/v1/products"), data.products)
        customer_ids = [c["id"] for c in _results(customer_futures + product_futures)]
        product_ids = customer_ids[customers:]
        customer_ids = customer_ids[:customers]

        plan_params = [{**p.params, "product": product_ids[p.product]} for p in data.plans]
        plan_ids = [p["id"] for p in _results(_submit(pool, post("/v1/plans"), plan_params))]

        subscription_params = [
            {
                "customer": customer_ids[s.customer],
                "items": [
                    {"plan": plan_ids[plan], "quantity": quantity}
                    for plan, quantity in zip(s.plans, s.quantities, strict=True)
                ],
                "metadata": s.metadata,
            }
            for s in data.subscriptions
        ]
        created = _results(_submit(pool, post("/v1/subscriptions"), subscription_params))
        paying = [customer_ids[s.customer] for s in data.subscriptions]
        billed = seed_billing(client, paying, str(seed)) if billing else {}

    return SeedSummary(
        customers=tuple(customer_ids),
        products=tuple(product_ids),
        plans=tuple(plan_ids),
        subscriptions=tuple(s["id"] for s in created),
        subscription_items=tuple(i["id"] for s in created for i in s["items"]["data"]),
        seconds=time.monotonic() - started,
        billing=billed,
    )


def seed_billing(
    client: httpx.Client, customers: Sequence[str], tag: str
) -> dict[str, tuple[str, ...]]:
    """Billing objects, one after the other, on these paying customers (the first few,
    in turn when fewer): the tax rate `TAX_RATE`, the coupon `COUPON` with the promotion code
    `PROMOTION_CODE`, the one-off `INVOICES` (finalized; paid, or sent and open), the
    `PAYMENTS` (payment intents confirmed with Stripe's test cards: three paid, one
    declined, one disputed), a full and a partial refund, and a credit note refunding
    the extra seats of the first invoice. The ids made, by kind; none without customers.
    """
    if not customers:
        return {}
    payers = [customers[i % len(customers)] for i in range(len(PAYMENTS))]
    metadata = {"seed": tag}

    def post(path: str, params: Mapping[str, Any], *accept: int) -> dict[str, Any]:
        return _post(client, path, params, accept)

    tax_rate = post("/v1/tax_rates", {**TAX_RATE, "metadata": metadata})
    coupon = post("/v1/coupons", {**COUPON, "metadata": metadata})
    promotion = post("/v1/promotion_codes", {"coupon": coupon["id"], "code": PROMOTION_CODE})

    invoices = []
    for customer, (items, taxed, paid) in zip(payers, INVOICES, strict=False):
        for description, amount in items:
            item = {"customer": customer, "amount": amount, "currency": "usd"}
            post("/v1/invoiceitems", {**item, "description": description})
        params: dict[str, Any] = {"customer": customer, "metadata": metadata,
                                  "pending_invoice_items_behavior": "include"}  # fmt: skip
        if taxed:
            params["default_tax_rates"] = [tax_rate["id"]]
        if not paid:
            params.update(collection_method="send_invoice", days_until_due=30)
        invoice = post("/v1/invoices", params)
        invoice = post(f"/v1/invoices/{invoice['id']}/finalize", {})
        invoices.append(post(f"/v1/invoices/{invoice['id']}/pay", {}) if paid else invoice)

    intents, charges = [], []
    for customer, (amount, card) in zip(payers, PAYMENTS, strict=True):
        payment = {"amount": amount, "currency": "usd", "customer": customer,
                   "payment_method": card, "payment_method_types": ["card"],
                   "confirm": True, "metadata": metadata}  # fmt: skip
        answer = post("/v1/payment_intents", payment, 402)  # 402: the declined card
        if "error" in answer:
            charges.append(answer["error"]["charge"])
            intents.append(answer["error"]["payment_intent"]["id"])
        else:
            charges.append(answer["latest_charge"])
            intents.append(answer["id"])
    disputes = client.get("/v1/disputes", params={"charge": charges[-1]}).json()["data"]

    refunds = [
        post("/v1/refunds", {"charge": charges[0], "reason": "requested_by_customer"}),
        post("/v1/refunds", {"charge": charges[1], "amount": 1000, "reason": "duplicate"}),
    ]
    seats = invoices[0]["lines"]["data"][1]
    lines = [{"type": "invoice_line_item", "invoice_line_item": seats["id"]}]
    credit_note = post("/v1/credit_notes", {"invoice": invoices[0]["id"], "lines": lines,
                                            "refund_amount": seats["amount"],
                                            "reason": "product_unsatisfactory"})  # fmt: skip
    return {
        "tax_rates": (tax_rate["id"],),
        "coupons": (coupon["id"],),
        "promotion_codes": (promotion["id"],),
        "invoices": tuple(i["id"] for i in invoices),
        "payment_intents": tuple(intents),
        "charges": tuple(charges),
        "refunds": (*(r["id"] for r in refunds), credit_note["refund"]),
        "disputes": tuple(d["id"] for d in disputes),
        "credit_notes": (credit_note["id"],),
    }


def _submit(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> list[Future[R]]:
    return [pool.submit(fn, item) for item in items]


def _results(futures: Sequence[Future[R]]) -> list[R]:
    """Results in order; on the first failure cancel what has not started and raise."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def _post(
    client: httpx.Client, path: str, params: Mapping[str, Any], accept: Sequence[int] = ()
) -> dict[str, Any]:
    """POST params; the answer's body (also for the statuses in `accept`)."""
    body = dict(form_encode(params))  # keys are unique: array elements are indexed
    for attempt in range(MAX_ATTEMPTS):
        response = client.post(path, data=body)
        if response.status_code == 429 and attempt + 1 < MAX_ATTEMPTS:
            time.sleep(0.5 * 2**attempt)
            continue
        if response.is_success or response.status_code in accept:
            result: dict[str, Any] = response.json()
            return result
        raise SeedError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m supasaasy.devstack.seed",
        description="Seed a Stripe-compatible API (e.g. localstripe) with a realistic dataset.",
    )
    parser.add_argument("--api-base", required=True, help="e.g. http://127.0.0.1:8420 (no /v1)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("STRIPE_API_KEY"),
        help="secret key (sk_test_...); default: $STRIPE_API_KEY",
    )
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--plans-per-product", type=int, default=2)
    parser.add_argument("--subscriptions", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-billing", dest="billing", action="store_false", help="no invoices, payments..."
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key (or $STRIPE_API_KEY) is required")
    summary = seed_stripe(
        args.api_base,
        args.api_key,
        customers=args.customers,
        products=args.products,
        plans_per_product=args.plans_per_product,
        subscriptions=args.subscriptions,
        concurrency=args.concurrency,
        seed=args.seed,
        billing=args.billing,
    )
    print(summary)


if __name__ == "__main__":
    main()
