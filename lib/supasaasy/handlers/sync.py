"""POST /sync: start a job-based sync of one app (or, with `immediate`, run it now)."""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..config import APP_KEY_PATTERN, AppConfig, Settings
from ..connectors import ConnectorMetadata, connector_class
from ..db import Database
from ..errors import ActiveJobExistsError
from ..models import SyncJob
from ..worker import Worker, nudge_worker, stop_on_sigterm
from .common import (
    Handler,
    HttpError,
    Runtime,
    caller_key,
    json_response,
    read_json_object,
    require_admin,
    serve,
    validated,
)

log = logging.getLogger("supasaasy.sync")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_key: StrictStr = Field(pattern=APP_KEY_PATTERN)
    mode: Literal["full", "incremental"] = "incremental"
    resource_types: list[StrictStr] | None = Field(default=None, min_length=1, max_length=50)
    immediate: StrictBool = False


def task_resources(app: AppConfig, metadata: ConnectorMetadata,
                   requested: list[str] | None) -> list[str]:  # fmt: skip
    """The resource types that get a task: those asked for (a child resource brings its
    parent, which syncs it), or the app's configured ones, or all."""
    chosen: list[str] = []
    for name in requested or app.resources or [r.resource_type for r in metadata.task_resources]:
        resource = next((r for r in metadata.resources if r.resource_type == name), None)
        if resource is None:
            known = ", ".join(r.resource_type for r in metadata.resources)
            raise HttpError(400, f"resource_types: unknown resource type {name[:64]!r} "
                                 f"for app {app.app_key!r}; known: {known}")  # fmt: skip
        name = resource.synced_with_parent or name
        if name not in chosen:
            chosen.append(name)
    return chosen


def create_job(
    db: Database, app: AppConfig, request: SyncRequest, *, immediate: bool = False
) -> SyncJob:
    metadata = connector_class(app).metadata
    resources = task_resources(app, metadata, request.resource_types)
    try:
        return db.create_sync_job(app.app_key, request.mode, resources, immediate=immediate)
    except ActiveJobExistsError as exc:
        raise HttpError(409, exc.message, job_id=exc.active_job_id) from None


def run_immediately(runtime: Runtime, app: AppConfig, request: SyncRequest) -> dict[str, object]:
    """Run every task of a fresh job in this request, then drop the job: the caller
    gets per-collection results and no job is left behind."""
    started = time.monotonic()
    job = create_job(runtime.db, app, request, immediate=True)
    collections = []
    try:
        worker = Worker(runtime.db, runtime.settings, budget_seconds=24 * 3600)
        worker.run(job.id)
        status = runtime.db.get_job_status(job.id)
    finally:
        runtime.db.delete_job(job.id)
    metadata = connector_class(app).metadata
    for task in status.tasks:
        collections.append({
            "resource_type": task.resource_type,
            "collection_key": metadata.resource(task.resource_type).collection_key,
            "status": task.status,
            "entity_count": task.entity_count,
            "error_message": task.error_message,
        })  # fmt: skip
    return {
        "success": status.job.status == "completed",
        "app_key": app.app_key,
        "mode": request.mode,
        "immediate": True,
        "collections": collections,
        "processed_entities": status.job.processed_entities,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


def create_sync_handler(config: Settings, *, runtime: Runtime | None = None) -> Handler:
    """The `sync` function. `runtime` defaults to one read from the environment."""
    rt = runtime or Runtime.from_env(config)
    stop_on_sigterm()  # an immediate run in progress stops at its next page

    def handle(request: flask.Request) -> flask.Response:
        require_admin(request, rt)
        wait = rt.db.admit_request(f"sync:{caller_key(request)}", rt.sync_rate_per_minute)
        if wait > 0:
            error = HttpError(429, "too many sync requests; retry later")
            error.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            raise error
        body = validated(SyncRequest, read_json_object(request))
        app = rt.settings.app(body.app_key)
        if app is None:
            raise HttpError(404, f"unknown app_key: {body.app_key}")
        if body.immediate:
            return json_response(run_immediately(rt, app, body))
        job = create_job(rt.db, app, body)
        log.info("job %s created for %s: %s", job.id, app.app_key, ", ".join(job.resource_types))
        nudge_worker(rt.worker_url, rt.admin_key, str(job.id))
        return json_response({
            "success": True,
            "job_id": str(job.id),
            "app_key": job.app_key,
            "mode": job.mode,
            "status": job.status,
            "total_tasks": job.total_tasks,
            "resource_types": job.resource_types,
        })  # fmt: skip

    return serve(("POST",), handle, rt)
