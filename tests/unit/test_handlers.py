"""Unit tests for the three HTTP functions (sync, worker, job-status).

Each function is built exactly as in production: functions-framework loads
`functions/<name>/main.py`, which reads its environment and configuration when it
is loaded. respx stands in for PostgREST; every test checks the status, the JSON
body and the PostgREST requests actually sent (and, for refusals, that nothing was
written).
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import httpx
import postgrest_rows
import pytest
import respx
from flask.testing import FlaskClient
from postgrest_rows import CREATED_AT, JOB_ID, TASK_ID
from werkzeug.test import TestResponse

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"

SUPABASE_URL = "http://rest.test"
REST_URL = f"{SUPABASE_URL}/rest/v1"
SERVICE_KEY = "service-key"
ADMIN_KEY = "admin-key-for-tests-0123456789"
WORKER_URL = "http://worker.test/worker"
RATE_PER_MINUTE = 7

CONFIG_TOML = """\
[[apps]]
app_key = "billing"
name = "Billing"
connector = "stripe"
config = { api_key_env = "BILLING_KEY", api_base = "http://stripe.test" }
"""

# The stripe connector's resources with a task of their own, in connector order
# (subscription_item is synced with its parent, subscription).
STRIPE_TASK_RESOURCES = ["customer", "product", "price", "plan", "subscription"]
STRIPE_RESOURCES = ", ".join([*STRIPE_TASK_RESOURCES, "subscription_item"])

OTHER_JOB_ID = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
TASK_ID_2 = "c0ffee00-1234-4abc-8def-0123456789ac"
TASK_ID_3 = "c0ffee00-1234-4abc-8def-0123456789ad"

STARTED_AT = "2026-11-29T10:15:31.500000+00:00"
COMPLETED_AT = "2026-11-29T10:20:02.000001+00:00"

UNAUTHORIZED = "unauthorized: invalid or missing API key"
UNAVAILABLE = "the database is unavailable; try again shortly"
APP_KEY_PATTERN_ERROR = "app_key: String should match pattern '^[A-Za-z0-9_-]{1,64}$'"
NOT_AN_OBJECT = "request body must be a JSON object"
NOT_JSON = "request body is not valid JSON"
TOO_LARGE = {"success": False, "error": "request body too large (limit 1 MB)"}
ONE_MB = 1024 * 1024

SOURCES = {"sync": "sync", "worker": "worker", "job_status": "job-status"}


# -- row factories (columns exactly as PostgREST returns them) --------------------


def job_row(**overrides: Any) -> dict[str, Any]:
    defaults = {
        "app_key": "billing",
        "resource_types": list(STRIPE_TASK_RESOURCES),
        "total_tasks": len(STRIPE_TASK_RESOURCES),
    }
    return postgrest_rows.job_row(**(defaults | overrides))


def task_row(**overrides: Any) -> dict[str, Any]:
    return postgrest_rows.task_row(
        **(
            {
                "resource_type": "customer",
            }
            | overrides
        )
    )


def status_row(tasks: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """A row of `select=*,tasks:sync_job_tasks(*)`."""
    return {**job_row(**overrides), "tasks": tasks or []}


def pg_error(code: str | None, message: str, details: Any = None, hint: Any = None) -> dict:
    return {"code": code, "message": message, "details": details, "hint": hint}


ACTIVE_JOB_CONFLICT = pg_error(
    "23505",
    'duplicate key value violates unique constraint "sync_jobs_one_active_per_app"',
    "Key (app_key)=(billing) already exists.",
)


# -- request helpers ---------------------------------------------------------------


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sent(route: respx.Route) -> httpx.Request:
    """The one request a route received."""
    assert route.call_count == 1, f"expected one request, got {route.call_count}"
    return route.calls.last.request


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def rest_calls(api: respx.MockRouter) -> list[tuple[str, str]]:
    """(method, path below /rest/v1) of every PostgREST request, in order."""
    prefix = "/rest/v1"
    return [
        (call.request.method, call.request.url.path.removeprefix(prefix))
        for call in api.calls
        if call.request.url.host == "rest.test"
    ]


def assert_rest(request: httpx.Request, method: str, path: str) -> None:
    """A request to the supasaasy schema, with the service-role key."""
    assert request.method == method
    assert request.url.path == f"/rest/v1{path}"
    assert request.headers["Accept-Profile"] == "supasaasy"
    assert request.headers["Content-Profile"] == "supasaasy"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"


def assert_rpc(route: respx.Route, function: str, params: dict[str, Any]) -> None:
    request = sent(route)
    assert_rest(request, "POST", f"/rpc/{function}")
    assert body(request) == params


def query(route: respx.Route) -> list[tuple[str, str]]:
    request = sent(route)
    assert_rest(request, "GET", "/sync_jobs")
    return list(request.url.params.multi_items())


def caller_key(admin_key: str = ADMIN_KEY) -> str:
    return f"sync:{hashlib.sha256(admin_key.encode()).hexdigest()[:16]}"


def assert_error(response: TestResponse, status: int, error: str, **extra: Any) -> None:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json() == {"success": False, "error": error, **extra}


def join_nudges() -> None:
    for thread in threading.enumerate():
        if thread.name == "supasaasy-nudge":
            thread.join(timeout=5)


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The environment the functions read when they are loaded."""
    config = tmp_path / "supasaasy.toml"
    config.write_text(CONFIG_TOML)
    for name, value in {
        "SUPABASE_URL": SUPABASE_URL,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "SUPASAASY_CONFIG": str(config),
        "BILLING_KEY": "sk_test_x",
        "SYNC_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("SUPASAASY_WORKER_URL", "ENTRY_POINT", "LOG_EXECUTION_ID"):
        monkeypatch.delenv(name, raising=False)
    # functions-framework registers each source as module `main` and adds its folder
    # to sys.path: undo both after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "main", None)
    return monkeypatch


Build = Callable[[str], FlaskClient]


@pytest.fixture
def build(env: pytest.MonkeyPatch) -> Iterator[Build]:
    """Build a function as production does, with the environment as it is now."""

    def make(target: str) -> FlaskClient:
        source = FUNCTIONS / SOURCES[target] / "main.py"
        return functions_framework.create_app(target, str(source)).test_client()

    yield make
    gc.unfreeze()  # the entry points freeze what start-up built; a test run goes on


@pytest.fixture
def sync_client(build: Build) -> FlaskClient:
    return build("sync")


@pytest.fixture
def worker_client(build: Build) -> FlaskClient:
    return build("worker")


@pytest.fixture
def status_client(build: Build) -> FlaskClient:
    return build("job_status")


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """PostgREST. A request no route matches fails the handler (and so its 2xx/4xx)."""
    with respx.mock(base_url=REST_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def admitted(api: respx.MockRouter) -> respx.Route:
    """The sync rate limiter lets the request through."""
    return api.post("/rpc/admit_request").respond(200, json=0)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """postgrest-py sleeps between retries of GET requests: record instead of waiting."""
    delays: list[float] = []
    monkeypatch.setattr("postgrest._sync.request_builder.time.sleep", delays.append)
    return delays


# == POST /sync ======================================================================


@pytest.mark.parametrize("target", ["sync", "worker"])
def test_functions_that_sync_keep_start_up_objects_out_of_garbage_collection(
    build: Build, target: str
) -> None:
    gc.unfreeze()
    build(target)
    # Modules, settings and clients: scanned again by every full collection otherwise.
    assert gc.get_freeze_count() > 10_000


def test_sync_creates_a_job(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "success": True,
        "job_id": JOB_ID,
        "app_key": "billing",
        "mode": "incremental",
        "status": "pending",
        "total_tasks": 5,
        "resource_types": STRIPE_TASK_RESOURCES,
    }
    assert rest_calls(api) == [("POST", "/rpc/admit_request"), ("POST", "/rpc/create_sync_job")]
    assert_rpc(admitted, "admit_request", {"p_key": caller_key(), "p_per_minute": 7})
    assert_rpc(
        create,
        "create_sync_job",
        {
            "p_app_key": "billing",
            "p_mode": "incremental",
            "p_resource_types": STRIPE_TASK_RESOURCES,
        },
    )


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
    api: respx.MockRouter,
    admitted: respx.Route,
    request_body: dict[str, Any],
    mode: str,
    resources: list[str],
) -> None:
    row = job_row(mode=mode, resource_types=resources, total_tasks=len(resources))
    create = api.post("/rpc/create_sync_job").respond(200, json=[row])

    response = sync_client.post(
        "/sync", json={"app_key": "billing", **request_body}, headers=auth()
    )

    assert response.status_code == 200
    assert response.get_json()["mode"] == mode
    assert response.get_json()["resource_types"] == resources
    assert response.get_json()["total_tasks"] == len(resources)
    assert_rpc(
        create,
        "create_sync_job",
        {"p_app_key": "billing", "p_mode": mode, "p_resource_types": resources},
    )


def test_sync_accepts_a_lowercase_bearer_scheme(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post(
        "/sync", json={"app_key": "billing"}, headers={"Authorization": f"bearer {ADMIN_KEY}"}
    )

    assert response.status_code == 200
    assert create.called


def test_sync_nudges_the_worker(
    env: pytest.MonkeyPatch, build: Build, api: respx.MockRouter, admitted: respx.Route
) -> None:
    env.setenv("SUPASAASY_WORKER_URL", WORKER_URL)
    client = build("sync")
    api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    nudge = api.post(WORKER_URL).respond(200, json={"success": True})

    response = client.post("/sync", json={"app_key": "billing"}, headers=auth())
    join_nudges()

    assert response.status_code == 200
    assert response.get_json()["job_id"] == JOB_ID
    request = sent(nudge)
    assert request.headers["Authorization"] == f"Bearer {ADMIN_KEY}"
    assert body(request) == {"job_id": JOB_ID}


def test_sync_does_not_nudge_when_no_worker_url(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    nudge = api.post(WORKER_URL).respond(200)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())
    join_nudges()

    assert response.status_code == 200
    assert not nudge.called


def test_sync_while_a_job_is_active_is_a_conflict(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(409, json=ACTIVE_JOB_CONFLICT)
    active = api.get("/sync_jobs").respond(
        200, json=[job_row(id=OTHER_JOB_ID, status="processing", started_at=STARTED_AT)]
    )

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 409, "app 'billing' already has an active sync job", job_id=OTHER_JOB_ID)
    assert create.call_count == 1
    assert query(active) == [
        ("select", "*"),
        ("app_key", "eq.billing"),
        ("status", "in.(pending,processing)"),
        ("limit", "1"),
    ]
    assert rest_calls(api) == [
        ("POST", "/rpc/admit_request"),
        ("POST", "/rpc/create_sync_job"),
        ("GET", "/sync_jobs"),
    ]


def test_sync_conflict_when_the_active_job_has_just_ended(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    api.post("/rpc/create_sync_job").respond(409, json=ACTIVE_JOB_CONFLICT)
    api.get("/sync_jobs").respond(200, json=[])

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 409, "app 'billing' already has an active sync job", job_id=None)


def test_sync_of_an_unknown_app(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json={"app_key": "payroll"}, headers=auth())

    assert_error(response, 404, "unknown app_key: payroll")
    assert not create.called
    assert rest_calls(api) == [("POST", "/rpc/admit_request")]


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
        {"app_key": "billing", "resource_types": ["invoice"]},
        f"resource_types: unknown resource type 'invoice' for app 'billing'; "
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
    sync_client: FlaskClient,
    api: respx.MockRouter,
    admitted: respx.Route,
    request_body: dict[str, Any],
    error: str,
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json=request_body, headers=auth())

    assert_error(response, 400, error)
    assert not create.called
    assert rest_calls(api) == [("POST", "/rpc/admit_request")]


BAD_RAW_BODIES = [
    pytest.param(b"[]", NOT_AN_OBJECT, id="array"),
    pytest.param(b'[{"app_key": "billing"}]', NOT_AN_OBJECT, id="array-of-object"),
    pytest.param(b'"x"', NOT_AN_OBJECT, id="string"),
    pytest.param(b"null", NOT_AN_OBJECT, id="null"),
    pytest.param(b"42", NOT_AN_OBJECT, id="number"),
    pytest.param(b"", NOT_AN_OBJECT, id="empty"),
    pytest.param(b" \r\n\t ", NOT_AN_OBJECT, id="whitespace"),
    pytest.param(b"{not json", NOT_JSON, id="invalid"),
    pytest.param(b'{"app_key": "billing",}', NOT_JSON, id="trailing-comma"),
    pytest.param(b'{"app_key": "billing"} {}', NOT_JSON, id="two-values"),
    pytest.param(b'{"app_key": "\xff"}', NOT_JSON, id="not-utf8"),
]


@pytest.mark.parametrize(("raw", "error"), BAD_RAW_BODIES)
def test_sync_refuses_a_body_that_is_not_a_json_object(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route, raw: bytes, error: str
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post(
        "/sync", data=raw, headers={**auth(), "Content-Type": "application/json"}
    )

    assert_error(response, 400, error)
    assert not create.called
    assert rest_calls(api) == [("POST", "/rpc/admit_request")]


def test_sync_refuses_deeply_nested_json_as_a_client_error(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    response = sync_client.post("/sync", data=b"[" * 100_000, headers=auth())

    assert_error(response, 400, NOT_JSON)


def test_sync_accepts_a_body_of_exactly_one_megabyte(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    data = b'{"app_key": "billing"}'
    data += b" " * (ONE_MB - len(data))

    response = sync_client.post("/sync", data=data, headers=auth())

    assert response.status_code == 200
    assert create.called


def test_sync_refuses_a_body_over_one_megabyte(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    data = b'{"app_key": "billing"}'
    data += b" " * (ONE_MB + 1 - len(data))

    response = sync_client.post("/sync", data=data, headers=auth())

    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert not create.called
    assert rest_calls(api) == [("POST", "/rpc/admit_request")]


def test_sync_refuses_a_chunked_body_over_one_megabyte(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    """Without Content-Length, the body is read up to the limit. (Servers that handle
    chunked bodies, gunicorn or werkzeug's, set wsgi.input_terminated.)"""
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    data = b'{"app_key": "billing"}' + b" " * (2 * ONE_MB)

    response = sync_client.post(
        "/sync",
        input_stream=io.BytesIO(data),
        headers={**auth(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.request.content_length is None
    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert not create.called


def test_sync_accepts_a_small_chunked_body(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post(
        "/sync",
        input_stream=io.BytesIO(b'{"app_key": "billing", "resource_types": ["plan"]}'),
        headers={**auth(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 200
    assert body(sent(create))["p_resource_types"] == ["plan"]


BAD_AUTHORIZATIONS = [
    pytest.param({}, id="none"),
    pytest.param({"Authorization": ""}, id="empty"),
    pytest.param({"Authorization": "Bearer wrong-key"}, id="wrong-key"),
    pytest.param({"Authorization": f"Bearer {ADMIN_KEY}x"}, id="longer-key"),
    pytest.param({"Authorization": f"Bearer {ADMIN_KEY[:-1]}"}, id="prefix-of-key"),
    pytest.param({"Authorization": "Bearer"}, id="no-token"),
    pytest.param({"Authorization": "Bearer "}, id="blank-token"),
    pytest.param({"Authorization": ADMIN_KEY}, id="no-scheme"),
    pytest.param({"Authorization": f"Basic {ADMIN_KEY}"}, id="basic"),
    pytest.param({"Authorization": f"Token {ADMIN_KEY}"}, id="token-scheme"),
    pytest.param({"apikey": ADMIN_KEY}, id="apikey-header"),
]


@pytest.mark.parametrize("headers", BAD_AUTHORIZATIONS)
def test_sync_without_the_admin_key_is_unauthorized(
    sync_client: FlaskClient, api: respx.MockRouter, headers: dict[str, str]
) -> None:
    admit = api.post("/rpc/admit_request").respond(200, json=0)
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=headers)

    assert_error(response, 401, UNAUTHORIZED)
    assert ADMIN_KEY not in response.get_data(as_text=True)
    assert not admit.called
    assert not create.called
    assert rest_calls(api) == []


FUNCTION_CALLS = [
    pytest.param("sync", "POST", "/sync", id="sync"),
    pytest.param("worker", "POST", "/worker", id="worker"),
    pytest.param("job_status", "GET", f"/sync/jobs/{JOB_ID}", id="job-status"),
    pytest.param("job_status", "POST", f"/sync/jobs/{JOB_ID}/cancel", id="cancel"),
]


@pytest.mark.parametrize(("target", "method", "path"), FUNCTION_CALLS)
@pytest.mark.parametrize("authorization", ["Bearer ", "Bearer anything", f"Bearer {ADMIN_KEY}"])
def test_an_unset_admin_key_refuses_everything(
    env: pytest.MonkeyPatch,
    build: Build,
    api: respx.MockRouter,
    target: str,
    method: str,
    path: str,
    authorization: str,
) -> None:
    env.setenv("ADMIN_API_KEY", "")
    client = build(target)

    response = client.open(
        path, method=method, json={"app_key": "billing"}, headers={"Authorization": authorization}
    )

    assert_error(response, 401, UNAUTHORIZED)
    assert rest_calls(api) == []


@pytest.mark.parametrize(("target", "method", "path"), FUNCTION_CALLS)
def test_every_function_refuses_a_wrong_key(
    build: Build, api: respx.MockRouter, target: str, method: str, path: str
) -> None:
    response = build(target).open(path, method=method, json={}, headers=auth("nope"))

    assert_error(response, 401, UNAUTHORIZED)
    assert rest_calls(api) == []


@pytest.mark.parametrize(
    ("wait", "retry_after"),
    [(12.3, "13"), (12.0, "12"), (0.2, "1"), (0.0001, "1"), (59.99, "60")],
)
def test_sync_rate_limited(
    sync_client: FlaskClient, api: respx.MockRouter, wait: float, retry_after: str
) -> None:
    admit = api.post("/rpc/admit_request").respond(200, json=wait)
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_error(response, 429, "too many sync requests; retry later")
    assert response.headers["Retry-After"] == retry_after
    assert_rpc(admit, "admit_request", {"p_key": caller_key(), "p_per_minute": RATE_PER_MINUTE})
    assert not create.called


def test_sync_retry_after_is_never_shorter_than_the_wait(
    sync_client: FlaskClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/admit_request").respond(200, json=12.0004)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "13"


def test_sync_rate_limit_comes_from_the_environment(
    env: pytest.MonkeyPatch, build: Build, api: respx.MockRouter
) -> None:
    env.setenv("SYNC_RATE_LIMIT_PER_MINUTE", "60")
    client = build("sync")
    admit = api.post("/rpc/admit_request").respond(200, json=1)

    response = client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert response.status_code == 429
    assert body(sent(admit)) == {"p_key": caller_key(), "p_per_minute": 60}


@pytest.mark.parametrize("rate", ["0", "-1", "ten", "1.5"])
def test_a_bad_rate_limit_stops_the_function_loading(
    env: pytest.MonkeyPatch, build: Build, rate: str
) -> None:
    from supasaasy.errors import SupasaasyError

    env.setenv("SYNC_RATE_LIMIT_PER_MINUTE", rate)

    with pytest.raises(SupasaasyError, match="SYNC_RATE_LIMIT_PER_MINUTE"):
        build("sync")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_sync_only_answers_post(
    sync_client: FlaskClient, api: respx.MockRouter, method: str
) -> None:
    response = sync_client.open("/sync", method=method, headers=auth())

    assert_error(response, 405, "method not allowed: use POST")
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert rest_calls(api) == []


@pytest.mark.parametrize(
    ("target", "path", "methods"),
    [
        ("sync", "/sync", "POST, OPTIONS"),
        ("worker", "/worker", "POST, OPTIONS"),
        ("job_status", f"/sync/jobs/{JOB_ID}", "GET, POST, OPTIONS"),
    ],
)
def test_preflight_needs_no_key(
    build: Build, api: respx.MockRouter, target: str, path: str, methods: str
) -> None:
    response = build(target).options(
        path,
        headers={"Origin": "https://admin.example", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 204
    assert response.get_data() == b""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == methods
    assert response.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, apikey, x-client-info"
    )
    assert response.headers["Access-Control-Max-Age"] == "86400"
    assert rest_calls(api) == []


SECRET_TEXT = "pg internal: relation secret_table_xyz"

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


def failure(route: respx.Route, outcome: httpx.Response | Exception) -> None:
    if isinstance(outcome, Exception):
        route.mock(side_effect=outcome)
    else:
        route.mock(return_value=outcome)


def assert_generic_failure(response: TestResponse, status: int) -> None:
    if status == 503:
        assert_error(response, 503, UNAVAILABLE)
        assert response.headers["Retry-After"] == "5"
    else:
        assert_error(response, 500, "internal server error")
    text = response.get_data(as_text=True)
    for secret in (SERVICE_KEY, ADMIN_KEY, SECRET_TEXT, "secret_table_xyz", "Traceback"):
        assert secret not in text


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES)
def test_sync_database_failure_is_generic(
    sync_client: FlaskClient,
    api: respx.MockRouter,
    admitted: respx.Route,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    create = api.post("/rpc/create_sync_job")
    failure(create, outcome)

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_generic_failure(response, status)
    assert create.call_count == 1  # a write is never retried
    assert rest_calls(api) == [("POST", "/rpc/admit_request"), ("POST", "/rpc/create_sync_job")]


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES[:6])
def test_sync_rate_limiter_failure_is_generic_and_creates_nothing(
    sync_client: FlaskClient,
    api: respx.MockRouter,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    failure(api.post("/rpc/admit_request"), outcome)
    create = api.post("/rpc/create_sync_job").respond(200, json=[job_row()])

    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=auth())

    assert_generic_failure(response, status)
    assert not create.called


def test_sync_immediate_runs_the_job_reports_collections_and_deletes_it(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    """A job whose tasks are already done: the worker finds nothing to claim, so no
    connector runs; the per-collection report comes from the job's status."""
    resources = ["customer", "subscription"]
    api.post("/rpc/create_sync_job").respond(
        200, json=[job_row(resource_types=resources, total_tasks=2)]
    )
    requeue = api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    claim = api.post("/rpc/claim_task").respond(200, json=[])
    cleanup = api.post("/rpc/cleanup_old_jobs").respond(200, json=0)
    tasks = [
        task_row(
            id=TASK_ID_2,
            resource_type="subscription",
            position=2,
            status="failed",
            entity_count=1,
            attempts=3,
            error_message="stripe said no",
        ),
        task_row(resource_type="customer", status="completed", entity_count=4, attempts=1),
    ]
    status = api.get("/sync_jobs").respond(
        200,
        json=[
            status_row(
                tasks,
                resource_types=resources,
                status="failed",
                total_tasks=2,
                completed_tasks=1,
                failed_tasks=1,
                processed_entities=5,
            )
        ],
    )
    delete = api.delete("/sync_jobs").respond(204)

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
                "entity_count": 1,
                "error_message": "stripe said no",
            },
        ],
        "processed_entities": 5,
    }
    assert rest_calls(api) == [
        ("POST", "/rpc/admit_request"),
        ("POST", "/rpc/create_sync_job"),
        ("POST", "/rpc/requeue_stale_tasks"),
        ("POST", "/rpc/claim_task"),
        ("POST", "/rpc/cleanup_old_jobs"),
        ("GET", "/sync_jobs"),
        ("DELETE", "/sync_jobs"),
    ]
    assert_rpc(
        requeue, "requeue_stale_tasks", {"p_stale_after": "300.000000 seconds", "p_max_attempts": 3}
    )
    assert_rpc(claim, "claim_task", {"p_job_id": JOB_ID})
    assert_rpc(cleanup, "cleanup_old_jobs", {"p_retention_days": 7})
    assert query(status) == [("select", "*,tasks:sync_job_tasks(*)"), ("id", f"eq.{JOB_ID}")]
    deleted = sent(delete)
    assert_rest(deleted, "DELETE", "/sync_jobs")
    assert list(deleted.url.params.multi_items()) == [("id", f"eq.{JOB_ID}")]


def test_sync_immediate_deletes_the_job_even_when_it_fails(
    sync_client: FlaskClient, api: respx.MockRouter, admitted: respx.Route
) -> None:
    api.post("/rpc/create_sync_job").respond(200, json=[job_row()])
    api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    api.post("/rpc/claim_task").respond(200, json=[])
    api.post("/rpc/cleanup_old_jobs").respond(200, json=0)
    api.get("/sync_jobs").respond(500, json=pg_error("XX000", SECRET_TEXT))
    delete = api.delete("/sync_jobs").respond(204)

    response = sync_client.post(
        "/sync", json={"app_key": "billing", "immediate": True}, headers=auth()
    )

    assert_generic_failure(response, 500)
    assert list(sent(delete).url.params.multi_items()) == [("id", f"eq.{JOB_ID}")]


# == POST /worker ====================================================================


def worker_result(response: TestResponse) -> dict[str, Any]:
    result = response.get_json()
    duration = result.pop("duration_ms")
    assert isinstance(duration, int)
    assert duration >= 0
    return result


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
    worker_client: FlaskClient, api: respx.MockRouter, data: bytes | None
) -> None:
    requeue = api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    claim = api.post("/rpc/claim_task").respond(200, json=[])
    cleanup = api.post("/rpc/cleanup_old_jobs").respond(200, json=0)

    response = worker_client.post("/worker", data=data, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 0,
        "jobs_completed": [],
        "shutdown_reason": "no_tasks",
    }
    assert rest_calls(api) == [
        ("POST", "/rpc/requeue_stale_tasks"),
        ("POST", "/rpc/claim_task"),
        ("POST", "/rpc/cleanup_old_jobs"),
    ]
    assert_rpc(
        requeue, "requeue_stale_tasks", {"p_stale_after": "300.000000 seconds", "p_max_attempts": 3}
    )
    assert_rpc(claim, "claim_task", {"p_job_id": None})
    assert_rpc(cleanup, "cleanup_old_jobs", {"p_retention_days": 7})


def test_worker_settings_come_from_the_config_file(
    env: pytest.MonkeyPatch, build: Build, api: respx.MockRouter, tmp_path: Path
) -> None:
    config = tmp_path / "tuned.toml"
    config.write_text(
        "job_retention_days = 30\n"
        + CONFIG_TOML
        + "\n[worker]\nstale_after_seconds = 90.5\nmax_attempts = 5\n"
    )
    env.setenv("SUPASAASY_CONFIG", str(config))
    client = build("worker")
    requeue = api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    api.post("/rpc/claim_task").respond(200, json=[])
    cleanup = api.post("/rpc/cleanup_old_jobs").respond(200, json=3)

    response = client.post("/worker", headers=auth())

    assert response.status_code == 200
    assert worker_result(response)["shutdown_reason"] == "no_tasks"
    assert_rpc(
        requeue, "requeue_stale_tasks", {"p_stale_after": "90.500000 seconds", "p_max_attempts": 5}
    )
    assert_rpc(cleanup, "cleanup_old_jobs", {"p_retention_days": 30})


@pytest.mark.parametrize("job_id", [JOB_ID, JOB_ID.upper(), JOB_ID.replace("-", "")])
def test_worker_claims_tasks_of_one_job(
    worker_client: FlaskClient, api: respx.MockRouter, job_id: str
) -> None:
    api.post("/rpc/requeue_stale_tasks").respond(200, json=2)
    claim = api.post("/rpc/claim_task").respond(200, json=[])
    api.post("/rpc/cleanup_old_jobs").respond(200, json=0)

    response = worker_client.post("/worker", json={"job_id": job_id}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response)["shutdown_reason"] == "no_tasks"
    assert_rpc(claim, "claim_task", {"p_job_id": JOB_ID})


def test_worker_stops_when_max_tasks_is_reached(
    worker_client: FlaskClient, api: respx.MockRouter
) -> None:
    """The claimed task's app is no longer configured: it fails without a connector,
    and counts as processed."""
    api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    claim = api.post("/rpc/claim_task").respond(
        200, json=[task_row(status="processing", attempts=1)]
    )
    job = api.get("/sync_jobs").respond(
        200, json=[job_row(app_key="retired", status="processing", total_tasks=1)]
    )
    complete = api.post("/rpc/complete_task").respond(
        200, json=[job_row(app_key="retired", status="failed", total_tasks=1, failed_tasks=1)]
    )

    response = worker_client.post(
        "/worker", json={"job_id": JOB_ID, "max_tasks": 1}, headers=auth()
    )

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 1,
        "jobs_completed": [JOB_ID],
        "shutdown_reason": "max_tasks_reached",
    }
    assert rest_calls(api) == [
        ("POST", "/rpc/requeue_stale_tasks"),
        ("POST", "/rpc/claim_task"),
        ("GET", "/sync_jobs"),
        ("POST", "/rpc/complete_task"),
    ]
    assert_rpc(claim, "claim_task", {"p_job_id": JOB_ID})
    assert query(job) == [("select", "*"), ("id", f"eq.{JOB_ID}")]
    assert_rpc(
        complete,
        "complete_task",
        {
            "p_task_id": TASK_ID,
            "p_status": "failed",
            "p_entity_count": None,
            "p_error_message": "app 'retired' is no longer configured",
        },
    )


def test_worker_claims_until_no_task_is_left(
    worker_client: FlaskClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    claim = api.post("/rpc/claim_task").mock(
        side_effect=[
            httpx.Response(200, json=[task_row(status="processing", attempts=1)]),
            httpx.Response(200, json=[]),
        ]
    )
    api.get("/sync_jobs").respond(200, json=[job_row(app_key="retired", status="processing")])
    # The job still has other tasks: it is not finished.
    api.post("/rpc/complete_task").respond(
        200, json=[job_row(app_key="retired", status="processing", failed_tasks=1)]
    )
    api.post("/rpc/cleanup_old_jobs").respond(200, json=0)

    response = worker_client.post("/worker", json={"max_tasks": 10}, headers=auth())

    assert response.status_code == 200
    assert worker_result(response) == {
        "success": True,
        "tasks_processed": 1,
        "jobs_completed": [],
        "shutdown_reason": "no_tasks",
    }
    assert claim.call_count == 2
    assert [body(call.request) for call in claim.calls] == [{"p_job_id": None}] * 2
    assert rest_calls(api) == [
        ("POST", "/rpc/requeue_stale_tasks"),
        ("POST", "/rpc/claim_task"),
        ("GET", "/sync_jobs"),
        ("POST", "/rpc/complete_task"),
        ("POST", "/rpc/claim_task"),
        ("POST", "/rpc/cleanup_old_jobs"),
    ]


def test_worker_when_the_database_is_unavailable(
    worker_client: FlaskClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/requeue_stale_tasks").respond(
        503, json=pg_error("PGRST000", SECRET_TEXT, "Connection refused")
    )
    claim = api.post("/rpc/claim_task").respond(200, json=[])

    response = worker_client.post("/worker", json={}, headers=auth())

    assert response.status_code == 503
    assert worker_result(response) == {
        "success": False,
        "tasks_processed": 0,
        "jobs_completed": [],
        "shutdown_reason": "database_unavailable",
    }
    assert SECRET_TEXT not in response.get_data(as_text=True)
    assert not claim.called


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
    worker_client: FlaskClient, api: respx.MockRouter, request_body: dict[str, Any], error: str
) -> None:
    requeue = api.post("/rpc/requeue_stale_tasks").respond(200, json=0)
    claim = api.post("/rpc/claim_task").respond(200, json=[])

    response = worker_client.post("/worker", json=request_body, headers=auth())

    assert_error(response, 400, error)
    assert not requeue.called
    assert not claim.called
    assert rest_calls(api) == []


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b"[]", NOT_AN_OBJECT, id="array"),
        pytest.param(b'"x"', NOT_AN_OBJECT, id="string"),
        pytest.param(b"{bad", NOT_JSON, id="invalid"),
    ],
)
def test_worker_refuses_a_body_that_is_not_a_json_object(
    worker_client: FlaskClient, api: respx.MockRouter, raw: bytes, error: str
) -> None:
    response = worker_client.post("/worker", data=raw, headers=auth())

    assert_error(response, 400, error)
    assert rest_calls(api) == []


def test_worker_refuses_a_body_over_one_megabyte(
    worker_client: FlaskClient, api: respx.MockRouter
) -> None:
    response = worker_client.post("/worker", data=b"{" + b" " * ONE_MB + b"}", headers=auth())

    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert rest_calls(api) == []


def test_worker_only_answers_post(worker_client: FlaskClient, api: respx.MockRouter) -> None:
    response = worker_client.get("/worker", headers=auth())

    assert_error(response, 405, "method not allowed: use POST")
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert rest_calls(api) == []


# == GET /sync/jobs/{id}, POST .../cancel and .../retry =============================

STATUS_SELECT = ("select", "*,tasks:sync_job_tasks(*)")


def status_route(api: respx.MockRouter) -> respx.Route:
    return api.get("/sync_jobs", params={"select": "*,tasks:sync_job_tasks(*)"})


def get_job_route(api: respx.MockRouter) -> respx.Route:
    return api.get("/sync_jobs", params={"select": "*", "id": f"eq.{JOB_ID}"})


def active_job_route(api: respx.MockRouter) -> respx.Route:
    return api.get("/sync_jobs", params={"select": "*", "app_key": "eq.billing"})


def expected_status(**overrides: Any) -> dict[str, Any]:
    body = {
        "success": True,
        "job_id": JOB_ID,
        "app_key": "billing",
        "mode": "incremental",
        "status": "pending",
        "progress_percentage": 0.0,
        "total_tasks": 5,
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
def test_job_status(status_client: FlaskClient, api: respx.MockRouter, path: str) -> None:
    route = status_route(api).respond(200, json=[status_row()])

    response = status_client.get(path, headers=auth())

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == expected_status()
    assert query(route) == [STATUS_SELECT, ("id", f"eq.{JOB_ID}")]
    assert rest_calls(api) == [("GET", "/sync_jobs")]


def test_job_status_of_a_finished_job(status_client: FlaskClient, api: respx.MockRouter) -> None:
    status_route(api).respond(
        200,
        json=[
            status_row(
                three_tasks(),
                mode="full",
                status="failed",
                total_tasks=3,
                completed_tasks=2,
                failed_tasks=1,
                processed_entities=1234,
                started_at=STARTED_AT,
                completed_at=COMPLETED_AT,
                error_message="1 of 3 tasks failed",
            )
        ],
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
    status_client: FlaskClient, api: respx.MockRouter, include: str, listed: bool
) -> None:
    route = status_route(api).respond(
        200, json=[status_row(three_tasks(), total_tasks=3, completed_tasks=1, failed_tasks=1)]
    )

    response = status_client.get(f"/sync/jobs/{JOB_ID}?include_tasks={include}", headers=auth())

    assert response.status_code == 200
    result = response.get_json()
    assert result["progress_percentage"] == pytest.approx(66.67)
    if listed:
        assert result["tasks"] == EXPECTED_TASKS
    else:
        assert "tasks" not in result
    assert sent(route).url.params["select"] == "*,tasks:sync_job_tasks(*)"


def test_job_status_eta_from_the_pace_of_finished_tasks(
    status_client: FlaskClient, api: respx.MockRouter
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=100)
    status_route(api).respond(
        200,
        json=[
            status_row(
                status="processing",
                total_tasks=4,
                completed_tasks=1,
                failed_tasks=1,
                started_at=started.isoformat(),
            )
        ],
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
    status_client: FlaskClient, api: respx.MockRouter, row: dict[str, Any]
) -> None:
    status_route(api).respond(200, json=[status_row(**row)])

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert response.status_code == 200
    assert response.get_json()["eta_seconds"] is None


def test_job_status_of_an_unknown_job(status_client: FlaskClient, api: respx.MockRouter) -> None:
    route = status_route(api).respond(200, json=[])

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")
    assert query(route) == [STATUS_SELECT, ("id", f"eq.{JOB_ID}")]


MISSING_ID = "missing job id: use /sync/jobs/{job_id} or ?job_id="


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
    status_client: FlaskClient, api: respx.MockRouter, method: str, path: str, error: str
) -> None:
    response = status_client.open(path, method=method, headers=auth())

    assert_error(response, 400, error)
    assert rest_calls(api) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/sync/jobs/{JOB_ID}/cancel"),
        ("GET", f"/sync/jobs/{JOB_ID}/retry"),
        ("POST", f"/sync/jobs/{JOB_ID}"),
        ("POST", f"/?job_id={JOB_ID}"),
    ],
)
def test_job_status_method_must_fit_the_action(
    status_client: FlaskClient, api: respx.MockRouter, method: str, path: str
) -> None:
    cancel = api.post("/rpc/cancel_job").respond(200, json=[job_row(status="cancelled")])
    retry = api.post("/rpc/retry_job").respond(200, json=[job_row()])

    response = status_client.open(path, method=method, headers=auth())

    assert_error(response, 405, "use GET for a job's status, POST for /cancel and /retry")
    assert not cancel.called
    assert not retry.called
    assert rest_calls(api) == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", f"/sync/jobs/{JOB_ID}/cancel", "POST, OPTIONS"),
        ("POST", f"/sync/jobs/{JOB_ID}", "GET, OPTIONS"),
    ],
)
def test_job_status_405_names_the_allowed_methods(
    status_client: FlaskClient, api: respx.MockRouter, method: str, path: str, allow: str
) -> None:
    response = status_client.open(path, method=method, headers=auth())

    assert response.status_code == 405
    assert response.headers.get("Allow") == allow


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_job_status_only_answers_get_and_post(
    status_client: FlaskClient, api: respx.MockRouter, method: str
) -> None:
    response = status_client.open(f"/sync/jobs/{JOB_ID}", method=method, headers=auth())

    assert_error(response, 405, "method not allowed: use GET, POST")
    assert response.headers["Allow"] == "GET, POST, OPTIONS"
    assert rest_calls(api) == []


def test_job_status_database_unavailable(
    status_client: FlaskClient, api: respx.MockRouter, no_sleep: list[float]
) -> None:
    route = status_route(api).respond(
        503, json=pg_error("PGRST000", f"{SECRET_TEXT} {SERVICE_KEY}", "Connection refused")
    )

    response = status_client.get(f"/sync/jobs/{JOB_ID}", headers=auth())

    assert_generic_failure(response, 503)
    # A read: postgrest-py retried it before giving up.
    assert route.call_count == 4
    assert no_sleep == [1, 2, 4]


# -- cancel ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [f"/sync/jobs/{JOB_ID}/cancel", f"/jobs/{JOB_ID.upper()}/cancel", f"/cancel?job_id={JOB_ID}"],
)
def test_cancel_a_job(status_client: FlaskClient, api: respx.MockRouter, path: str) -> None:
    cancelled = {"status": "cancelled", "completed_at": COMPLETED_AT}
    cancel = api.post("/rpc/cancel_job").respond(200, json=[job_row(**cancelled)])
    tasks = [task_row(status="cancelled")]
    status = status_route(api).respond(200, json=[status_row(tasks, **cancelled, total_tasks=1)])

    response = status_client.post(path, headers=auth())

    assert response.status_code == 200
    assert response.get_json() == expected_status(
        status="cancelled",
        total_tasks=1,
        completed_at=COMPLETED_AT,
        tasks=[
            {
                "resource_type": "customer",
                "status": "cancelled",
                "entity_count": 0,
                "attempts": 0,
                "error_message": None,
            }
        ],
    )
    assert rest_calls(api) == [("POST", "/rpc/cancel_job"), ("GET", "/sync_jobs")]
    assert_rpc(cancel, "cancel_job", {"p_job_id": JOB_ID})
    assert query(status) == [STATUS_SELECT, ("id", f"eq.{JOB_ID}")]


def test_cancel_a_finished_job_is_a_conflict(
    status_client: FlaskClient, api: respx.MockRouter
) -> None:
    cancel = api.post("/rpc/cancel_job").respond(200, json=[])
    job = get_job_route(api).respond(200, json=[job_row(status="completed")])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_error(response, 409, "job is not active (already finished or cancelled)")
    assert_rpc(cancel, "cancel_job", {"p_job_id": JOB_ID})
    assert query(job) == [("select", "*"), ("id", f"eq.{JOB_ID}")]
    assert rest_calls(api) == [("POST", "/rpc/cancel_job"), ("GET", "/sync_jobs")]


def test_cancel_an_unknown_job(status_client: FlaskClient, api: respx.MockRouter) -> None:
    api.post("/rpc/cancel_job").respond(200, json=[])
    get_job_route(api).respond(200, json=[])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")
    assert rest_calls(api) == [("POST", "/rpc/cancel_job"), ("GET", "/sync_jobs")]


@pytest.mark.parametrize(("outcome", "status"), DATABASE_FAILURES[:6])
def test_cancel_database_failure_is_generic(
    status_client: FlaskClient,
    api: respx.MockRouter,
    outcome: httpx.Response | Exception,
    status: int,
) -> None:
    cancel = api.post("/rpc/cancel_job")
    failure(cancel, outcome)

    response = status_client.post(f"/sync/jobs/{JOB_ID}/cancel", headers=auth())

    assert_generic_failure(response, status)
    assert cancel.call_count == 1
    assert rest_calls(api) == [("POST", "/rpc/cancel_job")]


# -- retry -----------------------------------------------------------------------------


def test_retry_a_job(status_client: FlaskClient, api: respx.MockRouter) -> None:
    retried = {"status": "pending", "total_tasks": 2, "completed_tasks": 1}
    retry = api.post("/rpc/retry_job").respond(200, json=[job_row(**retried)])
    tasks = [
        task_row(status="completed", entity_count=10, attempts=1),
        task_row(id=TASK_ID_2, resource_type="product", position=2, attempts=3),
    ]
    status = status_route(api).respond(200, json=[status_row(tasks, **retried)])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert response.status_code == 200
    result = response.get_json()
    assert result["status"] == "pending"
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
    assert rest_calls(api) == [("POST", "/rpc/retry_job"), ("GET", "/sync_jobs")]
    assert_rpc(retry, "retry_job", {"p_job_id": JOB_ID})
    assert query(status) == [STATUS_SELECT, ("id", f"eq.{JOB_ID}")]


def test_retry_a_job_with_nothing_to_retry_is_a_conflict(
    status_client: FlaskClient, api: respx.MockRouter
) -> None:
    api.post("/rpc/retry_job").respond(200, json=[])
    job = get_job_route(api).respond(200, json=[job_row(status="completed")])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 409, "job has nothing to retry (only failed or cancelled jobs)")
    assert query(job) == [("select", "*"), ("id", f"eq.{JOB_ID}")]
    assert rest_calls(api) == [("POST", "/rpc/retry_job"), ("GET", "/sync_jobs")]


