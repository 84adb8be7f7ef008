"""Supabase's base roles and schemas, then the project's migrations, each applied once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

_VERSION = re.compile(r"^(\d+)_(.+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def find_migrations(folder: Path) -> list[Migration]:
    """The `<version>_<name>.sql` files of `folder`, in version order."""
    found = []
    for path in folder.glob("*.sql"):
        match = _VERSION.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must be <version>_<name>.sql: {path}")
        found.append(Migration(match.group(1), match.group(2), path))
    return sorted(found, key=lambda m: (int(m.version), m.version))


def bootstrap(db_url: str, authenticator_password: str | None) -> None:
    """Create what a Supabase project already has (roles, auth helpers, grants)."""
    script = resources.files("supasaasy.devstack").joinpath("bootstrap.sql").read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(script.encode())
        if authenticator_password is not None:
            conn.execute(
                sql.SQL("alter role authenticator with login password {}").format(
                    sql.Literal(authenticator_password)
                )
            )


def apply_migrations(db_url: str, folder: Path) -> list[Migration]:
    """Apply each migration not yet recorded, one transaction each. Returns those applied."""
    applied = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "create schema if not exists supabase_migrations;"
            " create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, name text, statements text[])"
        )
        done = {
            row[0]
            for row in conn.execute("select version from supabase_migrations.schema_migrations")
        }
        for migration in find_migrations(folder):
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.path.read_bytes())
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name)"
                    " values (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
        conn.execute("notify pgrst, 'reload schema'")
    return applied
