"""The schema as migrations shipped in the package, and applying them.

The core's migrations are in `supasaasy/sql/migrations`, each connector's in its own
`sql` folder (named in its metadata's `sql_files`); all are ordered by version, the
`<version>_<name>.sql` of their file names. Released migrations are never edited: a
change to the schema is a new migration. A database records what it has applied in
`supabase_migrations.schema_migrations`, the Supabase CLI's table, so that `supabase db
push` of the files `supasaasy migrate --out` (or `init`) writes and `supasaasy migrate
--apply` agree on what is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from .errors import MigrationError as MigrationError

_FILE_NAME = re.compile(r"^(\d{14})_([a-z0-9_]+)\.sql$")

# The pre-release migrations that the baseline (core and connector views) folds. A
# database built from them has the baseline's schema: it is recorded as applied.
PRE_RELEASE = ("20261129000100", "20261129000200", "20261129000300", "20261129000400",
               "20261129000500", "20261129000600", "20261129000700", "20261202000100")  # fmt: skip
BASELINE = ("20261202000300", "20261202000400", "20261202000500", "20261202000600")
# Held while migrations are applied, so that two runs at once apply each one once.
_LOCK_KEY = 0x5375706153615353


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def file_name(self) -> str:
        return f"{self.version}_{self.name}.sql"


def _parse(file_name: str, sql: str) -> Migration:
    match = _FILE_NAME.match(file_name)
    if match is None:
        raise MigrationError(
            f"migration file name must be <14-digit version>_<name>.sql: {file_name}"
        )
    return Migration(match.group(1), match.group(2), sql)


def package_migrations() -> list[Migration]:
    """Every migration the package ships (core and built-in connectors), in order."""
    from .connectors import connector_sql, known_connectors

    core = resources.files("supasaasy").joinpath("sql", "migrations")
    found = [_parse(f.name, f.read_text()) for f in core.iterdir() if f.name.endswith(".sql")]
    for connector in known_connectors():
        found += [_parse(name, sql) for name, sql in connector_sql(connector)]
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {sorted(versions)}")
    return sorted(found, key=lambda m: m.version)


def migration_script(migrations: list[Migration] | None = None) -> str:
    """Every migration, in order, as one script."""
    chosen = package_migrations() if migrations is None else migrations
    return "\n".join(f"-- {m.file_name}\n{m.sql}\n" for m in chosen)


def apply_migrations(db_url: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply each migration the database has not recorded, each in one transaction with
    its record. Returns those applied. A database built from the pre-release migrations
    gets the baseline recorded as applied (it has its schema) and the rest applied."""
    chosen = package_migrations() if migrations is None else migrations
    applied: list[Migration] = []
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                "create schema if not exists supabase_migrations;"
                " create table if not exists supabase_migrations.schema_migrations"
                " (version text primary key, statements text[], name text)"
            )
            done = {
                row[0]
                for row in conn.execute("select version from supabase_migrations.schema_migrations")
            }
            _adopt_pre_release(conn, done)
            for migration in chosen:
                if migration.version in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "insert into supabase_migrations.schema_migrations (version, name)"
                            " values (%s, %s)",
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.file_name} failed: {exc}") from None
                applied.append(migration)
            conn.execute("notify pgrst, 'reload schema'")
    except psycopg.Error as exc:
        raise MigrationError(f"cannot apply migrations: {exc}") from None
    return applied


def _adopt_pre_release(conn: psycopg.Connection[Any], done: set[str]) -> None:
    """Record the baseline as applied on a database built from the migrations it folds."""
    had = [v for v in PRE_RELEASE if v in done]
    if not had or set(BASELINE) <= done:
        return
    if len(had) != len(PRE_RELEASE):
        raise MigrationError(
            "the database has some of SupaSaaSy's pre-release migrations but not all "
            f"({', '.join(had)}): apply the rest of them first, or start from a new database"
        )
    with conn.transaction():
        for migration in package_migrations():
            if migration.version in BASELINE and migration.version not in done:
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name)"
                    " values (%s, %s)",
                    (migration.version, migration.name),
                )
                done.add(migration.version)
