"""What a new Supabase project has before any migration runs (roles, auth helpers, grants)."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql


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
