"""Unit tests for supasaasy.db, with respx standing in for PostgREST.

Every test builds the Database the way applications do (`Database.connect`) and
checks the HTTP request postgrest-py actually sends, plus the typed result parsed
from a realistic PostgREST response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import httpx
import postgrest_rows
import pytest
import respx
from postgrest import APIError
from postgrest_rows import CREATED_AT, JOB_ID, TASK_ID

from supasaasy.db import Database, translate
from supasaasy.errors import (
    ActiveJobExistsError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
    NotFoundError,
    TaskLostError,
)
from supasaasy.models import (
    ClaimedTask,
    Entity,
    JobStatus,
    SyncJob,
    SyncState,
    SyncTask,
    TaskStatusName,
)

SUPABASE_URL = "http://rest.test"
REST_URL = f"{SUPABASE_URL}/rest/v1"
SERVICE_KEY = "service-key"

OTHER_JOB_ID = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
TASK_ID_2 = "c0ffee00-1234-4abc-8def-0123456789ac"
TASK_ID_3 = "c0ffee00-1234-4abc-8def-0123456789ad"

STARTED_AT = "2026-11-29T10:15:31.5+00:00"
COMPLETED_AT = "2026-11-29T10:20:02.000001+00:00"

INVALID_UUIDS = ["not-a-uuid", "1; drop table x", "", "0b5f8a0e-3c1c-4c56-9d1a"]


# -- row factories (columns exactly as PostgREST returns them) --------------------


def job_row(**overrides: Any) -> dict[str, Any]:
    return postgrest_rows.job_row(**overrides)


def task_row(**overrides: Any) -> dict[str, Any]:
    return postgrest_rows.task_row(**overrides)


def pg_error(
    code: str | None, message: str, details: Any = None, hint: Any = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details, "hint": hint}


def active_job_error(active_job_id: str | None) -> dict[str, Any]:
    """What create_sync_job and retry_job raise while the app has an active job."""
    return pg_error(
        "SS002",
        "app stripe already has an active sync job",
        active_job_id,
        "wait for it to end, or cancel it",
    )


# -- request helpers ---------------------------------------------------------------


def sent(route: respx.Route) -> httpx.Request:
    """The one request a route received."""
    assert route.call_count == 1, f"expected one request, got {route.call_count}"
    return route.calls.last.request


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def assert_supasaasy_request(request: httpx.Request, method: str, path: str) -> None:
    assert request.method == method
    assert request.url.path == f"/rest/v1{path}"
    assert request.headers["Accept-Profile"] == "supasaasy"
    assert request.headers["Content-Profile"] == "supasaasy"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"


def assert_rpc(route: respx.Route, function: str, params: dict[str, Any]) -> httpx.Request:
    request = sent(route)
    assert_supasaasy_request(request, "POST", f"/rpc/{function}")
    assert request.headers["Content-Type"] == "application/json"
    assert not request.url.params
    assert body(request) == params
    return request


def prefer(request: httpx.Request) -> set[str]:
    return set(request.headers["Prefer"].split(","))


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def db() -> Database:
    return Database.connect(SUPABASE_URL, SERVICE_KEY)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """PostgREST: every route a test declares must be called, nothing else may be."""
    with respx.mock(base_url=REST_URL, assert_all_called=True) as router:
        yield router


@pytest.fixture
def no_request() -> Iterator[respx.Route]:
    """A catch-all route, for tests that check that nothing is sent at all."""
    with respx.mock(base_url=REST_URL, assert_all_called=False) as router:
        yield router.route().respond(500, json=pg_error("XX000", "must not be called"))


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """postgrest-py sleeps between retries of GET requests: record instead of waiting."""
    delays: list[float] = []
    monkeypatch.setattr("postgrest._sync.request_builder.time.sleep", delays.append)
    return delays


# -- construction ------------------------------------------------------------------


def test_connect_binds_the_client_to_the_rest_url_and_schema(db: Database) -> None:
    assert str(db.rest.base_url) == REST_URL
    assert db.rest.headers["Accept-Profile"] == "supasaasy"
    assert db.rest.headers["Content-Profile"] == "supasaasy"
    # Its HTTP session too, for requests sent on it directly.
    assert str(db.rest.session.base_url) == f"{REST_URL}/"
    assert db.rest.session.headers["Accept-Profile"] == "supasaasy"
    assert db.rest.session.headers["apikey"] == SERVICE_KEY


def test_from_supabase_uses_the_supasaasy_schema(api: respx.MockRouter) -> None:
    from supabase import create_client

    database = Database.from_supabase(create_client(SUPABASE_URL, SERVICE_KEY))
    route = api.post("/rpc/claim_task").respond(200, json=[])

    assert database.claim_task() is None
    assert_rpc(route, "claim_task", {"p_job_id": None})


# -- jobs --------------------------------------------------------------------------


def test_create_sync_job(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    job = db.create_sync_job("stripe", "incremental", ("customers", "invoices"))

    assert_rpc(
        route,
        "create_sync_job",
        {
            "p_app_key": "stripe",
            "p_mode": "incremental",
            "p_resource_types": ["customers", "invoices"],
            "p_immediate": False,
        },
    )
    assert job == SyncJob(
        id=UUID(JOB_ID),
        app_key="stripe",
        mode="incremental",
        resource_types=["customers", "invoices"],
        status="pending",
        total_tasks=2,
        completed_tasks=0,
        failed_tasks=0,
        processed_entities=0,
        created_at=datetime(2026, 11, 29, 10, 15, 30, 123456, tzinfo=UTC),
    )


def test_create_sync_job_without_a_returned_row_is_an_error(
    db: Database, api: respx.MockRouter
) -> None:
    api.post("/rpc/create_sync_job").respond(200, json=[])

    with pytest.raises(DatabaseError, match="returned no job"):
        db.create_sync_job("stripe", "full", ["customers"])


def test_create_sync_job_immediate(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    db.create_sync_job("stripe", "full", ["customers"], immediate=True)

    assert body(sent(route)) == {
        "p_app_key": "stripe",
        "p_mode": "full",
        "p_resource_types": ["customers"],
        "p_immediate": True,
    }


def test_create_sync_job_while_a_job_is_active(db: Database, api: respx.MockRouter) -> None:
    """The database names the active job (SS002, its id as details): no look-up."""
    api.post("/rpc/create_sync_job").respond(400, json=active_job_error(OTHER_JOB_ID))

    with pytest.raises(ActiveJobExistsError) as raised:
        db.create_sync_job("stripe", "full", ["customers"])

    err = raised.value
    assert isinstance(err, ConflictError)
    assert err.active_job_id == OTHER_JOB_ID
    assert err.message == "app stripe already has an active sync job"
    assert err.code == "SS002"
    assert err.details == OTHER_JOB_ID
    assert err.hint == "wait for it to end, or cancel it"
    assert isinstance(err.__cause__, APIError)
    assert err.__cause__.code == "SS002"
    assert api.calls.call_count == 1


@pytest.mark.parametrize("details", ["", None])
def test_create_sync_job_conflict_when_the_active_job_has_just_ended(
    db: Database, api: respx.MockRouter, details: str | None
) -> None:
    api.post("/rpc/create_sync_job").respond(400, json=active_job_error(details))

    with pytest.raises(ActiveJobExistsError) as raised:
        db.create_sync_job("stripe", "full", ["customers"])

    assert raised.value.active_job_id is None
    assert api.calls.call_count == 1


def test_create_sync_job_other_unique_violation_is_a_plain_conflict(
    db: Database, api: respx.MockRouter
) -> None:
    error = pg_error(
        "23505",
        'duplicate key value violates unique constraint "sync_job_tasks_job_resource_key"',
        f"Key (job_id, resource_type)=({JOB_ID}, customers) already exists.",
    )
    api.post("/rpc/create_sync_job").respond(409, json=error)

    with pytest.raises(ConflictError) as raised:
        db.create_sync_job("stripe", "full", ["customers"])

    assert type(raised.value) is ConflictError
    assert raised.value.details == error["details"]
    assert isinstance(raised.value.__cause__, APIError)
    # No look-up of an active job: only the RPC was sent.
    assert api.calls.call_count == 1


def test_create_job_tasks(db: Database, api: respx.MockRouter) -> None:
    rows = [
        task_row(),
        task_row(
            id=TASK_ID_2,
            resource_type="charges",
            position=2,
            created_at="2026-11-29T10:16:00+00:00",
        ),
    ]
    route = api.post("/rpc/add_job_tasks").respond(200, json=rows)

    tasks = db.create_job_tasks(UUID(JOB_ID), ("charges",))

    assert_rpc(route, "add_job_tasks", {"p_job_id": JOB_ID, "p_resource_types": ["charges"]})
    assert [(t.id, t.resource_type) for t in tasks] == [
        (UUID(TASK_ID), "customers"),
        (UUID(TASK_ID_2), "charges"),
    ]
    assert all(isinstance(t, SyncTask) and t.job_id == UUID(JOB_ID) for t in tasks)
    assert [t.position for t in tasks] == [1, 2]
    assert tasks[1].created_at == datetime(2026, 11, 29, 10, 16, tzinfo=UTC)


def test_create_job_tasks_for_an_inactive_job(db: Database, api: respx.MockRouter) -> None:
    message = f"job {JOB_ID} does not exist or is no longer active"
    api.post("/rpc/add_job_tasks").respond(500, json=pg_error("P0002", message))

    with pytest.raises(NotFoundError, match="no longer active"):
        db.create_job_tasks(JOB_ID, ["charges"])


def test_update_job_status(db: Database, api: respx.MockRouter) -> None:
    row = job_row(
        status="failed",
        started_at=STARTED_AT,
        completed_at=COMPLETED_AT,
        error_message="stripe API key revoked",
    )
    route = api.post("/rpc/set_job_status").respond(200, json=[row])

    job = db.update_job_status(JOB_ID, "failed", "stripe API key revoked")

    assert_rpc(
        route,
        "set_job_status",
        {"p_job_id": JOB_ID, "p_status": "failed", "p_error_message": "stripe API key revoked"},
    )
    assert job.status == "failed"
    assert job.started_at == datetime(2026, 11, 29, 10, 15, 31, 500000, tzinfo=UTC)
    assert job.completed_at == datetime(2026, 11, 29, 10, 20, 2, 1, tzinfo=UTC)
    assert job.error_message == "stripe API key revoked"


def test_update_job_status_sends_a_null_error_message(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/set_job_status").respond(
        200, json=[job_row(status="processing", started_at=STARTED_AT)]
    )

    assert db.update_job_status(JOB_ID, "processing").status == "processing"
    assert body(sent(route))["p_error_message"] is None


def test_update_job_status_of_an_unknown_job(db: Database, api: respx.MockRouter) -> None:
    api.post("/rpc/set_job_status").respond(200, json=[])

    with pytest.raises(NotFoundError, match=JOB_ID):
        db.update_job_status(JOB_ID, "cancelled")


def test_get_active_job(db: Database, api: respx.MockRouter) -> None:
    route = api.get("/sync_jobs").respond(
        200, json=[job_row(status="processing", started_at=STARTED_AT)]
    )

    job = db.get_active_job("stripe")

    request = sent(route)
    assert_supasaasy_request(request, "GET", "/sync_jobs")
    assert request.url.query == (
        b"select=%2A&app_key=eq.stripe&status=in.%28pending%2Cprocessing%29&limit=1"
    )
    assert isinstance(job, SyncJob)
    assert job.id == UUID(JOB_ID)
    assert job.status == "processing"


def test_get_active_job_when_there_is_none(db: Database, api: respx.MockRouter) -> None:
    api.get("/sync_jobs").respond(200, json=[])

    assert db.get_active_job("stripe") is None


def test_retry_job(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/retry_job").respond(
        200, json=[job_row(status="processing", started_at=STARTED_AT)]
    )

    job = db.retry_job(JOB_ID.upper())

    assert_rpc(route, "retry_job", {"p_job_id": JOB_ID})
    assert job is not None
    assert job.status == "processing"


def test_retry_job_with_nothing_to_retry(db: Database, api: respx.MockRouter) -> None:
    api.post("/rpc/retry_job").respond(200, json=[])

    assert db.retry_job(JOB_ID) is None


def test_retry_job_while_the_app_has_another_active_job(
    db: Database, api: respx.MockRouter
) -> None:
    api.post("/rpc/retry_job").respond(400, json=active_job_error(OTHER_JOB_ID))

    with pytest.raises(ActiveJobExistsError) as raised:
        db.retry_job(JOB_ID)

    assert raised.value.active_job_id == OTHER_JOB_ID
    assert raised.value.message == "app stripe already has an active sync job"
    assert api.calls.call_count == 1  # no look-up of the job or of the active one


def test_get_job_status_in_one_request(db: Database, api: respx.MockRouter) -> None:
    later = "2026-11-29T10:16:00+00:00"
    row = job_row(
        resource_types=["invoices", "customers", "accounts"],
        status="processing",
        total_tasks=3,
        completed_tasks=1,
        failed_tasks=1,
        processed_entities=250,
        started_at=STARTED_AT,
        tasks=[
            # Added later by add_job_tasks: last, whatever its position and name.
            task_row(id=TASK_ID_3, resource_type="accounts", position=0, created_at=later),
            task_row(id=TASK_ID_2, resource_type="customers", position=2, status="failed"),
            task_row(id=TASK_ID, resource_type="invoices", position=1, status="completed"),
        ],
    )
    route = api.get("/sync_jobs").respond(200, json=[row])

    status = db.get_job_status(JOB_ID.upper())

    request = sent(route)
    assert_supasaasy_request(request, "GET", "/sync_jobs")
    assert list(request.url.params.multi_items()) == [
        ("select", "*,tasks:sync_job_tasks(*)"),
        ("id", f"eq.{JOB_ID}"),
    ]
    assert request.url.query == (
        f"select=%2A%2Ctasks%3Async_job_tasks%28%2A%29&id=eq.{JOB_ID}".encode()
    )
    assert isinstance(status, JobStatus)
    assert status.job.id == UUID(JOB_ID)
    assert status.job.processed_entities == 250
    # Sorted by (created_at, position), not by name nor in the order PostgREST used.
    assert [t.resource_type for t in status.tasks] == ["invoices", "customers", "accounts"]
    assert [t.id for t in status.tasks] == [UUID(TASK_ID), UUID(TASK_ID_2), UUID(TASK_ID_3)]
    assert [t.position for t in status.tasks] == [1, 2, 0]
    assert status.progress_percentage == pytest.approx(66.67)


def test_get_job_status_of_an_unknown_job(db: Database, api: respx.MockRouter) -> None:
    api.get("/sync_jobs").respond(200, json=[])

    with pytest.raises(NotFoundError, match=JOB_ID):
        db.get_job_status(JOB_ID)


@pytest.mark.parametrize(
    ("total", "completed", "failed", "expected"),
    [
        (4, 1, 1, 50.0),
        (3, 1, 0, 33.33),
        (2, 2, 0, 100.0),
        (2, 0, 2, 100.0),
        (5, 0, 0, 0.0),
        (0, 0, 0, 0.0),
    ],
)
def test_progress_percentage(total: int, completed: int, failed: int, expected: float) -> None:
    job = SyncJob.model_validate(
        job_row(total_tasks=total, completed_tasks=completed, failed_tasks=failed)
    )

    assert JobStatus(job=job, tasks=[]).progress_percentage == expected


@pytest.mark.parametrize(("retention", "expected_param"), [(None, 7), (30, 30), (0, 0)])
def test_cleanup_old_jobs(
    db: Database, api: respx.MockRouter, retention: int | None, expected_param: int
) -> None:
    route = api.post("/rpc/cleanup_old_jobs").respond(200, json=3)

    deleted = db.cleanup_old_jobs() if retention is None else db.cleanup_old_jobs(retention)

    assert_rpc(route, "cleanup_old_jobs", {"p_retention_days": expected_param})
    assert deleted == 3


def test_cleanup_old_jobs_with_a_negative_retention(db: Database, api: respx.MockRouter) -> None:
    message = "retention must be zero or more days, not -1"
    api.post("/rpc/cleanup_old_jobs").respond(400, json=pg_error("22023", message))

    with pytest.raises(InvalidInputError, match="retention must be zero"):
        db.cleanup_old_jobs(-1)


# -- tasks -------------------------------------------------------------------------


def claimed_row(**overrides: Any) -> dict[str, Any]:
    """A row of claim_task: the task just claimed, with its job's app, mode and the
    app's watermarks."""
    claimed = {
        "status": "processing",
        "attempts": 1,
        "started_at": STARTED_AT,
        "last_heartbeat": STARTED_AT,
        "batch_seq": 0,
        "pending_checkpoints": None,
        "checkpoint_attempt": 0,
        "app_key": "stripe",
        "mode": "incremental",
        "watermarks": {},
    }
    return task_row(**(claimed | overrides))


