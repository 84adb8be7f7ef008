"""`supasaasy migrate`: the migrations, and the pg_cron schedules where pg_cron and
pg_net's `net.http_post` exist (as on Supabase). Schedules call the functions with the
admin key kept in Supabase Vault under the name `supasaasy_admin_api_key`; schedules
named `supasaasy-*` that the configuration no longer has are removed."""

from __future__ import annotations

import json
import re
import shlex

import psycopg

from .config import Settings
from .errors import SupasaasyError
from .migrations import apply_migrations

VAULT_SECRET = "supasaasy_admin_api_key"
# Schedules need the pg_cron extension, and the function they call, `net.http_post`
# (pg_net's), found by name.
HAS_PG_CRON = "exists (select from pg_extension where extname = 'pg_cron')"
HAS_HTTP_POST = (
    "exists (select from pg_proc join pg_namespace on pg_namespace.oid = pronamespace"
    " where nspname = 'net' and proname = 'http_post')"
)
SKIPPED = "needs the pg_cron extension and the function net.http_post of pg_net"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _post(url: str, body: dict[str, object]) -> str:
    """SQL that POSTs `body` to `url` with the admin key from Vault (pg_net)."""
    return (
        f"select net.http_post(url := {_literal(url)}, "
        f"body := {_literal(json.dumps(body))}::jsonb, "
        "headers := jsonb_build_object('Content-Type', 'application/json', 'Authorization', "
        f"'Bearer ' || (select decrypted_secret from vault.decrypted_secrets "
        f"where name = {_literal(VAULT_SECRET)})))"
    )


def function_calls(
    settings: Settings, functions_url: str
) -> dict[str, tuple[str, str, dict[str, object]]]:
    """name -> (cron, URL, JSON body) of each scheduled call of a function: the worker
    every minute, and each configured sync."""
    base = functions_url.rstrip("/")
    calls: dict[str, tuple[str, str, dict[str, object]]] = {
        "supasaasy-worker": ("* * * * *", f"{base}/worker", {})
    }
    for i, schedule in enumerate(settings.sync_schedules):
        body: dict[str, object] = {"app_key": schedule.app_key, "mode": schedule.mode}
        if schedule.resource_types:
            body["resource_types"] = schedule.resource_types
        name = f"supasaasy-sync-{re.sub(r'[^A-Za-z0-9_-]', '_', schedule.app_key)}-{i}"
        calls[name] = (schedule.cron, f"{base}/sync", body)
    return calls


def schedules(settings: Settings, functions_url: str) -> dict[str, tuple[str, str]]:
    """name -> (cron, SQL command) of every pg_cron schedule the configuration asks for."""
    calls = {
        name: (cron, _post(url, body))
        for name, (cron, url, body) in function_calls(settings, functions_url).items()
    }
    retention = settings.job_retention_days
    return {
        "supasaasy-worker": calls.pop("supasaasy-worker"),
        "supasaasy-requeue-stale": (
            "* * * * *",
            "select supasaasy.requeue_stale_tasks("
            f"make_interval(secs => {settings.worker.stale_after_seconds}), "
            f"{settings.worker.max_attempts})",
        ),
        "supasaasy-cleanup": ("17 3 * * *", f"select supasaasy.cleanup_old_jobs({retention})"),
        **calls,
    }


def cloud_scheduler_commands(settings: Settings, functions_url: str, location: str) -> str:
    """The `gcloud scheduler jobs create http` commands of the same schedules, for hosts
    without pg_cron: the calls of the functions (the worker requeues stale tasks itself),
    and the daily cleanup through PostgREST with the service-role key. They read
    $ADMIN_API_KEY, $SUPABASE_URL and $SUPABASE_SERVICE_ROLE_KEY from the shell."""
    lines = []
    for name, (cron, url, body) in function_calls(settings, functions_url).items():
        lines.append(
            f"gcloud scheduler jobs create http {name} --location={shlex.quote(location)} "
            f"--schedule={shlex.quote(cron)} --time-zone=Etc/UTC --uri={shlex.quote(url)} "
            "--http-method=POST "
            '--headers="Content-Type=application/json,Authorization=Bearer $ADMIN_API_KEY" '
            f"--message-body={shlex.quote(json.dumps(body))}"
        )
    cleanup = json.dumps({"p_retention_days": settings.job_retention_days})
    lines.append(
        f"gcloud scheduler jobs create http supasaasy-cleanup --location={shlex.quote(location)} "
        "--schedule='17 3 * * *' --time-zone=Etc/UTC "
        '--uri="$SUPABASE_URL/rest/v1/rpc/cleanup_old_jobs" --http-method=POST '
        '--headers="Content-Type=application/json,Content-Profile=supasaasy,'
        'apikey=$SUPABASE_SERVICE_ROLE_KEY,Authorization=Bearer $SUPABASE_SERVICE_ROLE_KEY" '
        f"--message-body={shlex.quote(cleanup)}"
    )
    return "\n".join(lines) + "\n"


def schedule_sql(settings: Settings, functions_url: str) -> str:
    """A script that (re)creates the schedules when pg_cron and `net.http_post` exist."""
    wanted = schedules(settings, functions_url)
    names = ", ".join(_literal(name) for name in wanted)
    calls = "\n".join(
        f"    perform cron.schedule({_literal(name)}, {_literal(cron)}, {_literal(command)});"
        for name, (cron, command) in wanted.items()
    )
    return f"""
-- Schedules (pg_cron + pg_net). The admin key is read from Vault:
--   select vault.create_secret('<ADMIN_API_KEY>', '{VAULT_SECRET}');
do $schedules$
begin
    if not {HAS_PG_CRON} or not {HAS_HTTP_POST} then
        raise notice 'schedules: skipped ({SKIPPED})';
        return;
    end if;
    perform cron.unschedule(jobname) from cron.job
     where jobname like 'supasaasy-%' and jobname not in ({names});
{calls}
end
$schedules$;
"""


def apply_all(db_url: str, settings: Settings | None, functions_url: str | None) -> list[str]:
    """Apply pending migrations, then the schedules. Returns what was done, line by line."""
    try:
        applied = apply_migrations(db_url)
        report = [f"applied {m.file_name}" for m in applied] or ["migrations: up to date"]
        if settings is None or functions_url is None:
            return report
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(f"select {HAS_PG_CRON} and {HAS_HTTP_POST}").fetchone()
            if not (row and row[0]):
                return [*report, f"schedules: skipped ({SKIPPED})"]
            conn.execute(schedule_sql(settings, functions_url).encode())
        return [*report, f"schedules: {', '.join(schedules(settings, functions_url))}"]
    except psycopg.Error as exc:
        raise SupasaasyError(f"cannot apply to the database: {exc}") from None
