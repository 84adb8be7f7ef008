"""A database with the TypeScript original's schema migrates to SupaSaaSy's in place.

Each test makes databases of its own in the stack's cluster: what a new Supabase project
has (the local stack's bootstrap), then, for an upgrade, the original's schema and rows
(fixtures/original_schema.sql), then `supasaasy migrate --apply`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from catalog import describe, difference
from typer.testing import CliRunner

from supasaasy.cli import app
from supasaasy.migrations import package_migrations

FIXTURE = Path(__file__).parent / "fixtures" / "original_schema.sql"
ADOPT = "20261202000200_supasaasy_adopt_original.sql"
IMPORT = "20261202000800_supasaasy_import_original.sql"
ENTITIES = (
    "select id, external_id, app_key, collection_key, api_version, raw_payload, created_at,"
    " updated_at, archived_at, deleted_at from supasaasy.entities order by id"
)
ALICE, BOB, CAROL = (f"0a0a0a0a-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
PENDING_JOB = "0b0b0b0b-0000-4000-8000-000000000002"
ASIDE_NOTE = "select obj_description('supasaasy_original'::regnamespace)"
SCHEMAS = "select nspname from pg_namespace order by 1"
# Where the original's worker trigger would call pg_net (the fixture's stub records it).
CALLS = "select count(*) from extensions.http_post_calls"

Rows = list[tuple[Any, ...]]


def rows(url: str, query: str, *params: object) -> Rows:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchall()


def one(url: str, query: str, *params: object) -> Any:
    [(value,)] = rows(url, query, *params)
    return value


def run_sql(url: str, script: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script.encode())


def migrate(url: str) -> tuple[int, str]:
    """`supasaasy migrate --apply` on the database: its exit code and what it printed."""
    result = CliRunner().invoke(
        app, ["migrate", "--apply", "--db-url", url, "--no-schedules"], terminal_width=400
    )
    return result.exit_code, result.output


def migrated(url: str) -> list[str]:
    code, output = migrate(url)
    assert code == 0, output
    return output.splitlines()


def package_sql(file_name: str) -> str:
    [found] = [m.sql for m in package_migrations() if m.file_name == file_name]
    return found


def extras(url: str) -> Rows:
    """What catalog.describe leaves out: owners and comments of the schema and its
    objects, and types that are not a relation's."""
    return rows(
        url,
        """
        select 'schema', n.nspname, n.nspowner::regrole::text,
               obj_description(n.oid, 'pg_namespace')
          from pg_namespace n where n.nspname = 'supasaasy'
        union all
        select 'relation', c.relname, c.relowner::regrole::text,
               obj_description(c.oid, 'pg_class')
          from pg_class c where c.relnamespace = 'supasaasy'::regnamespace
        union all
        select 'column', c.relname || '.' || a.attname, null, col_description(c.oid, a.attnum)
          from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
         where c.relnamespace = 'supasaasy'::regnamespace
           and col_description(c.oid, a.attnum) is not null
        union all
        select 'function', p.oid::regprocedure::text, p.proowner::regrole::text,
               obj_description(p.oid, 'pg_proc')
          from pg_proc p where p.pronamespace = 'supasaasy'::regnamespace
        union all
        select 'type', t.typname, t.typowner::regrole::text, null
          from pg_type t where t.typnamespace = 'supasaasy'::regnamespace and t.typrelid = 0
           and t.typelem = 0
         order by 1, 2""",
    )


def as_user(url: str, user_id: str, query: str) -> Any:
    """A query's one value, run as a signed-in user (as PostgREST runs it for their JWT)."""
    with psycopg.connect(url) as conn:
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{user_id}", "role": "authenticated"}}',),
        )
        [(value,)] = conn.execute(query).fetchall()
        return value


def calls_when_a_job_wants_a_worker(url: str, jobs_table: str) -> int:
    """pg_net calls made when the original's pending job asks for a worker again, with
    an admin key set (rolled back)."""
    with psycopg.connect(url) as conn:
        conn.execute("set local app.admin_api_key = 'admin-key'")
        conn.execute(f"update {jobs_table} set needs_worker = true where id = %s", (PENDING_JOB,))
        [(calls,)] = conn.execute(CALLS).fetchall()
        conn.rollback()
        return int(calls)


