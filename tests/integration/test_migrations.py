"""Migrations: what `supasaasy migrate --apply` builds is the schema, however it is
applied, on a database that has only what a new Supabase project has."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import psycopg
from catalog import describe, difference
from typer.testing import CliRunner

from supasaasy.cli import app
from supasaasy.devstack import StackInfo
from supasaasy.migrations import BASELINE, PRE_RELEASE, apply_migrations, package_migrations


def _migrate(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["migrate", "--apply", "--db-url", url, "--no-schedules"], terminal_width=300
    )
    return result.exit_code, result.output


def _versions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version from supabase_migrations.schema_migrations")
        return sorted(row[0] for row in rows)


def test_applied_or_pushed_the_migrations_build_the_dev_stacks_schema(
    stack: StackInfo, new_database: Callable[[], str]
) -> None:
    applied, pushed = new_database(), new_database()
    code, output = _migrate(applied)
    assert code == 0, output
    assert _migrate(applied) == (0, "migrations: up to date\n")
    # What `supabase db push` does with the files `migrate --out` writes: each in order.
    with psycopg.connect(pushed, autocommit=True) as conn:
        for migration in package_migrations():
            conn.execute(migration.sql.encode())
    expected = describe(stack.database_url)
    assert difference(expected, describe(applied)) == ""
    assert difference(expected, describe(pushed)) == ""
    assert _versions(applied) == [m.version for m in package_migrations()]


def test_the_catalog_comparison_sees_a_changed_function(
    stack: StackInfo, new_database: Callable[[], str]
) -> None:
    url = new_database()
    assert _migrate(url)[0] == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create or replace function supasaasy.is_reader() returns boolean"
                     " language sql stable security definer set search_path = ''"
                     " as $$ select true $$")  # fmt: skip
    assert "is_reader" in difference(describe(stack.database_url), describe(url))


def test_a_database_built_from_the_pre_release_migrations_is_brought_up_to_date(
    stack: StackInfo, new_database: Callable[[], str]
) -> None:
    # The baseline folds the pre-release migrations (their catalogs were compared when it
    # was made): such a database has the baseline's schema and the old versions recorded.
    url = new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in package_migrations():
            if migration.version in BASELINE:
                conn.execute(migration.sql.encode())
        for version in PRE_RELEASE:
            conn.execute("insert into supabase_migrations.schema_migrations (version)"
                         " values (%s)", (version,))  # fmt: skip
    code, output = _migrate(url)
    assert code == 0, output
    later = [m for m in package_migrations() if m.version > max(BASELINE)]
    assert later and all(f"applied {m.file_name}" in output for m in later)
    assert not any(f"applied {m.version}" in output for m in package_migrations()
                   if m.version in BASELINE)  # fmt: skip
    assert difference(describe(stack.database_url), describe(url)) == ""
    assert _versions(url) == sorted({*PRE_RELEASE, *(m.version for m in package_migrations())})


def test_some_pre_release_migrations_alone_are_refused(new_database: Callable[[], str]) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into supabase_migrations.schema_migrations (version)"
                     " values (%s)", (PRE_RELEASE[0],))  # fmt: skip
    code, output = _migrate(url)
    assert code == 1 and PRE_RELEASE[0] in output and "pre-release" in output
    assert _versions(url) == [PRE_RELEASE[0]]


def test_two_runs_at_once_apply_each_migration_once(
    stack: StackInfo, new_database: Callable[[], str]
) -> None:
    url = new_database()
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(len(apply_migrations(url)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0, len(package_migrations())]
    assert difference(describe(stack.database_url), describe(url)) == ""


def test_rows_stored_before_source_times_get_them_from_their_payloads(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    earlier = [m for m in package_migrations() if m.version < "20261202001000"]
    apply_migrations(url, earlier)
    payloads = {
        "stripe": {"id": "cus_1", "created": 1_700_000_000},
        "product": {"id": "prod_1", "created": 1_700_000_000, "updated": 1_700_000_500},
        "intercom": {"id": "1", "created_at": 1_700_000_000, "updated_at": 1_700_000_900.5},
        "notion": {"id": "p", "created_time": "2023-11-14T22:13:00.000Z",
                   "last_edited_time": "2023-11-15T08:00:00+01:00"},
        "unzoned": {"id": "u", "created_time": "2023-11-14T22:13:00"},
        "junk": {"id": "j", "created_time": "soon", "updated_at": "2023-13-45T00:00:00Z"},
        "none": {"id": "n"},
    }  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        for key, payload in payloads.items():
            conn.execute("insert into supasaasy.entities (app_key, collection_key, external_id,"
                         " raw_payload) values ('old', 'c', %s, %s)",
                         (key, psycopg.types.json.Jsonb(payload)))  # fmt: skip
    with psycopg.connect(url) as conn:
        written = conn.execute("select external_id, updated_at from supasaasy.entities").fetchall()
    assert [m.version for m in apply_migrations(url)] == [
        m.version for m in package_migrations() if m not in earlier
    ]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select external_id, extract(epoch from source_created_at),"
            " extract(epoch from source_updated_at) from supasaasy.entities"
        )
        found = {key: (created, updated) for key, created, updated in rows}
        kept = conn.execute("select external_id, updated_at from supasaasy.entities").fetchall()
    assert sorted(kept) == sorted(written)  # filled in, not written: updated_at stays
    assert found == {
        "stripe": (1_700_000_000, None),
        "product": (1_700_000_000, 1_700_000_500),
        "intercom": (1_700_000_000, Decimal("1700000900.5")),
        "notion": (1_700_000_000 - 20, 1_700_031_600),
        "unzoned": (None, None),
        "junk": (None, None),
        "none": (None, None),
    }
