"""localstripe (a fake, stateful Stripe server), patched for our tests and local stack.

Run: python -m supasaasy.devstack.localstripe --port 8420 [--host 127.0.0.1]

The server always starts from an empty store, keeps everything in memory and binds
only the host given (localstripe's own `start()` binds `::`, i.e. every interface).
In Python, `running_localstripe()` starts one as a child process on a free port and
yields its base URL.

Patches applied by `apply_patches()` (each is small; the code says why):

- No pickling: localstripe pickles the whole store to the fixed, machine-wide file
  /tmp/localstripe.pickle on every write (seeding gets quadratically slow and
  concurrent servers share state) and loads that file at start.
- The store keeps an index by kind, so lists (and exports that list, such as a
  customer's `subscriptions`) no longer scan every object in the store.
- Events are serialized for delivery only when a webhook is registered (Stripe too
  sends an endpoint only the events made after it exists).
- `GET /v1/events` accepts `types` (an array of up to 20 exact type names, sent as
  `types[0]=a&types[1]=b`) besides `type`, combined with `created[...]` and paging,
  and lists events newest first, as Stripe does.
- `GET /v1/prices` (`active`, `product`, `limit`, `starting_after`) and
  `GET /v1/prices/{id}`: every plan is readable as a price with the same id, as on
  Stripe. Plan events are accompanied by `price.created/updated/deleted`, as on Stripe.
- Events localstripe forgets: `product.updated`, `product.deleted`, `plan.updated`,
  `plan.deleted`, `customer.subscription.updated`. Deleting a product that still has
  plans is refused (400), as on Stripe; localstripe would delete it and then every
  plan list would fail with 404 (a plan's export reads its product).
- Subscriptions with several items (localstripe answers 500 "Not implemented" for
  more than one): the first item goes through localstripe, the others are added as
  subscription items. Only the first item is invoiced. `items[i][price]` is accepted
  as `items[i][plan]`. Subscription items show `subscription` and `price`, and
  `GET /v1/subscription_items?subscription=sub_...` lists that subscription's items.
- Updating a subscription's `metadata` works (localstripe accepted and dropped it).
- Customers, billing and payment resources, as Stripe lists them: newest first, `limit`,
  `starting_after`, `created` (a time, or a range of `gt`/`gte`/`lt`/`lte`) and these
  filters (anything else: 400): customers (`email`), invoices (`customer`,
  `subscription`, `status`, `collection_method`), charges (`customer`,
  `payment_intent`), payment intents (`customer`), refunds (`charge`, `payment_intent`),
  balance transactions (`currency`, `source`, `type`; also at /v1/balance/history),
  disputes (`charge`, `payment_intent`), coupons, promotion codes (`active`, `code`,
  `coupon`, `customer`), tax rates (`active`, `inclusive`), credit notes (`customer`,
  `invoice`), setup intents (`customer`, `payment_method`), Checkout sessions
  (`customer`, `payment_intent`, `status`, `subscription`) and subscription schedules
  (`customer`). Each is retrieved at `/v1/<plural>/{id}`.
- Resources localstripe lacks: disputes (`dp_`; update `evidence`, `metadata`,
  `submit`; `/close`), promotion codes (`promo_`; the coupon embedded), credit notes
  (`cn_`; on open or paid invoices, from `lines` (invoice or custom lines) or an
  `amount`, with `refund_amount` refunding the invoice's charge and
  `out_of_band_amount`; `/void`; `GET /v1/credit_notes/{id}/lines`), Checkout sessions
  (`cs_test_`, at /v1/checkout/sessions; `line_items` with a `price` or, for payments,
  `price_data`; `/expire`) and subscription schedules (`sub_sched_`; from `phases` (each
  with `items` and `end_date` or `iterations`, the first starting at `start_date`, now
  by default, which creates the subscription) or `from_subscription`; `/cancel`
  cancels the subscription, `/release` leaves it; subscriptions show `schedule`).
- The events Stripe sends, with a snapshot of the object: `invoice.created`,
  `.updated`, `.finalized`, `.paid` (with localstripe's `.payment_succeeded`),
  `.payment_failed`, `.voided`, `.deleted`; `charge.succeeded` (also when only
  authorized), `.failed`, `.captured`, `.refunded`, `.updated`;
  `payment_intent.created`, `.canceled` (localstripe sends `.succeeded` and
  `.payment_failed`; the latter now also when an invoice's payment is declined at
  once); `refund.created`, `.updated`; `charge.dispute.created`, `.funds_withdrawn`,
  `.updated`, `.closed`; `coupon.created`, `.updated`, `.deleted`;
  `promotion_code.created`, `.updated`; `tax_rate.created`, `.updated`;
  `credit_note.created`, `.updated`, `.voided`; `setup_intent.created`, `.succeeded`,
  `.requires_action`, `.setup_failed`, `.canceled`; `checkout.session.completed`,
  `.expired`; `subscription_schedule.created`, `.updated`, `.canceled`, `.released`.
  Balance transactions have none, as on Stripe.
- Invoices: `POST /v1/invoices` without `subscription` makes a one-off draft taking
  the customer's pending invoice items with `pending_invoice_items_behavior=include`
  (none by default, as on Stripe; localstripe added the subscription's items), with
  `currency`, `metadata`, `collection_method` and `days_until_due` (`due_date`);
  `POST /v1/invoiceitems` with a draft `invoice` adds a line to it; `/finalize` gives
  the invoice its `number` (the customer's prefix and a sequence); `/pay` finalizes a
  draft first and answers 402 when the card is declined (the invoice stays open);
  `/void` works without a payment intent and leaves an active subscription alone;
  only one-off drafts can be deleted; updates take `description` and `metadata`;
  `/lines` pages with `starting_after`; invoices show `paid`, `amount_remaining`,
  `pre_payment_credit_notes_amount`, `post_payment_credit_notes_amount`, and `charge`
  as an id.
- Payments: balance transactions of card charges carry Stripe's fee (2.9% + 30), a
  dispute withdraws the amount with a 15.00 fee (an `adjustment`); charges show
  `disputed` and `amount_captured`, and leave `refunds` out (as since 2022-11-15);
  charge updates take `description`, `metadata`, `receipt_email`; payment intents show
  `latest_charge` as an id, leave the old `charges` out and take
  `cancellation_reason` (with `canceled_at`); refunds take a `reason`, name their
  payment intent, and are refused beyond what is left of the charge or on a disputed
  charge; a declined card answers Stripe's 402 `card_error` naming the charge and
  its payment intent; `pm_card_createDispute` (Stripe's test card) pays, then is
  disputed as fraudulent. Setup intents take `payment_method`, `confirm` and `description` at
  creation; a declined card leaves them `requires_payment_method` with
  `last_setup_error` (localstripe: `canceled`); success attaches the card to the
  customer; only unfinished ones can be confirmed or canceled.
- Coupons get an id when none is given and take `name`, `max_redemptions`,
  `redeem_by`; updates take `name` and `metadata`. Tax rates take `country`, `state`,
  `tax_type`, show `effective_percentage`; updates take what Stripe allows.
- Test-only routes, under /_config (no key needed), as the card issuer or the
  customer would act: `POST /_config/disputes` (`charge`, optional `amount`, `reason`)
  opens a dispute; `POST /_config/checkout/sessions/{id}/complete` (optional
  `payment_method`, `pm_card_visa` by default, `email`, `name`) completes a session as
  its page would: a payment intent, a subscription (with a new customer if none, the
  card becoming its default) or a saved card, then `checkout.session.completed`; a
  declined card answers 402 and leaves the session open.
- `POST /_config/faults` injects failures for tests: error answers (5xx, 429 with
  Retry-After), pages that contradict themselves, cursors that repeat, slow answers.
- `POST /_config/clock` with JSON `{"offset_seconds": N}` (an integer, negative for the
  past; 0 resets) stamps every object and event made from then on N seconds from the
  real time, as a Stripe test clock's frozen time would: `created` and the other times
  localstripe takes (periods, `status_transitions`, `canceled_at`, ...). Nothing made
  earlier changes and nothing advances by itself. `GET /_config/clock` shows the offset.
  Webhooks are still signed with the real time (localstripe signed with the event's
  `created`), as Stripe's signature tolerance expects.

Differences from real Stripe that remain (a sync must not rely on them):

- Lists of products, plans, prices, subscriptions and subscription items come back
  oldest first (Stripe: newest first) and take no `created`: products, plans, prices and
  subscription items answer 400 ("Unexpected created"), subscriptions 500. No list
  supports `ending_before`; `limit` is not capped at 100.
- `starting_after` with an id that is not (or no longer) in the list restarts from
  the first item instead of failing.
- `type` on events is an exact name (no `customer.*` wildcards).
- Deleted customers, products, plans, coupons and draft invoices are gone (404), not
  `deleted: true` objects.
- Updating a subscription's `items` replaces them all by the single item given.
- Trials: subscriptions with a trial stay `incomplete` (never `trialing`).
- Nothing happens with time: invoices are never advanced nor retried, balance
  transactions are `available` at once (Stripe: pending for days), disputes are
  decided only by `/close` (never won), sessions do not expire at `expires_at`,
  schedules never change phase nor complete, promotion codes and coupons never expire.
- Money: coupons and promotion codes are never redeemed nor applied; a pre-payment
  credit note does not lower the invoice's `amount_due`, and what a credit note does
  not refund is not credited to a customer balance; fees are card and dispute fees only.
- `POST /v1/invoices` with `subscription` is localstripe's next invoice of that
  subscription. Stripe also sends `invoice.updated` with most status changes, and
  events this server cannot act (`invoice.sent`, `charge.pending`, ...).
- Checkout sessions in payment mode accept recurring prices as one-time amounts; there
  is no `/line_items` list; `customer_details` appear at completion.
- Subscription schedule updates take `metadata` and `end_behavior` only.
- Events keep a snapshot of their object, taken when sent (the `payment_intent.created`
  of an invoice's payment shows no `invoice` yet); ids are random (disputes `dp_`;
  Stripe also uses `du_`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .processes import free_port, require_free_ports, spawn, stop, wait_until

MODULE = "supasaasy.devstack.localstripe"
DEFAULT_HOST = "127.0.0.1"
TEST_API_KEY = "sk_test_localstripe"
MAX_EVENT_TYPES = 20  # Stripe's limit for `types`

_app: Any = None


def apply_patches() -> Any:
    """Patch localstripe in this process (once) and return its aiohttp application."""
    global _app
    if _app is not None:
        return _app
    if "localstripe.server" in sys.modules:
        # Its routes are made when it is imported, from the functions of that moment.
        raise RuntimeError("localstripe.server was imported before the patches")

    from localstripe import resources as r  # type: ignore[import-untyped]
    from localstripe.errors import UserError  # type: ignore[import-untyped]

    kit = _Kit(r, UserError)
    _patch_clock(kit)
    _patch_store(kit)
    _patch_events(kit)
    _patch_catalog(kit)
    _patch_payments(kit)
    _patch_billing(kit)

    from localstripe import server

    _add_faults(server.app)
    _add_clock(server.app, kit.clock)
    _app = server.app
    return _app


_BOUNDS = ("gt", "gte", "lt", "lte")


class _Clock:
    """A stand-in for the `time` module: `time()` is the real time shifted by `offset`
    seconds (a test clock); everything else is the real module's."""

    def __init__(self) -> None:
        self.offset = 0

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _Kit:
    """What the patches share: localstripe's resources, its error, the store's index by
    kind, and the helpers for Stripe's list, retrieve, update and event patterns."""

    def __init__(self, r: Any, user_error: Any) -> None:
        self.r = r
        self.base = r.StripeObject  # what localstripe's objects derive from
        self.user_error = user_error
        self.clock = _Clock()  # localstripe's `time` (see _patch_clock)
        # Objects by kind ("customer", ...) in insertion order, kept with the store.
        self.by_kind: dict[str, dict[str, Any]] = {}

    def error(self, status: int, message: str, **contents: Any) -> Exception:
        error: Exception = self.user_error(status, message, contents or None)
        return error

    def check(self, ok: bool, message: str = "Bad request") -> None:
        if not ok:
            raise self.error(400, message)

    def only(self, params: Mapping[str, Any], allowed: Iterable[str]) -> None:
        unexpected = [key for key in params if key not in allowed]
        if unexpected:
            raise self.error(400, "Unexpected " + ", ".join(unexpected))

    def emit(self, kind: str, obj: Any) -> None:
        # Creating an Event stores it (so /v1/events lists it) with a snapshot of `obj`;
        # delivery only goes to webhooks registered through /_config/webhooks.
        self.r.schedule_webhook(self.r.Event(kind, obj))

    def objects(self, kind: str) -> list[Any]:
        """The stored objects of a kind, oldest first."""
        return list(self.by_kind.get(kind, {}).values())

    def raise_declined(self, charge: Any) -> None:
        """Stripe's error for a declined card: a `card_error` naming the charge and its
        payment intent (localstripe: an `invalid_request_error` with the charge)."""
        error = self.user_error(402, charge.failure_message)
        error.body["error"].update(
            type="card_error",
            code=charge.failure_code,
            decline_code="generic_decline",
            charge=charge.id,
        )
        if charge.payment_intent:
            intent = self.r.PaymentIntent._api_retrieve(charge.payment_intent)
            error.body["error"]["payment_intent"] = intent._export()
        raise error

    def now(self) -> int:
        """The time as localstripe stamps it: the real one, shifted by the test clock."""
        return int(self.clock.time())

    def route(self, method: str, url: str, func: Callable[..., Any]) -> None:
        """Serve `func` at method+url, in place of localstripe's own function there if
        it has one. It gets the path's `id` and the request's parameters (localstripe's
        `api_extra`). Routes are made when localstripe.server is imported."""
        apis = self.r.extra_apis
        apis[:] = [api for api in apis if (api[0], api[1]) != (method, url)]
        apis.append((method, url, func))

    def created_range(self, created: Any) -> tuple[float, float]:
        """`created` as Stripe takes it (a time, or a range of `gt`, `gte`, `lt`, `lte`), as
        the least and greatest times it takes in."""
        if created is None:
            return -math.inf, math.inf
        bounds = created if type(created) is dict else {"gte": created, "lte": created}
        low, high = -math.inf, math.inf
        for op, value in bounds.items():
            limit = self.r.try_convert_to_int(value)
            if op not in _BOUNDS or type(limit) is not int:
                raise self.error(400, "Invalid created: a time, or gt, gte, lt and lte")
            if op in ("gt", "gte"):
                low = max(low, limit + (op == "gt"))
            else:
                high = min(high, limit - (op == "lt"))
        return low, high

    def listing(self, kind: str, *filters: str) -> Callable[..., Any]:
        """Stripe's list of `kind`: newest first, `limit`, `starting_after`, `created`,
        and equality filters on the fields named."""

        def list_all(
            url: str | None,
            /,
            limit: Any = None,
            starting_after: Any = None,
            created: Any = None,
            **params: Any,
        ) -> Any:
            self.only(params, filters)
            low, high = self.created_range(created)
            wanted = {key: value for key, value in params.items() if value is not None}
            page = self.r.List(url, limit=limit, starting_after=starting_after)
            newest_first = reversed(self.by_kind.get(kind, {}).values())
            if created is None and not wanted:  # each page of a long list: keep it cheap
                page._list = list(newest_first)
                return page
            page._list = [
                obj
                for obj in newest_first
                if low <= obj.created <= high
                and all(_same(getattr(obj, key, None), value) for key, value in wanted.items())
            ]
            return page

        return list_all

    def serve(self, cls: Any, path: str, *filters: str, create: bool = True) -> None:
        """Routes for a resource localstripe lacks, at /v1/<path>: list (see `listing`),
        retrieve, create (`cls._api_create`) and update (`cls._api_update`)."""
        url = "/v1/" + path
        cls._api_list_all = staticmethod(self.listing(cls.object, *filters))

        def retrieve(id: str, **params: Any) -> Any:
            self.only(params, ())
            return cls._api_retrieve(id)

        self.route("GET", url, lambda **params: cls._api_list_all(url, **params))
        self.route("GET", url + "/{id}", retrieve)
        if create:
            self.route("POST", url, lambda **data: cls._api_create(**data))
        self.route("POST", url + "/{id}", lambda id, **data: cls._api_update(id, **data))

    def serve_lines(self, cls: Any, path: str) -> None:
        """`GET /v1/<path>/{id}/lines`: the `lines` of one object, paged."""

        def list_lines(
            id: str, limit: Any = None, starting_after: Any = None, **params: Any
        ) -> Any:
            self.only(params, ())
            page = self.r.List(f"/v1/{path}/{id}/lines", limit=limit, starting_after=starting_after)
            page._list = cls._api_retrieve(id).lines._list
            return page

        self.route("GET", f"/v1/{path}/{{id}}/lines", list_lines)

    def evented(
        self, cls: Any, name: str, event: str, allowed: Iterable[str] | None = None
    ) -> None:
        """Make the classmethod `cls.<name>` emit `event` with the object it returns;
        with `allowed`, refuse other parameters (for updates: Stripe's updatable fields)."""
        original = getattr(cls, name)

        def call(klass: Any, /, *args: Any, **data: Any) -> Any:
            if allowed is not None:
                self.only(data, allowed)
            obj = original(*args, **data)
            self.emit(event, obj)
            return obj

        setattr(cls, name, classmethod(call))

    def update_metadata(self, obj: Any, metadata: Any) -> None:
        """Stripe's metadata update: keys given are set, keys set to "" removed."""
        self.check(metadata is None or type(metadata) is dict)
        for key, value in (metadata or {}).items():
            if value == "":
                obj.metadata.pop(key, None)
            else:
                obj.metadata[key] = value

    def exported(self, cls: Any, ids: Iterable[str] = (), hidden: Iterable[str] = ()) -> None:
        """Export the fields `ids` (objects in localstripe) as ids and leave `hidden` out,
        as Stripe does unless they are expanded."""
        export = cls._export

        def export_as_stripe(obj: Any, expand: Any = None) -> Any:
            exported = export(obj, expand=expand)
            for field in ids:
                if isinstance(exported.get(field), dict) and field not in (expand or ()):
                    exported[field] = exported[field]["id"]
            for field in hidden:
                if field not in (expand or ()):
                    exported.pop(field, None)
            return exported

        cls._export = export_as_stripe

    def resnapshot(self, event_type: str, obj: Any) -> None:
        """Take again the snapshot of obj's latest `event_type` event (localstripe took it
        before the object was complete)."""
        events = reversed(self.by_kind.get("event", {}).values())
        for event in itertools.islice(events, 100):
            if event.type == event_type and event.data["object"].get("id") == obj.id:
                event.data = {"object": obj._export()}
                return


