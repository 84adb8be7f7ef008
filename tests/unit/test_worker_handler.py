"""POST /worker: claim and run tasks, against a stateful stand-in PostgREST and Stripe.

Tasks of an app that is no longer configured fail without a connector: they show how
the worker claims, counts and finishes tasks without any provider."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_postgrest import FakePostgrest
from flask.testing import FlaskClient
from handler_support import (
    CONFIG_TOML,
    JOB_ID,
    OTHER_JOB_ID,
    SECRET_TEXT,
    STARTED_AT,
    STRIPE_KEY,
    TASK_ID,
    TASK_ID_2,
    TASK_ID_3,
    Build,
    FakeStripe,
    assert_error,
    auth,
    customer,
    job_row,
    pg_error,
    task_row,
)
from werkzeug.test import TestResponse

from supasaasy.connectors.stripe import API_VERSION

RETIRED = "app 'retired' is no longer configured"
DEFAULT_CLAIM = {"p_stale_after": "300.000000 seconds", "p_max_attempts": 3}


def worker_result(response: TestResponse) -> dict[str, Any]:
    """The answer without its duration (checked to be a count of milliseconds)."""
    result: dict[str, Any] = response.get_json()
    duration = result.pop("duration_ms")
    assert isinstance(duration, int)
    assert duration >= 0
    return result


def retired_job(
    fake: FakePostgrest, task_ids: list[str], job_id: str = JOB_ID, app_key: str = "retired"
) -> None:
    """A pending job of an app no longer configured, with a pending task per id."""
    types = ["customer", "product", "price"][: len(task_ids)]
    fake.add_job(
        job_row(id=job_id, app_key=app_key, resource_types=types, total_tasks=len(types)),
        [task_row(id=task_id, job_id=job_id, resource_type=resource_type, position=n)
         for n, (task_id, resource_type) in enumerate(zip(task_ids, types, strict=True), 1)],
    )  # fmt: skip


def stripe_job(fake: FakePostgrest, mode: str = "full", **task: Any) -> None:
    """A pending job of the billing app with one customer task."""
    fake.add_job(job_row(mode=mode, resource_types=["customer"], total_tasks=1), [task_row(**task)])


# -- nothing to do ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="no-body"),
        pytest.param(b"", id="empty"),
        pytest.param(b"  \n", id="whitespace"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"job_id": null, "max_tasks": null}', id="nulls"),
    ],
)
def test_worker_with_nothing_to_do(
    worker_client: FlaskClient, fake: FakePostgrest, data: bytes | None
) -> None:
    """Idle: it asks for a task of any job (requeueing stale ones on the way), then
    deletes jobs past their retention."""
    response = worker_client.post("/worker", data=data, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 0,
        "jobs_completed": [],
        "shutdown_reason": "no_tasks",
    }
    assert fake.rpc_calls("claim_task") == [{"p_job_id": None, **DEFAULT_CLAIM}]
    assert fake.rpc_calls("cleanup_old_jobs") == [{"p_retention_days": 7}]
    assert not fake.rpc_calls("requeue_stale_tasks")  # done by the claim itself


def test_worker_cleans_up_old_jobs_when_idle(
    worker_client: FlaskClient, fake: FakePostgrest
) -> None:
    old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    fake.add_job(job_row(status="completed", completed_at=old))
    fake.add_job(job_row(id=OTHER_JOB_ID, status="failed", completed_at=STARTED_AT))

    response = worker_client.post("/worker", headers=auth())

    assert worker_result(response)["shutdown_reason"] == "no_tasks"
    assert list(fake.jobs) == [OTHER_JOB_ID]  # 3 days old: kept 7


def test_worker_settings_come_from_the_config_file(
    env: pytest.MonkeyPatch, build: Build, fake: FakePostgrest, tmp_path: Path
) -> None:
    config = tmp_path / "tuned.toml"
    config.write_text(
        "job_retention_days = 30\n"
        + CONFIG_TOML
        + "\n[worker]\nstale_after_seconds = 90.5\nmax_attempts = 5\n"
    )
    env.setenv("SUPASAASY_CONFIG", str(config))
    client = build("worker")

    response = client.post("/worker", headers=auth())

    assert response.status_code == 200
    assert worker_result(response)["shutdown_reason"] == "no_tasks"
    assert fake.rpc_calls("claim_task") == [
        {"p_job_id": None, "p_stale_after": "90.500000 seconds", "p_max_attempts": 5}
    ]
    assert fake.rpc_calls("cleanup_old_jobs") == [{"p_retention_days": 30}]


# -- claiming and finishing tasks ------------------------------------------------------


@pytest.mark.parametrize("job_id", [JOB_ID, JOB_ID.upper(), JOB_ID.replace("-", "")])
def test_worker_claims_tasks_of_one_job(
    worker_client: FlaskClient, fake: FakePostgrest, job_id: str
) -> None:
    retired_job(fake, [TASK_ID])
    retired_job(fake, [TASK_ID_3], OTHER_JOB_ID, "retired_too")

    response = worker_client.post("/worker", json={"job_id": job_id}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 1,
        "jobs_completed": [JOB_ID],
        "shutdown_reason": "no_tasks",
    }
    assert fake.jobs[JOB_ID]["status"] == "failed"
    # The other job's task is left for another worker.
    assert [t["status"] for t in fake.tasks_of(OTHER_JOB_ID)] == ["pending"]
    assert fake.jobs[OTHER_JOB_ID]["status"] == "pending"


def test_worker_stops_when_max_tasks_is_reached(
    worker_client: FlaskClient, fake: FakePostgrest
) -> None:
    """The claimed task's app is no longer configured: it fails, under the worker's
    lease, and counts as processed; the job's other task waits."""
    retired_job(fake, [TASK_ID, TASK_ID_2])

    response = worker_client.post(
        "/worker", json={"job_id": JOB_ID, "max_tasks": 1}, headers=auth()
    )

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 1,
        "jobs_completed": [],
        "shutdown_reason": "max_tasks_reached",
    }
    first, second = fake.tasks_of(JOB_ID)
    assert (first["status"], first["attempts"], first["error_message"]) == ("failed", 1, RETIRED)
    assert (second["status"], second["attempts"]) == ("pending", 0)
    job = fake.jobs[JOB_ID]
    assert (job["status"], job["failed_tasks"]) == ("processing", 1)
    assert fake.rpc_calls("complete_task") == [{
        "p_task_id": TASK_ID, "p_status": "failed", "p_entity_count": None,
        "p_error_message": RETIRED, "p_attempt": 1,
    }]  # fmt: skip


