"""End to end over HTTP: the functions served by functions-framework behind the local
gateway, with localstripe as Stripe (§7 of the task list), and the CLI against them."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from supasaasy.client import FunctionsClient
from supasaasy.connectors.stripe import StripeConnector
from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.keys import new_jwt_secret
from supasaasy.devstack.localstripe import held, running_localstripe
from supasaasy.devstack.processes import free_port
from supasaasy.devstack.seed import SeedSummary, seed_stripe

ADMIN = "e2e-admin-key-abcdefghijklmnop"
STRIPE_KEY = "sk_test_e2e"
# One task per resource type, in the connector's order.
TASKS = tuple(r.resource_type for r in StripeConnector.metadata.task_resources)
CONFIG = """
[[apps]]
app_key = "stripe_e2e"
connector = "stripe"
config = {{ api_key_env = "E2E_STRIPE_KEY", api_base = "{stripe}", page_size = 20 }}

[[apps]]
app_key = "stripe_fragile"
connector = "stripe"
config = {{ api_key_env = "E2E_STRIPE_KEY", api_base = "{stripe}", max_retries = 1 }}

[worker]
time_budget_seconds = 30
"""


@dataclass
class Stack:
    info: StackInfo
    stripe: str
    seeded: SeedSummary

    @property
    def functions(self) -> str:
        return f"{self.info.supabase_url}/functions/v1"

    def client(self) -> FunctionsClient:
        return FunctionsClient(self.functions, ADMIN)

    def stripe_api(self) -> httpx.Client:
        return httpx.Client(base_url=self.stripe, headers={"Authorization": f"Bearer {STRIPE_KEY}"})


@pytest.fixture(scope="module")
def e2e(project_root: Path) -> Iterator[Stack]:
    """The whole local stack with its three functions, and a seeded localstripe.
    Nudges are off, so that the tests decide when workers run."""
    state = Path(tempfile.mkdtemp(prefix="supasaasy-e2e-"))
    try:
        with running_localstripe() as stripe:
            seeded = seed_stripe(stripe, STRIPE_KEY, customers=400, products=20,
                                 plans_per_product=2, subscriptions=60)  # fmt: skip
            config = state / "supasaasy.toml"
            config.write_text(CONFIG.format(stripe=stripe))
            settings = StackSettings(
                project_dir=project_root, state_dir=state, gateway_port=free_port(),
                db_port=free_port(), rest_port=free_port(), rest_admin_port=free_port(),
                durable=False, jwt_secret=new_jwt_secret(), serve_functions=True, admin_key=ADMIN,
                function_env={"SUPASAASY_CONFIG": str(config), "E2E_STRIPE_KEY": STRIPE_KEY,
                              "SUPASAASY_WORKER_URL": ""},
            )  # fmt: skip
            with LocalStack(settings) as info:
                yield Stack(info, stripe, seeded)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def pg(e2e: Stack) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(e2e.info.database_url, autocommit=True) as conn:
        yield conn


def finish(client: FunctionsClient, job_id: str) -> dict[str, Any]:
    for _ in range(20):
        client.worker(job_id)
        status = client.job(job_id)
        if status["status"] in ("completed", "failed"):
            return status
    raise AssertionError(f"job {job_id} did not finish")


def test_a_full_job_over_http(e2e: Stack, pg: psycopg.Connection[tuple[object, ...]]) -> None:
    with e2e.client() as client:
        # 7.1 one task per resource type
        job = client.sync("stripe_e2e", "full")
        assert job["total_tasks"] == len(TASKS) and job["status"] == "pending"
        status = client.job(job["job_id"])
        assert [t["resource_type"] for t in status["tasks"]] == list(TASKS)
        assert {t["status"] for t in status["tasks"]} == {"pending"}

        # 7.2 one task per worker call
        one = client.worker(job["job_id"], max_tasks=1)
        assert (one["tasks_processed"], one["shutdown_reason"]) == (1, "max_tasks_reached")
        after_one = client.job(job["job_id"])
        assert [t["status"] for t in after_one["tasks"]].count("completed") == 1
        assert after_one["tasks"][0]["entity_count"] == 400  # customers, first in order

        # 7.3 polled while a worker runs: progress never goes down
        seen: list[tuple[float, int]] = []
        runner = threading.Thread(target=lambda: client.worker(job["job_id"]))
        runner.start()
        with e2e.client() as poller:
            while runner.is_alive():
                polled = poller.job(job["job_id"])
                running = sum(t["entity_count"] for t in polled["tasks"])
                seen.append((polled["progress_percentage"], running))
        runner.join()
        assert seen and all(
            earlier[0] <= later[0] and earlier[1] <= later[1]
            for earlier, later in itertools.pairwise(seen)
        )

        # 7.4 completion and final status
        final = client.job(job["job_id"])
    assert final["status"] == "completed" and final["progress_percentage"] == 100.0
    holdings = held(e2e.stripe, STRIPE_KEY)
    assert len(holdings["stripe_customer"]) == 400 and holdings["stripe_invoice"]
    assert final["processed_entities"] == sum(len(ids) for ids in holdings.values())
    rows = pg.execute("select count(*) from supasaasy.entities where app_key = 'stripe_e2e'")
    assert rows.fetchone() == (final["processed_entities"],)


def test_a_failing_task_is_reported_while_the_others_complete(e2e: Stack) -> None:
    with e2e.stripe_api() as api:
        api.post("/_config/faults", json={"path_prefix": "/v1/products", "status": 400})
    try:
        with e2e.client() as client:
            job = client.sync("stripe_e2e", "full")
            final = finish(client, job["job_id"])
    finally:
        with e2e.stripe_api() as api:
            api.delete("/_config/faults")
    assert final["status"] == "failed"
    assert (final["completed_tasks"], final["failed_tasks"]) == (len(TASKS) - 1, 1)
    failed = [t for t in final["tasks"] if t["status"] == "failed"]
    assert [t["resource_type"] for t in failed] == ["product"]
    assert failed[0]["error_message"] == "Stripe GET /v1/products failed: 400 injected 400"
    assert final["error_message"] == "product: Stripe GET /v1/products failed: 400 injected 400"
    assert STRIPE_KEY not in str(final)


def test_provider_outages_are_retried_and_the_job_completes(e2e: Stack) -> None:
    with e2e.stripe_api() as api:
        api.post("/_config/faults", json={"path_prefix": "/v1/customers", "status": 429,
                                          "count": 2, "retry_after": 0})  # fmt: skip
        api.post("/_config/faults", json={"path_prefix": "/v1/plans", "status": 503, "count": 2})
    with e2e.client() as client:
        job = client.sync("stripe_e2e", "full", ["customer", "plan"])
        final = finish(client, job["job_id"])
    assert final["status"] == "completed"
    assert {t["resource_type"]: t["entity_count"] for t in final["tasks"]} == {
        "customer": 400, "plan": 40}  # fmt: skip


def test_retries_that_run_out_fail_the_task_and_the_job_says_why(e2e: Stack) -> None:
    with e2e.stripe_api() as api:
        api.post("/_config/faults", json={"path_prefix": "/v1/plans", "status": 503})
    try:
        with e2e.client() as client:
            job = client.sync("stripe_fragile", "full", ["plan", "customer"])
            final = finish(client, job["job_id"])
    finally:
        with e2e.stripe_api() as api:
            api.delete("/_config/faults")
    assert final["status"] == "failed"
    by_type = {t["resource_type"]: t for t in final["tasks"]}
    assert by_type["customer"]["status"] == "completed"
    assert by_type["plan"]["error_message"] == (
        "Stripe GET /v1/plans failed after 1 retries: 503 injected 503"
    )
    assert (
        final["error_message"]
        == "plan: Stripe GET /v1/plans failed after 1 retries: 503 injected 503"
    )


def test_three_workers_finish_one_job_with_exact_counts(
    e2e: Stack, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    with e2e.client() as client:
        job = client.sync("stripe_e2e", "full")
    results: list[dict[str, Any]] = []

    def work() -> None:
        with e2e.client() as own:
            results.append(own.worker(job["job_id"]))

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(r["tasks_processed"] for r in results) == len(TASKS)
    assert [r["jobs_completed"] for r in results].count([job["job_id"]]) == 1
    with e2e.client() as client:
        final = client.job(job["job_id"])
    assert final["status"] == "completed"
    assert final["processed_entities"] == sum(t["entity_count"] for t in final["tasks"])
    assert {t["attempts"] for t in final["tasks"]} == {1}
    rows = pg.execute("select count(*) from supasaasy.entities where app_key = 'stripe_e2e'")
    assert rows.fetchone() == (final["processed_entities"],)


def test_old_completed_jobs_are_cleaned_up(
    e2e: Stack, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    with e2e.client() as client:
        old = client.sync("stripe_e2e", "full", ["plan"])
        finish(client, old["job_id"])
        pg.execute("update supasaasy.sync_jobs set completed_at = now() - interval '8 days'"
                   " where id = %s", (old["job_id"],))  # fmt: skip
        recent = client.sync("stripe_e2e", "full", ["plan"])
        finish(client, recent["job_id"])  # the idle call at the end cleans up
        with pytest.raises(Exception, match="404"):
            client.job(old["job_id"])
        assert client.job(recent["job_id"])["status"] == "completed"


def test_the_cli_follows_a_sync_to_its_end(e2e: Stack) -> None:
    env = {**os.environ, "SUPABASE_URL": e2e.info.supabase_url, "ADMIN_API_KEY": ADMIN,
           "SUPASAASY_FUNCTIONS_URL": f"{e2e.info.supabase_url}/functions/v1",
           "SUPABASE_SERVICE_ROLE_KEY": e2e.info.service_role_key, "COLUMNS": "120"}  # fmt: skip
    stop = threading.Event()

    def cron() -> None:  # the worker runs as cron would run it
        with e2e.client() as client:
            while not stop.wait(0.5):
                client.worker()

    threading.Thread(target=cron, daemon=True).start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "supasaasy.cli", "sync", "stripe_e2e", "--mode", "full",
             "--resource", "customer", "--resource", "plan", "--wait"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        stop.set()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created" in done.stdout and "customer" in done.stdout and "plan" in done.stdout
    assert ": completed" in done.stdout
    listed = subprocess.run([sys.executable, "-m", "supasaasy.cli", "jobs", "list", "--limit", "3"],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0 and "stripe_e2e" in listed.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "supasaasy.cli", "sync", "nobody_here"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1 and "404" in refused.stderr


def test_errors_through_the_gateway_carry_cors_headers(e2e: Stack) -> None:
    origin = {"Origin": "https://admin.example"}
    refused = httpx.post(f"{e2e.functions}/sync", json={}, headers=origin)
    unknown = httpx.get(f"{e2e.functions}/job-status/00000000-0000-4000-8000-000000000000",
                        headers={"Authorization": f"Bearer {ADMIN}", **origin})  # fmt: skip
    for response, status in ((refused, 401), (unknown, 404)):
        assert response.status_code == status and response.json()["success"] is False
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
