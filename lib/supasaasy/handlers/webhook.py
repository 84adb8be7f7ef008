"""POST /webhook/{app_key}: a provider's signed event, applied at once.

The signature is checked on the raw body, before anything parses it, by the app's
connector (each provider signs its own way); the event's changes and its log row are
then one transaction (`supasaasy.apply_webhook_event`), which also recognises an event
id already applied. The app key is the path's last segment: `/webhook/{app_key}`, or
`/{app_key}` where the platform strips the function's name.

Answers: 200 once committed, or when nothing of the event is synced, or for a
duplicate; 401 for a missing, malformed, wrong or stale signature; 404 for an unknown
app or one without a webhook secret; 400 for a bad app key or a body that is not an
event; 413 over 1 MB; 405 for other methods; 503 while the database (or, for an event
that needs a fetch, the provider) is unreachable, so that the provider retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import replace
from typing import Any

import flask
import orjson

from ..config import APP_KEY_PATTERN, AppConfig, Settings
from ..connectors import (
    ConfigError,
    Connector,
    ProviderError,
    RateLimiter,
    SignatureError,
    WebhookEvent,
    WebhookEventError,
    create_connector,
)
from ..db import Database
from ..errors import DatabaseError, DatabaseUnavailableError, InvalidInputError
from ..models import BatchRow
from ..redact import redact
from ..sync import batch_child_set, batch_deletion, batch_row
from .common import Handler, HttpError, Runtime, json_response, read_body, serve

log = logging.getLogger("supasaasy.webhook")

APP_KEY = re.compile(APP_KEY_PATTERN)


def app_key_of(path: str) -> str:
    """The app key of `/webhook/{app_key}` or `/{app_key}`, or 400."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["webhook"]:
        parts = parts[1:]
    if len(parts) != 1:
        raise HttpError(400, "missing app key: POST /webhook/{app_key}")
    if not APP_KEY.fullmatch(parts[0]):
        raise HttpError(400, "app_key must be 1 to 64 of A-Z, a-z, 0-9, _ and -")
    return parts[0]


class _OneAtATime(RateLimiter):
    """Each provider request from the app's shared rate (the one its workers use), one
    reservation per request, so that concurrent requests share nothing in process."""

    def __init__(self, db: Database, key: str, per_second: float) -> None:
        self.db, self.key, self.per_second = db, key, per_second

    def acquire(self) -> None:
        wait = self.db.take_rate_allowance(self.key, self.per_second, 1)
        if wait > 0:
            time.sleep(wait)


def event_body(app: AppConfig, connector: Connector, found: WebhookEvent) -> dict[str, Any]:
    """What apply_webhook_event takes for a verified event."""
    body: dict[str, Any] = {
        "app_key": app.app_key,
        "event_id": found.event_id,
        "event_type": found.event_type[:200],
        "observed_at": found.observed_at.isoformat(),
        "outcome": "ignored" if found.page is None else "applied",
    }
    if found.page is not None:
        rows: dict[tuple[str, str], BatchRow] = {}
        for record in found.page.records:  # the first state of an object is its latest
            rows.setdefault((record.collection_key, record.external_id), batch_row(record))
        # A deletion stamped with the event's time (unstamped, it would be unconditional).
        deletions = [replace(d, observed_at=d.observed_at or found.observed_at)
                     for d in found.page.deletions]  # fmt: skip
        body |= {
            "api_version": found.api_version or connector.api_version,
            "rows": list(rows.values()),
            "deletes": [batch_deletion(d) for d in deletions],
            "children": [batch_child_set(c) for c in found.page.child_sets],
        }
    return body


