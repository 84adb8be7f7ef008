"""What the three HTTP functions (sync, worker, job-status) share: start-up from the
environment, the admin key, reading the body, 405, preflight, errors as JSON."""

from __future__ import annotations

import gc
import io
from typing import Any

import pytest
from fake_postgrest import FakePostgrest
from flask.testing import FlaskClient
from handler_support import (
    ADMIN_KEY,
    JOB_ID,
    NOT_AN_OBJECT,
    NOT_JSON,
    ONE_MB,
    STRIPE_TASK_RESOURCES,
    TOO_LARGE,
    UNAUTHORIZED,
    Build,
    assert_error,
    auth,
    caller_key,
    job_row,
)

from supasaasy.errors import SupasaasyError

FUNCTION_CALLS = [
    pytest.param("sync", "POST", "/sync", id="sync"),
    pytest.param("worker", "POST", "/worker", id="worker"),
    pytest.param("job_status", "GET", f"/sync/jobs/{JOB_ID}", id="job-status"),
    pytest.param("job_status", "POST", f"/sync/jobs/{JOB_ID}/cancel", id="cancel"),
]


# -- start-up: Runtime.from_env ----------------------------------------------------------


@pytest.mark.parametrize("target", ["sync", "worker"])
def test_functions_that_sync_keep_start_up_objects_out_of_garbage_collection(
    build: Build, target: str
) -> None:
    gc.unfreeze()
    build(target)
    # Modules, settings and clients: scanned again by every full collection otherwise.
    assert gc.get_freeze_count() > 10_000


def test_sync_rate_limit_comes_from_the_environment(
    env: pytest.MonkeyPatch, build: Build, fake: FakePostgrest
) -> None:
    env.setenv("SYNC_RATE_LIMIT_PER_MINUTE", "60")
    fake.admit_wait = 1

    response = build("sync").post("/sync", json={"app_key": "billing"}, headers=auth())

    assert response.status_code == 429
    assert fake.rpc_calls("admit_request") == [{"p_key": caller_key(), "p_per_minute": 60}]


@pytest.mark.parametrize("rate", ["0", "-1", "ten", "1.5"])
def test_a_bad_rate_limit_stops_the_function_loading(
    env: pytest.MonkeyPatch, build: Build, rate: str
) -> None:
    env.setenv("SYNC_RATE_LIMIT_PER_MINUTE", rate)

    with pytest.raises(SupasaasyError, match="SYNC_RATE_LIMIT_PER_MINUTE"):
        build("sync")


@pytest.mark.parametrize("target", ["sync", "worker", "job_status"])
@pytest.mark.parametrize("variable", ["SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"])
def test_a_missing_database_setting_stops_the_function_loading(
    env: pytest.MonkeyPatch, build: Build, target: str, variable: str
) -> None:
    env.delenv(variable)

    with pytest.raises(SupasaasyError, match=f"environment variable {variable} not set"):
        build(target)


# -- the admin key -------------------------------------------------------------------------


def test_a_lowercase_bearer_scheme_is_accepted(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    response = sync_client.post(
        "/sync", json={"app_key": "billing"}, headers={"Authorization": f"bearer {ADMIN_KEY}"}
    )

    assert response.status_code == 200
    assert list(fake.jobs) == [JOB_ID]


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
    sync_client: FlaskClient, fake: FakePostgrest, headers: dict[str, str]
) -> None:
    """Refused before the rate limiter counts the request or a job is created."""
    response = sync_client.post("/sync", json={"app_key": "billing"}, headers=headers)

    assert_error(response, 401, UNAUTHORIZED)
    assert ADMIN_KEY not in response.get_data(as_text=True)
    assert fake.calls == []
    assert fake.jobs == {}


@pytest.mark.parametrize(("target", "method", "path"), FUNCTION_CALLS)
@pytest.mark.parametrize("authorization", ["Bearer ", "Bearer anything", f"Bearer {ADMIN_KEY}"])
def test_an_unset_admin_key_refuses_everything(
    env: pytest.MonkeyPatch,
    build: Build,
    fake: FakePostgrest,
    target: str,
    method: str,
    path: str,
    authorization: str,
) -> None:
    env.setenv("ADMIN_API_KEY", "")
    fake.add_job(job_row())
    client = build(target)

    response = client.open(
        path, method=method, json={"app_key": "billing"}, headers={"Authorization": authorization}
    )

    assert_error(response, 401, UNAUTHORIZED)
    assert fake.calls == []
    assert fake.jobs[JOB_ID]["status"] == "pending"


@pytest.mark.parametrize(("target", "method", "path"), FUNCTION_CALLS)
def test_every_function_refuses_a_wrong_key(
    build: Build, fake: FakePostgrest, target: str, method: str, path: str
) -> None:
    fake.add_job(job_row())

    response = build(target).open(path, method=method, json={}, headers=auth("nope"))

    assert_error(response, 401, UNAUTHORIZED)
    assert fake.calls == []
    assert fake.jobs[JOB_ID]["status"] == "pending"


