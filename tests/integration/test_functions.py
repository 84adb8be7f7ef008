"""The three functions through functions-framework's test client, on the real stack:
job creation, the worker and its budget, failures, cancel, retry, stale tasks,
immediate mode, and bad input that writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

from supasaasy.connectors import (
    Connector,
    ConnectorMetadata,
    Page,
    ProviderError,
    Record,
    Resource,
    register,
)
from supasaasy.connectors.stripe import StripeConnector
from supasaasy.devstack import StackInfo
from supasaasy.devstack.localstripe import held, running_localstripe
from supasaasy.devstack.seed import SeedSummary, seed_stripe

ADMIN = "test-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
STRIPE_KEY = "sk_test_functions"
Pg = psycopg.Connection[tuple[object, ...]]

# Scripted failures, switched by tests: resource types that fail when synced.
FAILING: set[str] = set()


@register
class Paced(Connector):
    """A provider of `pages` pages of `rows` rows per resource, `delay` seconds each."""

    metadata = ConnectorMetadata(
        name="paced", display_name="Paced", api_version="v1",
        resources=(Resource("alpha", "paced_alpha", "alphas"),
                   Resource("beta", "paced_beta", "betas"),
                   Resource("gamma", "paced_gamma", "gammas")),
    )  # fmt: skip

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        pages, rows = int(self.app.config["pages"]), int(self.app.config["rows"])
        delay = float(self.app.config.get("delay", 0))
        start = int(cursor) if cursor else 0
        for n in range(start, pages):
            time.sleep(delay)
            if resource_type in FAILING:
                raise ProviderError(f"Paced GET /{resource_type} failed after 5 retries: 503")
            records = [Record(f"paced_{resource_type}", f"{n}-{i}", {"page": n, "i": i})
                       for i in range(rows)]  # fmt: skip
            yield Page(records, cursor=str(n + 1) if n + 1 < pages else None)

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        return self.full_sync(resource_type, cursor=cursor)


CONFIG = """
[[apps]]
app_key = "stripe_fn"
connector = "stripe"
config = {{ api_key_env = "FUNCTIONS_STRIPE_KEY", api_base = "{stripe}", page_size = 25 }}

[[apps]]
app_key = "{paced}"
connector = "paced"
config = {{ pages = 6, rows = 10, delay = {delay} }}

[[sync_schedules]]
app_key = "stripe_fn"
cron = "0 3 * * *"

