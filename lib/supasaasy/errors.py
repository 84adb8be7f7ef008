"""SupaSaaSy's exceptions, one tree:

SupasaasyError
└── DatabaseError                 a PostgREST / Postgres call failed (code, details, hint)
    ├── DatabaseUnavailableError  the database could not be reached or answered 5xx
    ├── InvalidInputError         the database refused a value (check, type, argument)
    ├── NotFoundError             the job or task does not exist
    └── ConflictError             a unique constraint refused the write
        └── ActiveJobExistsError  the app already has a pending or processing job
"""

from __future__ import annotations

from typing import Any


class SupasaasyError(Exception):
    """Base of every error SupaSaaSy raises on purpose."""


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
    """The app already has an active (pending or processing) job."""

    def __init__(self, app_key: str, active_job_id: str | None, **kwargs: Any) -> None:
        super().__init__(f"app {app_key!r} already has an active sync job", **kwargs)
        self.app_key = app_key
        self.active_job_id = active_job_id
