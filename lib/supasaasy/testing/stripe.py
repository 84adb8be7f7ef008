"""FakeStripe: Stripe's lists (newest first, `limit`, `starting_after`, `has_more`,
`created[gte]`) and its events (`/v1/events`, the change feed), one table row per
resource: where it is listed, its id prefix, the events Stripe sends when one is
created, updated or deleted, and what an archived one looks like."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

from .fake import Change, FakeProvider, FakeResource, Handler, Request


@dataclass(frozen=True)
class StripeList:
    """One resource: its list (under /v1), id prefix, the event type of each change
    (None: Stripe sends none), and the field telling an archived object from a live one
    (field, live value, archived value)."""

    path: str
    id_prefix: str
    created: str | None = None
    updated: str | None = None
    deleted: str | None = None
    state: tuple[str, Any, Any] | None = None


def _evented(
    path: str,
    id_prefix: str,
    events: str,
    *,
    deleted: bool = False,
    state: tuple[str, Any, Any] | None = None,
) -> StripeList:
    """A resource with `<events>.created`, `.updated` (and `.deleted`) events."""
    return StripeList(path, id_prefix, f"{events}.created", f"{events}.updated",
                      f"{events}.deleted" if deleted else None, state)  # fmt: skip


INACTIVE = ("active", True, False)
ENDED = ("status", "active", "canceled")
LISTS = {
    "customer": _evented("customers", "cus", "customer", deleted=True),
    "product": _evented("products", "prod", "product", deleted=True, state=INACTIVE),
    "price": _evented("prices", "price", "price", deleted=True, state=INACTIVE),
    "plan": _evented("plans", "plan", "plan", deleted=True, state=INACTIVE),
    # Deleting a subscription cancels it: it stays, and its event carries its last state.
    "subscription": _evented("subscriptions", "sub", "customer.subscription", deleted=True,
                             state=ENDED),
    "invoice": _evented("invoices", "in", "invoice", deleted=True),
    "charge": StripeList("charges", "ch", created="charge.succeeded", updated="charge.updated"),
    "payment_intent": StripeList("payment_intents", "pi", created="payment_intent.created",
                                 updated="payment_intent.succeeded"),
    "refund": _evented("refunds", "re", "refund"),
    "dispute": _evented("disputes", "dp", "charge.dispute"),
    # Balance transactions have no events: they are listed again while they settle.
    "balance_transaction": StripeList("balance_transactions", "txn"),
    "coupon": _evented("coupons", "co", "coupon", deleted=True, state=("valid", True, False)),
    "promotion_code": _evented("promotion_codes", "promo", "promotion_code", state=INACTIVE),
    "credit_note": _evented("credit_notes", "cn", "credit_note"),
    "tax_rate": _evented("tax_rates", "txr", "tax_rate", state=INACTIVE),
    "setup_intent": StripeList("setup_intents", "seti", created="setup_intent.created",
                               updated="setup_intent.succeeded"),
    # A session sends its first event when it completes.
    "checkout_session": StripeList("checkout/sessions", "cs",
                                   updated="checkout.session.completed"),
    "subscription_schedule": _evented("subscription_schedules", "sub_sched",
                                      "subscription_schedule", state=ENDED),
}  # fmt: skip
# Children embedded in their parent: parent -> (its key, the child resource, id prefix).
EMBEDDED = {"subscription": ("items", "subscription_item", "si"),
            "invoice": ("lines", "invoice_line_item", "il")}  # fmt: skip


def _fake_resource(name: str, kind: StripeList) -> FakeResource:
    """What the change feed reports of it: the changes Stripe sends events for (new
    balance transactions are listed again)."""
    changes: dict[Change, object] = {
        "created": kind.created or name == "balance_transaction",
        "updated": kind.updated,
        "deleted": kind.deleted,
    }
    return FakeResource(archivable=kind.state is not None,
                        feed=frozenset(c for c, given in changes.items() if given),
                        has_updated_time=name == "product")  # fmt: skip


class FakeStripe(FakeProvider):
    connector = "stripe"
    resources: ClassVar[dict[str, FakeResource]] = {
        **{name: _fake_resource(name, kind) for name, kind in LISTS.items()},
        "subscription_item": FakeResource(has_updated_time=False),
        "invoice_line_item": FakeResource(has_created_time=False, has_updated_time=False),
    }

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        lists = [("GET", f"/v1/{kind.path}", partial(self.list_objects, name))
                 for name, kind in LISTS.items()]  # fmt: skip
        return [("GET", "/v1/events", self.list_events), *lists]

    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        stamp = int(when.timestamp())
        obj: dict[str, Any] = {"id": f"{LISTS[resource].id_prefix}_{number:05d}",
                               "object": resource, "created": stamp, "livemode": False,
                               "metadata": {}}  # fmt: skip
        if resource == "product":
            obj["updated"] = stamp
        state = LISTS[resource].state
        if state is not None:
            field, live, _ = state
            obj[field] = live
        if resource in EMBEDDED:
            key, child, prefix = EMBEDDED[resource]
            items = [{"id": f"{prefix}_{number:05d}_{n}", "object": child, resource: obj["id"]}
                     for n in (1, 2)]  # fmt: skip
            for item in items:
                if child == "subscription_item":  # invoice lines have no creation time
                    item["created"] = stamp
                self.add(child, item, when, parent=obj["id"])
            obj[key] = {"object": "list", "data": items, "has_more": False,
                        "total_count": len(items)}  # fmt: skip
        return obj

    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        obj["metadata"] = {"revision": str(int(when.timestamp()))}
        if "updated" in obj:
            obj["updated"] = int(when.timestamp())

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        field, _, archived = LISTS[resource].state or ("", None, None)
        obj[field] = archived

    def delete(self, resource: str, object_id: str) -> None:
        if resource != "subscription":
            return super().delete(resource, object_id)
        obj = self.objects[resource][object_id]
        self.mark_archived(resource, obj)
        self.updated_at[(resource, object_id)] = self.now()
        self._event("customer.subscription.deleted", obj, self.now())

    def changed(self, resource: str, change: Change, obj: dict[str, Any], when: datetime) -> None:
        event_type = getattr(LISTS[resource], change) if resource in LISTS else None
        if event_type is not None:
            self._event(event_type, obj, when)

    def _event(self, event_type: str, obj: dict[str, Any], when: datetime) -> None:
        self.events.append({"id": f"evt_{len(self.events) + 1:05d}", "object": "event",
                            "type": event_type, "created": int(when.timestamp()),
                            "data": {"object": copy.deepcopy(obj)}})  # fmt: skip

    # -- endpoints -----------------------------------------------------------------

    def list_objects(self, resource: str, request: Request) -> dict[str, Any]:
        found = self.listed(resource)
        if resource == "subscription" and request.query.get("status") != "all":
            found = [s for s in found if s["status"] != "canceled"]  # Stripe's default
        return self._list(request, found)

    def list_events(self, request: Request) -> dict[str, Any]:
        types = {v for k, v in request.query.items() if k.startswith("types[")}
        return self._list(request, [e for e in self.events if not types or e["type"] in types])

    def _list(self, request: Request, objects: list[dict[str, Any]]) -> dict[str, Any]:
        """Newest first, from `created[gte]` and before `created[lt]`, `limit` a page after
        `starting_after`."""
        since = int(request.query.get("created[gte]", "0"))
        before = int(request.query.get("created[lt]", str(2**62)))
        found = sorted((o for o in objects if since <= o["created"] < before),
                       key=lambda o: (o["created"], o["id"]), reverse=True)  # fmt: skip
        page = self.page_of(request, found, request.query.get("starting_after"),
                            int(request.query.get("limit", "10")))  # fmt: skip
        return {"object": "list", "url": request.path, "data": page.objects,
                "has_more": page.more}  # fmt: skip
