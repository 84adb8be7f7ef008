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
- `POST /_config/faults` injects failures for tests: error answers (5xx, 429 with
  Retry-After), pages that contradict themselves, cursors that repeat, slow answers.

Differences from real Stripe that remain (a sync must not rely on them):

- Lists other than events come back oldest first (Stripe: newest first); `ending_before` is not
  supported; `limit` is not capped at 100.
- `starting_after` with an id that is not (or no longer) in the list restarts from
  the first item instead of failing.
- `created[gte]`/`[gt]`/`[lt]`/`[lte]` work on `/v1/events` only (`/v1/charges` takes
  `created[gt]` alone). Customers, products, plans, prices and subscription items
  answer 400 ("Unexpected created"); subscriptions and invoices answer 500 (their
  lists take no parameters beyond their own filters).
- `type` on events is an exact name (no `customer.*` wildcards).
- Deleted customers, products and plans are gone (404), not `deleted: true` objects.
- Updating a subscription's `items` replaces them all by the single item given.
- Trials: subscriptions with a trial stay `incomplete` (never `trialing`).
- Events keep a snapshot of their object (like Stripe); ids are random.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
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

    from localstripe import resources as r  # type: ignore[import-untyped]
    from localstripe import server
    from localstripe.errors import UserError  # type: ignore[import-untyped]

    def emit(kind: str, obj: Any) -> None:
        # Creating an Event stores it (so /v1/events lists it); delivery only goes to
        # webhooks registered through /_config/webhooks, of which there are none by default.
        r.schedule_webhook(r.Event(kind, obj))

    # --- The store lives in memory only --------------------------------------------

    def no_disk(self: Any) -> None:
        return None

    # Every write pickled the whole store to one /tmp file shared by the machine.
    r.Store.dump_to_disk = no_disk
    # Always start empty instead of from whatever another run left in /tmp.
    r.Store.try_load_from_disk = no_disk

    # Objects by kind ("customer", ...) in insertion order, kept with the store: every
    # list, and exports such as a customer's `subscriptions` or a charge's `refunds`,
    # scanned the whole store, which made seeding quadratic in the store's size.
    by_kind: dict[str, dict[str, Any]] = {}

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
        if params:
            raise UserError(400, "Unexpected " + ", ".join(params))
        li = r.List(url, limit=limit, starting_after=starting_after)
        li._list = list(by_kind.get(cls.object, {}).values())
        return li

    for key, value in r.store.items():
        set_item(r.store, key, value)
    r.Store.__setitem__ = set_item
    r.Store.__delitem__ = del_item
    r.Store.clear = clear
    r.StripeObject._api_list_all = classmethod(list_kind)

    # --- Events: `types` ---------------------------------------------------------------

    list_events = r.Event._api_list_all

    def list_events_by_types(cls: Any, /, url: str, types: Any = None, **params: Any) -> Any:
        # Stripe clients filter on several types at once with `types[]`.
        if types is not None and (
            type(types) is not list
            or not 1 <= len(types) <= MAX_EVENT_TYPES
            or not all(type(t) is str and t for t in types)
            or params.get("type") is not None  # Stripe: pass `type` or `types`, not both
        ):
            raise UserError(400, "Bad request")
        events = list_events(url, **params)
        if types is not None:
            wanted = set(types)
            events._list = [e for e in events._list if e.type in wanted]
        # Newest first, as on Stripe: for events the order carries meaning (the first
        # event of an object holds its latest state).
        events._list.reverse()
        return events

    r.Event._api_list_all = classmethod(list_events_by_types)

    # --- Prices: plans seen through the prices API -------------------------------------

    class Price(r.StripeObject):  # type: ignore[misc]
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
        if params:
            raise UserError(400, "Unexpected " + ", ".join(params))
        plans = r.Plan._api_list_all("/v1/plans", active=active, product=product)
        prices = r.List("/v1/prices", limit=limit, starting_after=starting_after)
        prices._list = [Price(plan) for plan in plans._list]
        return prices

    def retrieve_price(id: str, **params: Any) -> Any:
        if params:
            raise UserError(400, "Unexpected " + ", ".join(params))
        plan = r.store.get("plan:" + id)
        if plan is None:
            raise UserError(404, f"No such price: '{id}'")
        return Price(plan)

    # localstripe has no /v1/prices; its route table is built at import, so the new
    # routes go through its own `api_extra` adapter, like the ones in `extra_apis`.
    for method, url, func in (
        ("GET", "/v1/prices", list_prices),
        ("GET", "/v1/prices/{id}", retrieve_price),
    ):
        r.extra_apis.append((method, url, func))
        server.app.router.add_route(method, url, server.api_extra(func, url))

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
        if any(k.startswith("plan:") and p.product == id for k, p in r.store.items()):
            raise UserError(
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
        extra = [_checked_item(item, r, UserError) for item in items[1:]]
        plans = [item.get("plan") if type(item) is dict else None for item in items]
        if len(set(plans)) != len(plans):
            raise UserError(400, "Cannot add multiple subscription items with the same plan")
        subscription = create_subscription(**{**data, "items": items[:1]})
        for item in extra:
            subscription.items._list.append(
                r.SubscriptionItem(subscription=subscription.id, **item)
            )
        # The customer.subscription.created event was taken with the first item only.
        for stored in reversed(r.store.values()):
            if (
                isinstance(stored, r.Event)
                and stored.type == "customer.subscription.created"
                and stored.data["object"]["id"] == subscription.id
            ):
                stored.data = {"object": subscription._export()}
                break
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
        if params:
            raise UserError(400, "Unexpected " + ", ".join(params))
        if type(subscription) is not str:
            raise UserError(400, "Bad request")
        owner = r.Subscription._api_retrieve(subscription)
        items = r.List(url, limit=limit, starting_after=starting_after)
        items._list = list(owner.items._list)
        return items

    r.SubscriptionItem._api_list_all = classmethod(list_subscription_items_of)
    # localstripe keeps the parent only privately and has no `price` on items.
    r.SubscriptionItem.subscription = property(lambda self: self._subscription)
    r.SubscriptionItem.price = property(lambda self: Price(self.plan))

    _add_faults(server.app)
    _app = server.app
    return _app


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