def create_webhook_handler(config: Settings, *, runtime: Runtime | None = None) -> Handler:
    """The `webhook` function. `runtime` defaults to one read from the environment."""
    rt = runtime or Runtime.from_env(config, admin=False)
    connectors: dict[str, Connector] = {}

    def connector_for(app: AppConfig) -> Connector:
        connector = connectors.get(app.app_key)
        if connector is None:
            try:
                key = f"provider:{app.app_key}"
                connector = create_connector(
                    app, rate_limits=lambda rate: _OneAtATime(rt.db, key, rate)
                )
            except ConfigError as exc:
                log.error("webhook for %s: %s", app.app_key, exc)
                raise HttpError(503, f"app {app.app_key} is not configured to take webhooks"
                                     " (see the function's log)") from None  # fmt: skip
            connectors[app.app_key] = connector
        return connector

    def record_failure(app: AppConfig, event: dict[str, Any], error: str) -> None:
        """A failed event in the log, if the database can take it."""
        with contextlib.suppress(DatabaseError):
            rt.db.apply_webhook_event({
                "app_key": app.app_key, "event_id": str(event.get("id"))[:200],
                "event_type": str(event.get("type") or event.get("topic"))[:200],
                "outcome": "failed", "error": error[:1000]})  # fmt: skip

    def verification(app: AppConfig, variable: str, token: str) -> flask.Response:
        # The token is the signing secret: the log redacts it when it is shaped like one
        # (secret_...), and the webhook log keeps it for the operator.
        log.warning("webhook for %s: Notion's verification request, verification_token %s:"
                    " set %s to it (`supasaasy webhooks log --app %s` shows it), then verify"
                    " the subscription", app.app_key, token, variable, app.app_key)  # fmt: skip
        rt.db.apply_webhook_event({"app_key": app.app_key, "event_type": "verification",
                                   "outcome": "verification",
                                   "detail": {"verification_token": token}})  # fmt: skip
        return json_response({"success": True, "app_key": app.app_key, "outcome": "verification",
                              "message": f"token received: set {variable} to it (see the"
                                         " function's log or the webhook log)"})  # fmt: skip

    def handle(request: flask.Request) -> flask.Response:
        app_key = app_key_of(request.path)
        app = rt.settings.app(app_key)
        if app is None:
            raise HttpError(404, f"unknown app_key: {app_key}")
        if not app.config.get("webhook_secret_env"):
            raise HttpError(404, f"app {app_key} takes no webhooks (no webhook_secret_env)")
        connector = connector_for(app)
        variable = connector.webhook_secret_env or ""
        body = read_body(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        secret = os.environ.get(variable, "").strip()
        if not secret:
            token = connector.webhook_verification(body, headers)
            if token is not None:
                return verification(app, variable, token)
            raise HttpError(404, f"app {app_key} has no webhook secret ({variable} is not set)")
        try:
            connector.verify_webhook(body, headers, secret)
        except SignatureError as exc:
            log.warning("webhook for %s refused: %s", app_key, exc)
            raise HttpError(401, f"invalid signature: {exc}") from None
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HttpError(400, "request body is not valid JSON") from None
        if not isinstance(event, dict):
            raise HttpError(400, "request body is not an event (a JSON object)")
        try:
            found = connector.webhook_event(event)
        except WebhookEventError as exc:
            raise HttpError(400, str(exc)) from None
        except ProviderError as exc:
            message = redact(str(exc), connector.secrets)
            log.error("webhook for %s: %s", app_key, message)
            record_failure(app, event, message)
            raise HttpError(503, "the provider could not be reached for this event;"
                                 " retry later") from None  # fmt: skip
        changes = event_body(app, connector, found)
        try:
            result = rt.db.apply_webhook_event(changes)
        except DatabaseUnavailableError:
            raise
        except InvalidInputError as exc:
            log.error("webhook for %s: event %s refused: %s", app_key, found.event_id, exc)
            raise HttpError(400, "the event's data was refused by the database") from None
        except DatabaseError as exc:
            log.error("webhook for %s: event %s not applied: %s", app_key, found.event_id, exc)
            raise HttpError(503, "the event could not be applied; retry later") from None
        outcome = "duplicate" if result.pop("duplicate") else changes["outcome"]
        log.info("webhook for %s: %s %s %s", app_key, found.event_type, found.event_id, outcome)
        return json_response({"success": True, "app_key": app_key, "event_id": found.event_id,
                              "event_type": found.event_type, "outcome": outcome,
                              **result})  # fmt: skip

    return serve(("POST",), handle, rt)