[worker]
time_budget_seconds = {budget}
stale_after_seconds = 2
max_attempts = 3
"""


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[tuple[str, SeedSummary]]:
    with running_localstripe() as url:
        yield url, seed_stripe(url, STRIPE_KEY, customers=60, products=6, plans_per_product=2,
                               subscriptions=12)  # fmt: skip


Clients = dict[str, FlaskClient]
MakeClients = Callable[..., Clients]


@pytest.fixture
def make_clients(
    stack: StackInfo, stripe_api: tuple[str, SeedSummary], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, app_key: str,
) -> MakeClients:  # fmt: skip
    """The three functions, loaded as functions-framework loads them, with a config of
    this test's own (the paced app is named after the test's app_key)."""

    def make(*, budget: float = 45, delay: float = 0.0, admin: str = ADMIN,
             rate: int = 1000) -> Clients:  # fmt: skip
        config = tmp_path / f"supasaasy-{budget}-{delay}.toml"
        config.write_text(CONFIG.format(stripe=stripe_api[0], paced=app_key, delay=delay,
                                        budget=budget))  # fmt: skip
        monkeypatch.setenv("SUPASAASY_CONFIG", str(config))
        monkeypatch.setenv("SUPABASE_URL", stack.supabase_url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", stack.service_role_key)
        monkeypatch.setenv("ADMIN_API_KEY", admin)
        monkeypatch.setenv("FUNCTIONS_STRIPE_KEY", STRIPE_KEY)
        monkeypatch.setenv("SYNC_RATE_LIMIT_PER_MINUTE", str(rate))
        monkeypatch.delenv("SUPASAASY_WORKER_URL", raising=False)
        root = Path(__file__).resolve().parents[2] / "functions"
        return {
            name: create_app(target, str(root / name / "main.py")).test_client()
            for name, target in (("sync", "sync"), ("worker", "worker"),
                                 ("job-status", "job_status"))
        }  # fmt: skip

    FAILING.clear()
    return make


@pytest.fixture
def clients(make_clients: MakeClients) -> Clients:
    return make_clients()


def start(clients: Clients, app_key: str, **body: Any) -> dict[str, Any]:
    response = clients["sync"].post("/sync", json={"app_key": app_key, **body}, headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def work(clients: Clients, **body: Any) -> dict[str, Any]:
    response = clients["worker"].post("/worker", json=body, headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def status(clients: Clients, job_id: str) -> dict[str, Any]:
    response = clients["job-status"].get(f"/sync/jobs/{job_id}?include_tasks=true", headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def count_jobs(pg: Pg) -> int:
    row = pg.execute("select count(*) from supasaasy.sync_jobs").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_a_job_gets_one_task_per_resource_and_workers_complete_it(
    clients: Clients, pg: Pg, stripe_api: tuple[str, SeedSummary]
) -> None:
    created = start(clients, "stripe_fn", mode="full")
    assert created["status"] == "pending" and created["mode"] == "full"
    tasks = [r.resource_type for r in StripeConnector.metadata.task_resources]
    assert created["resource_types"] == tasks and created["total_tasks"] == len(tasks)

    conflict = clients["sync"].post("/sync", json={"app_key": "stripe_fn"}, headers=AUTH)
    assert conflict.status_code == 409
    assert conflict.json["job_id"] == created["job_id"]

    one = work(clients, job_id=created["job_id"], max_tasks=1)
    assert (one["tasks_processed"], one["shutdown_reason"]) == (1, "max_tasks_reached")
    midway = status(clients, created["job_id"])
    assert midway["status"] == "processing"
    assert midway["progress_percentage"] == pytest.approx(100 / len(tasks), abs=0.1)

    rest = work(clients, job_id=created["job_id"])
    assert rest["tasks_processed"] == len(tasks) - 1
    assert rest["jobs_completed"] == [created["job_id"]]
    final = status(clients, created["job_id"])
    counts = {t["resource_type"]: t["entity_count"] for t in final["tasks"]}
    # Each task's objects, and its children's (a subscription's items, an invoice's lines).
    holdings = held(stripe_api[0], STRIPE_KEY)
    assert counts == {r.resource_type: len(holdings[r.collection_key]) + sum(
        len(holdings[c.collection_key]) for c in StripeConnector.metadata.children_of(
            r.resource_type)) for r in StripeConnector.metadata.task_resources}  # fmt: skip
    assert counts["customer"] == 60 and counts["invoice"] > 0 and counts["charge"] > 0
    assert final["status"] == "completed" and final["processed_entities"] == sum(counts.values())
    assert final["completed_at"] is not None and final["eta_seconds"] is None
    stored = pg.execute("select count(*) from supasaasy.entities where app_key = 'stripe_fn'"
                        " and collection_key = 'stripe_customer'").fetchone()  # fmt: skip
    assert stored == (60,)


def test_the_worker_releases_its_task_when_the_budget_runs_out_and_the_next_resumes(
    make_clients: MakeClients, pg: Pg, app_key: str
) -> None:
    clients = make_clients(budget=1.2, delay=0.3)  # 6 pages of 0.3 s: two calls at least
    job = start(clients, app_key, resource_types=["alpha"])
    first = work(clients, job_id=job["job_id"])
    assert first["shutdown_reason"] == "time_budget" and first["tasks_processed"] == 0
    task = status(clients, job["job_id"])["tasks"][0]
    assert task["status"] == "pending" and 0 < task["entity_count"] < 60
    calls = 1
    while status(clients, job["job_id"])["status"] != "completed":
        work(clients, job_id=job["job_id"])
        calls += 1
        assert calls < 10
    final = status(clients, job["job_id"])
    assert final["processed_entities"] == 60 and final["tasks"][0]["entity_count"] == 60
    rows = pg.execute("select count(*), count(distinct external_id) from supasaasy.entities"
                      " where app_key = %s", (app_key,)).fetchone()  # fmt: skip
    assert rows == (60, 60)


def test_a_failing_task_is_reported_while_the_others_complete(
    clients: Clients, app_key: str
) -> None:
    FAILING.add("beta")
    job = start(clients, app_key)
    result = work(clients, job_id=job["job_id"])
    assert result["tasks_processed"] == 3 and result["jobs_completed"] == [job["job_id"]]
    final = status(clients, job["job_id"])
    assert final["status"] == "failed"
    assert (final["completed_tasks"], final["failed_tasks"]) == (2, 1)
    assert final["error_message"] == "beta: Paced GET /beta failed after 5 retries: 503"
    by_type = {t["resource_type"]: t for t in final["tasks"]}
    assert by_type["beta"]["status"] == "failed" and by_type["alpha"]["entity_count"] == 60

    FAILING.clear()
    retried = clients["job-status"].post(f"/sync/jobs/{job['job_id']}/retry", headers=AUTH)
    assert retried.status_code == 200
    assert retried.json["status"] == "processing" and retried.json["failed_tasks"] == 0
    work(clients, job_id=job["job_id"])
    again = status(clients, job["job_id"])
    assert (again["status"], again["completed_tasks"], again["failed_tasks"]) == (
        "completed", 3, 0)  # fmt: skip
    assert again["processed_entities"] == 180
    nothing = clients["job-status"].post(f"/sync/jobs/{job['job_id']}/retry", headers=AUTH)
    assert nothing.status_code == 409


def test_cancel_stops_a_running_task_at_its_next_page(
    make_clients: MakeClients, pg: Pg, app_key: str
) -> None:
    clients = make_clients(delay=0.2)
    job = start(clients, app_key)
    worker_done: list[dict[str, Any]] = []
    runner = threading.Thread(
        target=lambda: worker_done.append(work(clients, job_id=job["job_id"]))
    )
    runner.start()
    time.sleep(0.5)
    cancelled = clients["job-status"].post(f"/jobs/{job['job_id']}/cancel", headers=AUTH)
    runner.join(timeout=30)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert worker_done and worker_done[0]["success"] is True
    final = status(clients, job["job_id"])
    assert final["status"] == "cancelled"
    assert {t["status"] for t in final["tasks"]} == {"cancelled"}
    written = pg.execute("select count(*) from supasaasy.entities where app_key = %s",
                         (app_key,)).fetchone()  # fmt: skip
    assert written is not None and int(written[0]) < 60  # type: ignore[call-overload]
    again = clients["job-status"].post(f"/jobs/{job['job_id']}/cancel", headers=AUTH)
    assert again.status_code == 409
    # A new sync of the app can start at once.
    again_job = start(clients, app_key)
    clients["job-status"].post(f"/jobs/{again_job['job_id']}/cancel", headers=AUTH)


def test_a_stale_task_is_requeued_and_finished_by_the_next_worker(
    clients: Clients, pg: Pg, app_key: str
) -> None:
    job = start(clients, app_key, resource_types=["gamma"])
    pg.execute(
        "update supasaasy.sync_job_tasks set status = 'processing', attempts = 1,"
        " last_heartbeat = now() - interval '1 minute', cursor = %s where job_id = %s",
        ('{"mode": "full", "after": "3", "done": false}', job["job_id"]),
    )  # a worker that died after three pages
    result = work(clients, job_id=job["job_id"])
    assert result["tasks_processed"] >= 1
    final = status(clients, job["job_id"])
    assert final["status"] == "completed"
    assert final["tasks"][0]["attempts"] == 2
    assert final["tasks"][0]["entity_count"] == 30  # resumed at page 3 of 6


def test_immediate_mode_returns_results_and_leaves_no_job(
    clients: Clients, pg: Pg, app_key: str
) -> None:
    before = count_jobs(pg)
    response = clients["sync"].post(
        "/sync", json={"app_key": app_key, "immediate": True, "mode": "full"}, headers=AUTH
    )
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True and body["immediate"] is True
    assert [(c["collection_key"], c["entity_count"], c["status"]) for c in body["collections"]] == [
        ("paced_alpha", 60, "completed"), ("paced_beta", 60, "completed"),
        ("paced_gamma", 60, "completed")]  # fmt: skip
    assert count_jobs(pg) == before
    rows = pg.execute("select count(*) from supasaasy.entities where app_key = %s",
                      (app_key,)).fetchone()  # fmt: skip
    assert rows == (180,)


def test_a_cron_worker_never_takes_an_immediate_runs_tasks(
    make_clients: MakeClients, pg: Pg, app_key: str
) -> None:
    clients = make_clients(delay=0.15)  # 3 resources of 6 pages: about 3 s
    answers: list[Any] = []
    immediate = threading.Thread(
        target=lambda: answers.append(
            clients["sync"].post(
                "/sync", json={"app_key": app_key, "immediate": True, "mode": "full"}, headers=AUTH
            )
        )
    )
    immediate.start()
    time.sleep(1.0)
    work(clients)  # cron's call, in the middle of the immediate run
    immediate.join(30)
    assert answers and answers[0].status_code == 200
    body = answers[0].json
    assert body["success"] is True, body
    assert [(c["status"], c["entity_count"]) for c in body["collections"]] == [
        ("completed", 60)
    ] * 3
    rows = pg.execute("select count(*) from supasaasy.entities where app_key = %s",
                      (app_key,)).fetchone()  # fmt: skip
    assert rows == (180,)


def test_job_ids_are_read_from_every_documented_place(clients: Clients, app_key: str) -> None:
    job_id = start(clients, app_key)["job_id"]
    for path in (f"/sync/jobs/{job_id}", f"/jobs/{job_id}", f"/job-status/{job_id}",
                 f"/{job_id}", f"/?job_id={job_id}", f"/job-status?job_id={job_id}"):  # fmt: skip
        response = clients["job-status"].get(path, headers=AUTH)
        assert response.status_code == 200, path
        assert response.json["job_id"] == job_id and "tasks" not in response.json


BAD_SYNC_BODIES: list[tuple[Any, int, str]] = [
    ({}, 400, "app_key: missing required field"),
    ({"app_key": "a b"}, 400, "app_key: String should match pattern"),
    ({"app_key": "x" * 65}, 400, "app_key"),
    ({"app_key": "x';drop table supasaasy.sync_jobs;--"}, 400, "app_key"),
    ({"app_key": 5}, 400, "app_key: Input should be a valid string"),
    ({"app_key": "stripe_fn", "mode": "bogus"}, 400, "mode"),
    ({"app_key": "stripe_fn", "resource_types": "customer"}, 400, "resource_types"),
    ({"app_key": "stripe_fn", "resource_types": ["payout"]}, 400, "unknown resource type"),
    ({"app_key": "stripe_fn", "resource_types": []}, 400, "resource_types"),
    ({"app_key": "stripe_fn", "immediate": "yes"}, 400, "immediate"),
    ({"app_key": "stripe_fn", "extra": 1}, 400, "extra: unknown field"),
    ({"app_key": "nobody_here"}, 404, "unknown app_key: nobody_here"),
    ([{"app_key": "stripe_fn"}], 400, "must be a JSON object"),
    ("stripe_fn", 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "code", "message"), BAD_SYNC_BODIES)
def test_bad_sync_requests_are_refused_and_write_nothing(
    clients: Clients, pg: Pg, body: Any, code: int, message: str
) -> None:
    before = count_jobs(pg)
    response = clients["sync"].post("/sync", json=body, headers=AUTH)
    assert response.status_code == code
    assert response.json["success"] is False and message in response.json["error"]
    assert count_jobs(pg) == before


def test_refusals_before_the_body_is_read(make_clients: MakeClients, pg: Pg, app_key: str) -> None:
    clients = make_clients(rate=2)
    before = count_jobs(pg)
    sync = clients["sync"]
    assert sync.post("/sync", json={"app_key": app_key}).status_code == 401
    wrong = sync.post("/sync", json={"app_key": app_key}, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401 and ADMIN not in wrong.text
    assert sync.post("/sync", json={"app_key": app_key},
                     headers={"Authorization": f"Basic {ADMIN}"}).status_code == 401  # fmt: skip
    assert sync.get("/sync", headers=AUTH).status_code == 405
    assert sync.get("/sync", headers=AUTH).headers["Allow"] == "POST, OPTIONS"
    preflight = sync.options("/sync")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    big = sync.post("/sync", data=b"{" + b" " * (1024 * 1024 + 10) + b"}", headers=AUTH)
    assert big.status_code == 413
    assert sync.post("/sync", data=b"{not json", headers=AUTH).status_code == 400
    limited = sync.post("/sync", json={"app_key": "nobody_here"}, headers=AUTH)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    for refusal in (wrong, big, limited):  # a browser may read every refusal
        assert refusal.headers["Access-Control-Allow-Origin"] == "*"
    assert count_jobs(pg) == before


def test_an_unset_admin_key_refuses_everything(make_clients: MakeClients, app_key: str) -> None:
    clients = make_clients(admin="")
    job = "00000000-0000-4000-8000-000000000000"
    for name, method, path in (("sync", "post", "/sync"), ("worker", "post", "/worker"),
                               ("job-status", "get", f"/jobs/{job}")):  # fmt: skip
        response = getattr(clients[name], method)(path, json={"app_key": app_key},
                                                  headers={"Authorization": "Bearer "})  # fmt: skip
        assert response.status_code == 401, name


@pytest.mark.parametrize(("body", "message"), [
    ({"job_id": "not-a-uuid"}, "job_id must be a UUID"),
    ({"max_tasks": 0}, "max_tasks"),
    ({"max_tasks": "1"}, "max_tasks"),
    ({"max_tasks": 1.5}, "max_tasks"),
    ({"worker": True}, "worker: unknown field"),
])  # fmt: skip
def test_bad_worker_requests_are_refused(clients: Clients, body: Any, message: str) -> None:
    response = clients["worker"].post("/worker", json=body, headers=AUTH)
    assert response.status_code == 400 and message in response.json["error"]


def test_bad_job_status_requests(clients: Clients) -> None:
    job_status = clients["job-status"]
    assert job_status.get("/sync/jobs/nope", headers=AUTH).json["error"].startswith(
        "job_id must be a UUID")  # fmt: skip
    assert job_status.get("/sync/jobs/", headers=AUTH).status_code == 400
    unknown = "00000000-0000-4000-8000-000000000000"
    assert job_status.get(f"/sync/jobs/{unknown}", headers=AUTH).status_code == 404
    assert job_status.post(f"/sync/jobs/{unknown}/cancel", headers=AUTH).status_code == 404
    assert job_status.post(f"/sync/jobs/{unknown}", headers=AUTH).status_code == 405
    assert job_status.get(f"/sync/jobs/{unknown}/cancel", headers=AUTH).status_code == 405
    assert job_status.delete(f"/sync/jobs/{unknown}", headers=AUTH).status_code == 405


def test_an_idle_worker_deletes_jobs_past_their_retention(
    clients: Clients, pg: Pg, app_key: str
) -> None:
    old, recent = start(clients, app_key), None
    clients["job-status"].post(f"/jobs/{old['job_id']}/cancel", headers=AUTH)
    pg.execute("update supasaasy.sync_jobs set completed_at = now() - interval '8 days'"
               " where id = %s", (old["job_id"],))  # fmt: skip
    recent = start(clients, app_key)
    clients["job-status"].post(f"/jobs/{recent['job_id']}/cancel", headers=AUTH)
    assert work(clients, job_id=recent["job_id"])["shutdown_reason"] == "no_tasks"
    assert clients["job-status"].get(f"/jobs/{old['job_id']}", headers=AUTH).status_code == 404
    assert clients["job-status"].get(f"/jobs/{recent['job_id']}", headers=AUTH).status_code == 200