def test_the_original_schema_migrates_in_place(new_database: Callable[[], str]) -> None:
    original = new_database()
    run_sql(original, FIXTURE.read_text())
    entities = rows(original, ENTITIES)
    readers = rows(original, "select user_id, created_at from supasaasy.users order by 1")
    kept = {
        table: rows(original, f"select * from supasaasy.{table} order by id")
        for table in ("sync_jobs", "sync_job_tasks", "webhook_logs")
    }
    assert len(entities) == 411 and len(readers) == 2
    assert calls_when_a_job_wants_a_worker(original, "supasaasy.sync_jobs") == 1

    started = time.monotonic()
    applied = migrated(original)
    upgrade_seconds = time.monotonic() - started
    assert applied == [f"applied {m.file_name}" for m in package_migrations()]

    new = new_database()
    assert migrated(new) == applied
    assert difference(describe(new), describe(original)) == ""
    assert extras(new) == extras(original)

    # Every entity as it was; observed_at unknown (the next write of an object wins).
    assert rows(original, ENTITIES) == entities
    assert one(original, "select count(observed_at) from supasaasy.entities") == 0
    # The views show what the original's did: the row marked deleted is hidden.
    assert one(original, "select count(*) from supasaasy.stripe_customers") == 79
    assert rows(
        original,
        "select title, state from supasaasy.intercom_conversations"
        " where external_id = 'cnv_000003'",
    ) == [("Question 3", "closed")]

    # The readers: listed users read the data with their own JWT, others read nothing.
    assert rows(original, "select user_id, created_at from supasaasy.users order by 1") == readers
    assert as_user(original, ALICE, "select count(*) from supasaasy.entities") == 411
    assert as_user(original, BOB, "select count(*) from supasaasy.stripe_customers") == 79
    assert as_user(original, CAROL, "select count(*) from supasaasy.entities") == 0

    # Watermarks: where the original's worker recorded when its task ended, the task's
    # start; an immediate sync's, or one whose task is gone, as it was.
    watermarks = {
        (app_key, collection): (synced, metadata)
        for app_key, collection, synced, metadata in rows(
            original,
            "select app_key, collection_key, last_synced_at, last_sync_metadata"
            " from supasaasy.sync_state",
        )
    }
    expected = {
        ("stripe_prod", "stripe_customer"): ("06:00:10", "2026-01-29T06:04:59.5+00:00"),
        ("stripe_prod", "stripe_subscription"): ("06:05:01", "2026-01-29T06:09:00+00:00"),
        ("stripe_prod", "stripe_product"): ("", "2026-01-28T12:00:00+00:00"),
        ("intercom_main", "intercom_contact"): ("", "2026-01-29T07:00:00+00:00"),
        ("notion_ws", "notion_page"): ("", "2026-01-29T08:00:00+00:00"),
    }
    assert watermarks == {
        key: (
            datetime.fromisoformat(f"2026-01-29T{start}+00:00" if start else was).astimezone(UTC),
            {"imported_from": "supasaasy_original", "original_last_synced_at": was},
        )
        for key, (start, was) in expected.items()
    }

    # The original's jobs, tasks and webhook logs stay aside, untouched; none is queued.
    for table, before in kept.items():
        assert rows(original, f"select * from supasaasy_original.{table} order by id") == before
    assert one(original, "select count(*) from supasaasy.sync_jobs") == 0
    note = one(original, ASIDE_NOTE)
    assert "411 entities, 2 readers (0 left out" in note and "5 sync watermarks" in note
    assert "Not copied: 2 sync_jobs, 4 sync_job_tasks, 3 webhook_logs." in note
    # ... for the database owner only.
    for role in ("anon", "authenticated", "service_role"):
        privilege = "select has_schema_privilege(%s, 'supasaasy_original', 'usage')"
        assert one(original, privilege, role) is False

    # Nothing calls pg_net any more: no function of either schema, no trigger.
    calling = rows(
        original,
        "select p.oid::regprocedure::text from pg_proc p"
        " where p.pronamespace::regnamespace::text in ('supasaasy', 'supasaasy_original')"
        " and p.prosrc ilike '%http_post%'",
    )
    triggers = rows(
        original,
        "select tgname from pg_trigger where not tgisinternal and tgrelid"
        " in ('supasaasy.sync_jobs'::regclass, 'supasaasy_original.sync_jobs'::regclass)",
    )
    assert calling == [] and triggers == []
    assert calls_when_a_job_wants_a_worker(original, "supasaasy_original.sync_jobs") == 0

    # SupaSaaSy's functions work on the upgraded database, and a claim brings the
    # imported watermarks to the worker.
    job_id = one(
        original,
        "select id from supasaasy.create_sync_job('stripe_prod', 'incremental', '{customer}')",
    )
    claimed = rows(
        original, "select job_id, resource_type, app_key, watermarks from supasaasy.claim_task()"
    )
    [(claimed_job, resource, app_key, task_watermarks)] = claimed
    assert (claimed_job, resource, app_key) == (job_id, "customer", "stripe_prod")
    assert task_watermarks["stripe_customer"] == "2026-01-29T06:00:10+00:00"
    assert one(original, CALLS) == 0

    # A second run applies nothing.
    assert migrated(original) == ["migrations: up to date"]
    assert difference(describe(new), describe(original)) == ""
    print(f"\nupgrade of the fixture (411 entities): {upgrade_seconds:.2f} s")