def test_claim_task_of_any_job(db: Database, api: respx.MockRouter) -> None:
    row = claimed_row(
        cursor="cus_123",
        checkpoint_attempt=1,
        watermarks={"customers": "2026-11-28T09:00:00+00:00", "invoices": COMPLETED_AT},
    )
    route = api.post("/rpc/claim_task").respond(200, json=[row])

    task = db.claim_task()

    assert_rpc(route, "claim_task", {"p_job_id": None})
    assert isinstance(task, ClaimedTask)
    assert isinstance(task, SyncTask)
    assert task.id == UUID(TASK_ID)
    assert task.job_id == UUID(JOB_ID)
    assert task.status == "processing"
    assert task.attempts == 1
    assert task.checkpoint_attempt == 1
    assert task.cursor == "cus_123"
    assert task.last_heartbeat == datetime(2026, 11, 29, 10, 15, 31, 500000, tzinfo=UTC)
    assert (task.app_key, task.mode) == ("stripe", "incremental")
    assert task.watermarks == {
        "customers": datetime(2026, 11, 28, 9, tzinfo=UTC),
        "invoices": datetime(2026, 11, 29, 10, 20, 2, 1, tzinfo=UTC),
    }


def test_claimed_task_without_watermarks(db: Database, api: respx.MockRouter) -> None:
    row = claimed_row(mode="full")
    del row["watermarks"]
    api.post("/rpc/claim_task").respond(200, json=[row])

    task = db.claim_task()

    assert task is not None
    assert (task.mode, task.watermarks) == ("full", {})


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        (
            {"stale_after": timedelta(minutes=5)},
            {"p_stale_after": "300.000000 seconds", "p_max_attempts": 3},
        ),
        (
            {"stale_after": timedelta(seconds=90, milliseconds=500), "max_attempts": 5},
            {"p_stale_after": "90.500000 seconds", "p_max_attempts": 5},
        ),
        ({"max_attempts": 5}, {}),  # nothing is requeued without stale_after
    ],
)
def test_claim_task_requeues_stale_tasks_in_the_same_call(
    db: Database, api: respx.MockRouter, kwargs: dict[str, Any], params: dict[str, Any]
) -> None:
    route = api.post("/rpc/claim_task").respond(200, json=[claimed_row()])

    assert db.claim_task(JOB_ID, **kwargs) is not None
    assert_rpc(route, "claim_task", {"p_job_id": JOB_ID, **params})


