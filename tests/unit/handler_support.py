"""What the tests of the three HTTP functions share: the environment they are built
with, rows of the `billing` app, a stand-in Stripe, and assertions on answers."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import postgrest_rows
import pytest
import respx
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from supasaasy.connectors.stripe import StripeConnector

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
SOURCES = {"sync": "sync", "worker": "worker", "job_status": "job-status"}

SUPABASE_URL = "http://rest.test"
SERVICE_KEY = "service-key"
ADMIN_KEY = "admin-key-for-tests-0123456789"
WORKER_URL = "http://worker.test/worker"
STRIPE_HOST = "stripe.test"
STRIPE_KEY = "sk_test_billing_0123456789"
RATE_PER_MINUTE = 7
STRIPE_PAGE_SIZE = 2

CONFIG_TOML = f"""\
[[apps]]
app_key = "billing"
name = "Billing"
connector = "stripe"
config = {{ api_key_env = "BILLING_KEY", api_base = "http://{STRIPE_HOST}", \
page_size = {STRIPE_PAGE_SIZE} }}
"""

# The stripe connector's resources with a task of their own, in connector order
# (subscription_item is synced with its parent, subscription).
STRIPE_TASK_RESOURCES = [r.resource_type for r in StripeConnector.metadata.task_resources]
STRIPE_RESOURCES = ", ".join(r.resource_type for r in StripeConnector.metadata.resources)

JOB_ID = postgrest_rows.JOB_ID
TASK_ID = postgrest_rows.TASK_ID
CREATED_AT = postgrest_rows.CREATED_AT
OTHER_JOB_ID = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
TASK_ID_2 = "c0ffee00-1234-4abc-8def-0123456789ac"
TASK_ID_3 = "c0ffee00-1234-4abc-8def-0123456789ad"
STARTED_AT = "2026-11-29T10:15:31.500000+00:00"
COMPLETED_AT = "2026-11-29T10:20:02.000001+00:00"

UNAUTHORIZED = "unauthorized: invalid or missing API key"
UNAVAILABLE = "the database is unavailable; try again shortly"
NOT_AN_OBJECT = "request body must be a JSON object"
NOT_JSON = "request body is not valid JSON"
TOO_LARGE = {"success": False, "error": "request body too large (limit 1 MB)"}
ONE_MB = 1024 * 1024
SECRET_TEXT = "pg internal: relation secret_table_xyz"

Row = dict[str, Any]
Build = Callable[[str], FlaskClient]  # builds a function by its target name


# -- rows of the billing app -----------------------------------------------------------


def job_row(**overrides: Any) -> Row:
    """A pending job of the billing app with a task per Stripe resource."""
    defaults = {
        "app_key": "billing",
        "resource_types": list(STRIPE_TASK_RESOURCES),
        "total_tasks": len(STRIPE_TASK_RESOURCES),
    }
    return postgrest_rows.job_row(**(defaults | overrides))


def task_row(**overrides: Any) -> Row:
    """A pending `customer` task of JOB_ID."""
    return postgrest_rows.task_row(**({"resource_type": "customer"} | overrides))


def pg_error(code: str | None, message: str, details: Any = None, hint: Any = None) -> Row:
    return {"code": code, "message": message, "details": details, "hint": hint}


def active_job_error(active_job_id: str) -> httpx.Response:
    """What create_sync_job and retry_job answer while the app has an active job."""
    return httpx.Response(400, json=pg_error(
        "SS002", "app billing already has an active sync job", active_job_id,
        "wait for it to end, or cancel it",
    ))  # fmt: skip


# -- requests and answers --------------------------------------------------------------


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def caller_key(admin_key: str = ADMIN_KEY) -> str:
    """The rate limiter's key for a caller."""
    return f"sync:{hashlib.sha256(admin_key.encode()).hexdigest()[:16]}"


def assert_error(response: TestResponse, status: int, error: str, **extra: Any) -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json() == {"success": False, "error": error, **extra}


