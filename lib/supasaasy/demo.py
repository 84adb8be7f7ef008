"""`make demo`: a job-based sync end to end on the embedded local stack.

Starts the stack (Postgres, PostgREST, gateway, the four functions) and localstripe
from scratch on free ports, seeds a realistic Stripe dataset, runs a full sync through
the HTTP functions with a worker called every few seconds as cron would, shows the
rows per collection and a look at the billing views (invoices, charges, MRR, failed
payments), changes a few objects upstream, runs an incremental sync and
checks that the changes arrived; then has localstripe send its events to the webhook
function and shows a rename reaching Postgres within seconds, with no sync job.
Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from .cli import follow
from .client import FunctionsClient
from .devstack import LocalStack, StackError, StackInfo, StackSettings
from .devstack.localstripe import held, register_webhook, running_localstripe
from .devstack.processes import free_port
from .devstack.seed import SeedSummary, seed_stripe
from .errors import DemoError as DemoError
from .errors import SupasaasyError

APP = "stripe_local"
STRIPE_KEY = "sk_test_local"
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
# What the billing views say, one line each.
BILLING = {
    "stripe_invoices": "select string_agg(format('%s %s (%s %s)', n, status, total, currency),"
                       " ', ' order by status) from (select status, currency, count(*) n,"
                       " sum(total) total from supasaasy.stripe_invoices group by 1, 2) x",
    "stripe_charges": "select string_agg(format('%s %s (%s %s)', n, status, amount, currency),"
                      " ', ' order by status) from (select status, currency, count(*) n,"
                      " sum(amount) amount from supasaasy.stripe_charges group by 1, 2) x",
    "stripe_mrr": "select format('%s customers, %s %s a month', count(*), sum(mrr), currency)"
                  " from supasaasy.stripe_mrr group by currency",
    "stripe_failed_payments": "select string_agg(format('%s: %s', charge_id, failure_code),"
                              " ', ') from supasaasy.stripe_failed_payments",
}  # fmt: skip
console = Console()


@contextlib.contextmanager
def cron(client: FunctionsClient, every: float) -> Iterator[None]:
    """Call the worker every few seconds, as pg_cron or Cloud Scheduler would."""
    stopping = threading.Event()

    def tick() -> None:
        while not stopping.wait(every):
            with contextlib.suppress(SupasaasyError):
                client.worker()

    thread = threading.Thread(target=tick, name="demo-cron", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()


def row_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select collection_key, count(*) from supasaasy.entities where app_key = %s"
            " group by collection_key",
            (APP,),
        ).fetchall()
    return {collection: int(count) for collection, count in rows}


def step(number: int, text: str) -> None:
    console.rule(f"[bold]{number}/8  {text}")


def run(args: argparse.Namespace, project: Path, state: Path) -> None:
    with contextlib.ExitStack() as running:
        step(1, "Starting the local stack and localstripe")
        stripe = running.enter_context(running_localstripe(log=state / "localstripe.log"))
        admin = secrets.token_urlsafe(24)
        stack = LocalStack(StackSettings(
            project_dir=project, state_dir=state, gateway_port=free_port(), db_port=free_port(),
            rest_port=free_port(), rest_admin_port=free_port(), durable=False,
            serve_functions=True, admin_key=admin,
            function_env={"LOCALSTRIPE_URL": stripe, "STRIPE_LOCAL_API_KEY": STRIPE_KEY,
                          "STRIPE_LOCAL_WEBHOOK_SECRET": WEBHOOK_SECRET},
        ))  # fmt: skip
        info: StackInfo = stack.start()
        running.callback(stack.stop)
        console.print(f"gateway {info.supabase_url}, localstripe {stripe}")

        step(2, "Seeding localstripe")
        seeded: SeedSummary = seed_stripe(
            stripe, STRIPE_KEY, customers=args.customers, products=args.products,
            plans_per_product=2, subscriptions=args.subscriptions,
        )  # fmt: skip
        console.print(str(seeded))
        time.sleep(1.05 - time.time() % 1)  # events of later changes get a later second

        client = running.enter_context(FunctionsClient(f"{info.supabase_url}/functions/v1", admin))
        running.enter_context(cron(client, args.worker_every))

        step(3, "Full sync through POST /functions/v1/sync")
        job = client.sync(APP, "full")
        console.print(f"job {job['job_id']}: {job['total_tasks']} tasks "
                      f"({', '.join(job['resource_types'])})")  # fmt: skip
        final = follow(client, job["job_id"])
        if final["status"] != "completed":
            raise DemoError(f"the full sync ended {final['status']}: {final['error_message']}")

        step(4, "Rows per collection")
        counts = row_counts(info.database_url)
        upstream = {collection: len(ids) for collection, ids in held(stripe, STRIPE_KEY).items()}
        table = Table("collection", "rows in Postgres", "upstream")
        for collection, held_upstream in upstream.items():
            table.add_row(collection, f"{counts.get(collection, 0):,}", f"{held_upstream:,}")
        console.print(table)
        if {c: n for c, n in counts.items() if n} != {c: n for c, n in upstream.items() if n}:
            raise DemoError("row counts differ from upstream; see the table above")
        views = Table("view", "what it says", title="billing views")
        with psycopg.connect(info.database_url) as conn:
            for view, query in BILLING.items():
                said = conn.execute(query).fetchall()
                views.add_row(view, "; ".join(str(row[0]) for row in said if row[0]) or "-")
        console.print(views)

        step(5, "Changing objects upstream")
        renamed, deleted = seeded.customers[:3], seeded.customers[3:5]
        with httpx.Client(
            base_url=stripe, headers={"Authorization": f"Bearer {STRIPE_KEY}"}
        ) as api:
            for customer in renamed:
                api.post(f"/v1/customers/{customer}", data={"name": "Renamed in the demo"})
            for customer in deleted:
                api.delete(f"/v1/customers/{customer}").raise_for_status()
        console.print(f"renamed {', '.join(renamed)}; deleted {', '.join(deleted)}")

        step(6, "Incremental sync")
        job = client.sync(APP, "incremental")
        final = follow(client, job["job_id"])
        if final["status"] != "completed":
            raise DemoError(f"the incremental sync ended {final['status']}")

        step(7, "Checking that the changes arrived")
        with psycopg.connect(info.database_url) as conn:
            names: dict[str, str | None] = dict(conn.execute(
                "select external_id, raw_payload->>'name' from supasaasy.entities"
                " where app_key = %s and external_id = any(%s)", (APP, [*renamed, *deleted]),
            ).fetchall())  # fmt: skip
        checks = [(f"{c} renamed", names.get(c) == "Renamed in the demo") for c in renamed]
        checks += [(f"{c} deleted", c not in names) for c in deleted]
        for text, ok in checks:
            console.print(f"{'[green]ok[/]' if ok else '[red]FAILED[/]'}  {text}")
        if not all(ok for _, ok in checks):
            raise DemoError("the incremental sync did not bring every change")

        step(8, "Real time: localstripe sends its events to the webhook function")
        webhook = f"{info.supabase_url}/functions/v1/webhook/{APP}"
        register_webhook(stripe, webhook, WEBHOOK_SECRET)
        console.print(f"localstripe sends its signed events to {webhook}")
        real_time(info.database_url, stripe, seeded.customers[5])
        console.print("[bold green]The demo ran end to end.[/] Stopping everything it started.")


def real_time(database_url: str, stripe: str, customer: str) -> None:
    """Rename a customer upstream and wait for the row to change, with no sync job."""
    name = f"Renamed at {time.strftime('%H:%M:%S')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        jobs = conn.execute("select count(*) from supasaasy.sync_jobs").fetchone()
        time.sleep(1.05 - time.time() % 1)  # a later second than the sync's pages
        started = time.monotonic()
        with httpx.Client(
            base_url=stripe, headers={"Authorization": f"Bearer {STRIPE_KEY}"}
        ) as api:
            api.post(f"/v1/customers/{customer}", data={"name": name}).raise_for_status()
        while time.monotonic() - started < 15:
            row = conn.execute("select raw_payload->>'name' from supasaasy.entities"
                               " where app_key = %s and external_id = %s",
                               (APP, customer)).fetchone()  # fmt: skip
            if row == (name,):
                break
            time.sleep(0.05)
        else:
            raise DemoError(f"the rename of {customer} did not arrive through the webhook")
        seconds = time.monotonic() - started
        if conn.execute("select count(*) from supasaasy.sync_jobs").fetchone() != jobs:
            raise DemoError("a sync job ran meanwhile: the rename did not come by webhook alone")
    console.print(f"[green]ok[/]  {customer} renamed upstream; the row changed {seconds:.1f} s"
                  " later (localstripe waits 1 s before sending), and no sync job ran")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--subscriptions", type=int, default=300)
    parser.add_argument("--worker-every", type=float, default=2.0,
                        help="seconds between worker calls (cron)")  # fmt: skip
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="supasaasy-demo-"))
    keep_logs = False
    try:
        run(args, Path.cwd(), state)
        return 0
    except KeyboardInterrupt:
        console.print("interrupted; stopping")
        return 130
    except (SupasaasyError, StackError, httpx.HTTPError, psycopg.Error) as exc:
        keep_logs = True
        console.print(f"[red]error:[/] {exc}")
        console.print(f"The logs of this run are kept in {state}. If a binary is missing, "
                      "run `make setup`.")  # fmt: skip
        return 1
    finally:
        if not keep_logs:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