@pytest.mark.parametrize(
    "job_id",
    [
        JOB_ID,
        UUID(JOB_ID),
        JOB_ID.upper(),
        JOB_ID.replace("-", ""),
        "{" + JOB_ID + "}",
    ],
)
def test_claim_task_of_one_job_sends_a_canonical_uuid(
    db: Database, api: respx.MockRouter, job_id: UUID | str
) -> None:
    route = api.post("/rpc/claim_task").respond(200, json=[claimed_row()])

    assert db.claim_task(job_id) is not None
    assert_rpc(route, "claim_task", {"p_job_id": JOB_ID})


def test_claim_task_when_nothing_is_pending(db: Database, api: respx.MockRouter) -> None:
    api.post("/rpc/claim_task").respond(200, json=[])

    assert db.claim_task(JOB_ID) is None


def test_complete_task(db: Database, api: respx.MockRouter) -> None:
    row = job_row(
        status="completed",
        total_tasks=1,
        completed_tasks=1,
        processed_entities=42,
        started_at=STARTED_AT,
        completed_at=COMPLETED_AT,
    )
    route = api.post("/rpc/complete_task").respond(200, json=[row])

    job = db.complete_task(TASK_ID, "completed", entity_count=42)

    assert_rpc(
        route,
        "complete_task",
        {
            "p_task_id": TASK_ID,
            "p_status": "completed",
            "p_entity_count": 42,
            "p_error_message": None,
            "p_attempt": None,
        },
    )
    assert isinstance(job, SyncJob)
    assert (job.status, job.completed_tasks, job.processed_entities) == ("completed", 1, 42)
    assert job.completed_at == datetime(2026, 11, 29, 10, 20, 2, 1, tzinfo=UTC)


