"""CORS headers on every answer of the functions, for the origins CORS_ALLOWED_ORIGINS allows."""

from __future__ import annotations

from collections.abc import Callable

import flask
import pytest

from supasaasy.config import Settings
from supasaasy.errors import DatabaseUnavailableError, SupasaasyError
from supasaasy.handlers import (
    Runtime,
    create_job_status_handler,
    create_sync_handler,
    create_worker_handler,
)
from supasaasy.handlers.common import Handler, HttpError, allowed_origins, json_response, serve

ADMIN = "admin-key-for-cors-tests"
ADMIN_SITE = "https://admin.example"
OTHER_SITE = "https://evil.example"
JOB_ID = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"

app = flask.Flask(__name__)


def runtime(origins: str | None = None) -> Runtime:
    env = {"SUPABASE_URL": "http://rest.test", "SUPABASE_SERVICE_ROLE_KEY": "service-key",
           "ADMIN_API_KEY": ADMIN}  # fmt: skip
    if origins is not None:
        env["CORS_ALLOWED_ORIGINS"] = origins
    return Runtime.from_env(Settings(), env=env)


def call(handler: Handler, method: str = "POST", path: str = "/sync",
         origin: str | None = ADMIN_SITE) -> flask.Response:  # fmt: skip
    headers = {"Origin": origin} if origin else {}
    with app.test_request_context(path, method=method, headers=headers):
        return handler(flask.request)


def raising(error: Exception) -> Callable[[flask.Request], flask.Response]:
    def handle(request: flask.Request) -> flask.Response:
        raise error

    return handle


def ok(request: flask.Request) -> flask.Response:
    return json_response({"success": True})


def limited(request: flask.Request) -> flask.Response:
    error = HttpError(429, "too many sync requests")
    error.headers["Retry-After"] = "12"
    raise error


ANSWERS = {
    200: ok,
    401: raising(HttpError(401, "unauthorized: invalid or missing API key")),
    404: raising(HttpError(404, "job not found")),
    413: raising(HttpError(413, "request body too large (limit 1 MB)")),
    429: limited,
    503: raising(DatabaseUnavailableError("down")),
    500: raising(RuntimeError("boom")),
}


@pytest.mark.parametrize("status", ANSWERS)
def test_every_answer_allows_any_origin_by_default(status: int) -> None:
    response = call(serve(("POST",), ANSWERS[status], runtime()))
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
    assert "Vary" not in response.headers


def test_405_and_preflight_allow_any_origin_by_default() -> None:
    handler = serve(("POST",), ok, runtime("*"))
    wrong_method = call(handler, "GET")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Access-Control-Allow-Origin"] == "*"
    preflight = call(handler, "OPTIONS")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"


@pytest.mark.parametrize("status", ANSWERS)
def test_a_listed_origin_is_echoed(status: int) -> None:
    handler = serve(("POST",), ANSWERS[status], runtime(f"https://a.example, {ADMIN_SITE}"))
    response = call(handler)
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == ADMIN_SITE
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After"
    assert response.headers["Vary"] == "Origin"


@pytest.mark.parametrize("method", ["POST", "GET", "OPTIONS"])
@pytest.mark.parametrize("origin", [OTHER_SITE, None])
def test_an_unlisted_or_missing_origin_is_not_allowed(method: str, origin: str | None) -> None:
    response = call(serve(("POST",), ok, runtime(ADMIN_SITE)), method, origin=origin)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


def test_a_listed_origin_passes_the_preflight() -> None:
    response = call(serve(("POST",), ok, runtime(ADMIN_SITE)), "OPTIONS")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ADMIN_SITE
    assert response.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, apikey, x-client-info"
    )


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        (None, ("*",)),
        ("", ("*",)),
        (" * ", ("*",)),
        (f"{ADMIN_SITE}, *", ("*",)),
        (f" {ADMIN_SITE}/ ,http://localhost:3000,", (ADMIN_SITE, "http://localhost:3000")),
    ],
)
def test_allowed_origins_are_read_from_the_variable(value: str | None,
                                                    origins: tuple[str, ...]) -> None:  # fmt: skip
    assert allowed_origins(value) == origins
    assert runtime(value).cors_origins == origins


def test_an_origin_without_a_scheme_is_refused_at_start() -> None:
    with pytest.raises(
        SupasaasyError, match=r"CORS_ALLOWED_ORIGINS: 'admin\.example' is not an origin"
    ):
        runtime("admin.example")


def test_the_functions_answer_errors_with_cors_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", ADMIN_SITE)
    rt = runtime(ADMIN_SITE)
    for handler, method, path in (
        (create_sync_handler(Settings(), runtime=rt), "POST", "/sync"),
        (create_worker_handler(Settings(), runtime=rt), "POST", "/worker"),
        (create_job_status_handler(Settings(), runtime=rt), "GET", f"/sync/jobs/{JOB_ID}"),
    ):
        allowed = call(handler, method, path)
        assert allowed.status_code == 401
        assert allowed.headers["Access-Control-Allow-Origin"] == ADMIN_SITE
        refused = call(handler, method, path, origin=OTHER_SITE)
        assert refused.status_code == 401
        assert "Access-Control-Allow-Origin" not in refused.headers
