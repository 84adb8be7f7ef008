"""Typed views read one collection through the entities key, not by scanning every row of
every app. On PostgreSQL 15 (which Supabase runs, as it does 17; neither can skip the
leading column of an index, as 18 can), EXPLAIN (ANALYZE, BUFFERS) of a small
collection's view in a large table reads a few pages, where it read the whole table
before the key led with the collection; and the stack's PostgreSQL reads as few."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from supasaasy.devstack.migrations import bootstrap
from supasaasy.devstack.postgres import EmbeddedPostgres
from supasaasy.devstack.processes import free_port
from supasaasy.migrations import Migration, apply_migrations, package_migrations

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
KEY_FIRST = "20261202001200"
VIEWS = ("stripe_products", "stripe_invoices", "stripe_charges", "intercom_contacts")

FILL = """
insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)
select 'app_' || (n % 5), 'stripe_customer', 'cus_' || n, jsonb_build_object('id', n)
  from generate_series(1, 60000) n;
insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)
select 'app_' || (n % 5), c, 'x_' || n, jsonb_build_object('id', n)
  from generate_series(1, 200) n,
       unnest(array['stripe_product', 'stripe_invoice', 'stripe_charge', 'intercom_contact']) c;
analyze supasaasy.entities;
"""


def pages_read(url: str, view: str) -> int:
    """Buffers (pages) the view's query touches, as EXPLAIN (ANALYZE, BUFFERS) counts."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"explain (analyze, buffers, format json) select * from supasaasy.{view}"
        ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


@pytest.fixture(scope="module")
def pg15() -> Iterator[Callable[[], str]]:
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"needs PostgreSQL 15 in {PG15_BIN} (Debian's postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="supasaasy-test-pg15-"))
    postgres = EmbeddedPostgres(root, free_port(), durable=False, bin_dir=PG15_BIN)
    postgres.start()
    try:
        yield lambda: postgres.url
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def fill(url: str, migrations: list[Migration] | None = None) -> None:
    apply_migrations(url, migrations)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL)


def test_on_postgresql_15_a_small_collections_view_reads_a_few_pages(
    pg15: Callable[[], str],
) -> None:
    url = pg15()
    bootstrap(url, None)
    fill(url, [m for m in package_migrations() if m.version < KEY_FIRST])
    scanned = {view: pages_read(url, view) for view in VIEWS}
    apply_migrations(url)
    keyed = {view: pages_read(url, view) for view in VIEWS}
    # 200 rows among 60,800: the key and the heap pages holding them (each row counts its
    # page again), where every page of the table was read before.
    assert all(keyed[view] <= 100 and keyed[view] * 5 < scanned[view] for view in VIEWS), (
        scanned,
        keyed,
    )


def test_on_the_stacks_postgresql_too(new_database: Callable[[], str]) -> None:
    url = new_database()
    fill(url)
    assert all(pages_read(url, view) <= 100 for view in VIEWS)
