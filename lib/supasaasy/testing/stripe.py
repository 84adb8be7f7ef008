"""FakeStripe: Stripe's lists (newest first, `limit`, `starting_after`, `has_more`) and
its events (`/v1/events`, the change feed: `<object>.created/updated/deleted`)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from .fake import Change, FakeProvider, FakeResource, Handler, Refused, Request

# List path -> resource, and each resource's id prefix and event type prefix.
LISTS = {"customers": "customer", "products": "product", "prices": "price", "plans": "plan",
         "subscriptions": "subscription"}  # fmt: skip
ID_PREFIXES = {"customer": "cus", "product": "prod", "price": "price", "plan": "plan",
               "subscription": "sub", "subscription_item": "si"}  # fmt: skip
EVENT_PREFIXES = {"customer": "customer", "product": "product", "price": "price", "plan": "plan",
                  "subscription": "customer.subscription"}  # fmt: skip


class FakeStripe(FakeProvider):
    connector = "stripe"
    resources: ClassVar[dict[str, FakeResource]] = {
        # Only products say when they last changed.
        "customer": FakeResource(feed_reports_deletions=True, has_updated_time=False),
        "product": FakeResource(archivable=True, feed_reports_deletions=True),
        "price": FakeResource(archivable=True, feed_reports_deletions=True,
                              has_updated_time=False),
        "plan": FakeResource(archivable=True, feed_reports_deletions=True, has_updated_time=False),
        # A deleted subscription is canceled: listed still, its event with its final state.
        "subscription": FakeResource(archivable=True, feed_reports_deletions=True,
                                     has_updated_time=False),
        "subscription_item": FakeResource(has_updated_time=False),
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        return [("GET", "/v1/events", self.list_events), ("GET", "/v1/{kind}", self.list_objects)]

    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        stamp = int(when.timestamp())
        obj: dict[str, Any] = {"id": f"{ID_PREFIXES[resource]}_{number:05d}", "object": resource,
                               "created": stamp, "livemode": False, "metadata": {}}  # fmt: skip
        if resource == "customer":
            obj["email"] = f"customer{number}@example.com"
        elif resource == "product":
            obj.update(name=f"Product {number}", active=True, updated=stamp)
        elif resource in ("price", "plan"):
            obj.update(active=True, currency="eur", unit_amount=100 * number)
        elif resource == "subscription":
            items = [{"id": f"si_{number:05d}_{n}", "object": "subscription_item",
                      "subscription": obj["id"], "created": stamp, "quantity": n}
                     for n in (1, 2)]  # fmt: skip
            for item in items:
                self.add("subscription_item", item, when, parent=obj["id"])
            obj.update(status="active", items={"object": "list", "data": items, "has_more": False,
                                               "total_count": len(items)})  # fmt: skip
        return obj

    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        obj["metadata"] = {"revision": str(int(when.timestamp()))}
        if "updated" in obj:
            obj["updated"] = int(when.timestamp())

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        if resource == "subscription":
            obj["status"] = "canceled"
        else:
            obj["active"] = False

    def delete(self, resource: str, object_id: str) -> None:
        if resource != "subscription":
            return super().delete(resource, object_id)
        obj = self.objects[resource][object_id]
        obj["status"] = "canceled"
        self.updated_at[(resource, object_id)] = self.now()
        self._event("customer.subscription.deleted", obj, self.now())

    def changed(self, resource: str, change: Change, obj: dict[str, Any], when: datetime) -> None:
        if resource in EVENT_PREFIXES:
            self._event(f"{EVENT_PREFIXES[resource]}.{change}", obj, when)

    def _event(self, event_type: str, obj: dict[str, Any], when: datetime) -> None:
        self.events.append({"id": f"evt_{len(self.events) + 1:05d}", "object": "event",
                            "type": event_type, "created": int(when.timestamp()),
                            "data": {"object": copy.deepcopy(obj)}})  # fmt: skip

    # -- endpoints -----------------------------------------------------------------

    def list_objects(self, request: Request) -> dict[str, Any]:
        resource = LISTS.get(request.params["kind"])
        if resource is None:
            raise Refused(404, f"Unrecognized request URL (GET: {request.path})")
        found = self.listed(resource)
        if resource == "subscription" and request.query.get("status") != "all":
            found = [s for s in found if s["status"] != "canceled"]  # Stripe's default
        return self._list(request, found)

    def list_events(self, request: Request) -> dict[str, Any]:
        types = {v for k, v in request.query.items() if k.startswith("types[")}
        found = [e for e in self.events if not types or e["type"] in types]
        return self._list(request, found)

    def _list(self, request: Request, objects: list[dict[str, Any]]) -> dict[str, Any]:
        """Newest first, from `created[gte]`, `limit` a page after `starting_after`."""
        since = int(request.query.get("created[gte]", "0"))
        found = sorted((o for o in objects if o["created"] >= since),
                       key=lambda o: (o["created"], o["id"]), reverse=True)  # fmt: skip
        page = self.page_of(request, found, request.query.get("starting_after"),
                            int(request.query.get("limit", "10")))  # fmt: skip
        return {"object": "list", "url": request.path, "data": page.objects,
                "has_more": page.more}  # fmt: skip
