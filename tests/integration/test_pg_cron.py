"""The schedules `supasaasy migrate --apply` installs, on a real pg_cron.

A throwaway cluster of the system's PostgreSQL 15 with pg_cron preloaded (Debian's
`postgresql-15-cron`), Supabase's bootstrap, and stand-ins for what pg_cron's jobs reach
on Supabase: pg_net's `net.http_post` (recording each call instead of sending it) and
Vault's `vault.decrypted_secrets`. The command line applies the migrations and the
schedules; each job's command is then run as pg_cron runs it, and pg_cron runs one itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from supasaasy.config import Settings
from supasaasy.devstack.migrations import bootstrap
from supasaasy.devstack.postgres import EmbeddedPostgres
from supasaasy.devstack.processes import free_port
from supasaasy.schedules import SKIPPED, schedule_sql

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CRON = Path("/usr/lib/postgresql/15/lib/pg_cron.so")
FUNCTIONS_URL = "https://functions.example.test/api"
ADMIN_KEY = "admin-key-from-vault-7f3a"
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_KEY}"}

if not (PG_BIN / "postgres").exists() or not PG_CRON.exists():
    pytest.skip(
        f"needs PostgreSQL 15 in {PG_BIN} with pg_cron ({PG_CRON}): install the Debian "
        "package postgresql-15-cron (.ci/run does, as root)",
        allow_module_level=True,
    )

STAND_INS = f"""
create extension pg_cron;

-- pg_net's signature; records the call and returns its id, as pg_net returns a request id.
create schema net;
create table net.calls (
    id bigserial primary key,
    url text not null,
    body jsonb,
    params jsonb,
    headers jsonb,
    timeout_milliseconds integer,
    called_by name not null default current_user,
    pid integer not null default pg_backend_pid(),
    backend_type text
);
create function net.http_post(
    url text,
    body jsonb default '{{}}'::jsonb,
    params jsonb default '{{}}'::jsonb,
    headers jsonb default '{{}}'::jsonb,
    timeout_milliseconds integer default 5000
) returns bigint language sql as $$
    insert into net.calls (url, body, params, headers, timeout_milliseconds, backend_type)
    values (url, body, params, headers, timeout_milliseconds,
            (select backend_type from pg_stat_activity where pid = pg_backend_pid()))
    returning id
$$;

-- Vault's view of its secrets, with a second secret the schedules must not pick.
create schema vault;
create table vault.secrets (name text primary key, secret text not null);
create view vault.decrypted_secrets as
    select name, secret as decrypted_secret from vault.secrets;
insert into vault.secrets values
    ('another_key', 'not-the-admin-key'),
    ('supasaasy_admin_api_key', '{ADMIN_KEY}');
"""

APPS = """
[[apps]]
app_key = "stripe_main"
connector = "stripe"
config = { api_key_env = "CRON_TEST_STRIPE_KEY" }

[[apps]]
app_key = "notion_docs"
connector = "notion"
config = { api_key_env = "CRON_TEST_NOTION_KEY" }

