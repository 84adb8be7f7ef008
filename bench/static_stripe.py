"""A fast static Stripe: replays recorded list pages, so that a benchmark shows our own
overhead rather than a fake server's. Each resource's objects are kept as the list
endpoint returned them; pages are cut by `limit` and `starting_after` and served as
pre-encoded JSON. `created[gte]` and `created[lt]` select by creation time, as Stripe's
lists do (sharded full syncs send them).

Run: python bench/static_stripe.py --port P --data recorded.json
(`recorded.json`: {"/v1/customers": [objects...], ...}, in list order)
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

# A list's objects, and each one's position by id.
Listed = tuple[list[dict[str, object]], dict[object, int]]


def build_app(recorded: dict[str, list[dict[str, object]]]) -> web.Application:
    pages: dict[tuple[str, str | None, int, str | None, str | None], bytes] = {}
    lists: dict[tuple[str, str | None, str | None], Listed] = {}

    def listed(path: str, gte: str | None, lt: str | None) -> Listed:
        """The recorded list, or its objects created in [gte, lt), with their positions."""
        key = (path, gte, lt)
        if key not in lists:
            objects = [o for o in recorded[path]
                       if (gte is None or int(str(o["created"])) >= int(gte))
                       and (lt is None or int(str(o["created"])) < int(lt))]  # fmt: skip
            lists[key] = objects, {obj["id"]: i for i, obj in enumerate(objects)}
        return lists[key]

    def page(path: str, after: str | None, limit: int, gte: str | None, lt: str | None) -> bytes:
        key = (path, after, limit, gte, lt)
        if key not in pages:
            objects, index = listed(path, gte, lt)
            start = 0 if after is None else index[after] + 1
            chunk = objects[start : start + limit]
            pages[key] = json.dumps({
                "object": "list", "url": path, "data": chunk,
                "has_more": start + limit < len(objects),
            }).encode()  # fmt: skip
        return pages[key]

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if path not in recorded:
            return web.json_response({"error": {"message": f"no {path}"}}, status=404)
        gte, lt = request.query.get("created[gte]"), request.query.get("created[lt]")
        after = request.query.get("starting_after")
        if after is not None and after not in listed(path, gte, lt)[1]:
            return web.json_response({"error": {"message": f"No such object: {after}"}},
                                     status=400)  # fmt: skip
        limit = min(int(request.query.get("limit", 10)), 100)
        return web.Response(body=page(path, after, limit, gte, lt),
                            content_type="application/json")  # fmt: skip

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    with open(args.data) as f:
        recorded = json.load(f)
    web.run_app(build_app(recorded), host="127.0.0.1", port=args.port, access_log=None,
                print=None)  # fmt: skip


if __name__ == "__main__":
    main()