def test_complete_task_already_finished(db: Database, api: respx.MockRouter) -> None:
    api.post("/rpc/complete_task").respond(200, json=[])

    assert db.complete_task(TASK_ID, "failed", error_message="boom") is None


def test_complete_task_under_a_lease(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/complete_task").respond(200, json=[job_row(failed_tasks=1)])

    db.complete_task(TASK_ID, "failed", None, "boom", attempt=2)

    assert body(sent(route)) == {
        "p_task_id": TASK_ID,
        "p_status": "failed",
        "p_entity_count": None,
        "p_error_message": "boom",
        "p_attempt": 2,
    }


LOST = pg_error(
    "SS001",
    f"task {TASK_ID} is no longer processing under attempt 2",
    None,
    "the task was requeued or finished; stop working on it",
)


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("complete_task", lambda db: db.complete_task(TASK_ID, "completed", 5, attempt=2)),
        ("release_task", lambda db: db.release_task(TASK_ID, "c", 5, attempt=2)),
        ("heartbeat_task", lambda db: db.update_task_heartbeat(TASK_ID, attempt=2)),
    ],
)
def test_a_lost_lease_is_task_lost(
    db: Database, api: respx.MockRouter, function: str, call: Callable[[Database], Any]
) -> None:
    api.post(f"/rpc/{function}").respond(400, json=LOST)

    with pytest.raises(TaskLostError) as raised:
        call(db)

    assert raised.value.code == "SS001"
    assert raised.value.hint == LOST["hint"]


def test_release_task(db: Database, api: respx.MockRouter) -> None:
    row = task_row(status="pending", cursor="in_999", entity_count=500, attempts=1)
    route = api.post("/rpc/release_task").respond(200, json=[row])

    task = db.release_task(TASK_ID, cursor="in_999", entity_count=500)

    assert_rpc(
        route,
        "release_task",
        {
            "p_task_id": TASK_ID,
            "p_cursor": "in_999",
            "p_entity_count": 500,
            "p_attempt": None,
            "p_error": None,
            "p_max_attempts": None,
        },
    )
    assert isinstance(task, SyncTask)
    assert (task.status, task.cursor, task.entity_count) == ("pending", "in_999", 500)


