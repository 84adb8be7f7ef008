"""The worker loop: claim (requeueing stale tasks in the same trip) and run tasks until
none is left, `max_tasks` is reached, the time budget runs out, or the process is asked
to stop (SIGTERM). A task in hand when time runs out or a stop is asked is released at
its last committed checkpoint, for the next worker to resume at once.

A full sync of a resource its connector lists by creation time runs as shards (see
`supasaasy.sync.ResourceSync.shard`). A worker with nothing to claim takes part of the
busiest shard's range (`split_shard`); while a task or shard that just started may soon
be worth splitting, it looks again every STEAL_POLL_SECONDS before it stops."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from uuid import UUID

import httpx

from .config import Settings
from .connectors import create_connector
from .db import Database
from .errors import DatabaseUnavailableError, SupasaasyError, TaskLostError
from .models import ClaimedTask
from .redact import redact
from .sync import ResourceSync, SharedRateLimiter

log = logging.getLogger("supasaasy.worker")

# A new task is only claimed with at least this much of the budget left.
MIN_SECONDS_FOR_A_TASK = 1.0
# Taking part of a busy shard: pieces of about this many objects (20 pages of 100), at
# most this many at a time (the shard's own, the caller's, and pending ones for others).
SHARD_PIECE_OBJECTS = 2000
SHARD_MAX_PIECES = 16
STEAL_POLL_SECONDS = 0.3
ERROR_MESSAGE_LIMIT = 1000
# After SIGTERM, how long a process with no handler of its own waits for its workers
# to release their tasks before it exits (hosts send SIGKILL about 10 s after SIGTERM).
SHUTDOWN_GRACE_SECONDS = 5.0

_shutdown = threading.Event()
_running_count = 0  # Worker.run calls in progress in this process
_sigterm_installed = False
_running_lock = threading.Lock()


def shutdown_requested() -> bool:
    """Whether this process was asked to stop (SIGTERM): workers stop at their next page."""
    return _shutdown.is_set()


def wait_for_shutdown(seconds: float) -> bool:
    """Sleep up to `seconds`, waking at once on SIGTERM; whether a stop was asked."""
    return _shutdown.wait(seconds)


def stop_on_sigterm(*, exit_process: bool = True) -> None:
    """On SIGTERM, every worker in this process stops at its next page boundary, commits
    what it has and releases its task; then the previous handler runs, or, where there
    was none and `exit_process`, the process exits once its workers are done. Under
    gunicorn (functions-framework's server), whose worker processes set their own
    handler after loading the app, that handler is wrapped the same way: gunicorn then
    finishes the requests in flight, which end at once, and exits. Call from the main
    thread, once start-up is done (elsewhere, or a second time, it does nothing)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    _chain_sigterm(exit_process)
    _hook_gunicorn()


def _chain_sigterm(exit_process: bool) -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: FrameType | None) -> None:
        _shutdown.set()
        log.info("SIGTERM: stopping at the next page boundary")
        if callable(previous):
            previous(signum, frame)
        elif exit_process and previous != signal.SIG_IGN:
            threading.Thread(target=_exit_when_idle, name="supasaasy-exit", daemon=True).start()

    signal.signal(signal.SIGTERM, handle)


def _hook_gunicorn() -> None:
    try:
        from gunicorn.workers.base import Worker as GunicornWorker
    except ImportError:
        return
    init_signals = GunicornWorker.init_signals

    def init_signals_then_chain(self: GunicornWorker) -> None:
        init_signals(self)
        _chain_sigterm(exit_process=False)

    GunicornWorker.init_signals = init_signals_then_chain


def _exit_when_idle() -> None:
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while _running_count and time.monotonic() < deadline:
        time.sleep(0.05)
    logging.shutdown()
    os._exit(128 + signal.SIGTERM)  # as the default action would have ended it


@dataclass
class WorkerResult:
    success: bool = True
    tasks_processed: int = 0
    jobs_completed: list[str] = field(default_factory=list)
    duration_ms: int = 0
    shutdown_reason: str = "no_tasks"  # or max_tasks_reached, time_budget, shutdown, ...
    released: int = 0  # tasks handed back with their cursor (time budget spent, shutdown)


