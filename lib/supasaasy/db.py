"""Job, task, entity and sync-state operations on the `supasaasy` schema.

Everything goes through PostgREST with the Supabase Python client: `Database.connect`
builds a `supabase` client bound to the schema and uses its PostgREST client. What
must be atomic is one SQL function (see supabase/migrations) called with `rpc`;
nothing here reads a counter to write it back. PostgREST errors become our own
(`supasaasy.errors`), so callers never see `postgrest.APIError` or `httpx` errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx
import orjson
from postgrest import APIError, ReturnMethod, SyncPostgrestClient
from postgrest.constants import DEFAULT_POSTGREST_CLIENT_TIMEOUT
from pydantic import BaseModel

from .errors import (
    ActiveJobExistsError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
    NotFoundError,
    TaskLostError,
)
from .models import (
    ACTIVE_JOB_STATUSES,
    BatchCounts,
    ClaimedTask,
    Entity,
    FinishedTask,
    FinishTask,
    JobStatus,
    JobStatusName,
    SyncJob,
    SyncMode,
    SyncState,
    SyncTask,
    TaskStatusName,
    WebhookLogEntry,
    WriteBatch,
)

SCHEMA = "supasaasy"
ENTITY_KEY = "app_key,collection_key,external_id"
TASK_LOST = "SS001"  # raised by supasaasy.task_lease and check_lease
ACTIVE_JOB = "SS002"  # raised by create_sync_job and retry_job; detail: the active job's id

# SQLSTATEs (and PostgREST codes) that mean the caller sent something the database refuses.
_INVALID_INPUT = {"22023", "22P02", "22007", "22008", "23502", "23514", "PGRST202", "PGRST204"}
_NOT_FOUND = {"P0002", "23503", "PGRST116"}
# The database is out of reach or busy, or the transaction is one to simply run again:
# PostgREST's connection errors, class 08 (connection), serialization failures and
# deadlocks, lock waits given up (55P03), too many connections, shutdowns and restarts.
# Every other SQLSTATE (e.g. 54000 a program limit, 57014 a statement timeout) fails
# the same way again: it is not "unavailable".
_UNAVAILABLE = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "40001", "40P01", "55P03",
                "55006", "53300", "53400", "57P01", "57P02", "57P03"}  # fmt: skip
_UNAVAILABLE_CLASSES = {"08"}
# A gateway or proxy in front of PostgREST answering with an HTTP status and no JSON.
_HTTP_UNAVAILABLE = {"500", "502", "503", "504"}

M = TypeVar("M", bound=BaseModel)

# jsonb cannot hold U+0000 (22P05): one NUL in one upstream string would fail its batch
# on every attempt. It is stored as U+FFFD. `\\u0000` (an escaped backslash, then text)
# is not a NUL and is kept.
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _json_for_postgres(body: Mapping[str, Any]) -> bytes:
    encoded = orjson.dumps(body)
    if b"\\u0000" in encoded:
        encoded = _JSON_NUL.sub(rb"\1\\ufffd", encoded)
    return encoded


def translate(error: APIError) -> DatabaseError:
    """Our error for a PostgREST error, keeping its code, details and hint."""
    code = error.code or None
    message = error.message or "database request failed"
    kwargs: dict[str, Any] = {"code": code, "details": error.details, "hint": error.hint}
    if code == "23505":
        return ConflictError(message, **kwargs)
    if code == ACTIVE_JOB:
        active = error.details if isinstance(error.details, str) and error.details else None
        return ActiveJobExistsError(message, active, **kwargs)
    if code == TASK_LOST:
        return TaskLostError(message, **kwargs)
    if code in _INVALID_INPUT:
        return InvalidInputError(message, **kwargs)
    if code in _NOT_FOUND:
        return NotFoundError(message, **kwargs)
    # postgrest-py reports a non-JSON error body (a proxy's error page) by its HTTP status.
    if (
        code is None
        or code in _UNAVAILABLE
        or code in _HTTP_UNAVAILABLE
        or (len(code) == 5 and code[:2] in _UNAVAILABLE_CLASSES)
    ):
        return DatabaseUnavailableError(message, **kwargs)
    return DatabaseError(message, **kwargs)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except APIError as exc:
        raise translate(exc) from exc
    except httpx.HTTPError as exc:
        raise DatabaseUnavailableError(
            f"cannot reach the database API: {exc.__class__.__name__}"
        ) from exc


def _rows(data: Any) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    return list(data)


def _models(model: type[M], data: Any) -> list[M]:
    return [model.model_validate(row) for row in _rows(data)]


def _first(model: type[M], data: Any) -> M | None:
    found = _models(model, data)
    return found[0] if found else None


def _uuid(value: UUID | str, what: str) -> str:
    """A canonical UUID string, or InvalidInputError before any request is sent."""
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except ValueError:
        raise InvalidInputError(f"{what} is not a valid UUID: {str(value)[:64]!r}") from None


def _interval(value: timedelta) -> str:
    return f"{value.total_seconds():.6f} seconds"


class Database:
    """The operations SupaSaaSy needs, on a PostgREST client bound to the `supasaasy` schema."""

    def __init__(self, rest: SyncPostgrestClient) -> None:
        self.rest = rest

    @classmethod
    def connect(cls, supabase_url: str, service_role_key: str) -> Database:
        """A Database for a Supabase project (or the local stack) and its service-role key.

        Builds a `supabase` client for the `supasaasy` schema, which sends the key as
        `apikey` and as a Bearer token, and keeps its PostgREST client. Its auth and
        PostgREST clients share one HTTP client (HTTP/2, redirects followed, PostgREST's
        default 120 s timeout), so only one TLS context is built; storage and functions
        are never built. Nothing is sent until the first operation. ValueError for a
        URL that is not http(s) or an empty key.
        """
        # Imported here rather than with the module: `supabase` loads its auth, realtime
        # and storage packages too, which only building a client needs.
        from supabase import ClientOptions, SupabaseException, create_client

        http = httpx.Client(timeout=DEFAULT_POSTGREST_CLIENT_TIMEOUT, follow_redirects=True,
                            http2=True)  # fmt: skip
        # A service-role key: no user session to keep or refresh.
        options = ClientOptions(schema=SCHEMA, auto_refresh_token=False, persist_session=False,
                                httpx_client=http)  # fmt: skip
        try:
            client = create_client(supabase_url, service_role_key, options=options)
        except SupabaseException as exc:
            http.close()
            raise ValueError(f"cannot build the Supabase client: {exc.message}") from None
        rest = client.postgrest
        # PostgREST's client uses a session it is given as it is: give ours the URL and
        # headers of the one it would build, for requests sent on the session directly.
        http.base_url = str(rest.base_url)
        http.headers.update(rest.headers)
        return cls(rest)

    @classmethod
    def from_supabase(cls, client: Any) -> Database:
        """A Database sharing an existing `supabase.Client`'s PostgREST connection."""
        return cls(client.schema(SCHEMA))

    def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        with _translated():
            return self.rest.rpc(function, params).execute().data

    def _rpc_large(self, function: str, body: Mapping[str, Any], *, as_text: bool = False) -> Any:
        """POST to a function taking the whole body as one argument, encoding it with
        orjson: for 1,000-row batches eight times faster than the json module, which
        would otherwise be a worker's largest cost. `as_text` sends it as text/plain, to
        the function's text overload, which PostgREST passes on without parsing it."""
        content_type = "text/plain; charset=utf-8" if as_text else "application/json"
        with _translated():
            # The client's own headers (key, schema), as its request builders send them:
            # the HTTP session may be shared and carry none of them.
            headers = self.rest.headers.copy()
            headers["Content-Type"] = content_type
            response = self.rest.session.post(
                str(self.rest.base_url.joinpath("rpc", function)),
                content=_json_for_postgres(body),
                headers=headers,
                auth=self.rest.basic_auth or httpx.USE_CLIENT_DEFAULT,
            )
            try:
                answer = orjson.loads(response.content) if response.content else None
            except orjson.JSONDecodeError:
                answer = None
            if response.is_success:
                return answer
            error = answer if isinstance(answer, dict) else {
                "message": response.reason_phrase, "code": str(response.status_code)}  # fmt: skip
            raise APIError(error)

    # -- webhooks ------------------------------------------------------------

    def apply_webhook_event(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`apply_webhook_event`: the log row and a verified event's rows, deletions and
        child sets in one transaction; `{"duplicate": true}` for an event id already
        applied (or ignored) for the app, which then changes nothing."""
        answer = self._rpc_large("apply_webhook_event", body)
        return dict(answer) if isinstance(answer, dict) else {}

    def webhook_log(self, app_key: str | None = None, limit: int = 20) -> list[WebhookLogEntry]:
        """The latest verified webhook events, newest first."""
        query = self.rest.table("webhook_logs").select("*").order("id", desc=True)
        if app_key:
            query = query.eq("app_key", app_key)
        with _translated():
            return _models(WebhookLogEntry, query.limit(limit).execute().data)

    # -- jobs ----------------------------------------------------------------

    def create_sync_job(
        self,
        app_key: str,
        mode: SyncMode,
        resource_types: Sequence[str],
        *,
        immediate: bool = False,
    ) -> SyncJob:
        """Create a pending job with one task per distinct resource type, atomically.
        `immediate`: only claims naming this job take its tasks.

        Raises ActiveJobExistsError (with the active job's id) while the app has one.
        """
        data = self._rpc(
            "create_sync_job",
            {"p_app_key": app_key, "p_mode": mode, "p_resource_types": list(resource_types),
             "p_immediate": immediate},
        )  # fmt: skip
        job = _first(SyncJob, data)
        if job is None:
            raise DatabaseError("create_sync_job returned no job")
        return job

    def create_job_tasks(self, job_id: UUID | str, resource_types: Sequence[str]) -> list[SyncTask]:
        """Add tasks to an active job (existing ones are kept). Returns all its tasks."""
        data = self._rpc(
            "add_job_tasks",
            {"p_job_id": _uuid(job_id, "job_id"), "p_resource_types": list(resource_types)},
        )
        return _models(SyncTask, data)

    def update_job_status(
        self, job_id: UUID | str, status: JobStatusName, error_message: str | None = None
    ) -> SyncJob:
        """Set a job's status with its started_at / completed_at. NotFoundError if unknown."""
        data = self._rpc(
            "set_job_status",
            {
                "p_job_id": _uuid(job_id, "job_id"),
                "p_status": status,
                "p_error_message": error_message,
            },
        )
        job = _first(SyncJob, data)
        if job is None:
            raise NotFoundError(f"sync job not found: {job_id}")
        return job

    def get_job(self, job_id: UUID | str) -> SyncJob:
        """The job alone, without its tasks. NotFoundError if there is no such job."""
        with _translated():
            data = (
                self.rest.table("sync_jobs")
                .select("*")
                .eq("id", _uuid(job_id, "job_id"))
                .execute()
                .data
            )
        job = _first(SyncJob, data)
        if job is None:
            raise NotFoundError(f"sync job not found: {job_id}")
        return job

    def delete_job(self, job_id: UUID | str) -> None:
        """Delete a job and (by cascade) its tasks."""
        with _translated():
            self.rest.table("sync_jobs").delete(returning=ReturnMethod.minimal).eq(
                "id", _uuid(job_id, "job_id")
            ).execute()

    def cancel_job(self, job_id: UUID | str) -> SyncJob | None:
        """Cancel an active job and its unfinished tasks; None if it is not active."""
        return _first(SyncJob, self._rpc("cancel_job", {"p_job_id": _uuid(job_id, "job_id")}))

    def retry_job(self, job_id: UUID | str) -> SyncJob | None:
        """Put a failed or cancelled job's failed and cancelled tasks back to pending.

        None if it has nothing to retry; ActiveJobExistsError while its app has another
        active job.
        """
        data = self._rpc("retry_job", {"p_job_id": _uuid(job_id, "job_id")})
        return _first(SyncJob, data)

    def admit_request(self, key: str, per_minute: int) -> float:
        """0 if one more request under `per_minute` for `key` is admitted, else the
        seconds until one will be."""
        return float(self._rpc("admit_request", {"p_key": key, "p_per_minute": per_minute}))

    def list_jobs(
        self, app_key: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[SyncJob]:
        """The latest jobs, newest first."""
        query = self.rest.table("sync_jobs").select("*").order("created_at", desc=True)
        if app_key:
            query = query.eq("app_key", app_key)
        if status:
            query = query.eq("status", status)
        with _translated():
            return _models(SyncJob, query.limit(limit).execute().data)

    def get_active_job(self, app_key: str) -> SyncJob | None:
        with _translated():
            data = (
                self.rest.table("sync_jobs")
                .select("*")
                .eq("app_key", app_key)
                .in_("status", list(ACTIVE_JOB_STATUSES))
                .limit(1)
                .execute()
                .data
            )
        return _first(SyncJob, data)

    def get_job_status(self, job_id: UUID | str) -> JobStatus:
        """The job and its tasks in one request. NotFoundError if there is no such job."""
        with _translated():
            data = (
                self.rest.table("sync_jobs")
                .select("*, tasks:sync_job_tasks(*)")
                .eq("id", _uuid(job_id, "job_id"))
                .execute()
                .data
            )
        rows = _rows(data)
        if not rows:
            raise NotFoundError(f"sync job not found: {job_id}")
        row = rows[0]
        tasks = sorted(
            _models(SyncTask, row.pop("tasks", [])), key=lambda t: (t.created_at, t.position)
        )
        return JobStatus(
            job=SyncJob.model_validate(row),
            tasks=[t for t in tasks if t.parent_task_id is None],
            shards=[t for t in tasks if t.parent_task_id is not None],
        )

    def cleanup_old_jobs(self, retention_days: int = 7) -> int:
        """Delete jobs that finished over `retention_days` ago, with their tasks; count them."""
        return int(self._rpc("cleanup_old_jobs", {"p_retention_days": retention_days}))

    # -- tasks ---------------------------------------------------------------

    def claim_task(
        self,
        job_id: UUID | str | None = None,
        *,
        stale_after: timedelta | None = None,
        max_attempts: int = 3,
    ) -> ClaimedTask | None:
        """Take the oldest pending task (of one job, or any job not run immediately), or
        None when there is none; with `stale_after`, stale tasks are requeued first, in
        the same transaction. The task comes with its job's app, mode and watermarks."""
        params: dict[str, Any] = {
            "p_job_id": _uuid(job_id, "job_id") if job_id is not None else None
        }
        if stale_after is not None:
            params |= {"p_stale_after": _interval(stale_after), "p_max_attempts": max_attempts}
        return _first(ClaimedTask, self._rpc("claim_task", params))

    def shard_task(
        self, task_id: UUID | str, attempt: int, created_from: datetime, cursor: str
    ) -> ClaimedTask:
        """Split the full sync of a task this worker holds into shards: the task keeps
        `cursor` and is driven by its shards from now on; returns its first shard (objects
        created from `created_from` on), claimed for this worker. TaskLostError if the
        task is no longer this worker's."""
        data = self._rpc("shard_task", {
            "p_task_id": _uuid(task_id, "task_id"), "p_attempt": attempt,
            "p_created_from": created_from.isoformat(), "p_cursor": cursor})  # fmt: skip
        shard = _first(ClaimedTask, data)
        assert shard is not None
        return shard

    def split_shard(
        self, job_id: UUID | str | None = None, *, piece_objects: int, max_pieces: int
    ) -> ClaimedTask | None:
        """Take part of the busiest shard's range (of one job, or of any job not run
        immediately), claimed for this worker; None when no shard is worth cutting."""
        data = self._rpc("split_shard", {
            "p_job_id": _uuid(job_id, "job_id") if job_id is not None else None,
            "p_piece_objects": piece_objects, "p_max_pieces": max_pieces})  # fmt: skip
        return _first(ClaimedTask, data)

    def shards_may_split(self, job_id: UUID | str | None = None) -> bool:
        """Whether a task or shard just started may soon be worth splitting."""
        job = _uuid(job_id, "job_id") if job_id is not None else None
        return bool(self._rpc("shards_may_split", {"p_job_id": job}))

    def complete_task(
        self,
        task_id: UUID | str,
        status: TaskStatusName,
        entity_count: int | None = None,
        error_message: str | None = None,
        *,
        attempt: int | None = None,
    ) -> SyncJob | None:
        """Finish a task and count it in its job, which ends with its last task.

        Returns the job as it is afterwards, or None if the task was already finished.
        With `attempt` (the lease), TaskLostError if the task is no longer held under it.
        """
        data = self._rpc(
            "complete_task",
            {
                "p_task_id": _uuid(task_id, "task_id"),
                "p_status": status,
                "p_entity_count": entity_count,
                "p_error_message": error_message,
                "p_attempt": attempt,
            },
        )
        return _first(SyncJob, data)

    def release_task(
        self,
        task_id: UUID | str,
        cursor: str | None = None,
        entity_count: int | None = None,
        *,
        attempt: int | None = None,
        error: str | None = None,
        max_attempts: int | None = None,
    ) -> SyncTask | None:
        """Return a processing task to pending with its cursor, for another worker to
        resume. `error`: why (a transient failure), kept on the task. With `max_attempts`,
        the task fails instead once that many attempts in a row made no progress. With
        `attempt` (the lease), TaskLostError if the task is no longer held under it."""
        data = self._rpc(
            "release_task",
            {
                "p_task_id": _uuid(task_id, "task_id"),
                "p_cursor": cursor,
                "p_entity_count": entity_count,
                "p_attempt": attempt,
                "p_error": error,
                "p_max_attempts": max_attempts,
            },
        )
        return _first(SyncTask, data)

    def update_task_status(
        self,
        task_id: UUID | str,
        status: TaskStatusName,
        *,
        entity_count: int | None = None,
        error_message: str | None = None,
        cursor: str | None = None,
    ) -> bool:
        """Move a task to `status`: completed or failed (through complete_task, so the
        job's counters follow), or back to pending (release_task). A task becomes
        processing only by being claimed. Returns whether the task changed."""
        if status in ("completed", "failed"):
            return self.complete_task(task_id, status, entity_count, error_message) is not None
        if status == "pending":
            return self.release_task(task_id, cursor, entity_count) is not None
        raise ValueError("a task becomes processing only through claim_task")

    def update_task_heartbeat(
        self,
        task_id: UUID | str,
        entity_count: int | None = None,
        cursor: str | None = None,
        *,
        attempt: int | None = None,
    ) -> bool:
        """Record progress on a processing task. False (or, with `attempt`, TaskLostError)
        means the task is no longer this worker's and the worker should stop."""
        return self.heartbeat(task_id, entity_count, cursor, attempt=attempt) is not None

    def heartbeat(
        self,
        task_id: UUID | str,
        entity_count: int | None = None,
        cursor: str | None = None,
        *,
        attempt: int | None = None,
    ) -> SyncTask | None:
        """As update_task_heartbeat, returning the task as it now is (None: no longer
        processing), e.g. a shard's range after another worker took part of it."""
        data = self._rpc(
            "heartbeat_task",
            {
                "p_task_id": _uuid(task_id, "task_id"),
                "p_entity_count": entity_count,
                "p_cursor": cursor,
                "p_attempt": attempt,
            },
        )
        return _first(SyncTask, data)

    def requeue_stale_tasks(
        self, stale_after: timedelta = timedelta(minutes=5), max_attempts: int = 3
    ) -> int:
        """Return tasks with an old heartbeat to pending (or fail them past max_attempts)."""
        return int(
            self._rpc(
                "requeue_stale_tasks",
                {"p_stale_after": _interval(stale_after), "p_max_attempts": max_attempts},
            )
        )

    # -- batches -------------------------------------------------------------

    def write_batch(self, batch: WriteBatch) -> BatchCounts:
        """Write a batch of pages and the task's checkpoint in one transaction.

        TaskLostError when the task is no longer this worker's (nothing is written).
        """
        data = self._rpc_large("write_batch", batch, as_text=True)
        return BatchCounts.model_validate(data)

    def finish_task(self, finish: FinishTask) -> FinishedTask:
        """Sweep deletions (full sync), record the watermark and complete the task, atomically."""
        data = self._rpc_large("finish_task", finish)
        return FinishedTask.model_validate(data)

    def take_rate_allowance(self, key: str, per_second: float, requests: int) -> float:
        """Reserve `requests` provider requests under a shared rate; seconds to wait first."""
        return float(
            self._rpc(
                "take_rate_allowance",
                {"p_key": key, "p_per_second": per_second, "p_requests": requests},
            )
        )

    def return_rate_allowance(self, key: str, per_second: float, requests: int) -> None:
        """Give back reserved requests that were not made."""
        self._rpc(
            "return_rate_allowance",
            {"p_key": key, "p_per_second": per_second, "p_requests": requests},
        )

    # -- entities and sync state ---------------------------------------------

    def upsert_entities(self, entities: Sequence[Entity]) -> int:
        """Insert or update a batch of entities in one request. Returns how many distinct rows.

        Within a batch the last object for a key wins (a row cannot be upserted twice
        in one statement).
        """
        latest = {(e.app_key, e.collection_key, e.external_id): e for e in entities}
        if not latest:
            return 0
        rows = [e.model_dump(mode="json") for e in latest.values()]
        with _translated():
            self.rest.table("entities").upsert(
                rows,
                on_conflict=ENTITY_KEY,
                returning=ReturnMethod.minimal,
                default_to_null=False,
            ).execute()
        return len(rows)

    def stored_external_ids(
        self, app_key: str, collection_key: str, page_size: int = 1000
    ) -> list[str]:
        """The external ids of an app's rows in one collection, a page of ids a request."""
        found: list[str] = []
        while True:
            with _translated():
                data = (
                    self.rest.table("entities")
                    .select("external_id")
                    .eq("app_key", app_key)
                    .eq("collection_key", collection_key)
                    .order("external_id")
                    .range(len(found), len(found) + page_size - 1)
                    .execute()
                    .data
                )
            ids = [str(row["external_id"]) for row in _rows(data)]
            found.extend(ids)
            if len(ids) < page_size:
                return found

    def get_sync_state(self, app_key: str, collection_key: str) -> SyncState | None:
        with _translated():
            data = (
                self.rest.table("sync_state")
                .select("*")
                .eq("app_key", app_key)
                .eq("collection_key", collection_key)
                .execute()
                .data
            )
        return _first(SyncState, data)

    def set_sync_state(
        self,
        app_key: str,
        collection_key: str,
        last_synced_at: datetime,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record when (app, collection) was last synced, replacing the previous state."""
        state = SyncState(
            app_key=app_key,
            collection_key=collection_key,
            last_synced_at=last_synced_at,
            last_sync_metadata=metadata or {},
        )
        with _translated():
            self.rest.table("sync_state").upsert(
                state.model_dump(mode="json"),
                on_conflict="app_key,collection_key",
                returning=ReturnMethod.minimal,
            ).execute()


__all__ = ["Database", "translate"]