def test_retry_an_unknown_job(status_client: FlaskClient, api: respx.MockRouter) -> None:
    api.post("/rpc/retry_job").respond(200, json=[])
    get_job_route(api).respond(200, json=[])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 404, f"job not found: {JOB_ID}")


def test_retry_while_the_app_has_another_active_job(
    status_client: FlaskClient, api: respx.MockRouter
) -> None:
    retry = api.post("/rpc/retry_job").respond(409, json=ACTIVE_JOB_CONFLICT)
    job = get_job_route(api).respond(200, json=[job_row(status="failed")])
    active = active_job_route(api).respond(
        200, json=[job_row(id=OTHER_JOB_ID, status="processing", started_at=STARTED_AT)]
    )
    status = status_route(api).respond(200, json=[status_row()])

    response = status_client.post(f"/sync/jobs/{JOB_ID}/retry", headers=auth())

    assert_error(response, 409, "app 'billing' already has an active sync job", job_id=OTHER_JOB_ID)
    assert_rpc(retry, "retry_job", {"p_job_id": JOB_ID})
    assert query(job) == [("select", "*"), ("id", f"eq.{JOB_ID}")]
    assert query(active) == [
        ("select", "*"),
        ("app_key", "eq.billing"),
        ("status", "in.(pending,processing)"),
        ("limit", "1"),
    ]
    assert not status.called
    assert rest_calls(api) == [
        ("POST", "/rpc/retry_job"),
        ("GET", "/sync_jobs"),
        ("GET", "/sync_jobs"),
    ]