class Worker:
    """Runs claimed tasks with their app's connector. Safe to run many at once."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        budget_seconds: float | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.budget = budget_seconds or settings.worker.time_budget_seconds

    def run(self, job_id: UUID | str | None = None, max_tasks: int | None = None) -> WorkerResult:
        global _running_count
        with _running_lock:
            _running_count += 1
        try:
            return self._run(job_id, max_tasks)
        finally:
            with _running_lock:
                _running_count -= 1

    def _run(self, job_id: UUID | str | None, max_tasks: int | None) -> WorkerResult:
        start = time.monotonic()
        deadline = start + self.budget
        result = WorkerResult()
        stale_after = timedelta(seconds=self.settings.worker.stale_after_seconds)
        try:
            while True:
                if shutdown_requested():
                    result.shutdown_reason = "shutdown"
                    break
                if max_tasks is not None and result.tasks_processed >= max_tasks:
                    result.shutdown_reason = "max_tasks_reached"
                    break
                if deadline - time.monotonic() < MIN_SECONDS_FOR_A_TASK:
                    result.shutdown_reason = "time_budget"
                    break
                task = self.db.claim_task(
                    job_id, stale_after=stale_after, max_attempts=self.settings.worker.max_attempts
                ) or self._split_shard(job_id)
                if task is None:
                    if self.db.shards_may_split(job_id) and not wait_for_shutdown(
                        STEAL_POLL_SECONDS
                    ):
                        continue
                    result.shutdown_reason = "no_tasks"
                    self._clean_up()
                    break
                if not self._run_task(task, deadline, result):
                    result.shutdown_reason = "shutdown" if shutdown_requested() else "time_budget"
                    break
        except DatabaseUnavailableError as exc:
            log.error("database unavailable: %s", exc)
            result.success = False
            result.shutdown_reason = "database_unavailable"
        result.duration_ms = int((time.monotonic() - start) * 1000)
        return result

    def _split_shard(self, job_id: UUID | str | None) -> ClaimedTask | None:
        """Part of the busiest shard's range, claimed for this worker, if one is worth it."""
        return self.db.split_shard(
            job_id, piece_objects=SHARD_PIECE_OBJECTS, max_pieces=SHARD_MAX_PIECES
        )

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

    def _run_task(self, task: ClaimedTask, deadline: float, result: WorkerResult) -> bool:
        """Run one claimed task. False when it was released: time ran out, or shutdown."""
        app = self.settings.app(task.app_key)
        max_attempts = self.settings.worker.max_attempts
        connector = None
        secrets: list[str] = []
        try:
            if app is None:
                raise SupasaasyError(f"app {task.app_key!r} is no longer configured")
            key = f"provider:{app.app_key}"
            connector = create_connector(
                app, rate_limits=lambda rate: SharedRateLimiter(self.db, key, rate)
            )
            secrets = connector.secrets
            connector.deadline = deadline
            sync = ResourceSync(self.db, connector, deadline=deadline)
            task = sync.shard(task, task.mode) or task
            outcome = sync.run(
                task, task.mode, lambda: time.monotonic() >= deadline or shutdown_requested()
            )
        except TaskLostError:
            log.info("task %s was cancelled or requeued; moving on", task.id)
            return True
        except DatabaseUnavailableError as exc:
            # Not the task's fault: hand it back at once (its checkpoint is kept) if the
            # database still answers, else it is requeued when its heartbeat is stale.
            message = _describe(exc, secrets)
            with contextlib.suppress(SupasaasyError):
                self.db.release_task(
                    task.id, attempt=task.attempts, error=message, max_attempts=max_attempts
                )
            raise
        except Exception as exc:  # the task fails; the worker goes on to the next one
            message = _describe(exc, secrets)
            log.warning(
                "task %s (%s %s) failed: %s", task.id, task.app_key, task.resource_type, message
            )
            try:
                finished = self.db.complete_task(task.id, "failed", None, message,
                                                 attempt=task.attempts)  # fmt: skip
            except TaskLostError:
                return True
            result.tasks_processed += 1
            if finished is not None and finished.status in ("completed", "failed"):
                result.jobs_completed.append(str(finished.id))
            return True
        finally:
            if connector is not None:
                connector.rate_limiter.close()
                connector.close()
        if not outcome.finished:
            try:
                self.db.release_task(task.id, outcome.cursor, outcome.progress.entity_count,
                                     attempt=task.attempts, max_attempts=max_attempts)  # fmt: skip
            except TaskLostError:
                return True
            result.released += 1
            log.info("task %s released at its cursor: %s", task.id,
                     "shutting down" if shutdown_requested() else "time budget spent")  # fmt: skip
            return False
        result.tasks_processed += 1
        if outcome.job is not None and outcome.job.status in ("completed", "failed"):
            result.jobs_completed.append(str(outcome.job.id))
        return True


def _describe(exc: BaseException, secrets: list[str]) -> str:
    """A task's error message: ours as they are, others with their type; the app's own
    secrets and anything shaped like a key are redacted."""
    text = str(exc) if isinstance(exc, SupasaasyError) else f"{type(exc).__name__}: {exc}"
    return redact(text, secrets)[:ERROR_MESSAGE_LIMIT] or type(exc).__name__


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
