"""POST /worker: run pending tasks within the time budget (called by cron and nudges)."""

from __future__ import annotations

import flask
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from ..config import Settings
from ..worker import Worker, nudge_worker, stop_on_sigterm
from .common import (
    Handler,
    Runtime,
    json_response,
    read_json_object,
    require_admin,
    serve,
    validated,
)
from .job_status import parse_job_id


class WorkerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: StrictStr | None = None
    max_tasks: StrictInt | None = Field(default=None, ge=1, le=10_000)

    @field_validator("job_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        return None if value is None else parse_job_id(value)


def create_worker_handler(config: Settings, *, runtime: Runtime | None = None) -> Handler:
    """The `worker` function. `runtime` defaults to one read from the environment."""
    rt = runtime or Runtime.from_env(config)
    stop_on_sigterm()

    def handle(request: flask.Request) -> flask.Response:
        require_admin(request, rt)
        body = validated(WorkerRequest, read_json_object(request, empty_ok=True))
        result = Worker(rt.db, rt.settings).run(body.job_id, body.max_tasks)
        if result.shutdown_reason == "time_budget" and result.released:
            nudge_worker(rt.worker_url, rt.admin_key, body.job_id)
        return json_response({
            "success": result.success,
            "tasks_processed": result.tasks_processed,
            "jobs_completed": result.jobs_completed,
            "duration_ms": result.duration_ms,
            "shutdown_reason": result.shutdown_reason,
        }, status=200 if result.success else 503)  # fmt: skip

    return serve(("POST",), handle, rt)
