"""What the collection-first entities key costs writes: the same batches written through
`write_changes` into two databases of one cluster, one with the key as it was (led by
the app) and one as it is (led by the collection), both already holding rows of other
apps, alternating round by round. Reported as the ratio of their median times.

Run alone: python bench/key_order.py postgresql://postgres:...@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import orjson
import psycopg
from row_cost import drop_database, scratch_database

from supasaasy.migrations import package_migrations

KEY_FIRST = "20261202001200"
OTHER_ROWS = 200_000
BATCH = 500


def _database(cluster_url: str, before_key: bool) -> str:
    chosen = [m for m in package_migrations() if not before_key or m.version < KEY_FIRST]
    url = scratch_database(cluster_url, chosen)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)"
            " select 'other_' || (n %% 5), case when n %% 3 = 0 then 'stripe_invoice'"
            " else 'stripe_customer' end, 'x_' || n, jsonb_build_object('id', n)"
            " from generate_series(1, %s) n",
            (OTHER_ROWS,),
        )
        conn.execute("vacuum analyze supasaasy.entities")
    return url


def _batches(rows: int) -> list[str]:
    """Bodies of customer-sized rows (about 1 kB each), `BATCH` a body."""
    bodies = []
    for start in range(0, rows, BATCH):
        batch = [{"collection_key": "stripe_customer", "external_id": f"cus_{n:08d}",
                  "raw_payload": {"id": f"cus_{n:08d}", "object": "customer",
                                  "email": f"c{n}@example.com", "name": f"Customer {n}",
                                  "created": 1_700_000_000 + n, "metadata": {"n": str(n)},
                                  "description": "x" * 800},
                  "source_created_at": "2023-11-14T22:13:20+00:00"}
                 for n in range(start, min(start + BATCH, rows))]  # fmt: skip
        bodies.append(orjson.dumps({"rows": batch}).decode())
    return bodies


def _write(url: str, app: str, bodies: list[str]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        for body in bodies:
            conn.execute("select supasaasy.write_changes(%s, %s::jsonb, null)", (app, body))
        return time.perf_counter() - began


def measure(cluster_url: str, rows: int = 20_000, rounds: int = 9) -> dict[str, Any]:
    """{old_s, new_s, new_over_old}: median seconds to write `rows` new rows of a fresh
    app into each database, and their ratio."""
    old, new = _database(cluster_url, True), _database(cluster_url, False)
    times: dict[str, list[float]] = {"old": [], "new": []}
    try:
        for r in range(rounds):
            app = f"bench_{r}"
            bodies = _batches(rows)
            order = [("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]
            for label, url in order:
                times[label].append(_write(url, app, bodies))
    finally:
        for url in (old, new):
            drop_database(cluster_url, url)
    old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
    return {"rows": rows, "old_s": old_s, "new_s": new_s, "new_over_old": new_s / old_s}


if __name__ == "__main__":
    print(measure(sys.argv[1]))
