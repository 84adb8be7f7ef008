"""POST /sync: start a job for an app (or, with `immediate`, run it in the request),
against a stateful stand-in PostgREST (and Stripe, for immediate runs)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fake_postgrest import FakePostgrest
from flask.testing import FlaskClient
from handler_support import (
    ADMIN_KEY,
    DATABASE_FAILURES,
    JOB_ID,
    OTHER_JOB_ID,
    RATE_PER_MINUTE,
    SECRET_TEXT,
    STARTED_AT,
    STRIPE_RESOURCES,
    STRIPE_TASK_RESOURCES,
    WORKER_URL,
    Build,
    FakeStripe,
    active_job_error,
    assert_error,
    assert_generic_failure,
    auth,
    caller_key,
    customer,
    job_row,
    join_nudges,
    pg_error,
)
from respx import MockRouter

APP_KEY_PATTERN_ERROR = "app_key: String should match pattern '^[A-Za-z0-9_-]{1,64}$'"
ACTIVE_JOB = "app billing already has an active sync job"


def job_params(
    resources: list[str], mode: str = "incremental", immediate: bool = False
) -> dict[str, Any]:
    """The parameters of create_sync_job for the billing app."""
    return {"p_app_key": "billing", "p_mode": mode, "p_resource_types": resources,
            "p_immediate": immediate}  # fmt: skip


# -- a job is created ------------------------------------------------------------------


def test_sync_creates_a_job(sync_client: FlaskClient, fake: FakePostgrest) -> None:
    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "success": True,
        "job_id": JOB_ID,
        "app_key": "billing",
        "mode": "incremental",
        "status": "pending",
        "total_tasks": len(STRIPE_TASK_RESOURCES),
        "resource_types": STRIPE_TASK_RESOURCES,
    }
    # The job waits for a worker: pending, with one pending task per resource.
    job = fake.jobs[JOB_ID]
    assert (job["status"], job["immediate"]) == ("pending", False)
    tasks = fake.tasks_of(JOB_ID)
    assert [t["resource_type"] for t in tasks] == STRIPE_TASK_RESOURCES
    assert {t["status"] for t in tasks} == {"pending"}
    assert fake.rpc_calls("create_sync_job") == [job_params(STRIPE_TASK_RESOURCES)]
    # The request counted against the caller's rate, under a name that is not its key.
    assert fake.rpc_calls("admit_request") == [
        {"p_key": caller_key(), "p_per_minute": RATE_PER_MINUTE}
    ]


@pytest.mark.parametrize(
    ("request_body", "mode", "resources"),
    [
        pytest.param({"mode": "full"}, "full", STRIPE_TASK_RESOURCES, id="full-all"),
        pytest.param({"mode": "incremental"}, "incremental", STRIPE_TASK_RESOURCES, id="incr"),
        pytest.param({"resource_types": None}, "incremental", STRIPE_TASK_RESOURCES, id="null"),
        pytest.param(
            {"resource_types": ["subscription_item"]}, "incremental", ["subscription"], id="child"
        ),
        pytest.param(
            {"mode": "full", "resource_types": ["price", "customer"]},
            "full",
            ["price", "customer"],
            id="as-asked",
        ),
        pytest.param(
            {
                "resource_types": [
                    "customer",
                    "subscription_item",
                    "customer",
                    "subscription",
                    "plan",
                ]
            },
            "incremental",
            ["customer", "subscription", "plan"],
            id="duplicates-collapse",
        ),
        pytest.param(
            {"resource_types": ["customer"], "immediate": False},
            "incremental",
            ["customer"],
            id="not-immediate",
        ),
    ],
)
def test_sync_job_mode_and_resources(
    sync_client: FlaskClient,
    fake: FakePostgrest,
    request_body: dict[str, Any],
    mode: str,
    resources: list[str],
) -> None:
    response = sync_client.post(
        "/sync", json={"app_key": "billing", **request_body}, headers=auth()
    )

    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["mode"], answer["resource_types"]) == (mode, resources)
    assert answer["total_tasks"] == len(resources)
    assert fake.rpc_calls("create_sync_job") == [job_params(resources, mode)]
    assert (fake.jobs[JOB_ID]["mode"], fake.jobs[JOB_ID]["total_tasks"]) == (mode, len(resources))
    assert [t["resource_type"] for t in fake.tasks_of(JOB_ID)] == resources


def test_sync_nudges_the_worker(
    env: pytest.MonkeyPatch, build: Build, api: MockRouter, fake: FakePostgrest
) -> None:
    env.setenv("SUPASAASY_WORKER_URL", WORKER_URL)
    client = build("sync")
    nudge = api.post(WORKER_URL).respond(200, json={"success": True})

    response = client.post("/sync", json={"app_key": "billing"}, headers=auth())
    join_nudges()

    assert response.status_code == 200
    assert response.get_json()["job_id"] == JOB_ID
    assert nudge.call_count == 1
    request = nudge.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {ADMIN_KEY}"
    assert json.loads(request.content) == {"job_id": JOB_ID}


def test_sync_does_not_nudge_when_no_worker_url(
    sync_client: FlaskClient, api: MockRouter, fake: FakePostgrest
) -> None:
    nudge = api.post(WORKER_URL).respond(200)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())
    join_nudges()

    assert response.status_code == 200
    assert not nudge.called


# -- a job is refused --------------------------------------------------------------------


def test_sync_while_a_job_is_active_is_a_conflict(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    fake.add_job(job_row(id=OTHER_JOB_ID, status="processing", started_at=STARTED_AT))

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 409, ACTIVE_JOB, job_id=OTHER_JOB_ID)
    assert list(fake.jobs) == [OTHER_JOB_ID]
    # The database names the active job itself: nothing is looked up afterwards.
    assert not fake.requests_to("GET", "/sync_jobs")


def test_sync_conflict_when_the_active_job_has_just_ended(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    fake.fail("POST", "/rpc/create_sync_job", active_job_error(""))

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 409, ACTIVE_JOB, job_id=None)


def test_sync_of_an_unknown_app(sync_client: FlaskClient, fake: FakePostgrest) -> None:
    response = sync_client.post("/sync", json={"app_key": "payroll"}, headers=auth())

    assert_error(response, 404, "unknown app_key: payroll")
    assert fake.jobs == {}
    assert not fake.rpc_calls("create_sync_job")


BAD_SYNC_BODIES = [
    pytest.param({}, "app_key: missing required field", id="missing-app_key"),
    pytest.param({"mode": "full"}, "app_key: missing required field", id="only-mode"),
    pytest.param({"app_key": "a b"}, APP_KEY_PATTERN_ERROR, id="app_key-space"),
    pytest.param({"app_key": "x" * 65}, APP_KEY_PATTERN_ERROR, id="app_key-65-chars"),
    pytest.param({"app_key": "x';drop"}, APP_KEY_PATTERN_ERROR, id="app_key-quote"),
    pytest.param({"app_key": ""}, APP_KEY_PATTERN_ERROR, id="app_key-empty"),
    pytest.param({"app_key": "billing\n"}, APP_KEY_PATTERN_ERROR, id="app_key-newline"),
    pytest.param({"app_key": 7}, "app_key: Input should be a valid string", id="app_key-int"),
    pytest.param({"app_key": None}, "app_key: Input should be a valid string", id="app_key-null"),
    pytest.param(
        {"app_key": "billing", "mode": "bogus"},
        "mode: Input should be 'full' or 'incremental'",
        id="mode-bogus",
    ),
    pytest.param(
        {"app_key": "billing", "mode": "FULL"},
        "mode: Input should be 'full' or 'incremental'",
        id="mode-case",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": "customer"},
        "resource_types: Input should be a valid list",
        id="resource_types-string",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": []},
        "resource_types: List should have at least 1 item after validation, not 0",
        id="resource_types-empty",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": ["customer"] * 51},
        "resource_types: List should have at most 50 items after validation, not 51",
        id="resource_types-51",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": [1]},
        "resource_types.0: Input should be a valid string",
        id="resource_types-int",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": ["payout"]},
        f"resource_types: unknown resource type 'payout' for app 'billing'; "
        f"known: {STRIPE_RESOURCES}",
        id="resource_types-unknown",
    ),
    pytest.param(
        {"app_key": "billing", "resource_types": ["customer", "Customer"]},
        f"resource_types: unknown resource type 'Customer' for app 'billing'; "
        f"known: {STRIPE_RESOURCES}",
        id="resource_types-case",
    ),
    pytest.param(
        {"app_key": "billing", "immediate": "yes"},
        "immediate: Input should be a valid boolean",
        id="immediate-yes",
    ),
    pytest.param(
        {"app_key": "billing", "immediate": 1},
        "immediate: Input should be a valid boolean",
        id="immediate-1",
    ),
    pytest.param({"app_key": "billing", "force": True}, "force: unknown field", id="unknown-field"),
]


@pytest.mark.parametrize(("request_body", "error"), BAD_SYNC_BODIES)
def test_sync_refuses_a_bad_body(
    sync_client: FlaskClient, fake: FakePostgrest, request_body: dict[str, Any], error: str
) -> None:
    response = sync_client.post("/sync", json=request_body, headers=auth())

    assert_error(response, 400, error)
    assert fake.jobs == {}
    assert not fake.rpc_calls("create_sync_job")
    assert len(fake.rpc_calls("admit_request")) == 1  # a refused request still counts


# -- the rate limit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wait", "retry_after"),
    [(12.3, "13"), (12.0, "12"), (0.2, "1"), (0.0001, "1"), (59.99, "60"), (12.0004, "13")],
)
def test_sync_rate_limited(
    sync_client: FlaskClient, fake: FakePostgrest, wait: float, retry_after: str
) -> None:
    """Retry-After is whole seconds, never shorter than the wait."""
    fake.admit_wait = wait

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 429, "too many sync requests; retry later")
    assert response.headers["Retry-After"] == retry_after
    assert fake.rpc_calls("admit_request") == [
        {"p_key": caller_key(), "p_per_minute": RATE_PER_MINUTE}
    ]
    assert fake.jobs == {}


# -- database failures ---------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES)
def test_sync_database_failure_is_generic(
    sync_client: FlaskClient,
    fake: FakePostgrest,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    fake.fail("POST", "/rpc/create_sync_job", outcome)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_generic_failure(response, status)
    assert len(fake.rpc_calls("create_sync_job")) == 1  # a write is never retried


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES[:6])
def test_sync_rate_limiter_failure_is_generic_and_creates_nothing(
    sync_client: FlaskClient,
    fake: FakePostgrest,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    fake.fail("POST", "/rpc/admit_request", outcome)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_generic_failure(response, status)
    assert fake.jobs == {}
    assert not fake.rpc_calls("create_sync_job")


# -- immediate ---------------------------------------------------------------------------


def test_sync_immediate_runs_the_job_reports_collections_and_deletes_it(
    sync_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    """Each task runs in the request; the answer reports each collection, and no job is
    left behind. Stripe refuses the subscriptions: that task fails, the job with it."""
    stripe.lists["/v1/customers"] = [customer(n) for n in range(1, 5)]
    stripe.errors["/v1/subscriptions"] = (400, "stripe said no")
    resources = ["customer", "subscription"]

    response = sync_client.post(
        "/sync",
        json={"app_key": "billing", "resource_types": resources, "immediate": True},
        headers=auth(),
    )

    assert response.status_code == 200
    result = response.get_json()
    assert isinstance(result.pop("duration_ms"), int)
    assert result == {
        "success": False,
        "app_key": "billing",
        "mode": "incremental",
        "immediate": True,
        "collections": [
            {
                "resource_type": "customer",
                "collection_key": "stripe_customer",
                "status": "completed",
                "entity_count": 4,
                "error_message": None,
            },
            {
                "resource_type": "subscription",
                "collection_key": "stripe_subscription",
                "status": "failed",
                "entity_count": 0,
                "error_message": "Stripe GET /v1/subscriptions failed: 400 stripe said no",
            },
        ],
        "processed_entities": 4,
    }
    # Created for this request alone (no other worker takes its tasks), then deleted.
    assert fake.rpc_calls("create_sync_job") == [job_params(resources, immediate=True)]
    assert fake.jobs == {}
    assert fake.tasks == {}
    assert {claim["p_job_id"] for claim in fake.rpc_calls("claim_task")} == {JOB_ID}
    # What it synced stays.
    assert sorted(key[2] for key in fake.entities) == ["cus_001", "cus_002", "cus_003", "cus_004"]


def test_sync_immediate_deletes_the_job_even_when_it_fails(
    sync_client: FlaskClient, fake: FakePostgrest, stripe: FakeStripe
) -> None:
    stripe.lists["/v1/plans"] = []
    fake.fail("GET", "/sync_jobs", httpx.Response(500, json=pg_error("XX000", SECRET_TEXT)))

    response = sync_client.post(
        "/sync",
        json={"app_key": "billing", "resource_types": ["plan"], "immediate": True},
        headers=auth(),
    )

    assert_generic_failure(response, 500)
    assert len(fake.rpc_calls("create_sync_job")) == 1
    assert fake.jobs == {}
