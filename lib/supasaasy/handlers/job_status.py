"""GET /sync/jobs/{job_id}: a job's progress; POST .../{job_id}/cancel and .../retry.

The job id is read from `?job_id=`, or from a path ending in `/sync/jobs/{id}`,
`/jobs/{id}`, `/job-status/{id}` or `/{id}`, each optionally followed by `/cancel`
or `/retry`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import flask

from ..config import Settings
from ..errors import ActiveJobExistsError, NotFoundError
from ..models import JobStatus, SyncTask
from .common import Handler, HttpError, Runtime, json_response, require_admin, serve

ACTIONS = ("cancel", "retry")


def parse_job_id(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ValueError(f"job_id must be a UUID, not {value[:64]!r}") from None


def job_id_and_action(request: flask.Request) -> tuple[str, str | None]:
    parts = [p for p in request.path.split("/") if p]
    action = parts.pop() if parts and parts[-1] in ACTIONS else None
    raw = request.args.get("job_id") or (parts[-1] if parts else None)
    if not raw or raw in ("jobs", "job-status", "sync"):
        raise HttpError(400, "missing job id: use /sync/jobs/{job_id} or ?job_id=")
    try:
        return parse_job_id(raw), action
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def eta_seconds(status: JobStatus, now: datetime) -> float | None:
    """Seconds left, from the pace of finished tasks; None until one has finished."""
    job = status.job
    done = job.completed_tasks + job.failed_tasks
    if job.status not in ("pending", "processing") or job.started_at is None or done == 0:
        return None
    elapsed = (now - job.started_at).total_seconds()
    return round(elapsed / done * (job.total_tasks - done), 1)


def describe(status: JobStatus, include_tasks: bool) -> dict[str, Any]:
    job = status.job
    body: dict[str, Any] = {
        "success": True,
        "job_id": str(job.id),
        "app_key": job.app_key,
        "mode": job.mode,
        "status": job.status,
        "progress_percentage": status.progress_percentage,
        "total_tasks": job.total_tasks,
        "completed_tasks": job.completed_tasks,
        "failed_tasks": job.failed_tasks,
        "processed_entities": job.processed_entities,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "error_message": job.error_message,
        "eta_seconds": eta_seconds(status, datetime.now(UTC)),
    }
    if include_tasks:
        body["tasks"] = [describe_task(status, task) for task in status.tasks]
    return body


def describe_task(status: JobStatus, task: SyncTask) -> dict[str, Any]:
    """A task's progress; one split into shards also counts its shards by status, and
    what they have synced so far."""
    found: dict[str, Any] = {
        "resource_type": task.resource_type,
        "status": task.status,
        "entity_count": task.entity_count,
        "attempts": task.attempts,
        "error_message": task.error_message,
    }
    shards = status.shards_of(task)
    if shards:
        listed = sum(s.entity_count for s in shards)
        found["entity_count"] = max(task.entity_count, listed)
        found["shards"] = {"total": len(shards), "entity_count": listed} | {
            name: sum(s.status == name for s in shards)
            for name in ("pending", "processing", "completed", "failed", "cancelled")
        }
    return found


def create_job_status_handler(config: Settings, *, runtime: Runtime | None = None) -> Handler:
    """The `job-status` function. `runtime` defaults to one read from the environment."""
    rt = runtime or Runtime.from_env(config)

    def handle(request: flask.Request) -> flask.Response:
        require_admin(request, rt)
        job_id, action = job_id_and_action(request)
        if (request.method == "POST") != (action is not None):
            error = HttpError(405, "use GET for a job's status, POST for /cancel and /retry")
            error.headers["Allow"] = "POST, OPTIONS" if action else "GET, OPTIONS"
            raise error
        include_tasks = request.args.get("include_tasks", "").lower() in ("true", "1")
        try:
            if action == "cancel" and rt.db.cancel_job(job_id) is None:
                rt.db.get_job(job_id)  # 404 if unknown
                raise HttpError(409, "job is not active (already finished or cancelled)")
            if action == "retry" and rt.db.retry_job(job_id) is None:
                rt.db.get_job(job_id)
                raise HttpError(409, "job has nothing to retry (only failed or cancelled jobs)")
            status = rt.db.get_job_status(job_id)
        except NotFoundError:
            raise HttpError(404, f"job not found: {job_id}") from None
        except ActiveJobExistsError as exc:
            raise HttpError(409, exc.message, job_id=exc.active_job_id) from None
        return json_response(describe(status, include_tasks or action is not None))

    return serve(("GET", "POST"), handle, rt)
