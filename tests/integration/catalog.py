"""A database schema's catalog as plain data, to compare two databases built two ways.

Everything a migration can create in a schema is listed: tables and their columns,
constraints, indexes, views, functions (with their bodies), triggers, row level
security and its policies, privileges (as sets) and default privileges.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import psycopg

_QUERIES = {
    "columns": """
        select c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where n.nspname = %(schema)s and a.attnum > 0 and not a.attisdropped
           and c.relkind in ('r', 'v', 'p')
         order by 1, 2""",
    "relations": """
        select c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(c.reloptions, '{}')
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %(schema)s and c.relkind in ('r', 'v', 'p', 'S', 'm')
         order by 1""",
    "constraints": """
        select c.relname, k.conname, pg_get_constraintdef(k.oid)
          from pg_constraint k
          join pg_class c on c.oid = k.conrelid
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %(schema)s
         order by 1, 2""",
    "indexes": """
        select tablename, indexname, indexdef from pg_indexes
         where schemaname = %(schema)s order by 1, 2""",
    "views": """
        select viewname, definition from pg_views where schemaname = %(schema)s order by 1""",
    "functions": """
        select p.oid::regprocedure::text, pg_get_functiondef(p.oid)
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = %(schema)s
         order by 1""",
    "triggers": """
        select c.relname, t.tgname, pg_get_triggerdef(t.oid)
          from pg_trigger t
          join pg_class c on c.oid = t.tgrelid
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %(schema)s and not t.tgisinternal
         order by 1, 2""",
    "policies": """
        select tablename, policyname, permissive, roles::text, cmd, qual, with_check
          from pg_policies where schemaname = %(schema)s order by 1, 2""",
    "relation_privileges": """
        select c.relname, coalesce(g.rolname, 'PUBLIC'), a.privilege_type
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
          cross join lateral aclexplode(c.relacl) a
          left join pg_roles g on g.oid = a.grantee
         where n.nspname = %(schema)s
         order by 1, 2, 3""",
    "function_privileges": """
        select p.oid::regprocedure::text, coalesce(g.rolname, 'PUBLIC'), a.privilege_type
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          cross join lateral aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
          left join pg_roles g on g.oid = a.grantee
         where n.nspname = %(schema)s
         order by 1, 2, 3""",
    "schema_privileges": """
        select coalesce(g.rolname, 'PUBLIC'), a.privilege_type
          from pg_namespace n
          cross join lateral aclexplode(n.nspacl) a
          left join pg_roles g on g.oid = a.grantee
         where n.nspname = %(schema)s
         order by 1, 2""",
    "default_privileges": """
        select d.defaclobjtype, coalesce(g.rolname, 'PUBLIC'), a.privilege_type
          from pg_default_acl d
          join pg_namespace n on n.oid = d.defaclnamespace
          cross join lateral aclexplode(d.defaclacl) a
          left join pg_roles g on g.oid = a.grantee
         where n.nspname = %(schema)s
         order by 1, 2, 3""",
}


def describe(db_url: str, schema: str = "supasaasy") -> dict[str, list[list[Any]]]:
    """The catalog of `schema` in the database at `db_url`."""
    with psycopg.connect(db_url) as conn:
        return {
            part: [list(row) for row in conn.execute(query, {"schema": schema}).fetchall()]
            for part, query in _QUERIES.items()
        }


def difference(left: dict[str, Any], right: dict[str, Any]) -> str:
    """A unified diff of two catalogs; empty when they are the same."""

    def lines(catalog: dict[str, Any]) -> list[str]:
        return [
            f"{part}: {json.dumps(row, default=str)}" for part in catalog for row in catalog[part]
        ]

    return "\n".join(difflib.unified_diff(lines(left), lines(right), "left", "right", lineterm=""))