[worker]
stale_after_seconds = 240
max_attempts = 4
"""

STRIPE_SCHEDULE = """
[[sync_schedules]]
app_key = "stripe_main"
cron = "*/15 * * * *"
"""

NOTION_SCHEDULE = """
[[sync_schedules]]
app_key = "notion_docs"
cron = "30 2 * * 1"
mode = "full"
resource_types = ["page", "user"]
"""

BASE_JOBS = {
    "supasaasy-worker": "* * * * *",
    "supasaasy-requeue-stale": "* * * * *",
    "supasaasy-cleanup": "17 3 * * *",
}
BOTH_JOBS = {
    **BASE_JOBS,
    "supasaasy-sync-stripe_main-0": "*/15 * * * *",
    "supasaasy-sync-notion_docs-1": "30 2 * * 1",
}
CALLS = {
    "supasaasy-worker": (f"{FUNCTIONS_URL}/worker", {}),
    "supasaasy-sync-stripe_main-0": (
        f"{FUNCTIONS_URL}/sync",
        {"app_key": "stripe_main", "mode": "incremental"},
    ),
    "supasaasy-sync-notion_docs-1": (
        f"{FUNCTIONS_URL}/sync",
        {"app_key": "notion_docs", "mode": "full", "resource_types": ["page", "user"]},
    ),
}

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="supasaasy-test-pg-cron-"))
    postgres = EmbeddedPostgres(
        root,
        free_port(),
        durable=False,
        bin_dir=PG_BIN,
        settings={
            "shared_preload_libraries": "pg_cron",
            "cron.database_name": "postgres",
            # Jobs run in background workers, so pg_cron needs no password to connect.
            "cron.use_background_workers": "on",
            "max_worker_processes": "16",
        },
    )
    try:
        postgres.start()
        bootstrap(postgres.url, None)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(STAND_INS.encode())
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(cluster: EmbeddedPostgres) -> Iterator[Conn]:
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        yield conn


def migrate(cluster: EmbeddedPostgres, config: str, project_root: Path) -> str:
    """`supasaasy migrate --apply` with `config` as the configuration file."""
    with tempfile.TemporaryDirectory(prefix="supasaasy-test-cron-config-") as folder:
        path = Path(folder) / "supasaasy.toml"
        path.write_text(config)
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in {"SUPASAASY_CONFIG", "DATABASE_URL", "SUPABASE_URL"}
            and name != "SUPASAASY_FUNCTIONS_URL"
        }
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("supasaasy")),
                "migrate",
                "--apply",
                "--db-url",
                cluster.url,
                "--functions-url",
                FUNCTIONS_URL,
                "--config",
                str(path),
            ],
            cwd=project_root,
            env={**env, "COLUMNS": "400"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


Job = tuple[int, str, str, str, bool]


def jobs(pg: Conn) -> dict[str, Job]:
    """jobname -> (jobid, schedule, database, username, active) of the supasaasy jobs."""
    rows = pg.execute(
        "select jobname, jobid, schedule, database, username, active from cron.job"
        " where jobname like 'supasaasy-%' order by jobid"
    ).fetchall()
    found: dict[str, Job] = {}
    for name, jobid, schedule, database, username, active in rows:
        assert name not in found, f"job {name} is scheduled twice"
        found[str(name)] = (
            int(str(jobid)),
            str(schedule),
            str(database),
            str(username),
            active is True,
        )
    return found


def run_as_pg_cron(cluster: EmbeddedPostgres, name: str) -> list[tuple[object, ...]]:
    """Run job `name`'s command in its database as its user, as pg_cron does; returns the
    calls that command made to `net.http_post` (url, body, headers, called_by)."""
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        row = conn.execute(
            "select command, database, username from cron.job where jobname = %s", (name,)
        ).fetchone()
        assert row is not None, f"no job {name}"
        command, database, username = (str(value) for value in row)
    with psycopg.connect(cluster.url, dbname=database, autocommit=True) as conn:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(username)))
        conn.execute(command.encode())
        conn.execute("reset role")
        return conn.execute(
            "select url, body, headers, called_by from net.calls"
            " where pid = pg_backend_pid() order by id"
        ).fetchall()


BOTH = APPS + STRIPE_SCHEDULE + NOTION_SCHEDULE


def test_migrate_installs_the_configured_schedules(
    cluster: EmbeddedPostgres, pg: Conn, project_root: Path
) -> None:
    output = migrate(cluster, BOTH, project_root)
    assert f"schedules: {', '.join(BOTH_JOBS)}" in output, output
    found = jobs(pg)
    assert {name: job[1] for name, job in found.items()} == BOTH_JOBS
    for name, (_, _, database, username, active) in found.items():
        assert (database, username, active) == ("postgres", "postgres", True), name


def test_each_job_calls_its_function_with_the_vault_key(
    cluster: EmbeddedPostgres, project_root: Path
) -> None:
    migrate(cluster, BOTH, project_root)
    for name, (url, body) in CALLS.items():
        assert run_as_pg_cron(cluster, name) == [(url, body, HEADERS, "postgres")], name
    for name in ("supasaasy-requeue-stale", "supasaasy-cleanup"):
        assert run_as_pg_cron(cluster, name) == [], name


def test_applying_again_keeps_the_same_jobs(
    cluster: EmbeddedPostgres, pg: Conn, project_root: Path
) -> None:
    migrate(cluster, BOTH, project_root)
    before = jobs(pg)
    migrate(cluster, BOTH, project_root)
    assert jobs(pg) == before


def test_a_schedule_removed_from_the_configuration_is_unscheduled(
    cluster: EmbeddedPostgres, pg: Conn, project_root: Path
) -> None:
    migrate(cluster, BOTH, project_root)
    before = jobs(pg)
    migrate(cluster, APPS + NOTION_SCHEDULE, project_root)
    after = jobs(pg)
    # The remaining sync schedule is now the first, so its name changes with its index.
    assert {name: job[1] for name, job in after.items()} == {
        **BASE_JOBS,
        "supasaasy-sync-notion_docs-0": "30 2 * * 1",
    }
    assert {name: after[name] for name in BASE_JOBS} == {name: before[name] for name in BASE_JOBS}
    assert run_as_pg_cron(cluster, "supasaasy-sync-notion_docs-0") == [
        (*CALLS["supasaasy-sync-notion_docs-1"], HEADERS, "postgres")
    ]


def test_pg_cron_itself_runs_the_worker_job(
    cluster: EmbeddedPostgres, pg: Conn, project_root: Path
) -> None:
    """pg_cron 1.4 schedules by the minute; `@reboot` jobs run as its scheduler starts,
    so the worker job, moved to `@reboot`, runs on a restart without waiting a minute."""
    migrate(cluster, BOTH, project_root)
    jobid = jobs(pg)["supasaasy-worker"][0]
    pg.execute("select cron.alter_job(%s, schedule := '@reboot')", (jobid,))
    pg.close()
    cluster.stop()
    # Only what runs after the restart counts: the job's every-minute schedule may have
    # fired before it was moved.
    restarted = datetime.now(UTC)
    cluster.start()
    deadline = time.monotonic() + 30
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        while True:
            runs = conn.execute(
                "select status, return_message from cron.job_run_details"
                " where jobid = %s and status in ('succeeded', 'failed') and start_time >= %s",
                (jobid, restarted),
            ).fetchall()
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert runs == [("succeeded", "SELECT 1")], runs or "pg_cron ran no job within 30 s"
        calls = conn.execute(
            "select url, body, headers, called_by, backend_type from net.calls"
            " where url like '%%/worker' and pid = (select job_pid from cron.job_run_details"
            " where jobid = %s and start_time >= %s)",
            (jobid, restarted),
        ).fetchall()
    assert calls == [(f"{FUNCTIONS_URL}/worker", {}, HEADERS, "postgres", "pg_cron")]
    # Applying again puts the worker back on its every-minute schedule.
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        migrate(cluster, BOTH, project_root)
        assert jobs(conn)["supasaasy-worker"][:2] == (jobid, "* * * * *")


def test_without_net_http_post_the_schedules_are_skipped(
    cluster: EmbeddedPostgres, pg: Conn, project_root: Path
) -> None:
    """pg_cron alone is not enough: the jobs call `net.http_post`."""
    migrate(cluster, BOTH, project_root)
    before = jobs(pg)
    signature = "net.http_post(text, jsonb, jsonb, jsonb, integer)"
    pg.execute(f"alter function {signature} rename to hidden_http_post")
    try:
        output = migrate(cluster, APPS, project_root)
        assert f"schedules: skipped ({SKIPPED})" in output, output
        notices: list[str] = []
        pg.add_notice_handler(lambda notice: notices.append(str(notice.message_primary)))
        pg.execute(
            schedule_sql(Settings.model_validate(tomllib.loads(APPS)), FUNCTIONS_URL).encode()
        )
        assert notices == [f"schedules: skipped ({SKIPPED})"]
    finally:
        pg.execute("alter function net.hidden_http_post rename to http_post")
    assert jobs(pg) == before