def _texts(*values: Any) -> bool:
    """Whether these optional parameters are strings when given."""
    return all(value is None or type(value) is str for value in values)


def _same(value: Any, wanted: Any) -> bool:
    """Whether an object's field matches a list filter (given as text)."""
    if type(value) is bool:
        return bool(str(value).lower() == wanted)
    return bool(getattr(value, "id", value) == wanted)


def _patch_clock(kit: _Kit) -> None:
    """localstripe stamps objects with `int(time.time())`: its `time` becomes the test
    clock. Webhooks are signed with the real time: localstripe signed with the event's
    `created`, which a receiver checks against its own clock (Stripe: within 5 minutes)."""
    from localstripe import webhooks

    kit.r.time = kit.clock
    send = webhooks._send_webhook

    def send_signed_now(event: Any) -> Any:
        # Only `type`, `created` and `_export` are read; `created` is the signature's `t`.
        signed = SimpleNamespace(type=event.type, created=int(time.time()), _export=event._export)
        return send(signed)

    webhooks._send_webhook = send_signed_now


def _patch_store(kit: _Kit) -> None:
    r = kit.r

    def no_disk(self: Any) -> None:
        return None

    # Every write pickled the whole store to one /tmp file shared by the machine.
    r.Store.dump_to_disk = no_disk
    # Always start empty instead of from whatever another run left in /tmp.
    r.Store.try_load_from_disk = no_disk

    # Every list, and exports such as a customer's `subscriptions` or a charge's
    # `refunds`, scanned the whole store, which made seeding quadratic in its size.
    by_kind = kit.by_kind

    def kind(key: str) -> str:
        return key.split(":", 1)[0]

    def set_item(self: Any, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        by_kind.setdefault(kind(key), {})[key] = value

    def del_item(self: Any, key: str) -> None:
        dict.__delitem__(self, key)
        by_kind.get(kind(key), {}).pop(key, None)

    def clear(self: Any) -> None:
        dict.clear(self)
        by_kind.clear()

    def list_kind(
        cls: Any, /, url: str, limit: Any = None, starting_after: Any = None, **params: Any
    ) -> Any:
        # Same as StripeObject._api_list_all, without the scan.
        kit.only(params, ())
        li = r.List(url, limit=limit, starting_after=starting_after)
        li._list = kit.objects(cls.object)
        return li

    for key, value in r.store.items():
        set_item(r.store, key, value)
    r.Store.__setitem__ = set_item
    r.Store.__delitem__ = del_item
    r.Store.clear = clear
    r.StripeObject._api_list_all = classmethod(list_kind)


def _patch_events(kit: _Kit) -> None:
    from localstripe import webhooks

    r = kit.r
    schedule = r.schedule_webhook

    def schedule_if_any(event: Any) -> None:
        # localstripe serialized every event for delivery, with no webhook to send it to.
        if webhooks._webhooks:
            schedule(event)

    r.schedule_webhook = schedule_if_any
    list_events = r.Event._api_list_all

    def list_events_by_types(cls: Any, /, url: str, types: Any = None, **params: Any) -> Any:
        # Stripe clients filter on several types at once with `types[]`.
        if types is not None and (
            type(types) is not list
            or not 1 <= len(types) <= MAX_EVENT_TYPES
            or not all(type(t) is str and t for t in types)
            or params.get("type") is not None  # Stripe: pass `type` or `types`, not both
        ):
            raise kit.error(400, "Bad request")
        events = list_events(url, **params)
        if types is not None:
            wanted = set(types)
            events._list = [e for e in events._list if e.type in wanted]
        # Newest first, as on Stripe: for events the order carries meaning (the first
        # event of an object holds its latest state).
        events._list.reverse()
        return events

    r.Event._api_list_all = classmethod(list_events_by_types)


def _patch_catalog(kit: _Kit) -> None:
    """Prices, the events of products and plans, subscriptions with several items."""
    r, emit = kit.r, kit.emit

    class Price(kit.base):  # type: ignore[misc,name-defined]
        """A plan as a price; built on demand, never stored (no super().__init__)."""

        object = "price"

        def __init__(self, plan: Any) -> None:
            per_unit = plan.billing_scheme == "per_unit"
            self.id = plan.id
            self.active = plan.active
            self.billing_scheme = plan.billing_scheme
            self.created = plan.created
            self.currency = plan.currency
            self.custom_unit_amount = None
            self.livemode = plan.livemode
            self.lookup_key = None
            self.metadata = plan.metadata
            self.nickname = plan.nickname
            self.product = plan.product
            self.recurring = {
                "aggregate_usage": None,
                "interval": plan.interval,
                "interval_count": plan.interval_count,
                "trial_period_days": plan.trial_period_days,
                "usage_type": plan.usage_type,
            }
            self.tax_behavior = "unspecified"
            self.tiers_mode = plan.tiers_mode
            self.transform_quantity = None
            self.type = "recurring"
            self.unit_amount = plan.amount if per_unit else None
            self.unit_amount_decimal = (
                str(plan.amount) if per_unit and plan.amount is not None else None
            )

    def list_prices(
        active: Any = None,
        product: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **params: Any,
    ) -> Any:
        kit.only(params, ())
        plans = r.Plan._api_list_all("/v1/plans", active=active, product=product)
        prices = r.List("/v1/prices", limit=limit, starting_after=starting_after)
        prices._list = [Price(plan) for plan in plans._list]
        return prices

    def retrieve_price(id: str, **params: Any) -> Any:
        kit.only(params, ())
        plan = r.store.get("plan:" + id)
        if plan is None:
            raise kit.error(404, f"No such price: '{id}'")
        return Price(plan)

    kit.route("GET", "/v1/prices", list_prices)
    kit.route("GET", "/v1/prices/{id}", retrieve_price)

    # --- Events localstripe does not emit ----------------------------------------------

    create_plan = r.Plan._api_create
    update_plan = r.Plan._api_update
    delete_plan = r.Plan._api_delete

    def create_plan_and_price(cls: Any, /, **data: Any) -> Any:
        # Stripe sends price.created with plan.created (localstripe emits the latter).
        plan = create_plan(**data)
        emit("price.created", Price(plan))
        return plan

    def update_plan_with_events(cls: Any, /, id: str, **data: Any) -> Any:
        # localstripe emits no plan.updated.
        plan = update_plan(id, **data)
        emit("plan.updated", plan)
        emit("price.updated", Price(plan))
        return plan

    def delete_plan_with_events(cls: Any, /, id: str) -> Any:
        # localstripe emits no plan.deleted.
        plan = cls._api_retrieve(id)
        deleted = delete_plan(id)
        emit("plan.deleted", plan)
        emit("price.deleted", Price(plan))
        return deleted

    r.Plan._api_create = classmethod(create_plan_and_price)
    r.Plan._api_update = classmethod(update_plan_with_events)
    r.Plan._api_delete = classmethod(delete_plan_with_events)

    update_product = r.Product._api_update
    delete_product = r.Product._api_delete

    def update_product_with_event(cls: Any, /, id: str, **data: Any) -> Any:
        # localstripe emits no product.updated.
        product = update_product(id, **data)
        emit("product.updated", product)
        return product

    def delete_product_with_event(cls: Any, /, id: str) -> Any:
        # localstripe emits no product.deleted, and would orphan the product's plans.
        product = cls._api_retrieve(id)
        if any(plan.product == id for plan in kit.objects("plan")):
            raise kit.error(
                400,
                "This product cannot be deleted because it has one or more user-created prices.",
            )
        deleted = delete_product(id)
        emit("product.deleted", product)
        return deleted

    r.Product._api_update = classmethod(update_product_with_event)
    r.Product._api_delete = classmethod(delete_product_with_event)

    update_subscription = r.Subscription._api_update

    def update_subscription_with_event(cls: Any, /, id: str, **data: Any) -> Any:
        # localstripe emits no customer.subscription.updated (deleted: it does).
        metadata = data.get("metadata")
        subscription = update_subscription(id, **data)
        if type(metadata) is dict:
            # localstripe's Subscription._update takes `metadata` and drops it.
            subscription.metadata.update(metadata)
        emit("customer.subscription.updated", subscription)
        return subscription

    r.Subscription._api_update = classmethod(update_subscription_with_event)

    # --- Subscriptions with several items ----------------------------------------------

    create_subscription = r.Subscription._api_create

    def create_subscription_with_items(cls: Any, /, **data: Any) -> Any:
        items = data.get("items")
        if type(items) is list:
            for item in items:
                if type(item) is dict and "plan" not in item and "price" in item:
                    # Stripe clients send items[i][price]; localstripe reads items[i][plan].
                    item["plan"] = item.pop("price")
        if type(items) is not list or len(items) < 2:
            return create_subscription(**data)

        # localstripe handles exactly one item: check the others first, create the
        # subscription with the first, then add the others to it.
        extra = [_checked_item(item, r, kit.user_error) for item in items[1:]]
        plans = [item.get("plan") if type(item) is dict else None for item in items]
        if len(set(plans)) != len(plans):
            raise kit.error(400, "Cannot add multiple subscription items with the same plan")
        subscription = create_subscription(**{**data, "items": items[:1]})
        for item in extra:
            subscription.items._list.append(
                r.SubscriptionItem(subscription=subscription.id, **item)
            )
        # The customer.subscription.created event was taken with the first item only.
        kit.resnapshot("customer.subscription.created", subscription)
        return subscription

    r.Subscription._api_create = classmethod(create_subscription_with_items)

    list_subscription_items = r.SubscriptionItem._api_list_all

    def list_subscription_items_of(
        cls: Any,
        /,
        url: str,
        subscription: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **params: Any,
    ) -> Any:
        # localstripe rejects `subscription`, which Stripe requires on this list.
        if subscription is None:
            return list_subscription_items(
                url, limit=limit, starting_after=starting_after, **params
            )
        kit.only(params, ())
        kit.check(type(subscription) is str)
        owner = r.Subscription._api_retrieve(subscription)
        items = r.List(url, limit=limit, starting_after=starting_after)
        items._list = list(owner.items._list)
        return items

    r.SubscriptionItem._api_list_all = classmethod(list_subscription_items_of)
    # localstripe keeps the parent only privately and has no `price` on items.
    r.SubscriptionItem.subscription = property(lambda self: self._subscription)
    r.SubscriptionItem.price = property(lambda self: Price(self.plan))
    # Set by subscription schedules (below).
    r.Subscription.schedule = None


DISPUTE_CARD = "4000000000000259"  # Stripe's test card whose charges are disputed
DISPUTE_FEE = 1500
EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip
DISPUTE_REASONS = (
    "bank_cannot_process", "check_returned", "credit_not_processed", "customer_initiated",
    "debit_not_authorized", "duplicate", "fraudulent", "general", "incorrect_account_details",
    "insufficient_funds", "product_not_received", "product_unacceptable",
    "subscription_canceled", "unrecognized",
)  # fmt: skip
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
CANCELLABLE_INTENT = ("requires_payment_method", "requires_confirmation", "requires_action")


def _patch_payments(kit: _Kit) -> None:
    """Charges, payment intents, refunds, balance transactions, disputes, setup intents."""
    r, emit, check = kit.r, kit.emit, kit.check
    for cls, filters in (
        (r.Charge, ("customer", "payment_intent")),
        (r.PaymentIntent, ("customer",)),
        (r.Refund, ("charge", "payment_intent")),
        (r.BalanceTransaction, ("currency", "source", "type")),
        (r.SetupIntent, ("customer", "payment_method")),
    ):
        cls._api_list_all = staticmethod(kit.listing(cls.object, *filters))
    kit.route(
        "GET",
        "/v1/balance/history",
        lambda **params: r.BalanceTransaction._api_list_all("/v1/balance/history", **params),
    )

    # Stripe's fee on card charges (2.9% + 30 cents); localstripe takes none.
    init_transaction = r.BalanceTransaction.__init__

    def init_transaction_with_fee(self: Any, **data: Any) -> None:
        init_transaction(self, **data)
        if self.type == "charge":
            set_fee(self, round(self.amount * 0.029) + 30, "Stripe processing fees")

    def set_fee(transaction: Any, fee: int, description: str) -> None:
        transaction.fee = fee
        transaction.fee_details = [
            {
                "amount": fee,
                "application": None,
                "currency": transaction.currency,
                "description": description,
                "type": "stripe_fee",
            }
        ]

    r.BalanceTransaction.__init__ = init_transaction_with_fee

    # --- Disputes ----------------------------------------------------------------------

    def disputes_of(charge: Any) -> list[Any]:
        return [d for d in kit.objects("dispute") if d.charge == charge.id]

    class Dispute(kit.base):  # type: ignore[misc,name-defined]
        object = "dispute"
        _id_prefix = "dp_"

        def __init__(
            self, charge: Any = None, amount: Any = None, reason: Any = "general", **params: Any
        ) -> None:
            kit.only(params, ())
            amount = r.try_convert_to_int(amount)
            check(type(charge) is str and reason in DISPUTE_REASONS)
            disputed = r.Charge._api_retrieve(charge)
            check(disputed.status == "succeeded" and disputed.captured, "Not a paid charge")
            check(not disputes_of(disputed), "This charge is already disputed")
            left = disputed.amount - disputed.amount_refunded
            amount = left if amount is None else amount
            check(type(amount) is int and 0 < amount <= left, "Bad amount")
            super().__init__()
            self.amount = amount
            self.charge = disputed.id
            self.currency = disputed.currency
            self.evidence = dict.fromkeys(EVIDENCE_FIELDS)
            # The end of the day, 20 days on (Stripe gives 7 to 21 days).
            due_by = (self.created // 86400 + 21) * 86400 - 1
            self.evidence_details = {
                "due_by": due_by,
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            }
            self.is_charge_refundable = False
            self.metadata: dict[str, Any] = {}
            self.payment_intent = disputed.payment_intent
            self.reason = reason
            self.status = "needs_response"
            # The funds are withdrawn, with Stripe's dispute fee.
            withdrawal = r.BalanceTransaction(
                amount=-amount,
                currency=self.currency,
                description=f"Chargeback withdrawal for {disputed.id}",
                reporting_category="charge",
                source=disputed.id,
                type="charge",
            )
            withdrawal.type = "adjustment"
            withdrawal.reporting_category = "dispute"
            withdrawal.source = self.id
            set_fee(withdrawal, DISPUTE_FEE, "Dispute fee")
            self.balance_transactions = [withdrawal]

        @classmethod
        def _api_update(
            cls,
            id: str,
            evidence: Any = None,
            metadata: Any = None,
            submit: Any = True,
            **params: Any,
        ) -> Any:
            kit.only(params, ())
            submit = r.try_convert_to_bool(submit)
            check(type(submit) is bool)
            dispute = cls._api_retrieve(id)
            if evidence is not None:
                check(
                    type(evidence) is dict
                    and all(k in EVIDENCE_FIELDS and type(v) is str for k, v in evidence.items()),
                    "Bad evidence",
                )
                check(dispute.status.endswith("needs_response"), "This dispute is not open")
            kit.update_metadata(dispute, metadata)
            dispute.evidence.update(evidence or {})
            details = dispute.evidence_details
            details["has_evidence"] = any(dispute.evidence.values())
            if submit and details["has_evidence"] and dispute.status.endswith("needs_response"):
                dispute.status = dispute.status.replace("needs_response", "under_review")
                details["submission_count"] += 1
            emit("charge.dispute.updated", dispute)
            return dispute

        @classmethod
        def _api_close(cls, id: str, **params: Any) -> Any:
            kit.only(params, ())
            dispute = cls._api_retrieve(id)
            check(dispute.status.endswith("needs_response"), "This dispute is not open")
            dispute.status = "lost" if dispute.status == "needs_response" else "warning_closed"
            emit("charge.dispute.closed", dispute)
            return dispute

    def open_dispute(**data: Any) -> Any:
        """The card issuer opens a dispute on a charge (test-only)."""
        dispute = Dispute(**data)
        emit("charge.dispute.created", dispute)
        emit("charge.dispute.funds_withdrawn", dispute)
        return dispute

    # Only the card issuer opens disputes: no POST /v1/disputes.
    kit.serve(Dispute, "disputes", "charge", "payment_intent", create=False)
    kit.route("POST", "/v1/disputes/{id}/close", Dispute._api_close)
    kit.route("POST", "/_config/disputes", open_dispute)

    # --- Charges: an event at each step ------------------------------------------------

    initialize_charge = r.Charge._initialize_charge

    def initialize_charge_with_events(
        self: Any, on_success: Any = None, on_failure_now: Any = None, on_failure_later: Any = None
    ) -> None:
        if self.payment_intent:
            self.invoice = r.PaymentIntent._api_retrieve(self.payment_intent).invoice

        def succeeded() -> None:
            emit("charge.succeeded", self)
            if on_success:
                on_success()
            card = r.PaymentMethod._api_retrieve(self.payment_method)
            if getattr(card, "_card_number", None) == DISPUTE_CARD:
                open_dispute(charge=self.id, reason="fraudulent")

        def failed(then: Any) -> Callable[[], None]:
            def fail() -> None:
                emit("charge.failed", self)
                if then:
                    then()  # may raise the 402

            return fail

        initialize_charge(self, succeeded, failed(on_failure_now), failed(on_failure_later))
        if self.status == "succeeded" and not self.captured:
            emit("charge.succeeded", self)  # authorized, to capture later

    capture_charge = r.Charge._capture

    def capture_with_event(self: Any, amount: Any, on_success: Any = None) -> None:
        capture_charge(self, amount, on_success)
        if self.captured:
            emit("charge.captured", self)

    r.Charge._initialize_charge = initialize_charge_with_events
    r.Charge._capture = capture_with_event
    r.Charge._raise_failure = lambda self: kit.raise_declined(self)
    kit.evented(
        r.Charge, "_api_update", "charge.updated", ("description", "metadata", "receipt_email")
    )
    r.Charge.disputed = property(
        lambda self: any(d.charge == self.id for d in kit.objects("dispute"))
    )
    r.Charge.amount_captured = property(lambda self: self.amount if self.captured else 0)
    kit.exported(r.Charge, hidden=("refunds",))  # not in a charge since 2022-11-15

    canonical = r.PaymentMethod._try_get_canonical_test_article

    def canonical_or_disputed(cls: Any, /, id: str) -> Any:
        if id == "pm_card_createDispute":
            number = DISPUTE_CARD
            card = {"number": number, "exp_month": "12", "exp_year": "2030", "cvc": "123"}
            return r.PaymentMethod(type="card", card=card)
        return canonical(id)

    r.PaymentMethod._try_get_canonical_test_article = classmethod(canonical_or_disputed)

    # --- Payment intents ---------------------------------------------------------------

    init_intent = r.PaymentIntent.__init__

    def init_intent_with_event(self: Any, *args: Any, **data: Any) -> None:
        init_intent(self, *args, **data)
        emit("payment_intent.created", self)

    cancel_intent = r.PaymentIntent._api_cancel

    def cancel_intent_with_event(
        cls: Any, /, id: str, cancellation_reason: Any = None, **params: Any
    ) -> Any:
        check(cancellation_reason in (None, *REFUND_REASONS, "abandoned"))
        intent = cancel_intent(id, **params)
        intent.canceled_at = kit.now()
        intent.cancellation_reason = cancellation_reason
        emit("payment_intent.canceled", intent)
        return intent

    r.PaymentIntent.__init__ = init_intent_with_event
    r.PaymentIntent._api_cancel = classmethod(cancel_intent_with_event)
    r.PaymentIntent.canceled_at = None
    r.PaymentIntent.cancellation_reason = None
    kit.route("POST", "/v1/payment_intents/{id}/cancel", r.PaymentIntent._api_cancel)
    # `charges` left the API in 2022-11-15; `latest_charge` is an id unless expanded.
    kit.exported(r.PaymentIntent, ids=("latest_charge",), hidden=("charges",))

    # --- Refunds -----------------------------------------------------------------------

    create_refund = r.Refund._api_create

    def create_refund_with_events(cls: Any, /, reason: Any = None, **data: Any) -> Any:
        check(reason is None or reason in REFUND_REASONS)
        charge = None
        if type(data.get("charge")) is str:
            charge = r.Charge._api_retrieve(data["charge"])
        elif type(data.get("payment_intent")) is str:
            charge = r.PaymentIntent._api_retrieve(data["payment_intent"]).latest_charge
            check(charge is not None, "This PaymentIntent has no charge to refund.")
        if charge is not None:
            if any(not d.is_charge_refundable for d in disputes_of(charge)):
                raise kit.error(400, f"Charge {charge.id} has been charged back.")
            left = charge.amount - charge.amount_refunded
            amount = r.try_convert_to_int(data.get("amount", left))
            if left <= 0:
                raise kit.error(400, f"Charge {charge.id} has already been refunded.")
            if type(amount) is int and amount > left:
                raise kit.error(400, "Refund amount is greater than unrefunded amount on charge")
        refund = create_refund(**data)
        refund.reason = reason
        if refund.payment_intent is None:
            refund.payment_intent = r.Charge._api_retrieve(refund.charge).payment_intent
        emit("refund.created", refund)
        emit("charge.refunded", r.Charge._api_retrieve(refund.charge))
        return refund

    r.Refund._api_create = classmethod(create_refund_with_events)
    r.Refund.reason = None
    kit.evented(r.Refund, "_api_update", "refund.updated", ("metadata",))

    # --- Setup intents -----------------------------------------------------------------

    create_setup = r.SetupIntent._api_create
    confirm_setup = r.SetupIntent._api_confirm
    cancel_setup = r.SetupIntent._api_cancel

    def create_setup_with_events(
        cls: Any,
        /,
        confirm: Any = None,
        payment_method: Any = None,
        description: Any = None,
        **data: Any,
    ) -> Any:
        confirm = r.try_convert_to_bool(confirm)
        check(confirm in (None, True, False))
        check(_texts(payment_method, description))
        card = r.PaymentMethod._api_retrieve(payment_method) if payment_method else None
        intent = create_setup(**data)
        intent.description = description
        if card is not None:
            intent.payment_method = card.id
            intent.status = "requires_confirmation"
        emit("setup_intent.created", intent)
        if confirm:
            cls._api_confirm(intent.id)
        return intent

    def confirm_setup_with_events(cls: Any, /, id: str, **data: Any) -> Any:
        intent = cls._api_retrieve(id)
        check(intent.status in CANCELLABLE_INTENT[:2], "This SetupIntent cannot be confirmed")
        if data.get("payment_method") is None and data.get("payment_method_data") is None:
            data["payment_method"] = intent.payment_method  # so that a decline is seen
        try:
            confirm_setup(id, **data)
        except kit.user_error as e:
            if e.code == 402:
                intent.status = "requires_payment_method"
                intent.last_setup_error = {
                    "code": "card_declined",
                    "message": "Your card was declined.",
                    "type": "card_error",
                }
                emit("setup_intent.setup_failed", intent)
            raise
        if intent.status == "succeeded":
            if intent.customer:
                r.PaymentMethod._api_retrieve(intent.payment_method).customer = intent.customer
            emit("setup_intent.succeeded", intent)
        elif intent.status == "requires_action":
            emit("setup_intent.requires_action", intent)
        return intent

    def cancel_setup_with_event(
        cls: Any, /, id: str, cancellation_reason: Any = None, **data: Any
    ) -> Any:
        intent = cls._api_retrieve(id)
        check(intent.status in CANCELLABLE_INTENT, "This SetupIntent cannot be canceled")
        check(cancellation_reason in (None, "abandoned", "duplicate", "requested_by_customer"))
        cancel_setup(id, **data)
        intent.cancellation_reason = cancellation_reason
        emit("setup_intent.canceled", intent)
        return intent

    r.SetupIntent._api_create = classmethod(create_setup_with_events)
    r.SetupIntent._api_confirm = classmethod(confirm_setup_with_events)
    r.SetupIntent._api_cancel = classmethod(cancel_setup_with_event)
    r.SetupIntent.description = None
    r.SetupIntent.last_setup_error = None
    r.SetupIntent.cancellation_reason = None
    kit.route("POST", "/v1/setup_intents/{id}/confirm", r.SetupIntent._api_confirm)
    kit.route("POST", "/v1/setup_intents/{id}/cancel", r.SetupIntent._api_cancel)


CREDIT_NOTE_REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")
RESTRICTIONS = {
    "first_time_transaction": False,
    "minimum_amount": None,
    "minimum_amount_currency": None,
}
DAY = 24 * 3600


def _patch_billing(kit: _Kit) -> None:
    """Customers' list, invoices, coupons, promotion codes, tax rates, credit notes,
    Checkout sessions, subscription schedules."""
    r, emit, check, to_int = kit.r, kit.emit, kit.check, kit.r.try_convert_to_int
    r.Customer._api_list_all = staticmethod(kit.listing("customer", "email"))
    r.Invoice._api_list_all = staticmethod(
        kit.listing("invoice", "customer", "subscription", "status", "collection_method")
    )
    r.Coupon._api_list_all = staticmethod(kit.listing("coupon"))
    r.TaxRate._api_list_all = staticmethod(kit.listing("tax_rate", "active", "inclusive"))

    # --- Invoices ----------------------------------------------------------------------

    create_invoice = r.Invoice._api_create  # localstripe: a subscription's next invoice

    def create_one_off_invoice(
        cls: Any,
        /,
        customer: Any = None,
        subscription: Any = None,
        description: Any = None,
        metadata: Any = None,
        default_tax_rates: Any = None,
        pending_invoice_items_behavior: Any = None,
        currency: Any = None,
        collection_method: Any = "charge_automatically",
        days_until_due: Any = None,
        auto_advance: Any = None,  # localstripe never advances an invoice on its own
    ) -> Any:
        if subscription is not None:
            return create_invoice(
                customer=customer,
                subscription=subscription,
                description=description,
                default_tax_rates=default_tax_rates,
            )
        days_until_due = to_int(days_until_due)
        check(pending_invoice_items_behavior in (None, "include", "exclude"))
        check(type(customer) is str and (metadata is None or type(metadata) is dict))
        check(_texts(currency))
        check(collection_method in ("charge_automatically", "send_invoice"))
        check(
            (collection_method == "send_invoice") == (type(days_until_due) is int),
            "send_invoice needs days_until_due",
        )
        # As a simulation, localstripe's Invoice claims no pending item and emits nothing.
        invoice = r.Invoice(
            customer=customer,
            description=description,
            metadata=metadata,
            default_tax_rates=default_tax_rates,
            simulation=True,
        )
        lines = invoice.lines._list
        if pending_invoice_items_behavior == "include":
            for line in lines:
                line.invoice = r.InvoiceItem._api_retrieve(line.invoice_item).invoice = invoice.id
        else:  # "exclude", Stripe's default since 2022-08-01
            lines.clear()
        invoice.currency = currency or (lines[0].currency if lines else "usd")
        invoice.collection_method = collection_method
        if days_until_due is not None:
            invoice.due_date = invoice.created + days_until_due * DAY
        emit("invoice.created", invoice)
        return invoice

    create_item = r.InvoiceItem._api_create

    def create_item_on_invoice(cls: Any, /, **data: Any) -> Any:
        # localstripe records `invoice` on the item but leaves the invoice's lines alone.
        invoice = data.get("invoice")
        if invoice is not None:
            check(type(invoice) is str)
            invoice = r.Invoice._api_retrieve(invoice)
            check(invoice.status == "draft", "Invoice items go on draft invoices only")
        item = create_item(**data)
        if invoice is not None:
            if not invoice.lines._list:
                invoice.currency = item.currency
            invoice.lines._list.append(r.InvoiceLineItem(item))
        return item

    finalize = r.Invoice._finalize

    def finalize_with_events(self: Any) -> None:
        finalize(self)
        # Stripe's numbers: the customer's prefix, then a sequence per customer.
        prefix = hashlib.sha1(self.customer.encode()).hexdigest()[:8].upper()
        done = [i for i in kit.objects("invoice") if i.customer == self.customer and i.number]
        self.number = f"{prefix}-{len(done) + 1:04d}"
        emit("invoice.finalized", self)
        if self.status == "paid":  # nothing to pay
            self._on_payment_success()

    on_payment_success = r.Invoice._on_payment_success

    def on_payment_success_with_event(self: Any) -> None:
        on_payment_success(self)  # emits invoice.payment_succeeded
        emit("invoice.paid", self)

    pay = r.Invoice._api_pay_invoice

    def pay_with_events(cls: Any, /, id: str, **params: Any) -> Any:
        # Also how subscriptions pay their invoices; answers the invoice, paid or not.
        kit.only(params, ())
        invoice = cls._api_retrieve(id)
        if invoice.status == "draft":
            invoice._finalize()  # localstripe paid drafts without finalizing them
            if invoice.status == "paid":
                return invoice
        pay(id)
        charge = invoice.charge
        if charge is not None and charge.status == "failed":
            # localstripe reports a declined card only when it answers later.
            intent = r.PaymentIntent._api_retrieve(charge.payment_intent)
            emit("payment_intent.payment_failed", intent)
            emit("invoice.payment_failed", invoice)
        return invoice

    def finalize_route(id: str, auto_advance: Any = None, **params: Any) -> Any:
        kit.only(params, ())
        invoice = r.Invoice._api_retrieve(id)
        check(invoice.status == "draft", "This invoice is already finalized")
        invoice._finalize()
        return invoice

    def pay_or_decline(id: str, **params: Any) -> Any:
        invoice = r.Invoice._api_pay_invoice(id, **params)
        charge = invoice.charge
        if charge is not None and charge.status == "failed":
            kit.raise_declined(charge)
        return invoice

    def void_with_event(cls: Any, /, id: str, **params: Any) -> Any:
        # localstripe's void fails on an invoice without a payment intent, and expires
        # an active subscription whose later invoice is voided.
        kit.only(params, ())
        invoice = cls._api_retrieve(id)
        check(invoice.status == "open", "Only open invoices can be voided")
        if invoice.payment_intent:
            intent = r.PaymentIntent._api_retrieve(invoice.payment_intent)
            if intent.status in CANCELLABLE_INTENT:
                r.PaymentIntent._api_cancel(intent.id)
        invoice._voided = True
        invoice.status_transitions["voided_at"] = kit.now()
        if invoice.subscription:
            subscription = r.Subscription._api_retrieve(invoice.subscription)
            if subscription.status == "incomplete":
                subscription._on_initial_payment_voided(invoice)
        emit("invoice.voided", invoice)
        return invoice

    delete_invoice = r.Invoice._api_delete

    def delete_with_event(cls: Any, /, id: str) -> Any:
        invoice = cls._api_retrieve(id)
        check(not invoice.subscription, "A subscription's invoice is voided, not deleted")
        deleted = delete_invoice(id)  # drafts only
        emit("invoice.deleted", invoice)
        return deleted

    def credited(kind: str) -> Any:
        return property(
            lambda self: sum(
                note.total
                for note in kit.objects("credit_note")
                if note.invoice == self.id and note.type == kind and note.status == "issued"
            )
        )

    r.Invoice._api_create = classmethod(create_one_off_invoice)
    r.InvoiceItem._api_create = classmethod(create_item_on_invoice)
    r.Invoice._finalize = finalize_with_events
    r.Invoice._on_payment_success = on_payment_success_with_event
    r.Invoice._api_pay_invoice = classmethod(pay_with_events)
    r.Invoice._api_void_invoice = classmethod(void_with_event)
    r.Invoice._api_delete = classmethod(delete_with_event)
    kit.evented(r.Invoice, "_api_update", "invoice.updated", ("description", "metadata"))
    r.Invoice.number = None
    r.Invoice.due_date = None
    r.Invoice.paid = property(lambda self: self.status == "paid")
    r.Invoice.amount_remaining = property(
        lambda self: 0 if self.status in ("paid", "void") else self.amount_due
    )
    r.Invoice.pre_payment_credit_notes_amount = credited("pre_payment")
    r.Invoice.post_payment_credit_notes_amount = credited("post_payment")
    kit.exported(r.Invoice, ids=("charge",))
    kit.route("POST", "/v1/invoices/{id}/finalize", finalize_route)
    kit.route("POST", "/v1/invoices/{id}/pay", pay_or_decline)
    kit.route("POST", "/v1/invoices/{id}/void", r.Invoice._api_void_invoice)
    kit.serve_lines(r.Invoice, "invoices")  # localstripe's took no `starting_after`

    # --- Coupons, promotion codes, tax rates ---------------------------------------------

    create_coupon = r.Coupon._api_create
    delete_coupon = r.Coupon._api_delete

    def create_coupon_with_event(
        cls: Any,
        /,
        id: Any = None,
        name: Any = None,
        max_redemptions: Any = None,
        redeem_by: Any = None,
        **data: Any,
    ) -> Any:
        max_redemptions, redeem_by = to_int(max_redemptions), to_int(redeem_by)
        check(_texts(name))
        check(max_redemptions is None or (type(max_redemptions) is int and max_redemptions > 0))
        check(redeem_by is None or (type(redeem_by) is int and redeem_by > kit.now()))
        coupon = create_coupon(id=r.random_id(8) if id is None else id, **data)
        coupon.name, coupon.max_redemptions, coupon.redeem_by = name, max_redemptions, redeem_by
        emit("coupon.created", coupon)
        return coupon

    def delete_coupon_with_event(cls: Any, /, id: str) -> Any:
        coupon = cls._api_retrieve(id)
        deleted = delete_coupon(id)
        emit("coupon.deleted", coupon)
        return deleted

    r.Coupon._api_create = classmethod(create_coupon_with_event)
    r.Coupon._api_delete = classmethod(delete_coupon_with_event)
    kit.evented(r.Coupon, "_api_update", "coupon.updated", ("metadata", "name"))
    r.Coupon.name = None

    class PromotionCode(kit.base):  # type: ignore[misc,name-defined]
        object = "promotion_code"
        _id_prefix = "promo_"

        def __init__(
            self,
            coupon: Any = None,
            code: Any = None,
            customer: Any = None,
            active: Any = True,
            max_redemptions: Any = None,
            expires_at: Any = None,
            restrictions: Any = None,
            metadata: Any = None,
            **params: Any,
        ) -> None:
            kit.only(params, ())
            active, max_redemptions = r.try_convert_to_bool(active), to_int(max_redemptions)
            expires_at = to_int(expires_at)
            restrictions = restrictions or {}
            check(type(coupon) is str and type(active) is bool)
            check(code is None or (type(code) is str and code.isalnum()), "Bad code")
            check(max_redemptions is None or (type(max_redemptions) is int and max_redemptions > 0))
            check(expires_at is None or (type(expires_at) is int and expires_at > kit.now()))
            check(type(restrictions) is dict and set(restrictions) <= set(RESTRICTIONS))
            check(metadata is None or type(metadata) is dict)
            if customer is not None:
                r.Customer._api_retrieve(customer)
            coupon = r.Coupon._api_retrieve(coupon)
            code = code or r.random_id(8).upper()
            taken = [
                p
                for p in kit.objects("promotion_code")
                if p.active and p.code.lower() == code.lower()
            ]
            check(not taken, f"An active promotion code with `code: {code}` already exists.")
            super().__init__()
            self.active = active
            self.code = code
            self.coupon = coupon  # Stripe embeds the coupon
            self.customer = customer
            self.expires_at = expires_at
            self.max_redemptions = max_redemptions
            self.metadata = metadata or {}
            self.restrictions = {**RESTRICTIONS, **restrictions}
            first_time = r.try_convert_to_bool(self.restrictions["first_time_transaction"])
            minimum = to_int(self.restrictions["minimum_amount"])
            check(type(first_time) is bool and (minimum is None or type(minimum) is int))
            self.restrictions.update(first_time_transaction=first_time, minimum_amount=minimum)
            self.times_redeemed = 0

        def _update(self, active: Any = None, metadata: Any = None, **params: Any) -> None:
            kit.only(params, ())
            active = r.try_convert_to_bool(active)
            check(active in (None, True, False))
            kit.update_metadata(self, metadata)
            if active is not None:
                self.active = active

    kit.serve(PromotionCode, "promotion_codes", "active", "code", "coupon", "customer")
    kit.evented(PromotionCode, "_api_create", "promotion_code.created")
    kit.evented(PromotionCode, "_api_update", "promotion_code.updated")

    create_tax_rate = r.TaxRate._api_create
    update_tax_rate = r.TaxRate._api_update

    def create_tax_rate_with_event(
        cls: Any, /, country: Any = None, state: Any = None, tax_type: Any = None, **data: Any
    ) -> Any:
        check(_texts(country, state, tax_type))
        rate = create_tax_rate(**data)
        rate.country, rate.state, rate.tax_type = country, state, tax_type
        emit("tax_rate.created", rate)
        return rate

    def update_tax_rate_with_event(cls: Any, /, id: str, active: Any = None, **data: Any) -> Any:
        # Stripe can change these; not the percentage nor whether it is inclusive.
        kit.only(
            data,
            (
                "country",
                "description",
                "display_name",
                "jurisdiction",
                "metadata",
                "state",
                "tax_type",
            ),
        )
        active = r.try_convert_to_bool(active)
        check(active in (None, True, False))
        rate = update_tax_rate(id, **data)
        if active is not None:
            rate.active = active
        emit("tax_rate.updated", rate)
        return rate

    r.TaxRate._api_create = classmethod(create_tax_rate_with_event)
    r.TaxRate._api_update = classmethod(update_tax_rate_with_event)
    r.TaxRate.effective_percentage = property(lambda self: self.percentage)

    # --- Credit notes ------------------------------------------------------------------

    class CreditNoteLine(kit.base):  # type: ignore[misc,name-defined]
        object = "credit_note_line_item"
        _id_prefix = "cnli_"

        def __init__(
            self,
            type: str,
            amount: int,
            quantity: int,
            description: Any,
            unit_amount: Any = None,
            invoice_line_item: Any = None,
        ) -> None:
            super().__init__()
            self.amount = amount
            self.description = description
            self.discount_amount = 0
            self.discount_amounts: list[Any] = []
            self.invoice_line_item = invoice_line_item
            self.quantity = quantity
            self.tax_amounts: list[Any] = []
            self.tax_rates: list[Any] = []
            self.type = type
            self.unit_amount = unit_amount
            self.unit_amount_decimal = None if unit_amount is None else str(unit_amount)

    def credit_lines(invoice: Any, lines: Any) -> list[dict[str, Any]]:
        """Checked credit note lines: an invoice line (all of it, or `amount`), or a custom
        line (`unit_amount` times `quantity`, with a `description`)."""
        check(type(lines) is list and all(type(line) is dict for line in lines))
        specs = []
        for line in lines:
            quantity = to_int(line.get("quantity", 1))
            check(type(quantity) is int and quantity > 0)
            if line.get("type") == "invoice_line_item":
                found = [x for x in invoice.lines._list if x.id == line.get("invoice_line_item")]
                check(len(found) == 1, "No such invoice line item")
                amount = to_int(line.get("amount", found[0].amount))
                check(type(amount) is int and 0 < amount <= found[0].amount, "Bad amount")
                specs.append(
                    {
                        "type": "invoice_line_item",
                        "amount": amount,
                        "quantity": quantity,
                        "description": found[0].description,
                        "invoice_line_item": found[0].id,
                    }
                )
            else:
                unit_amount = to_int(line.get("unit_amount"))
                check(line.get("type") == "custom_line_item" and type(unit_amount) is int)
                check(unit_amount > 0 and type(line.get("description")) is str)
                specs.append(
                    {
                        "type": "custom_line_item",
                        "amount": unit_amount * quantity,
                        "quantity": quantity,
                        "description": line["description"],
                        "unit_amount": unit_amount,
                    }
                )
        return specs

    class CreditNote(kit.base):  # type: ignore[misc,name-defined]
        object = "credit_note"
        _id_prefix = "cn_"

        def __init__(
            self,
            invoice: Any = None,
            lines: Any = None,
            amount: Any = None,
            reason: Any = None,
            memo: Any = None,
            metadata: Any = None,
            refund_amount: Any = None,
            out_of_band_amount: Any = None,
            **params: Any,
        ) -> None:
            kit.only(params, ())
            amount, refund_amount = to_int(amount), to_int(refund_amount)
            out_of_band_amount = to_int(out_of_band_amount)
            check(type(invoice) is str and (reason is None or reason in CREDIT_NOTE_REASONS))
            check(_texts(memo))
            check(metadata is None or type(metadata) is dict)
            credited = r.Invoice._api_retrieve(invoice)
            check(credited.status in ("open", "paid"), "Only finalized invoices can be credited")
            specs = credit_lines(credited, lines) if lines is not None else []
            total = sum(spec["amount"] for spec in specs) if specs else amount
            check(type(total) is int and total > 0 and amount in (None, total), "Bad amount")
            before = [n for n in kit.objects("credit_note") if n.invoice == credited.id]
            left = credited.total - sum(n.total for n in before if n.status == "issued")
            check(total <= left, "The credit note exceeds what is left of the invoice total")
            refunded, out_of_band = refund_amount or 0, out_of_band_amount or 0
            check(type(refunded) is int and type(out_of_band) is int)
            check(min(refunded, out_of_band) >= 0 and refunded + out_of_band <= total)
            charge = credited.charge
            if refunded:
                check(charge is not None, "This invoice has no payment to refund")
                left = charge.amount - charge.amount_refunded
                check(refunded <= left, "The refund exceeds what is left of the payment")
            super().__init__()
            self.invoice = credited.id
            self.customer = credited.customer
            self.currency = credited.currency
            self.number = f"{credited.number}-CN-{len(before) + 1:02d}"
            self.type = "post_payment" if credited.status == "paid" else "pre_payment"
            self.status = "issued"
            self.reason = reason
            self.memo = memo
            self.metadata = metadata or {}
            self.amount = self.subtotal = self.subtotal_excluding_tax = total
            self.total = self.total_excluding_tax = total
            self.amount_shipping = self.discount_amount = 0
            self.discount_amounts: list[Any] = []
            self.tax_amounts: list[Any] = []
            self.shipping_cost = None
            self.customer_balance_transaction = None
            self.out_of_band_amount = out_of_band_amount
            self.effective_at = self.created
            self.voided_at = None
            self.pdf = f"https://pay.stripe.com/credit_notes/{self.id}/pdf"
            self.lines = r.List(f"/v1/credit_notes/{self.id}/lines")
            self.lines._list = [CreditNoteLine(**spec) for spec in specs]
            self.refund = None
            if refunded:
                self.refund = r.Refund._api_create(charge=charge.id, amount=refunded).id

        def _update(self, memo: Any = None, metadata: Any = None, **params: Any) -> None:
            kit.only(params, ())
            check(_texts(memo))
            kit.update_metadata(self, metadata)
            if memo is not None:
                self.memo = memo

        @classmethod
        def _api_void(cls, id: str, **params: Any) -> Any:
            kit.only(params, ())
            note = cls._api_retrieve(id)
            check(note.status == "issued", "This credit note is already void")
            check(note.refund is None, "A credit note with a refund cannot be voided")
            note.status = "void"
            note.voided_at = kit.now()
            emit("credit_note.voided", note)
            return note

    kit.serve(CreditNote, "credit_notes", "customer", "invoice")
    kit.evented(CreditNote, "_api_create", "credit_note.created")
    kit.evented(CreditNote, "_api_update", "credit_note.updated")
    kit.route("POST", "/v1/credit_notes/{id}/void", CreditNote._api_void)
    kit.serve_lines(CreditNote, "credit_notes")

    # --- Checkout sessions -------------------------------------------------------------

    class CheckoutSession(kit.base):  # type: ignore[misc,name-defined]
        object = "checkout.session"
        _id_prefix = "cs_test_"

        def __init__(
            self,
            mode: Any = None,
            customer: Any = None,
            customer_email: Any = None,
            line_items: Any = None,
            currency: Any = None,
            success_url: Any = None,
            cancel_url: Any = None,
            client_reference_id: Any = None,
            expires_at: Any = None,
            metadata: Any = None,
            payment_method_types: Any = None,
            **params: Any,
        ) -> None:
            kit.only(params, ())
            expires_at = to_int(expires_at)
            check(mode in ("payment", "subscription", "setup"))
            check(customer is None or customer_email is None, "customer or customer_email")
            check(_texts(customer_email, currency, success_url, cancel_url, client_reference_id))
            check(metadata is None or type(metadata) is dict)
            if customer is not None:
                r.Customer._api_retrieve(customer)
            items = checkout_items(mode, line_items)
            currencies = {item["currency"] for item in items} | ({currency} - {None})
            check(len(currencies) <= 1 and (mode == "setup" or bool(items)), "Bad line_items")
            now = kit.now()
            expires_at = now + DAY if expires_at is None else expires_at
            check(type(expires_at) is int and now + 1800 <= expires_at <= now + DAY)
            super().__init__()
            self._items = items
            total = sum(item["amount"] for item in items) if mode != "setup" else None
            self.amount_subtotal = self.amount_total = total
            self.cancel_url = cancel_url
            self.client_reference_id = client_reference_id
            self.currency = next(iter(currencies), None)
            self.customer = customer
            self.customer_details = None
            self.customer_email = customer_email
            self.expires_at = expires_at
            self.invoice = None
            self.metadata = metadata or {}
            self.mode = mode
            self.payment_intent = None
            self.payment_method_types = payment_method_types or ["card"]
            self.payment_status = "no_payment_required" if mode == "setup" else "unpaid"
            self.setup_intent = None
            self.status = "open"
            self.subscription = None
            self.success_url = success_url
            self.url = f"https://checkout.stripe.com/c/pay/{self.id}"

        def _update(self, metadata: Any = None, **params: Any) -> None:
            kit.only(params, ())
            kit.update_metadata(self, metadata)

        @classmethod
        def _api_expire(cls, id: str, **params: Any) -> Any:
            kit.only(params, ())
            session = cls._api_retrieve(id)
            check(session.status == "open", "Only open sessions can be expired")
            session.status, session.url = "expired", None
            emit("checkout.session.expired", session)
            return session

    def checkout_items(mode: Any, line_items: Any) -> list[dict[str, Any]]:
        """Line items: `price` (a plan here) or, for payments, `price_data` (currency,
        unit_amount), with a `quantity`."""
        if line_items is None:
            return []
        check(type(line_items) is list and all(type(i) is dict for i in line_items))
        items = []
        for item in line_items:
            quantity = to_int(item.get("quantity", 1))
            check(type(quantity) is int and quantity > 0)
            data = item.get("price_data")
            if item.get("price") is not None:
                plan = r.Plan._api_retrieve(item["price"])
                items.append(
                    {
                        "plan": plan.id,
                        "currency": plan.currency,
                        "amount": plan.amount * quantity,
                        "quantity": quantity,
                    }
                )
            else:
                check(mode == "payment" and type(data) is dict, "price or price_data")
                unit_amount = to_int(data.get("unit_amount"))
                check(type(unit_amount) is int and type(data.get("currency")) is str)
                items.append(
                    {
                        "plan": None,
                        "currency": data["currency"],
                        "amount": unit_amount * quantity,
                        "quantity": quantity,
                    }
                )
        return items

    def complete_checkout(
        id: str,
        payment_method: Any = "pm_card_visa",
        email: Any = None,
        name: Any = None,
        **params: Any,
    ) -> Any:
        """The customer pays (or saves a card) on the Checkout page (test-only)."""
        kit.only(params, ())
        session = CheckoutSession._api_retrieve(id)
        check(session.status == "open", "Only open sessions can be completed")
        check(type(payment_method) is str and _texts(email, name))
        card = r.PaymentMethod._api_retrieve(payment_method)
        if card._charging_is_declined() or card._attaching_is_declined():
            raise kit.error(402, "Your card was declined.", code="card_declined")
        customer = session.customer
        if customer is not None:
            email = email or r.Customer._api_retrieve(customer).email
        email = email or session.customer_email
        if customer is None and session.mode != "payment":
            customer = r.Customer._api_create(email=email, name=name).id
        if customer is not None:
            r.PaymentMethod._api_attach(card.id, customer=customer)
        if session.mode == "payment":
            intent = r.PaymentIntent._api_create(
                confirm=True,
                amount=session.amount_total,
                currency=session.currency,
                customer=customer,
                payment_method=card.id,
            )
            session.payment_intent = intent.id
        elif session.mode == "subscription":
            settings = r.Customer._api_retrieve(customer).invoice_settings
            settings["default_payment_method"] = settings["default_payment_method"] or card.id
            items = [{"plan": i["plan"], "quantity": i["quantity"]} for i in session._items]
            subscription = r.Subscription._api_create(customer=customer, items=items)
            session.subscription = subscription.id
            session.invoice = subscription.latest_invoice
        else:
            intent = r.SetupIntent._api_create(
                customer=customer, payment_method=card.id, confirm=True
            )
            session.setup_intent = intent.id
        session.status, session.url, session.customer = "complete", None, customer
        if session.mode != "setup":
            session.payment_status = "paid"
        session.customer_details = {
            "address": None,
            "email": email,
            "name": name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        emit("checkout.session.completed", session)
        return session

    kit.serve(
        CheckoutSession,
        "checkout/sessions",
        "customer",
        "payment_intent",
        "status",
        "subscription",
    )
    kit.route("POST", "/v1/checkout/sessions/{id}/expire", CheckoutSession._api_expire)
    kit.route("POST", "/_config/checkout/sessions/{id}/complete", complete_checkout)

    # --- Subscription schedules --------------------------------------------------------

    def schedule_phase(start: int, end: int, items: list[tuple[Any, int]]) -> dict[str, Any]:
        return {
            "add_invoice_items": [],
            "currency": items[0][0].currency,
            "default_tax_rates": [],
            "description": None,
            "end_date": end,
            "items": [
                {
                    "metadata": {},
                    "plan": plan.id,
                    "price": plan.id,
                    "quantity": quantity,
                    "tax_rates": [],
                }
                for plan, quantity in items
            ],
            "metadata": {},
            "proration_behavior": "create_prorations",
            "start_date": start,
            "trial_end": None,
        }

    def schedule_phases(start: int, phases: Any) -> list[dict[str, Any]]:
        """Phases one after the other from `start`, each for its `end_date` or its
        `iterations` (1 by default) of its first price's interval."""
        check(type(phases) is list and bool(phases) and all(type(p) is dict for p in phases))
        made = []
        for phase in phases:
            check(type(phase.get("items")) is list and bool(phase["items"]), "Bad items")
            items = []
            for item in phase["items"]:
                check(type(item) is dict)
                quantity = to_int(item.get("quantity", 1))
                check(type(quantity) is int and quantity > 0)
                items.append(
                    (r.Plan._api_retrieve(item.get("price") or item.get("plan")), quantity)
                )
            end, iterations = to_int(phase.get("end_date")), to_int(phase.get("iterations", 1))
            if end is None:
                check(type(iterations) is int and iterations > 0)
                plan = items[0][0]
                span = r.relativedelta(**{plan.interval + "s": plan.interval_count * iterations})
                end = int((datetime.fromtimestamp(start) + span).timestamp())
            check(type(end) is int and end > start, "Bad end_date")
            made.append(schedule_phase(start, end, items))
            start = end
        return made

    class SubscriptionSchedule(kit.base):  # type: ignore[misc,name-defined]
        object = "subscription_schedule"
        _id_prefix = "sub_sched_"

        def __init__(
            self,
            customer: Any = None,
            from_subscription: Any = None,
            phases: Any = None,
            start_date: Any = None,
            end_behavior: Any = "release",
            metadata: Any = None,
            **params: Any,
        ) -> None:
            kit.only(params, ())
            check(end_behavior in ("release", "cancel"))
            check(metadata is None or type(metadata) is dict)
            subscription = None
            if from_subscription is not None:
                check(customer is None and phases is None and start_date is None)
                subscription = r.Subscription._api_retrieve(from_subscription)
                check(subscription.schedule is None, "This subscription has a schedule")
                customer = subscription.customer
                items = [(item.plan, item.quantity) for item in subscription.items._list]
                made = [
                    schedule_phase(
                        subscription.current_period_start, subscription.current_period_end, items
                    )
                ]
            else:
                check(type(customer) is str)
                r.Customer._api_retrieve(customer)
                start = kit.now() if start_date in (None, "now") else to_int(start_date)
                check(type(start) is int and start > 1500000000, "Bad start_date")
                made = schedule_phases(start, phases)
            super().__init__()
            self.application = None
            self.canceled_at = self.completed_at = self.released_at = None
            self.customer = customer
            self.end_behavior = end_behavior
            self.metadata = metadata or {}
            self.phases = made
            self.released_subscription = None
            self.status = "not_started"
            self.subscription = None
            self.test_clock = None
            if subscription is None and made[0]["start_date"] <= self.created:
                first = [{"plan": i["plan"], "quantity": i["quantity"]} for i in made[0]["items"]]
                subscription = r.Subscription._api_create(customer=customer, items=first)
            if subscription is not None:
                subscription.schedule = self.id
                self.subscription = subscription.id
                self.status = "active"

        @property
        def current_phase(self) -> Any:
            now = kit.now()
            for phase in self.phases if self.status == "active" else ():
                if phase["start_date"] <= now < phase["end_date"]:
                    return {"end_date": phase["end_date"], "start_date": phase["start_date"]}
            return None

        def _update(self, end_behavior: Any = None, metadata: Any = None, **params: Any) -> None:
            kit.only(params, ())
            check(end_behavior in (None, "release", "cancel"))
            check(self.status in ("not_started", "active"), "This schedule is over")
            kit.update_metadata(self, metadata)
            self.end_behavior = end_behavior or self.end_behavior

        @classmethod
        def _api_cancel(cls, id: str, **params: Any) -> Any:
            kit.only(params, ("invoice_now", "prorate"))
            schedule = cls._api_retrieve(id)
            check(schedule.status in ("not_started", "active"), "This schedule is over")
            schedule.status, schedule.canceled_at = "canceled", kit.now()
            if schedule.subscription:
                r.Subscription._api_delete(schedule.subscription)
            emit("subscription_schedule.canceled", schedule)
            return schedule

        @classmethod
        def _api_release(cls, id: str, **params: Any) -> Any:
            kit.only(params, ("preserve_cancel_date",))
            schedule = cls._api_retrieve(id)
            check(schedule.status in ("not_started", "active"), "This schedule is over")
            schedule.status, schedule.released_at = "released", kit.now()
            if schedule.subscription:
                r.Subscription._api_retrieve(schedule.subscription).schedule = None
            schedule.released_subscription, schedule.subscription = schedule.subscription, None
            emit("subscription_schedule.released", schedule)
            return schedule

    kit.serve(SubscriptionSchedule, "subscription_schedules", "customer")
    kit.evented(SubscriptionSchedule, "_api_create", "subscription_schedule.created")
    kit.evented(SubscriptionSchedule, "_api_update", "subscription_schedule.updated")
    kit.route("POST", "/v1/subscription_schedules/{id}/cancel", SubscriptionSchedule._api_cancel)
    kit.route("POST", "/v1/subscription_schedules/{id}/release", SubscriptionSchedule._api_release)


def _add_faults(app: Any) -> None:
    """`POST /_config/faults` makes requests under `path_prefix` misbehave, as a real
    provider may; `DELETE /_config/faults` clears them. For tests of failures. Fields:

    - `kind`: `error` (the default: answer `status`, with `retry_after` as Retry-After and
      `message` as the error's message),
      `empty_more` (a page with no data that says `has_more: true`), `repeat` (answer as
      if `starting_after` were not given: the first page again), `slow` (wait `seconds`,
      then answer normally);
    - `skip`: let this many matching requests through first; `count`: then misbehave
      this many times (every time when absent).
    """
    import asyncio

    from aiohttp import web

    faults: list[dict[str, Any]] = []
    kinds = ("error", "empty_more", "repeat", "slow")

    @web.middleware
    async def inject(request: web.Request, handler: Any) -> Any:
        for fault in faults:
            if not request.path.startswith(fault["path_prefix"]) or fault.get("count", 1) <= 0:
                continue
            if fault.get("skip", 0) > 0:
                fault["skip"] -= 1
                continue
            if "count" in fault:
                fault["count"] -= 1
            kind = fault.get("kind", "error")
            if kind == "empty_more":
                return web.json_response(
                    {"object": "list", "url": request.path, "data": [], "has_more": True}
                )
            if kind == "repeat":
                query = request.rel_url.query.copy()
                query.popall("starting_after", None)
                return await handler(request.clone(rel_url=request.rel_url.with_query(query)))
            if kind == "slow":
                await asyncio.sleep(float(fault.get("seconds", 1.0)))
                return await handler(request)
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            message = fault.get("message", f"injected {fault['status']}")
            body = {"error": {"type": "api_error", "message": message}}
            return web.json_response(body, status=fault["status"], headers=headers)
        return await handler(request)

    async def add(request: web.Request) -> web.Response:
        fault = await request.json()
        if (
            not isinstance(fault, dict)
            or "path_prefix" not in fault
            or fault.get("kind", "error") not in kinds
            or (fault.get("kind", "error") == "error" and "status" not in fault)
        ):
            return web.json_response(
                {"error": f"path_prefix is required, kind one of {kinds}, status for errors"},
                status=400,
            )
        faults.append(fault)
        return web.json_response(fault)

    async def clear(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response({})

    app.middlewares.insert(0, inject)
    app.router.add_post("/_config/faults", add)
    app.router.add_delete("/_config/faults", clear)


MAX_CLOCK_OFFSET = 100 * 366 * 86400  # a century either way


def _add_clock(app: Any, clock: _Clock) -> None:
    """`POST /_config/clock` with `{"offset_seconds": N}` sets the test clock: what is
    made from then on is stamped N seconds from the real time (0: the real time);
    `GET /_config/clock` shows it."""
    from aiohttp import web

    def problem(body: Any) -> str | None:
        if not isinstance(body, dict):
            return 'the body must be a JSON object: {"offset_seconds": <integer>}'
        if "offset_seconds" not in body:
            return "offset_seconds is required"
        offset = body["offset_seconds"]
        if type(offset) is not int:
            return "offset_seconds must be an integer (seconds from the real time)"
        if abs(offset) > MAX_CLOCK_OFFSET:
            return f"offset_seconds must be within {MAX_CLOCK_OFFSET} seconds of the real time"
        unexpected = sorted(set(body) - {"offset_seconds"})
        return "unexpected " + ", ".join(unexpected) if unexpected else None

    async def show(request: web.Request) -> web.Response:
        return web.json_response({"offset_seconds": clock.offset})

    async def set_offset(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            body = None
        error = problem(body)
        if error is not None:
            return web.json_response({"error": error}, status=400)
        clock.offset = body["offset_seconds"]
        return web.json_response({"offset_seconds": clock.offset})

    app.router.add_get("/_config/clock", show)
    app.router.add_post("/_config/clock", set_offset)


def _checked_item(item: Any, r: Any, user_error: Any) -> dict[str, Any]:
    """An extra subscription item, validated as localstripe validates the first one."""
    if type(item) is not dict or type(item.get("plan")) is not str:
        raise user_error(400, "Bad request")
    quantity = r.try_convert_to_int(item.get("quantity", 1))
    tax_rates = item.get("tax_rates", [])
    metadata = item.get("metadata")
    if (
        type(quantity) is not int
        or quantity < 1
        or type(tax_rates) is not list
        or (metadata is not None and type(metadata) is not dict)
    ):
        raise user_error(400, "Bad request")
    r.Plan._api_retrieve(item["plan"])  # 404 before anything is created
    return {
        "plan": item["plan"],
        "quantity": quantity,
        "tax_rates": tax_rates,
        "metadata": metadata,
    }


def serve(port: int, host: str = DEFAULT_HOST) -> None:
    """Serve patched localstripe on host:port until interrupted."""
    from aiohttp import web

    app = apply_patches()
    web.run_app(app, host=host, port=port, access_log=None, print=None)


def register_webhook(api: str, url: str, secret: str, name: str = "supasaasy") -> None:
    """Have localstripe send every event it creates to `url`, signed with `secret` as
    Stripe signs (`Stripe-Signature`), about a second after the event."""
    request = urllib.request.Request(
        f"{api.rstrip('/')}/_config/webhooks/{name}",
        data=urllib.parse.urlencode({"url": url, "secret": secret}).encode(),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if int(response.status) != 200:
            raise OSError(f"localstripe refused the webhook: {response.status}")


# Each list of a Stripe account, by the collection the Stripe connector stores it in.
LISTS = {
    "stripe_customer": "/v1/customers", "stripe_product": "/v1/products",
    "stripe_price": "/v1/prices", "stripe_plan": "/v1/plans",
    "stripe_subscription": "/v1/subscriptions?status=all", "stripe_invoice": "/v1/invoices",
    "stripe_charge": "/v1/charges", "stripe_payment_intent": "/v1/payment_intents",
    "stripe_refund": "/v1/refunds", "stripe_dispute": "/v1/disputes",
    "stripe_balance_transaction": "/v1/balance_transactions", "stripe_coupon": "/v1/coupons",
    "stripe_promotion_code": "/v1/promotion_codes", "stripe_credit_note": "/v1/credit_notes",
    "stripe_tax_rate": "/v1/tax_rates", "stripe_setup_intent": "/v1/setup_intents",
    "stripe_checkout_session": "/v1/checkout/sessions",
    "stripe_subscription_schedule": "/v1/subscription_schedules",
}  # fmt: skip


def held(api: str, api_key: str = TEST_API_KEY) -> dict[str, set[str]]:
    """The ids a Stripe API (localstripe) holds, by collection, children included: listed
    here on their own, as a check on what a sync stored."""

    def ids(path: str) -> set[str]:
        found: list[str] = []
        after = ""
        while True:
            joiner = "&" if "?" in path else "?"
            url = f"{api.rstrip('/')}{path}{joiner}limit=100{after}"
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
            found += [obj["id"] for obj in body["data"]]
            if not body["has_more"]:
                return set(found)
            after = f"&starting_after={found[-1]}"

    holdings = {collection: ids(path) for collection, path in LISTS.items()}
    holdings["stripe_subscription_item"] = set().union(*(
        ids(f"/v1/subscription_items?subscription={sub}")
        for sub in holdings["stripe_subscription"]))  # fmt: skip
    holdings["stripe_invoice_line_item"] = set().union(
        *(ids(f"/v1/invoices/{invoice}/lines") for invoice in holdings["stripe_invoice"])
    )
    return holdings


def _answers(url: str) -> bool:
    request = urllib.request.Request(
        url + "/v1/customers?limit=1", headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_localstripe(
    port: int | None = None,
    *,
    host: str = DEFAULT_HOST,
    log: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[str]:
    """Run patched localstripe in a child process; yield its base URL, stop it at exit.

    Each call is an independent, empty store. Without `port` a free one is picked;
    without `log` the server's output goes to a temporary file (its tail is shown if
    the server does not come up).
    """
    chosen = port if port is not None else free_port()
    if port is not None:
        require_free_ports({"localstripe": port})
    url = f"http://{host}:{chosen}"
    with tempfile.TemporaryDirectory(prefix="supasaasy-localstripe-") as tmp:
        log_path = log if log is not None else Path(tmp) / "localstripe.log"
        args = [sys.executable, "-m", MODULE, "--host", host, "--port", str(chosen)]
        process = spawn(args, log=log_path)
        try:
            wait_until(
                lambda: _answers(url),
                what="localstripe",
                process=process,
                log=log_path,
                timeout=timeout,
            )
            yield url
        finally:
            stop(process)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m supasaasy.devstack.localstripe",
        description="Serve localstripe from an empty in-memory store (nothing written to disk).",
    )
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (only this one)")
    args = parser.parse_args(argv)
    serve(args.port, args.host)


if __name__ == "__main__":
    main()