def test_the_upgrade_migrations_change_nothing_elsewhere(
    new_database: Callable[[], str],
) -> None:
    # A new project: no schema comes of them.
    empty = new_database()
    before = rows(empty, SCHEMAS)
    run_sql(empty, package_sql(ADOPT))
    run_sql(empty, package_sql(IMPORT))
    assert rows(empty, SCHEMAS) == before

    # SupaSaaSy's own schema, with rows: applied again, neither changes anything.
    ours = new_database()
    migrated(ours)
    before = rows(ours, SCHEMAS)
    assert ("supasaasy",) in before and ("supasaasy_original",) not in before
    run_sql(
        ours,
        "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)"
        " values ('app', 'stripe_customer', 'cus_1', '{}');"
        " insert into auth.users (id) values ('0a0a0a0a-0000-4000-8000-0000000000ff');"
        " insert into supasaasy.users (user_id) values ('0a0a0a0a-0000-4000-8000-0000000000ff');",
    )
    catalog = describe(ours)
    data = [rows(ours, f"select * from supasaasy.{table}") for table in ("entities", "users")]
    run_sql(ours, package_sql(ADOPT))
    run_sql(ours, package_sql(IMPORT))
    assert difference(catalog, describe(ours)) == ""
    assert [rows(ours, f"select * from supasaasy.{t}") for t in ("entities", "users")] == data
    assert rows(ours, SCHEMAS) == before


def test_objects_outside_the_schema_that_depend_on_it_stop_the_upgrade(
    new_database: Callable[[], str],
) -> None:
    original = new_database()
    run_sql(original, FIXTURE.read_text())
    run_sql(
        original,
        "create view public.vip_customers as select * from supasaasy.stripe_customers"
        " where metadata ->> 'tier' = 'gold';"
        " create table public.notes (entity_id uuid references supasaasy.entities (id));",
    )
    code, output = migrate(original)
    assert code == 1
    message = " ".join(output.split())
    assert ADOPT in message
    assert "view public.vip_customers" in message
    assert "table constraint notes_entity_id_fkey on public.notes" in message
    # Nothing changed: no migration recorded, the original's schema where it was.
    assert one(original, "select count(*) from supabase_migrations.schema_migrations") == 0
    assert one(original, "select to_regprocedure('supasaasy.spawn_worker()') is not null")

    # Once they are gone it upgrades. A reader whose Auth user is gone (the original adds
    # its foreign key only where no constraint of that name exists, in any schema) is
    # left out, and counted.
    run_sql(
        original,
        "drop view public.vip_customers; drop table public.notes;"
        " alter table supasaasy.users drop constraint users_user_id_fkey;"
        " insert into supasaasy.users (user_id) values ('0a0a0a0a-0000-4000-8000-0000000000ee');",
    )
    migrated(original)
    readers = rows(original, "select user_id::text from supasaasy.users order by 1")
    assert readers == [(ALICE,), (BOB,)]
    assert "2 readers (1 left out: no such Supabase Auth user)" in one(original, ASIDE_NOTE)
    assert one(original, "select count(*) from supasaasy.entities") == 411