def test_release_task_not_processing(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/release_task").respond(200, json=[])

    assert db.release_task(TASK_ID) is None
    assert body(sent(route)) == {
        "p_task_id": TASK_ID,
        "p_cursor": None,
        "p_entity_count": None,
        "p_attempt": None,
        "p_error": None,
        "p_max_attempts": None,
    }


def test_release_task_with_a_lease_a_reason_and_a_cap(db: Database, api: respx.MockRouter) -> None:
    """A transient failure hands the task back under its lease, saying why; past
    `max_attempts` attempts without progress the database fails it instead."""
    row = task_row(status="pending", attempts=2, error_message="database unavailable")
    route = api.post("/rpc/release_task").respond(200, json=[row])

    task = db.release_task(
        TASK_ID, None, None, attempt=2, error="database unavailable", max_attempts=3
    )

    assert_rpc(
        route,
        "release_task",
        {
            "p_task_id": TASK_ID,
            "p_cursor": None,
            "p_entity_count": None,
            "p_attempt": 2,
            "p_error": "database unavailable",
            "p_max_attempts": 3,
        },
    )
    assert task is not None
    assert task.error_message == "database unavailable"


@pytest.mark.parametrize(
    ("status", "error_message", "response", "changed"),
    [
        ("completed", None, [job_row(status="processing", completed_tasks=1)], True),
        ("failed", "rate limited", [job_row(status="processing", failed_tasks=1)], True),
        ("completed", None, [], False),
    ],
)
def test_update_task_status_finishes_through_complete_task(
    db: Database,
    api: respx.MockRouter,
    status: TaskStatusName,
    error_message: str | None,
    response: list[dict[str, Any]],
    changed: bool,
) -> None:
    route = api.post("/rpc/complete_task").respond(200, json=response)

    result = db.update_task_status(
        TASK_ID, status, entity_count=7, error_message=error_message, cursor="ignored"
    )

    assert result is changed
    assert_rpc(
        route,
        "complete_task",
        {
            "p_task_id": TASK_ID,
            "p_status": status,
            "p_entity_count": 7,
            "p_error_message": error_message,
            "p_attempt": None,
        },
    )


@pytest.mark.parametrize(("response", "changed"), [([task_row()], True), ([], False)])
def test_update_task_status_pending_releases_with_the_cursor(
    db: Database, api: respx.MockRouter, response: list[dict[str, Any]], changed: bool
) -> None:
    route = api.post("/rpc/release_task").respond(200, json=response)

    result = db.update_task_status(TASK_ID, "pending", cursor="cus_42", entity_count=10)

    assert result is changed
    assert_rpc(
        route,
        "release_task",
        {
            "p_task_id": TASK_ID,
            "p_cursor": "cus_42",
            "p_entity_count": 10,
            "p_attempt": None,
            "p_error": None,
            "p_max_attempts": None,
        },
    )


def test_update_task_status_processing_is_refused(db: Database, no_request: respx.Route) -> None:
    with pytest.raises(ValueError, match="claim_task"):
        db.update_task_status(TASK_ID, "processing")

    assert not no_request.called


@pytest.mark.parametrize(
    ("response", "alive"), [([task_row(status="processing")], True), ([], False)]
)
def test_update_task_heartbeat(
    db: Database, api: respx.MockRouter, response: list[dict[str, Any]], alive: bool
) -> None:
    route = api.post("/rpc/heartbeat_task").respond(200, json=response)

    assert db.update_task_heartbeat(TASK_ID, entity_count=120, cursor="cus_120") is alive
    assert_rpc(
        route,
        "heartbeat_task",
        {"p_task_id": TASK_ID, "p_entity_count": 120, "p_cursor": "cus_120", "p_attempt": None},
    )


def test_update_task_heartbeat_under_a_lease(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/heartbeat_task").respond(200, json=[task_row(status="processing")])

    assert db.update_task_heartbeat(TASK_ID, attempt=3) is True
    assert body(sent(route)) == {
        "p_task_id": TASK_ID,
        "p_entity_count": None,
        "p_cursor": None,
        "p_attempt": 3,
    }


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({}, {"p_stale_after": "300.000000 seconds", "p_max_attempts": 3}),
        (
            {"stale_after": timedelta(seconds=90, milliseconds=500), "max_attempts": 5},
            {"p_stale_after": "90.500000 seconds", "p_max_attempts": 5},
        ),
        (
            {"stale_after": timedelta(hours=1)},
            {"p_stale_after": "3600.000000 seconds", "p_max_attempts": 3},
        ),
    ],
)
def test_requeue_stale_tasks(
    db: Database, api: respx.MockRouter, kwargs: dict[str, Any], params: dict[str, Any]
) -> None:
    route = api.post("/rpc/requeue_stale_tasks").respond(200, json=2)

    assert db.requeue_stale_tasks(**kwargs) == 2
    assert_rpc(route, "requeue_stale_tasks", params)


# -- invalid ids never reach the database ------------------------------------------


UUID_OPERATIONS: dict[str, Callable[[Database, str], Any]] = {
    "create_job_tasks": lambda db, bad: db.create_job_tasks(bad, ["customers"]),
    "update_job_status": lambda db, bad: db.update_job_status(bad, "failed"),
    "get_job_status": lambda db, bad: db.get_job_status(bad),
    "claim_task": lambda db, bad: db.claim_task(bad),
    "complete_task": lambda db, bad: db.complete_task(bad, "completed"),
    "release_task": lambda db, bad: db.release_task(bad, "cursor"),
    "update_task_status_completed": lambda db, bad: db.update_task_status(bad, "completed"),
    "update_task_status_pending": lambda db, bad: db.update_task_status(bad, "pending"),
    "update_task_heartbeat": lambda db, bad: db.update_task_heartbeat(bad),
}


@pytest.mark.parametrize("bad_id", INVALID_UUIDS)
@pytest.mark.parametrize("operation", list(UUID_OPERATIONS))
def test_invalid_uuid_is_refused_before_any_request(
    db: Database, no_request: respx.Route, operation: str, bad_id: str
) -> None:
    with pytest.raises(InvalidInputError, match="not a valid UUID") as raised:
        UUID_OPERATIONS[operation](db, bad_id)

    assert raised.value.code is None
    assert not no_request.called


# -- entities and sync state -------------------------------------------------------


def entity(external_id: str, **overrides: Any) -> Entity:
    fields: dict[str, Any] = {
        "app_key": "stripe",
        "collection_key": "customers",
        "external_id": external_id,
        "raw_payload": {"id": external_id, "object": "customer"},
        "api_version": "2024-06-20",
    }
    fields.update(overrides)
    return Entity(**fields)