def test_worker_claims_until_no_task_is_left(
    worker_client: FlaskClient, fake: FakePostgrest
) -> None:
    retired_job(fake, [TASK_ID, TASK_ID_2])

    response = worker_client.post("/worker", json={"max_tasks": 10}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 2,
        "jobs_completed": [JOB_ID],
        "shutdown_reason": "no_tasks",
    }
    assert [t["status"] for t in fake.tasks_of(JOB_ID)] == ["failed", "failed"]
    job = fake.jobs[JOB_ID]
    assert (job["status"], job["failed_tasks"]) == ("failed", 2)
    assert job["error_message"] == f"customer: {RETIRED}; product: {RETIRED}"


# -- syncing ---------------------------------------------------------------------------


def test_worker_syncs_a_stripe_task(
    worker_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    """A full sync of Stripe customers over two pages: every customer is written, the
    task and its job complete, and the app's watermark moves to the task's start."""
    customers = [customer(n) for n in range(1, 4)]
    stripe.lists["/v1/customers"] = customers
    stripe_job(fake)

    response = worker_client.post("/worker", json={}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 1,
        "jobs_completed": [JOB_ID],
        "shutdown_reason": "no_tasks",
    }
    assert stripe.pages_of("/v1/customers") == [None, "cus_002"]
    assert {r.headers["Authorization"] for r in stripe.requests} == {f"Bearer {STRIPE_KEY}"}
    assert fake.entities == {
        ("billing", "stripe_customer", c["id"]): {
            "app_key": "billing",
            "collection_key": "stripe_customer",
            "external_id": c["id"],
            "raw_payload": c,
            "api_version": API_VERSION,
            "archived": False,
            "observed_at": fake.entities[("billing", "stripe_customer", c["id"])]["observed_at"],
        }
        for c in customers
    }
    [task] = fake.tasks_of(JOB_ID)
    assert (task["status"], task["entity_count"], task["attempts"]) == ("completed", 3, 1)
    assert json.loads(task["cursor"]) == {
        "mode": "full", "after": None, "done": False, "sharded": True}  # fmt: skip
    # Customers are listed by creation time, in shards; this one had a single shard.
    [shard] = fake.shards_of(task["id"])
    assert (shard["status"], shard["entity_count"]) == ("completed", 3)
    assert json.loads(shard["cursor"])["done"] is True
    assert {r.url.params["created[gte]"] for r in stripe.requests} == {"1262304000"}  # 2010
    job = fake.jobs[JOB_ID]
    assert (job["status"], job["completed_tasks"], job["processed_entities"]) == (
        "completed", 1, 3)  # fmt: skip
    state = fake.sync_state[("billing", "stripe_customer")]
    assert state["last_synced_at"] == task["started_at"]
    assert state["last_sync_metadata"] == {"mode": "full", "job_id": JOB_ID}


def test_worker_syncs_incrementally_from_the_watermark_of_the_claim(
    worker_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    """The claim brings the app's watermarks: Stripe events since then are applied."""
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fake.sync_state[("billing", "stripe_customer")] = {
        "app_key": "billing", "collection_key": "stripe_customer",
        "last_synced_at": since.isoformat(), "last_sync_metadata": {},
    }  # fmt: skip
    fake.add_entity("billing", "stripe_customer", customer(2))
    updated = {**customer(1), "email": "new@example.com"}
    stripe.lists["/v1/events"] = [
        {"id": "evt_2", "type": "customer.deleted", "created": int(since.timestamp()) + 20,
         "data": {"object": customer(2)}},
        {"id": "evt_1", "type": "customer.updated", "created": int(since.timestamp()) + 10,
         "data": {"object": updated}},
    ]  # fmt: skip
    stripe_job(fake, mode="incremental")

    response = worker_client.post("/worker", json={"job_id": JOB_ID}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response)["tasks_processed"] == 1
    [request] = stripe.requests
    assert request.url.path == "/v1/events"
    assert request.url.params["created[gte]"] == str(int(since.timestamp()))
    assert list(fake.entities) == [("billing", "stripe_customer", "cus_001")]
    assert fake.entities[("billing", "stripe_customer", "cus_001")]["raw_payload"] == updated
    assert fake.jobs[JOB_ID]["status"] == "completed"
    assert not fake.requests_to("GET", "/sync_state")  # the claim brought it


def test_worker_resumes_a_stale_task_at_its_checkpoint(
    worker_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    """A task whose worker died after its first batch: requeued by the claim, it goes
    on after the last committed page."""
    customers = [customer(n) for n in range(1, 4)]
    stripe.lists["/v1/customers"] = customers
    for c in customers[:2]:
        fake.add_entity("billing", "stripe_customer", c, seen_by=TASK_ID)
    checkpoint = json.dumps({"mode": "full", "after": "cus_002", "done": False})
    stripe_job(fake, status="processing", attempts=1, checkpoint_attempt=1, entity_count=2,
               cursor=checkpoint, batch_seq=1, started_at=STARTED_AT,
               last_heartbeat=STARTED_AT)  # fmt: skip
    fake.jobs[JOB_ID].update(status="processing", started_at=STARTED_AT)

    response = worker_client.post("/worker", json={}, headers=auth())

    assert worker_result(response)["tasks_processed"] == 1
    assert stripe.pages_of("/v1/customers") == ["cus_002"]
    [task] = fake.tasks_of(JOB_ID)
    assert (task["status"], task["attempts"], task["entity_count"]) == ("completed", 2, 3)
    assert fake.jobs[JOB_ID]["status"] == "completed"
    assert sorted(key[2] for key in fake.entities) == ["cus_001", "cus_002", "cus_003"]


# -- the database fails ----------------------------------------------------------------


def test_worker_when_the_database_is_unavailable(
    worker_client: FlaskClient, fake: FakePostgrest
) -> None:
    stripe_job(fake)
    fake.fail(
        "POST",
        "/rpc/claim_task",
        httpx.Response(503, json=pg_error("PGRST000", SECRET_TEXT, "Connection refused")),
    )

    response = worker_client.post("/worker", json={}, headers=auth())

    assert response.status_code == 503
    assert worker_result(response) == {
        "success": False,
        "tasks_processed": 0,
        "jobs_completed": [],
        "shutdown_reason": "database_unavailable",
    }
    assert SECRET_TEXT not in response.get_data(as_text=True)
    [task] = fake.tasks_of(JOB_ID)
    assert (task["status"], task["attempts"]) == ("pending", 0)


def test_worker_hands_a_task_back_when_the_database_fails_under_it(
    worker_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    """Not the task's fault: it goes back to pending with the reason, to be resumed."""
    stripe.lists["/v1/customers"] = [customer(1)]
    stripe_job(fake)
    fake.fail(
        "POST",
        "/rpc/write_batch",
        httpx.Response(503, json=pg_error("PGRST001", "Database client error", "timeout")),
    )

    response = worker_client.post("/worker", json={}, headers=auth())

    assert response.status_code == 503
    assert worker_result(response) == {
        "success": False,
        "tasks_processed": 0,
        "jobs_completed": [],
        "shutdown_reason": "database_unavailable",
    }
    # The customers' task is split into shards; its shard goes back, the task waits.
    [task] = fake.tasks_of(JOB_ID)
    [shard] = fake.shards_of(TASK_ID)
    assert task["status"] == "processing"
    assert (shard["status"], shard["attempts"]) == ("pending", 1)
    assert shard["error_message"] == "Database client error"
    assert fake.entities == {}
    assert fake.rpc_calls("release_task") == [{
        "p_task_id": shard["id"], "p_cursor": None, "p_entity_count": None, "p_attempt": 1,
        "p_error": "Database client error", "p_max_attempts": 3,
    }]  # fmt: skip


# -- bad requests ----------------------------------------------------------------------

BAD_WORKER_BODIES = [
    pytest.param(
        {"job_id": "not-a-uuid"}, "job_id: job_id must be a UUID, not 'not-a-uuid'", id="job_id"
    ),
    pytest.param({"job_id": ""}, "job_id: job_id must be a UUID, not ''", id="job_id-empty"),
    pytest.param(
        {"job_id": JOB_ID[:-1]},
        f"job_id: job_id must be a UUID, not '{JOB_ID[:-1]}'",
        id="job_id-short",
    ),
    pytest.param({"job_id": 5}, "job_id: Input should be a valid string", id="job_id-int"),
    pytest.param(
        {"max_tasks": 0}, "max_tasks: Input should be greater than or equal to 1", id="max-0"
    ),
    pytest.param(
        {"max_tasks": -1}, "max_tasks: Input should be greater than or equal to 1", id="max-neg"
    ),
    pytest.param({"max_tasks": "1"}, "max_tasks: Input should be a valid integer", id="max-str"),
    pytest.param({"max_tasks": 1.5}, "max_tasks: Input should be a valid integer", id="max-1.5"),
    pytest.param({"max_tasks": True}, "max_tasks: Input should be a valid integer", id="max-bool"),
    pytest.param(
        {"max_tasks": 100_001},
        "max_tasks: Input should be less than or equal to 10000",
        id="max-100001",
    ),
    pytest.param(
        {"max_tasks": 10_001},
        "max_tasks: Input should be less than or equal to 10000",
        id="max-10001",
    ),
    pytest.param({"max_tasks": 1, "force": True}, "force: unknown field", id="unknown-field"),
    pytest.param({"app_key": "billing"}, "app_key: unknown field", id="sync-body"),
]


@pytest.mark.parametrize(("request_body", "error"), BAD_WORKER_BODIES)
def test_worker_refuses_a_bad_body(
    worker_client: FlaskClient, fake: FakePostgrest, request_body: dict[str, Any], error: str
) -> None:
    stripe_job(fake)

    response = worker_client.post("/worker", json=request_body, headers=auth())

    assert_error(response, 400, error)
    assert fake.calls == []
    assert [t["status"] for t in fake.tasks_of(JOB_ID)] == ["pending"]
