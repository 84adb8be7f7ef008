"""SupaSaaSy's exceptions, one tree:

SupasaasyError
├── OutOfTimeError                the time budget ends before the work could be done
└── DatabaseError                 a PostgREST / Postgres call failed (code, details, hint)
    ├── DatabaseUnavailableError  unreachable, restarting or busy: worth trying again
    ├── InvalidInputError         the database refused a value (check, type, argument)
    ├── NotFoundError             the job or task does not exist
    ├── TaskLostError             the task is no longer this worker's (SS001): stop
    └── ConflictError             a unique constraint refused the write
        └── ActiveJobExistsError  the app already has an active job (SS002, with its id)
"""

from __future__ import annotations

from typing import Any


class SupasaasyError(Exception):
    """Base of every error SupaSaaSy raises on purpose."""


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