def assert_generic_failure(response: TestResponse, status: int) -> None:
    """A 503 (try again) or 500 that gives nothing of the failure away."""
    if status == 503:
        assert_error(response, 503, UNAVAILABLE)
        assert response.headers["Retry-After"] == "5"
    else:
        assert_error(response, 500, "internal server error")
    text = response.get_data(as_text=True)
    for secret in (SERVICE_KEY, ADMIN_KEY, SECRET_TEXT, "secret_table_xyz", "Traceback"):
        assert secret not in text


def join_nudges() -> None:
    """Wait for the fire-and-forget requests to another worker."""
    for thread in threading.enumerate():
        if thread.name == "supasaasy-nudge":
            thread.join(timeout=5)


# What a failed database request looks like to a handler, and the status it answers.
DATABASE_FAILURES = [
    pytest.param(
        httpx.Response(
            503,
            json=pg_error("PGRST000", f"{SECRET_TEXT} (key {SERVICE_KEY})", "Connection refused"),
        ),
        503,
        id="503-pgrst000",
    ),
    pytest.param(
        httpx.Response(
            502,
            text=f"<html><h1>502 Bad Gateway</h1>{SECRET_TEXT}</html>",
            headers={"Content-Type": "text/html"},
        ),
        503,
        id="502-html",
    ),
    pytest.param(
        httpx.Response(
            500, text=f"{SECRET_TEXT} {ADMIN_KEY}", headers={"Content-Type": "text/plain"}
        ),
        503,
        id="500-not-json",
    ),
    pytest.param(
        httpx.ConnectError(f"cannot connect: {SECRET_TEXT} {SERVICE_KEY}"), 503, id="connect-error"
    ),
    pytest.param(httpx.ReadTimeout(f"timed out: {SECRET_TEXT}"), 503, id="read-timeout"),
    pytest.param(
        httpx.Response(500, json=pg_error("XX000", f"{SECRET_TEXT} {SERVICE_KEY}")),
        500,
        id="500-internal",
    ),
    pytest.param(
        httpx.Response(
            409,
            json=pg_error(
                "23505", f'duplicate key value violates unique constraint "{SECRET_TEXT}"'
            ),
        ),
        500,
        id="other-unique-violation",
    ),
    pytest.param(httpx.Response(200, json=[]), 500, id="no-job-returned"),
]


# -- Stripe ----------------------------------------------------------------------------


def customer(n: int) -> Row:
    return {"id": f"cus_{n:03d}", "object": "customer", "email": f"c{n}@example.com",
            "created": 1_700_000_000 + n}  # fmt: skip


class FakeStripe:
    """Stripe's list endpoints: `lists` maps a path to every object it lists, paged by
    `limit` and `starting_after` as Stripe does; `errors` maps a path to the (status,
    message) it fails with. Every request is kept in `requests`."""

    def __init__(
        self,
        lists: dict[str, list[Row]] | None = None,
        errors: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.lists = lists or {}
        self.errors = errors or {}
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def install(self, router: respx.MockRouter) -> None:
        router.route(host=STRIPE_HOST).mock(side_effect=self.handle)

    def pages_of(self, path: str) -> list[str | None]:
        """The `starting_after` of every request to `path`."""
        return [r.url.params.get("starting_after") for r in self.requests if r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        path = request.url.path
        if path in self.errors:
            status, message = self.errors[path]
            return httpx.Response(
                status, json={"error": {"type": "invalid_request_error", "message": message}}
            )
        if path not in self.lists:
            message = f"Unrecognized request URL (GET: {path})"
            return httpx.Response(404, json={"error": {"message": message}})
        objects = self.lists[path]
        limit = int(request.url.params.get("limit", "10"))
        after = request.url.params.get("starting_after")
        ids = [o["id"] for o in objects]
        start = ids.index(after) + 1 if after else 0
        return httpx.Response(200, json={
            "object": "list", "url": path, "data": objects[start : start + limit],
            "has_more": start + limit < len(objects),
        })  # fmt: skip