# -- the body ------------------------------------------------------------------------------

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
    sync_client: FlaskClient, fake: FakePostgrest, raw: bytes, error: str
) -> None:
    response = sync_client.post(
        "/sync", data=raw, headers={**auth(), "Content-Type": "application/json"}
    )

    assert_error(response, 400, error)
    assert fake.jobs == {}
    assert len(fake.rpc_calls("admit_request")) == 1  # the request still counts


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b"[]", NOT_AN_OBJECT, id="array"),
        pytest.param(b'"x"', NOT_AN_OBJECT, id="string"),
        pytest.param(b"{bad", NOT_JSON, id="invalid"),
    ],
)
def test_worker_refuses_a_body_that_is_not_a_json_object(
    worker_client: FlaskClient, fake: FakePostgrest, raw: bytes, error: str
) -> None:
    response = worker_client.post("/worker", data=raw, headers=auth())

    assert_error(response, 400, error)
    assert fake.calls == []


def test_deeply_nested_json_is_a_client_error(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    response = sync_client.post("/sync", data=b"[" * 100_000, headers=auth())

    assert_error(response, 400, NOT_JSON)
    assert fake.jobs == {}


def test_a_body_of_exactly_one_megabyte_is_read(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    data = b'{"app_key": "billing"}'
    data += b" " * (ONE_MB - len(data))

    response = sync_client.post("/sync", data=data, headers=auth())

    assert response.status_code == 200
    assert fake.jobs[JOB_ID]["resource_types"] == STRIPE_TASK_RESOURCES


@pytest.mark.parametrize(
    ("target", "path", "data"),
    [
        pytest.param("sync", "/sync", b'{"app_key": "billing"}', id="sync"),
        pytest.param("worker", "/worker", b"{}", id="worker"),
    ],
)
def test_a_body_over_one_megabyte_is_refused(
    build: Build, fake: FakePostgrest, target: str, path: str, data: bytes
) -> None:
    data += b" " * (ONE_MB + 1 - len(data))

    response = build(target).post(path, data=data, headers=auth())

    assert response.status_code == 413
    assert response.get_json() == TOO_LARGE
    assert fake.jobs == {}
    assert not fake.rpc_calls("claim_task")


def test_a_chunked_body_over_one_megabyte_is_refused(
    sync_client: FlaskClient, fake: FakePostgrest
) -> None:
    """Without Content-Length, the body is read up to the limit. (Servers that handle
    chunked bodies, gunicorn or werkzeug's, set wsgi.input_terminated.)"""
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
    assert fake.jobs == {}


def test_a_small_chunked_body_is_read(sync_client: FlaskClient, fake: FakePostgrest) -> None:
    response = sync_client.post(
        "/sync",
        input_stream=io.BytesIO(b'{"app_key": "billing", "resource_types": ["plan"]}'),
        headers={**auth(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 200
    assert fake.jobs[JOB_ID]["resource_types"] == ["plan"]


# -- methods and preflight -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "method", "path", "allowed"),
    [
        *(pytest.param("sync", m, "/sync", "POST", id=f"sync-{m}")
          for m in ("GET", "PUT", "PATCH", "DELETE")),
        pytest.param("worker", "GET", "/worker", "POST", id="worker-GET"),
        *(pytest.param("job_status", m, f"/sync/jobs/{JOB_ID}", "GET, POST", id=f"status-{m}")
          for m in ("PUT", "PATCH", "DELETE")),
    ],
)  # fmt: skip
def test_other_methods_are_not_allowed(
    build: Build, fake: FakePostgrest, target: str, method: str, path: str, allowed: str
) -> None:
    response = build(target).open(path, method=method, headers=auth())

    assert_error(response, 405, f"method not allowed: use {allowed}")
    assert response.headers["Allow"] == f"{allowed}, OPTIONS"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("target", "path", "methods"),
    [
        ("sync", "/sync", "POST, OPTIONS"),
        ("worker", "/worker", "POST, OPTIONS"),
        ("job_status", f"/sync/jobs/{JOB_ID}", "GET, POST, OPTIONS"),
    ],
)
def test_preflight_needs_no_key(
    build: Build, fake: FakePostgrest, target: str, path: str, methods: str
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
    assert fake.calls == []


# -- the database, as every function sees it -----------------------------------------------


@pytest.mark.parametrize(
    ("target", "method", "path", "body"),
    [
        pytest.param("sync", "POST", "/sync", {"app_key": "billing"}, id="sync"),
        pytest.param("worker", "POST", "/worker", {}, id="worker"),
        pytest.param("job_status", "GET", f"/sync/jobs/{JOB_ID}", None, id="job-status"),
    ],
)
def test_every_database_request_carries_the_service_key_and_schema(
    build: Build, fake: FakePostgrest, target: str, method: str, path: str, body: Any
) -> None:
    """The fake refuses (and records) a request without the service-role key in the
    `Authorization` and `apikey` headers or without the supasaasy schema profiles."""
    if target == "job_status":
        fake.add_job(job_row())

    response = build(target).open(path, method=method, json=body, headers=auth())

    assert response.status_code == 200
    assert fake.calls
    assert fake.unexpected == []
