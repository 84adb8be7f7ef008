"""GET /sync/jobs/{id}: a job's progress; POST .../cancel and .../retry; against a
stateful stand-in PostgREST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fake_postgrest import FakePostgrest
from flask.testing import FlaskClient
from handler_support import (
    COMPLETED_AT,
    CREATED_AT,
    DATABASE_FAILURES,
    JOB_ID,
    OTHER_JOB_ID,
    SECRET_TEXT,
    SERVICE_KEY,
    STARTED_AT,
    STRIPE_TASK_RESOURCES,
    TASK_ID_2,
    TASK_ID_3,
    assert_error,
    assert_generic_failure,
    auth,
    job_row,
    pg_error,
    task_row,
)

MISSING_ID = "missing job id: use /sync/jobs/{job_id} or ?job_id="


def expected_status(**overrides: Any) -> dict[str, Any]:
    """The answer for job_row() with `overrides`."""
    body = {
        "success": True,
        "job_id": JOB_ID,
        "app_key": "billing",
        "mode": "incremental",
        "status": "pending",
        "progress_percentage": 0.0,
        "total_tasks": len(STRIPE_TASK_RESOURCES),
        "completed_tasks": 0,
        "failed_tasks": 0,
        "processed_entities": 0,
        "created_at": CREATED_AT,
        "started_at": None,
        "completed_at": None,
        "error_message": None,
        "eta_seconds": None,
    }
    body.update(overrides)
    return body


def three_tasks() -> list[dict[str, Any]]:
    """Tasks in the order PostgREST may send them; the job lists them by (created_at,
    position)."""
    later = "2026-11-29T10:16:00+00:00"
    return [
        task_row(id=TASK_ID_3, resource_type="plan", position=0, created_at=later),
        task_row(
            id=TASK_ID_2,
            resource_type="product",
            position=2,
            status="failed",
            attempts=3,
            error_message="stripe: 500",
        ),
        task_row(
            resource_type="customer", position=1, status="completed", entity_count=42, attempts=1
        ),
    ]


EXPECTED_TASKS = [
    {
        "resource_type": "customer",
        "status": "completed",
        "entity_count": 42,
        "attempts": 1,
        "error_message": None,
    },
    {
        "resource_type": "product",
        "status": "failed",
        "entity_count": 0,
        "attempts": 3,
        "error_message": "stripe: 500",
    },
    {
        "resource_type": "plan",
        "status": "pending",
        "entity_count": 0,
        "attempts": 0,
        "error_message": None,
    },
]


# -- status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/sync/jobs/{JOB_ID}",
        f"/sync/jobs/{JOB_ID}/",
        f"/jobs/{JOB_ID}",
        f"/job-status/{JOB_ID}",
        f"/{JOB_ID}",
        f"/functions/v1/job-status/{JOB_ID}",
        f"/?job_id={JOB_ID}",
        f"/sync/jobs?job_id={JOB_ID}",
        f"/sync/jobs/{JOB_ID.upper()}",
        f"/sync/jobs/{{{JOB_ID}}}",
        f"/sync/jobs/{OTHER_JOB_ID}?job_id={JOB_ID}",
    ],
)
def test_job_status(status_client: FlaskClient, fake: FakePostgrest, path: str) -> None:
    fake.add_job(job_row())
    fake.add_job(job_row(id=OTHER_JOB_ID, app_key="other", status="completed"))

    response = status_client.get(path, headers=auth())

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == expected_status()
    assert len(fake.calls) == 1  # the job and its tasks in one request


def test_job_status_of_a_finished_job(status_client: FlaskClient, fake: FakePostgrest) -> None:
    fake.add_job(
        job_row(
            mode="full",
            status="failed",
            total_tasks=3,
            completed_tasks=2,
            failed_tasks=1,
            processed_entities=1234,
            started_at=STARTED_AT,
            completed_at=COMPLETED_AT,
            error_message="1 of 3 tasks failed",
        ),
        three_tasks(),
    )

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert response.status_code == 200
    assert response.get_json() == expected_status(
        mode="full",
        status="failed",
        progress_percentage=100.0,
        total_tasks=3,
        completed_tasks=2,
        failed_tasks=1,
        processed_entities=1234,
        started_at=STARTED_AT,
        completed_at=COMPLETED_AT,
        error_message="1 of 3 tasks failed",
        eta_seconds=None,
    )


@pytest.mark.parametrize(
    ("include", "listed"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("yes", False), ("", False)],
)
def test_job_status_tasks_only_on_request(
    status_client: FlaskClient, fake: FakePostgrest, include: str, listed: bool
) -> None:
    fake.add_job(job_row(total_tasks=3, completed_tasks=1, failed_tasks=1), three_tasks())

    response = status_client.get(f"/sync/jobs/{JOB_ID}?include_tasks={include}", headers=auth())

    assert response.status_code == 200
    result = response.get_json()
    assert result["progress_percentage"] == pytest.approx(66.67)
    if listed:
        assert result["tasks"] == EXPECTED_TASKS
    else:
        assert "tasks" not in result
    assert len(fake.calls) == 1


def test_job_status_eta_from_the_pace_of_finished_tasks(
    status_client: FlaskClient, fake: FakePostgrest
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=100)
    fake.add_job(
        job_row(
            status="processing",
            total_tasks=4,
            completed_tasks=1,
            failed_tasks=1,
            started_at=started.isoformat(),
        )
    )

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    result = response.get_json()
    assert response.status_code == 200
    assert result["progress_percentage"] == 50.0
    # 100 s for 2 tasks: 2 left take about 100 s more.
    assert isinstance(result["eta_seconds"], float)
    assert 99.0 <= result["eta_seconds"] <= 110.0
    assert result["started_at"] == started.isoformat()


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            {"status": "processing", "started_at": STARTED_AT}, id="processing-none-finished"
        ),
        pytest.param({"status": "pending", "completed_tasks": 1}, id="not-started"),
        pytest.param(
            {"status": "cancelled", "completed_tasks": 1, "started_at": STARTED_AT}, id="cancelled"
        ),
    ],
)
def test_job_status_eta_is_null_without_a_pace(
    status_client: FlaskClient, fake: FakePostgrest, row: dict[str, Any]
) -> None:
    fake.add_job(job_row(**row))

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert response.status_code == 200
    assert response.get_json()["eta_seconds"] is None


def test_job_status_of_an_unknown_job(status_client: FlaskClient, fake: FakePostgrest) -> None:
    fake.add_job(job_row(id=OTHER_JOB_ID))

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")


@pytest.mark.parametrize(
    ("method", "path", "error"),
    [
        ("GET", "/sync/jobs/not-a-uuid", "job_id must be a UUID, not 'not-a-uuid'"),
        ("GET", "/sync/jobs/123", "job_id must be a UUID, not '123'"),
        ("GET", f"/sync/jobs/{JOB_ID}x", f"job_id must be a UUID, not '{JOB_ID}x'"),
        ("GET", f"/sync/jobs/{JOB_ID}/tasks", "job_id must be a UUID, not 'tasks'"),
        ("GET", "/?job_id=x'%3Bdrop", 'job_id must be a UUID, not "x\';drop"'),
        ("POST", "/sync/jobs/nope/cancel", "job_id must be a UUID, not 'nope'"),
        ("GET", "/", MISSING_ID),
        ("GET", "/?job_id=", MISSING_ID),
        ("GET", "/sync", MISSING_ID),
        ("GET", "/sync/jobs", MISSING_ID),
        ("GET", "/sync/jobs/", MISSING_ID),
        ("GET", "/jobs", MISSING_ID),
        ("GET", "/job-status", MISSING_ID),
        ("POST", "/sync/jobs/cancel", MISSING_ID),
        ("POST", "/retry", MISSING_ID),
    ],
)
def test_job_status_refuses_a_bad_or_missing_id(
    status_client: FlaskClient, fake: FakePostgrest, method: str, path: str, error: str
) -> None:
    response = status_client.open(path, method=method, headers=auth())

    assert_error(response, 400, error)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", f"/sync/jobs/{JOB_ID}/cancel", "POST, OPTIONS"),
        ("GET", f"/sync/jobs/{JOB_ID}/retry", "POST, OPTIONS"),
        ("POST", f"/sync/jobs/{JOB_ID}", "GET, OPTIONS"),
        ("POST", f"/?job_id={JOB_ID}", "GET, OPTIONS"),
    ],
)
def test_job_status_method_must_fit_the_action(
    status_client: FlaskClient, fake: FakePostgrest, method: str, path: str, allow: str
) -> None:
    """405, naming the methods allowed, and the job is left as it was."""
    fake.add_job(job_row(status="processing", started_at=STARTED_AT))

    response = status_client.open(path, method=method, headers=auth())

    assert_error(response, 405, "use GET for a job's status, POST for /cancel and /retry")
    assert response.headers.get("Allow") == allow
    assert fake.calls == []
    assert fake.jobs[JOB_ID]["status"] == "processing"


def test_job_status_database_unavailable(
    status_client: FlaskClient, fake: FakePostgrest, no_sleep: list[float]
) -> None:
    fake.fail(
        "GET",
        "/sync_jobs",
        httpx.Response(
            503, json=pg_error("PGRST000", f"{SECRET_TEXT} {SERVICE_KEY}", "Connection refused")
        ),
    )

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert_generic_failure(response, 503)
    # A read: postgrest-py retried it before giving up.
    assert len(fake.requests_to("GET", "/sync_jobs")) == 4
    assert no_sleep == [1, 2, 4]


# -- cancel ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [f"/sync/jobs/{JOB_ID}/cancel", f"/jobs/{JOB_ID.upper()}/cancel", f"/cancel?job_id={JOB_ID}"],
)
def test_cancel_a_job(status_client: FlaskClient, fake: FakePostgrest, path: str) -> None:
    fake.add_job(job_row(total_tasks=2), [
        task_row(status="completed", entity_count=5, attempts=1),
        task_row(id=TASK_ID_2, resource_type="product", position=2),
    ])  # fmt: skip

    response = status_client.post(path, headers=auth())

    assert response.status_code == 200
    result = response.get_json()
    completed_at = result["completed_at"]
    assert datetime.fromisoformat(completed_at) > datetime.fromisoformat(CREATED_AT)
    assert result == expected_status(
        status="cancelled",
        total_tasks=2,
        completed_at=completed_at,
        error_message="cancelled",
        tasks=[
            {
                "resource_type": "customer",
                "status": "completed",
                "entity_count": 5,
                "attempts": 1,
                "error_message": None,
            },
            {
                "resource_type": "product",
                "status": "cancelled",
                "entity_count": 0,
                "attempts": 0,
                "error_message": None,
            },
        ],
    )
    assert fake.jobs[JOB_ID]["status"] == "cancelled"
    assert [t["status"] for t in fake.tasks_of(JOB_ID)] == ["completed", "cancelled"]


def test_cancel_a_finished_job_is_a_conflict(
    status_client: FlaskClient, fake: FakePostgrest
) -> None:
    fake.add_job(job_row(status="completed", completed_at=COMPLETED_AT))

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_error(response, 409, "job is not active (already finished or cancelled)")
    assert fake.jobs[JOB_ID]["status"] == "completed"


def test_cancel_an_unknown_job(status_client: FlaskClient, fake: FakePostgrest) -> None:
    fake.add_job(job_row(id=OTHER_JOB_ID))

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")
    assert fake.jobs[OTHER_JOB_ID]["status"] == "pending"


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES[:6])
def test_cancel_database_failure_is_generic(
    status_client: FlaskClient,
    fake: FakePostgrest,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    fake.add_job(job_row())
    fake.fail("POST", "/rpc/cancel_job", outcome)

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_generic_failure(response, status)
    assert len(fake.rpc_calls("cancel_job")) == 1  # a write is never retried
    assert not fake.requests_to("GET", "/sync_jobs")


# -- retry -------------------------------------------------------------------------------


def test_retry_a_job(status_client: FlaskClient, fake: FakePostgrest) -> None:
    fake.add_job(
        job_row(status="failed", total_tasks=2, completed_tasks=1, failed_tasks=1,
                processed_entities=10, completed_at=COMPLETED_AT,
                error_message="product: stripe: 500"),
        [
            task_row(status="completed", entity_count=10, attempts=1),
            task_row(id=TASK_ID_2, resource_type="product", position=2, status="failed",
                     attempts=3, error_message="stripe: 500", completed_at=COMPLETED_AT),
        ],
    )  # fmt: skip

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert response.status_code == 200
    result = response.get_json()
    assert (result["status"], result["failed_tasks"], result["error_message"]) == (
        "pending", 0, None)  # fmt: skip
    assert result["progress_percentage"] == 50.0
    assert result["tasks"] == [
        {
            "resource_type": "customer",
            "status": "completed",
            "entity_count": 10,
            "attempts": 1,
            "error_message": None,
        },
        {
            "resource_type": "product",
            "status": "pending",
            "entity_count": 0,
            "attempts": 3,
            "error_message": None,
        },
    ]
    assert fake.jobs[JOB_ID]["status"] == "pending"


def test_retry_a_job_with_nothing_to_retry_is_a_conflict(
    status_client: FlaskClient, fake: FakePostgrest
) -> None:
    fake.add_job(job_row(status="completed", completed_at=COMPLETED_AT))

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 409, "job has nothing to retry (only failed or cancelled jobs)")
    assert fake.jobs[JOB_ID]["status"] == "completed"


def test_retry_an_unknown_job(status_client: FlaskClient, fake: FakePostgrest) -> None:
    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")


def test_retry_while_the_app_has_another_active_job(
    status_client: FlaskClient, fake: FakePostgrest
) -> None:
    fake.add_job(job_row(status="failed", failed_tasks=1), [task_row(status="failed")])
    fake.add_job(job_row(id=OTHER_JOB_ID, status="processing", started_at=STARTED_AT))

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 409, "app billing already has an active sync job", job_id=OTHER_JOB_ID)
    assert fake.jobs[JOB_ID]["status"] == "failed"
    assert [t["status"] for t in fake.tasks_of(JOB_ID)] == ["failed"]
    # The database names the active job itself: nothing is looked up.
    assert not fake.requests_to("GET", "/sync_jobs")
