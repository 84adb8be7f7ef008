"""What the three HTTP functions share: environment, admin key, JSON in and out,
CORS, and errors as `{"success": false, "error": ...}`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import flask
from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..db import Database
from ..errors import DatabaseUnavailableError, SupasaasyError
from ..errors import HttpError as HttpError

log = logging.getLogger("supasaasy.http")

MAX_BODY_BYTES = 1024 * 1024
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[flask.Request], flask.Response]


@dataclass
class Runtime:
    """What every handler needs, read once when the function starts."""

    settings: Settings
    db: Database
    admin_key: str | None
    worker_url: str | None
    sync_rate_per_minute: int
    cors_origins: tuple[str, ...] = ("*",)

    @classmethod
    def from_env(
        cls,
        settings: Settings,
        db: Database | None = None,
        env: Mapping[str, str] | None = None,
        *,
        admin: bool = True,
    ) -> Runtime:
        """`admin`: the function's requests need ADMIN_API_KEY (the webhook's do not)."""
        env = os.environ if env is None else env
        if db is None:
            missing = [n for n in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY") if not env.get(n)]
            if missing:
                raise SupasaasyError(f"environment variable {' and '.join(missing)} not set")
            db = Database.connect(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        rate = env.get("SYNC_RATE_LIMIT_PER_MINUTE", "10")
        try:
            per_minute = int(rate)
            if per_minute < 1:
                raise ValueError
        except ValueError:
            raise SupasaasyError(
                f"SYNC_RATE_LIMIT_PER_MINUTE must be a whole number of 1 or more, not {rate!r}"
            ) from None
        if admin and not env.get("ADMIN_API_KEY"):
            log.error("ADMIN_API_KEY is not set: every request will be refused")
        return cls(
            settings=settings,
            db=db,
            admin_key=env.get("ADMIN_API_KEY") or None,
            worker_url=env.get("SUPASAASY_WORKER_URL") or None,
            sync_rate_per_minute=per_minute,
            cors_origins=allowed_origins(env.get("CORS_ALLOWED_ORIGINS")),
        )


def allowed_origins(value: str | None) -> tuple[str, ...]:
    """`CORS_ALLOWED_ORIGINS` (origins separated by commas, or `*`) as a tuple;
    `("*",)`, any origin, when unset or empty."""
    origins = tuple(o.strip().rstrip("/") for o in (value or "").split(",") if o.strip())
    if not origins or "*" in origins:
        return ("*",)
    for origin in origins:
        if "://" not in origin:
            raise SupasaasyError(
                f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin like https://app.example.com"
            )
    return origins


def add_cors(response: flask.Response, request: flask.Request,
             origins: tuple[str, ...]) -> flask.Response:  # fmt: skip
    """CORS headers for `response`: any origin with `*`; otherwise the request's
    `Origin` when it is listed (no `Access-Control-Allow-Origin` when not), and
    `Vary: Origin`."""
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response
    response.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


def json_response(data: Mapping[str, Any], status: int = 200,
                  headers: Mapping[str, str] | None = None) -> flask.Response:  # fmt: skip
    response = flask.Response(json.dumps(data, default=str), status=status,
                              mimetype="application/json")  # fmt: skip
    response.headers.update(headers or {})
    return response


def error_response(error: HttpError) -> flask.Response:
    body = {"success": False, "error": error.message, **error.extra}
    return json_response(body, error.status, error.headers)


def preflight(methods: str) -> flask.Response:
    response = flask.Response(status=204)
    response.headers.update({
        "Access-Control-Allow-Methods": f"{methods}, OPTIONS",
        "Access-Control-Allow-Headers": "authorization, content-type, apikey, x-client-info",
        "Access-Control-Max-Age": "86400",
    })  # fmt: skip
    return response


def require_admin(request: flask.Request, runtime: Runtime) -> None:
    """401 unless the request carries `Authorization: Bearer <ADMIN_API_KEY>`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = runtime.admin_key
    if (not expected or scheme.lower() != "bearer" or not token
            or not hmac.compare_digest(token.strip().encode(), expected.encode())):  # fmt: skip
        raise HttpError(401, "unauthorized: invalid or missing API key")


def caller_key(request: flask.Request) -> str:
    """A stable, non-secret name for the caller's key (for per-key limits)."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def read_body(request: flask.Request) -> bytes:
    """The raw body: 413 over 1 MB."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise HttpError(413, "request body too large (limit 1 MB)")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, "request body too large (limit 1 MB)")
    return raw


def read_json_object(request: flask.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object: 413 over 1 MB, 400 if it is not a JSON object."""
    raw = read_body(request)
    if not raw.strip():
        if empty_ok:
            return {}
        raise HttpError(400, "request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise HttpError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    return body


def validated(model: type[M], body: dict[str, Any]) -> M:
    """The body as `model`, or 400 naming the first bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "missing required field"
        raise HttpError(400, f"{field}: {message}") from None


def serve(methods: tuple[str, ...], handle: Callable[[flask.Request], flask.Response],
          runtime: Runtime | None = None) -> Handler:  # fmt: skip
    """Wrap a handler: preflight, 405, every failure as a JSON error (never a trace),
    and CORS headers on every answer, for `runtime.cors_origins` (without a runtime,
    for CORS_ALLOWED_ORIGINS in the environment)."""
    allowed = ", ".join(methods)
    if runtime is None:
        origins = allowed_origins(os.environ.get("CORS_ALLOWED_ORIGINS"))
    else:
        origins = runtime.cors_origins

    def handler(request: flask.Request) -> flask.Response:
        return add_cors(answer(request), request, origins)

    def answer(request: flask.Request) -> flask.Response:
        if request.method == "OPTIONS":
            return preflight(allowed)
        try:
            if request.method not in methods:
                error = HttpError(405, f"method not allowed: use {allowed}")
                error.headers["Allow"] = f"{allowed}, OPTIONS"
                raise error
            return handle(request)
        except HttpError as exc:
            return error_response(exc)
        except DatabaseUnavailableError:
            log.exception("database unavailable")
            error = HttpError(503, "the database is unavailable; try again shortly")
            error.headers["Retry-After"] = "5"
            return error_response(error)
        except Exception:
            log.exception("unexpected error")
            return error_response(HttpError(500, "internal server error"))

    return handler