ENTITY_COLUMNS = {
    "app_key",
    "collection_key",
    "external_id",
    "raw_payload",
    "api_version",
    "archived_at",
    "deleted_at",
}


def test_upsert_entities(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/entities").respond(201, content=b"")
    archived = datetime(2026, 11, 28, 23, 59, 59, 250000, tzinfo=UTC)
    deleted = datetime(2026, 11, 29, 1, 2, 3, tzinfo=timezone(timedelta(hours=2)))

    count = db.upsert_entities(
        [entity("cus_1", archived_at=archived), entity("cus_2", deleted_at=deleted)]
    )

    assert count == 2
    request = sent(route)
    assert_supasaasy_request(request, "POST", "/entities")
    assert request.url.params["on_conflict"] == "app_key,collection_key,external_id"
    columns = request.url.params["columns"].split(",")
    assert {c.strip('"') for c in columns} == ENTITY_COLUMNS
    assert prefer(request) == {"return=minimal", "resolution=merge-duplicates", "missing=default"}
    assert body(request) == [
        {
            "app_key": "stripe",
            "collection_key": "customers",
            "external_id": "cus_1",
            "raw_payload": {"id": "cus_1", "object": "customer"},
            "api_version": "2024-06-20",
            "archived_at": "2026-11-28T23:59:59.250000Z",
            "deleted_at": None,
        },
        {
            "app_key": "stripe",
            "collection_key": "customers",
            "external_id": "cus_2",
            "raw_payload": {"id": "cus_2", "object": "customer"},
            "api_version": "2024-06-20",
            "archived_at": None,
            "deleted_at": "2026-11-29T01:02:03+02:00",
        },
    ]


def test_upsert_entities_dedupes_within_a_batch(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/entities").respond(201, content=b"")
    batch = [
        entity("cus_1", raw_payload={"v": 1}),
        entity("cus_2"),
        entity("cus_1", collection_key="invoices", raw_payload={"other": "collection"}),
        entity("cus_1", app_key="hubspot", raw_payload={"other": "app"}),
        entity("cus_1", raw_payload={"v": 2}),
    ]

    assert db.upsert_entities(batch) == 4

    rows = body(sent(route))
    keys = [(r["app_key"], r["collection_key"], r["external_id"]) for r in rows]
    assert sorted(keys) == sorted(
        [
            ("stripe", "customers", "cus_1"),
            ("stripe", "customers", "cus_2"),
            ("stripe", "invoices", "cus_1"),
            ("hubspot", "customers", "cus_1"),
        ]
    )
    latest = next(
        r
        for r in rows
        if r["external_id"] == "cus_1"
        and r["app_key"] == "stripe"
        and r["collection_key"] == "customers"
    )
    assert latest["raw_payload"] == {"v": 2}


def test_upsert_entities_sends_one_request_per_batch(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/entities").respond(201, content=b"")

    assert db.upsert_entities([entity(f"cus_{i}") for i in range(1000)]) == 1000
    assert len(body(sent(route))) == 1000


def test_upsert_entities_with_an_empty_batch(db: Database, no_request: respx.Route) -> None:
    assert db.upsert_entities([]) == 0
    assert not no_request.called


def test_upsert_entities_error_is_translated(db: Database, api: respx.MockRouter) -> None:
    error = pg_error(
        "23502",
        'null value in column "raw_payload" of relation "entities" violates not-null constraint',
        "Failing row contains (...).",
    )
    api.post("/entities").respond(400, json=error)

    with pytest.raises(InvalidInputError) as raised:
        db.upsert_entities([entity("cus_1")])

    assert raised.value.code == "23502"
    assert raised.value.details == "Failing row contains (...)."


def test_get_sync_state(db: Database, api: respx.MockRouter) -> None:
    row = {
        "app_key": "stripe",
        "collection_key": "customers",
        "last_synced_at": "2026-11-29T10:20:02.5+00:00",
        "last_sync_metadata": {"cursor": "cus_999", "count": 1000},
        "created_at": CREATED_AT,
        "updated_at": COMPLETED_AT,
    }
    route = api.get("/sync_state").respond(200, json=[row])

    state = db.get_sync_state("stripe", "customers")

    request = sent(route)
    assert_supasaasy_request(request, "GET", "/sync_state")
    assert list(request.url.params.multi_items()) == [
        ("select", "*"),
        ("app_key", "eq.stripe"),
        ("collection_key", "eq.customers"),
    ]
    assert state == SyncState(
        app_key="stripe",
        collection_key="customers",
        last_synced_at=datetime(2026, 11, 29, 10, 20, 2, 500000, tzinfo=UTC),
        last_sync_metadata={"cursor": "cus_999", "count": 1000},
    )


def test_get_sync_state_when_never_synced(db: Database, api: respx.MockRouter) -> None:
    api.get("/sync_state").respond(200, json=[])

    assert db.get_sync_state("stripe", "customers") is None


@pytest.mark.parametrize(
    ("metadata", "sent_metadata"), [(None, {}), ({"cursor": "cus_9"}, {"cursor": "cus_9"})]
)
def test_set_sync_state(
    db: Database,
    api: respx.MockRouter,
    metadata: dict[str, Any] | None,
    sent_metadata: dict[str, Any],
) -> None:
    route = api.post("/sync_state").respond(201, content=b"")

    result = db.set_sync_state(
        "stripe", "customers", datetime(2026, 11, 29, 10, 20, 2, 123000, tzinfo=UTC), metadata
    )

    assert result is None
    request = sent(route)
    assert_supasaasy_request(request, "POST", "/sync_state")
    assert dict(request.url.params) == {"on_conflict": "app_key,collection_key"}
    assert prefer(request) == {"return=minimal", "resolution=merge-duplicates"}
    assert body(request) == {
        "app_key": "stripe",
        "collection_key": "customers",
        "last_synced_at": "2026-11-29T10:20:02.123000Z",
        "last_sync_metadata": sent_metadata,
    }


# -- error translation -------------------------------------------------------------


ERROR_TABLE = [
    pytest.param(
        409,
        pg_error(
            "23505",
            'duplicate key value violates unique constraint "sync_job_tasks_job_resource_key"',
            f"Key (job_id, resource_type)=({JOB_ID}, customers) already exists.",
        ),
        ConflictError,
        id="23505-unique",
    ),
    pytest.param(
        400,
        pg_error(
            "23514",
            'new row for relation "sync_job_tasks" violates check constraint '
            '"sync_job_tasks_status_check"',
            "Failing row contains (...).",
        ),
        InvalidInputError,
        id="23514-check",
    ),
    pytest.param(
        400,
        pg_error("22023", "a task can only be completed or failed, not pending"),
        InvalidInputError,
        id="22023-invalid-parameter",
    ),
    pytest.param(
        400,
        pg_error("22P02", 'invalid input syntax for type uuid: "x"'),
        InvalidInputError,
        id="22P02-bad-type",
    ),
    pytest.param(
        404,
        pg_error(
            "PGRST202",
            "Could not find the function supasaasy.complete_task(p_status, p_task_id) in the "
            "schema cache",
            "Searched for the function supasaasy.complete_task with parameters p_status, "
            "p_task_id or with a single unnamed json/jsonb parameter, but no matches were found "
            "in the schema cache.",
            "Perhaps you meant to call the function supasaasy.claim_task",
        ),
        InvalidInputError,
        id="PGRST202-no-such-function",
    ),
    pytest.param(
        500,
        pg_error("P0002", f"job {JOB_ID} does not exist or is no longer active"),
        NotFoundError,
        id="P0002-no-data",
    ),
    pytest.param(
        409,
        pg_error(
            "23503",
            'insert or update on table "sync_job_tasks" violates foreign key constraint '
            '"sync_job_tasks_job_id_fkey"',
            f'Key (job_id)=({JOB_ID}) is not present in table "sync_jobs".',
        ),
        NotFoundError,
        id="23503-foreign-key",
    ),
    pytest.param(
        503,
        pg_error(
            "PGRST000",
            "Could not connect with the database due to an incorrect db-uri or due to the "
            "PostgreSQL service not running.",
            "connection to server failed: Connection refused",
        ),
        DatabaseUnavailableError,
        id="PGRST000-no-connection",
    ),
    pytest.param(
        503,
        pg_error("PGRST001", "Database client error. Retrying the connection.", "timeout"),
        DatabaseUnavailableError,
        id="PGRST001",
    ),
    pytest.param(
        503,
        pg_error("53300", "sorry, too many clients already"),
        DatabaseUnavailableError,
        id="53300-too-many-connections",
    ),
    pytest.param(
        502,
        {"message": "An invalid response was received from the upstream server"},
        DatabaseUnavailableError,
        id="gateway-json-without-code",
    ),
    pytest.param(
        503,
        pg_error("08006", "connection failure"),
        DatabaseUnavailableError,
        id="08006-connection-failure",
    ),
    pytest.param(
        500,
        pg_error("57014", "canceling statement due to statement timeout"),
        DatabaseError,
        id="57014-statement-timeout",
    ),
    pytest.param(
        400,
        pg_error("SS001", f"task {TASK_ID} is no longer processing under attempt 1"),
        TaskLostError,
        id="SS001-task-lost",
    ),
    pytest.param(
        403,
        pg_error("42501", "permission denied for function complete_task"),
        DatabaseError,
        id="42501-other",
    ),
]


@pytest.mark.parametrize(("status_code", "error_body", "expected"), ERROR_TABLE)
def test_postgrest_errors_are_translated(
    db: Database,
    api: respx.MockRouter,
    status_code: int,
    error_body: dict[str, Any],
    expected: type[DatabaseError],
) -> None:
    api.post("/rpc/complete_task").respond(status_code, json=error_body)

    with pytest.raises(DatabaseError) as raised:
        db.complete_task(TASK_ID, "completed")

    err = raised.value
    assert type(err) is expected
    assert err.code == error_body.get("code")
    assert err.message == error_body["message"]
    assert err.details == error_body.get("details")
    assert err.hint == error_body.get("hint")
    assert isinstance(err.__cause__, APIError)
    assert err.__cause__.code == error_body.get("code")


@pytest.mark.parametrize(
    ("status_code", "content"),
    [
        pytest.param(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", id="502-html"),
        pytest.param(503, b"upstream connect error", id="503-text"),
    ],
)
def test_non_json_gateway_error_is_unavailable(
    db: Database, api: respx.MockRouter, status_code: int, content: bytes
) -> None:
    api.post("/rpc/claim_task").respond(
        status_code, content=content, headers={"Content-Type": "text/html"}
    )

    with pytest.raises(DatabaseUnavailableError) as raised:
        db.claim_task()

    assert raised.value.details == content.decode()
    assert isinstance(raised.value.__cause__, APIError)


def test_non_json_gateway_error_keeps_the_response_text(
    db: Database, api: respx.MockRouter
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    api.post("/rpc/claim_task").respond(502, text=page, headers={"Content-Type": "text/html"})

    with pytest.raises(DatabaseError) as raised:
        db.claim_task()

    assert raised.value.code == "502"
    assert raised.value.message == "Bad Gateway"
    assert raised.value.details == page
    assert isinstance(raised.value.__cause__, APIError)


def test_connection_error_is_unavailable(db: Database, api: respx.MockRouter) -> None:
    route = api.post("/rpc/claim_task").mock(side_effect=httpx.ConnectError("connection refused"))

    with pytest.raises(DatabaseUnavailableError, match="ConnectError") as raised:
        db.claim_task()

    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert raised.value.code is None
    # POST is not idempotent: postgrest-py does not retry it.
    assert route.call_count == 1


def test_connection_error_on_a_read_is_unavailable_after_retries(
    db: Database, api: respx.MockRouter, no_sleep: list[float]
) -> None:
    route = api.get("/sync_state").mock(side_effect=httpx.ConnectError("connection refused"))

    with pytest.raises(DatabaseUnavailableError) as raised:
        db.get_sync_state("stripe", "customers")

    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert route.call_count == 4
    assert no_sleep == [1, 2, 4]


def test_unavailable_read_is_translated_after_retries(
    db: Database, api: respx.MockRouter, no_sleep: list[float]
) -> None:
    error = pg_error("PGRST000", "Could not connect with the database", "Connection refused")
    route = api.get("/sync_jobs").respond(503, json=error)

    with pytest.raises(DatabaseUnavailableError) as raised:
        db.get_job_status(JOB_ID)

    assert raised.value.code == "PGRST000"
    assert raised.value.details == "Connection refused"
    assert route.call_count == 4


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        ({}, DatabaseUnavailableError, "database request failed"),
        ({"code": "", "message": ""}, DatabaseUnavailableError, "database request failed"),
        ({"code": "23505", "message": "dup"}, ConflictError, "dup"),
        ({"code": "PGRST116", "message": "no rows"}, NotFoundError, "no rows"),
        (
            {"code": "40001", "message": "could not serialize"},
            DatabaseUnavailableError,
            "could not serialize",
        ),
    ],
)
def test_translate(error: dict[str, Any], expected: type[DatabaseError], message: str) -> None:
    err = translate(APIError({**error, "details": {"k": "v"}, "hint": "try again"}))

    assert type(err) is expected
    assert err.message == message
    assert err.code == (error.get("code") or None)
    assert err.details == {"k": "v"}
    assert err.hint == "try again"


# Out of reach, busy, or a transaction to run again: worth trying again later.
UNAVAILABLE_CODES = [
    *("PGRST000", "PGRST001", "PGRST002", "PGRST003"),  # PostgREST's connection errors
    *("08000", "08001", "08003", "08004", "08006", "08007", "08P01"),  # class 08
    *("40001", "40P01"),  # serialization failure, deadlock
    *("55P03", "55006"),  # lock not available, object in use
    *("53300", "53400"),  # too many connections, configuration limit
    *("57P01", "57P02", "57P03"),  # shutdowns, cannot connect now
    *("500", "502", "503", "504"),  # a gateway's HTTP status, without JSON
]
# Failures that would fail the same way again.
PLAIN_CODES = [
    "54000",  # program limit exceeded
    "57014",  # statement timeout
    "58030",  # I/O error
    "53100",  # disk full
    "22P05",  # untranslatable character
    "XX000",  # internal error
    "501",  # an HTTP status that is not the database being away
]


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_translate_unavailable(code: str) -> None:
    err = translate(APIError({"code": code, "message": "m", "details": "d", "hint": "h"}))

    assert type(err) is DatabaseUnavailableError
    assert (err.code, err.message, err.details, err.hint) == (code, "m", "d", "h")


@pytest.mark.parametrize("code", PLAIN_CODES)
def test_translate_failures_that_would_fail_again(code: str) -> None:
    err = translate(APIError({"code": code, "message": "m", "details": "d", "hint": "h"}))

    assert type(err) is DatabaseError
    assert (err.code, err.message, err.details, err.hint) == (code, "m", "d", "h")


def test_translate_a_lost_task() -> None:
    err = translate(APIError({"code": "SS001", "message": "task x is no longer processing",
                              "details": None, "hint": "stop"}))  # fmt: skip

    assert type(err) is TaskLostError
    assert (err.code, err.message, err.hint) == ("SS001", "task x is no longer processing", "stop")


def test_translate_an_active_job() -> None:
    err = translate(APIError(active_job_error(OTHER_JOB_ID)))

    assert type(err) is ActiveJobExistsError
    assert isinstance(err, ConflictError)
    assert err.active_job_id == OTHER_JOB_ID
    assert (err.code, err.details) == ("SS002", OTHER_JOB_ID)
    assert err.message == "app stripe already has an active sync job"
    assert err.hint == "wait for it to end, or cancel it"


@pytest.mark.parametrize("details", ["", None, {"id": OTHER_JOB_ID}])
def test_translate_an_active_job_without_its_id(details: Any) -> None:
    err = translate(APIError({**active_job_error(None), "details": details}))

    assert type(err) is ActiveJobExistsError
    assert err.active_job_id is None


@respx.mock(base_url=REST_URL, assert_all_called=True)
def test_write_batch_posts_the_whole_body_as_its_one_argument(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/rpc/write_batch").mock(
        return_value=httpx.Response(200, json={"created": 2, "updated": 0, "unchanged": 1,
                                               "deleted": 0}))  # fmt: skip
    db = Database.connect(SUPABASE_URL, SERVICE_KEY)
    body = {"task_id": TASK_ID, "attempt": 1, "seq": 3, "cursor": "c", "entity_count": 3,
            "mode": "full", "rows": [{"collection_key": "k", "external_id": "1",
                                      "raw_payload": {"n": "ü"}}]}  # fmt: skip
    counts = db.write_batch(body)  # type: ignore[arg-type]
    assert (counts.created, counts.unchanged) == (2, 1)
    request = sent(route)
    assert_supasaasy_request(request, "POST", "/rpc/write_batch")
    # As text, so PostgREST hands it to write_batch(text) without parsing it itself.
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert json.loads(request.content) == body
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"


@respx.mock(base_url=REST_URL)
def test_write_batch_errors_are_translated(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("/rpc/write_batch").mock(side_effect=[
        httpx.Response(400, json={"code": "SS001", "message": "task x is no longer processing",
                                  "details": None, "hint": "stop"}),
        httpx.Response(502, text="<html>bad gateway</html>"),
    ])  # fmt: skip
    db = Database.connect(SUPABASE_URL, SERVICE_KEY)
    body = {"task_id": TASK_ID, "attempt": 1, "cursor": None, "entity_count": 0, "mode": "full",
            "rows": []}  # fmt: skip
    with pytest.raises(TaskLostError) as lost:
        db.write_batch(body)  # type: ignore[arg-type]
    assert lost.value.hint == "stop"
    with pytest.raises(DatabaseUnavailableError):
        db.write_batch(body)  # type: ignore[arg-type]
