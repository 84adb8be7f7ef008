"""SupaSaaSy's exceptions, one tree:

SupasaasyError
├── ConfigFileError               the configuration file is missing or invalid
├── ConfigError                   an app's settings cannot work (names the app and field)
├── ProviderError                 the provider refused or failed a request (keys redacted)
├── SignatureError                a webhook request's signature is missing, wrong or stale
├── WebhookEventError             a verified webhook body that is not an event
├── OutOfTimeError                the time budget ends before the work could be done
├── HttpError                     ends a function's request with a status and message
├── FunctionError                 a function answered the command line with an error
├── MigrationError                a migration could not be applied
├── ScaffoldError                 `init` found files with other content; wrote nothing
├── DemoError                     a step of `make demo` failed
├── StackError                    the local stack cannot start (also a RuntimeError)
├── SeedError                     the fake provider refused a seeding request (also a RuntimeError)
└── DatabaseError                 a PostgREST / Postgres call failed (code, details, hint)
    ├── DatabaseUnavailableError  unreachable, restarting or busy: worth trying again
    ├── InvalidInputError         the database refused a value (check, type, argument)
    ├── NotFoundError             the job or task does not exist
    ├── TaskLostError             the task is no longer this worker's (SS001): stop
    └── ConflictError             a unique constraint refused the write
        └── ActiveJobExistsError  the app already has an active job (SS002, with its id)

The modules that raise them also export them (e.g. `supasaasy.connectors.ConfigError`).
"""

from __future__ import annotations

from typing import Any

from .redact import redact


class SupasaasyError(Exception):
    """Base of every error SupaSaaSy raises on purpose."""


class ConfigFileError(SupasaasyError):
    """The configuration file is missing or invalid; the message names the field."""


class ConfigError(SupasaasyError):
    """An app's configuration cannot work; the message names the app and the field."""


class ProviderError(SupasaasyError):
    """The provider refused or failed a request, after any retries it deserved. Anything
    in the message shaped like a key is redacted: the message is stored and logged."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(redact(message))
        self.status = status


class SignatureError(SupasaasyError):
    """A webhook request whose signature is missing, malformed, wrong or stale."""


class WebhookEventError(SupasaasyError):
    """A verified webhook body that is not an event of the provider."""


class HttpError(SupasaasyError):
    """Ends a request with this status and message (and extra JSON fields)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


class FunctionError(SupasaasyError):
    """A function answered with an error status; `body` is its JSON answer."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body


class MigrationError(SupasaasyError):
    """A migration could not be applied."""


class ScaffoldError(SupasaasyError):
    """Files exist with other content; nothing was written."""


class DemoError(SupasaasyError):
    """A step failed; the message says what to do."""


class StackError(SupasaasyError, RuntimeError):
    """The local stack cannot start; the message says why and what to do."""


class SeedError(SupasaasyError, RuntimeError):
    """The API refused a seeding request; the message has the method, path and answer."""


class OutOfTimeError(SupasaasyError):
    """The caller's time budget ends before a request (or its retry) could be made: the
    task is handed back at its checkpoint, not failed."""


class DatabaseError(SupasaasyError):
    """A database call failed. `code` is a SQLSTATE (e.g. 23505) or a PGRST code."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details
        self.hint = hint


class DatabaseUnavailableError(DatabaseError):
    """The database or PostgREST could not be reached, or failed on its side."""


class InvalidInputError(DatabaseError):
    """The database refused a value: a check constraint, a bad type, a bad argument."""


class NotFoundError(DatabaseError):
    """The job or task named does not exist."""


class TaskLostError(DatabaseError):
    """The task was requeued or finished: the worker holding it must stop."""


class ConflictError(DatabaseError):
    """A unique constraint refused the write."""


class ActiveJobExistsError(ConflictError):
    """The app already has an active (pending or processing) job, `active_job_id`."""

    def __init__(self, message: str, active_job_id: str | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.active_job_id = active_job_id
