"""The worker loop: requeue stale tasks, then claim and run tasks until none is left,
`max_tasks` is reached, or the time budget runs out (the task in hand is then
released with its cursor, for the next worker to resume)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

import httpx

from .config import Settings
from .connectors import create_connector
from .db import Database
from .errors import DatabaseUnavailableError, SupasaasyError, TaskLostError
from .models import SyncJob, SyncTask
from .sync import ResourceSync, SharedRateLimiter

log = logging.getLogger("supasaasy.worker")

# A new task is only claimed with at least this much of the budget left.
MIN_SECONDS_FOR_A_TASK = 1.0
ERROR_MESSAGE_LIMIT = 1000


@dataclass
class WorkerResult:
    success: bool = True
    tasks_processed: int = 0
    jobs_completed: list[str] = field(default_factory=list)
    duration_ms: int = 0
    shutdown_reason: str = "no_tasks"
    released: int = 0  # tasks handed back with their cursor when the budget ran out


class Worker:
    """Runs claimed tasks with their app's connector. Safe to run many at once."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.settings = settings
        self.budget = budget_seconds or settings.worker.time_budget_seconds
        self.clock = clock
        self.jobs: dict[UUID, SyncJob] = {}

    def run(self, job_id: UUID | str | None = None, max_tasks: int | None = None) -> WorkerResult:
        start = self.clock()
        deadline = start + self.budget
        result = WorkerResult()
        try:
            moved = self.db.requeue_stale_tasks(
                timedelta(seconds=self.settings.worker.stale_after_seconds),
                self.settings.worker.max_attempts,
            )
            if moved:
                log.info("requeued %d stale task(s)", moved)
            while True:
                if max_tasks is not None and result.tasks_processed >= max_tasks:
                    result.shutdown_reason = "max_tasks_reached"
                    break
                if deadline - self.clock() < MIN_SECONDS_FOR_A_TASK:
                    result.shutdown_reason = "time_budget"
                    break
                task = self.db.claim_task(job_id)
                if task is None:
                    result.shutdown_reason = "no_tasks"
                    self._clean_up()
                    break
                if not self._run_task(task, lambda: self.clock() >= deadline, result):
                    result.shutdown_reason = "time_budget"
                    break
        except DatabaseUnavailableError as exc:
            log.error("database unavailable: %s", exc)
            result.success = False
            result.shutdown_reason = "database_unavailable"
        result.duration_ms = int((self.clock() - start) * 1000)
        return result

    def _clean_up(self) -> None:
        """Idle: a good moment to delete jobs past their retention (never fatal)."""
        try:
            deleted = self.db.cleanup_old_jobs(self.settings.job_retention_days)
        except SupasaasyError as exc:
            log.warning("job cleanup failed: %s", exc)
            return
        if deleted:
            log.info("deleted %d job(s) past their %d days", deleted,
                     self.settings.job_retention_days)  # fmt: skip

    def _run_task(
        self, task: SyncTask, out_of_time: Callable[[], bool], result: WorkerResult
    ) -> bool:
        """Run one claimed task. False when it was released because time ran out."""
        job = self.jobs.get(task.job_id) or self.db.get_job(task.job_id)
        self.jobs[task.job_id] = job  # a job's app and mode never change
        app = self.settings.app(job.app_key)
        connector = None
        try:
            if app is None:
                raise SupasaasyError(f"app {job.app_key!r} is no longer configured")
            connector = create_connector(app)
            if connector.requests_per_second:
                connector.rate_limiter = SharedRateLimiter(
                    self.db, f"provider:{app.app_key}", connector.requests_per_second
                )
            outcome = ResourceSync(self.db, connector).run(task, job.mode, out_of_time)
        except TaskLostError:
            log.info("task %s was cancelled or requeued; moving on", task.id)
            return True
        except DatabaseUnavailableError:
            # Not the task's fault: hand it back at once (its checkpoint is kept) if the
            # database still answers, else it is requeued when its heartbeat is stale.
            with contextlib.suppress(SupasaasyError):
                self.db.release_task(task.id)
            raise
        except Exception as exc:  # the task fails; the worker goes on to the next one
            message = _describe(exc)
            log.warning(
                "task %s (%s %s) failed: %s", task.id, job.app_key, task.resource_type, message
            )
            finished = self.db.complete_task(task.id, "failed", None, message)
            result.tasks_processed += 1
            if finished is not None and finished.status in ("completed", "failed"):
                result.jobs_completed.append(str(finished.id))
            return True
        finally:
            if connector is not None:
                connector.rate_limiter.close()
                connector.close()
        if not outcome.finished:
            self.db.release_task(task.id, outcome.cursor, outcome.progress.entity_count)
            result.released += 1
            log.info("task %s released at its cursor: time budget spent", task.id)
            return False
        result.tasks_processed += 1
        if outcome.job is not None and outcome.job.status in ("completed", "failed"):
            result.jobs_completed.append(str(outcome.job.id))
        return True


def _describe(exc: BaseException) -> str:
    """A task's error message: ours as they are, others with their type. Provider
    errors never carry request headers, so no key reaches the message."""
    text = str(exc) if isinstance(exc, SupasaasyError) else f"{type(exc).__name__}: {exc}"
    return text[:ERROR_MESSAGE_LIMIT] or type(exc).__name__


def nudge_worker(worker_url: str | None, admin_key: str | None, job_id: str | None = None) -> None:
    """Ask another worker to start, without waiting for it (fire and forget)."""
    if not worker_url or not admin_key:
        return

    def send() -> None:
        # The read timeout is expected: the other worker keeps working.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                worker_url,
                json={"job_id": job_id} if job_id else {},
                headers={"Authorization": f"Bearer {admin_key}"},
                timeout=httpx.Timeout(5.0, read=0.5),
            )

    threading.Thread(target=send, name="supasaasy-nudge", daemon=True).start()
