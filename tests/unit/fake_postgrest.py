"""A small stateful stand-in for PostgREST and the supasaasy schema, for the handler
tests: jobs, tasks, entities and sync state are kept in dicts, and each RPC is
answered from them the way the migrations do it (leases, one active job per app,
immediate jobs, job counters). Tests assert on what the fake ends with, not on the
order of the requests that got it there.

Install it on a respx router with `FakePostgrest.install`; make one operation fail
with `fail`. Requests the fake does not know, or that lack the service-role key, are
refused and recorded in `unexpected`. Left out, as the handlers never depend on them:
tombstones, observed_at guards, the sweep window (sweep_created_from) and lock timeouts.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import respx
from postgrest_rows import JOB_ID

REST_HOST = "rest.test"
REST_PREFIX = "/rest/v1"
SCHEMA = "supasaasy"
ACTIVE = ("pending", "processing")
FINISHED = ("completed", "failed", "cancelled")

Row = dict[str, Any]
Outcome = httpx.Response | Exception


@dataclass(frozen=True)
class Call:
    """One request the fake received: method, path below /rest/v1, query, JSON body."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any


class PostgrestError(Exception):
    """Ends a request with a PostgREST error body (as a RAISE in a function would)."""

    def __init__(
        self, status: int, code: str, message: str, details: str | None = None,
        hint: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": hint}


def now() -> str:
    return datetime.now(UTC).isoformat()


def lost(task_id: str, attempt: Any) -> PostgrestError:
    return PostgrestError(
        400, "SS001", f"task {task_id} is no longer processing under attempt {attempt}",
        hint="the task was requeued or finished; stop working on it",
    )  # fmt: skip


class FakePostgrest:
    """PostgREST for the `supasaasy` schema, answering from in-memory tables."""

    def __init__(self, service_key: str) -> None:
        self.service_key = service_key
        self.jobs: dict[str, Row] = {}
        self.tasks: dict[str, Row] = {}  # in creation order
        self.entities: dict[tuple[str, str, str], Row] = {}  # (app, collection, external id)
        self.sync_state: dict[tuple[str, str], Row] = {}  # (app, collection)
        self.calls: list[Call] = []
        self.unexpected: list[str] = []
        self.admit_wait: float = 0  # what admit_request answers
        self.failures: dict[tuple[str, str], Outcome] = {}
        self._seen: dict[str, set[tuple[str, str]]] = {}  # a full sync's objects, per task
        self._checkpoints: dict[str, dict[int, Row]] = {}  # batches committed out of order
        self._job_ids = deque([JOB_ID])  # the first job created gets the usual id
        self._lock = threading.Lock()
        self._rpcs: dict[str, Callable[[Any], Any]] = {
            "admit_request": self._admit_request,
            "create_sync_job": self._create_sync_job,
            "cancel_job": self._cancel_job,
            "retry_job": self._retry_job,
            "claim_task": self._claim_task,
            "complete_task": self._complete_task,
            "release_task": self._release_task,
            "heartbeat_task": self._heartbeat_task,
            "write_batch": self._write_batch,
            "finish_task": self._finish_task,
            "cleanup_old_jobs": self._cleanup_old_jobs,
            # One shard a task, never cut: shards are tested on the real stack
            # (tests/integration/test_shards.py).
            "shard_task": self._shard_task,
            "split_shard": lambda params: [],
            "shards_may_split": lambda params: False,
            "take_rate_allowance": lambda params: 0,
            "return_rate_allowance": lambda params: None,
        }

    # -- set-up and inspection -------------------------------------------------------

    def install(self, router: respx.MockRouter) -> None:
        """Answer every request to the PostgREST host of `router`."""
        router.route(host=REST_HOST).mock(side_effect=self.handle)

    def fail(self, method: str, path: str, outcome: Outcome) -> None:
        """Answer every `method` request to `path` (below /rest/v1) with `outcome`."""
        self.failures[(method, path)] = outcome

    def add_job(self, job: Row, tasks: list[Row] | None = None) -> Row:
        """Store a sync_jobs row and its tasks (rows as postgrest_rows makes them)."""
        self.jobs[job["id"]] = {"immediate": False, **job}
        for task in tasks or []:
            self.tasks[task["id"]] = {"batch_seq": 0, "checkpoint_attempt": 0, **task}
        return self.jobs[job["id"]]

    def add_entity(
        self, app_key: str, collection_key: str, payload: Row, *, seen_by: str | None = None
    ) -> None:
        """Store an entity; `seen_by`: written by that task's full sync so far."""
        self.entities[(app_key, collection_key, payload["id"])] = {
            "app_key": app_key, "collection_key": collection_key, "external_id": payload["id"],
            "raw_payload": payload, "api_version": None, "archived": False, "observed_at": None,
        }  # fmt: skip
        if seen_by is not None:
            self._seen.setdefault(seen_by, set()).add((collection_key, payload["id"]))

    def tasks_of(self, job_id: str) -> list[Row]:
        """The job's tasks by position (not their shards)."""
        return sorted(
            (t for t in self.tasks.values()
             if t["job_id"] == job_id and not t.get("parent_task_id")),
            key=lambda t: t["position"],
        )  # fmt: skip

    def shards_of(self, task_id: str) -> list[Row]:
        return [t for t in self.tasks.values() if t.get("parent_task_id") == task_id]

    def rpc_calls(self, function: str) -> list[Any]:
        """The parameters of every call to `function`."""
        return [c.body for c in self.calls if c.path == f"/rpc/{function}"]

    def requests_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if (c.method, c.path) == (method, path)]

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(REST_PREFIX)
        body = json.loads(request.content) if request.content else None
        with self._lock:
            self.calls.append(
                Call(request.method, path, list(request.url.params.multi_items()), body)
            )
            if not self._authorized(request):
                self.unexpected.append(f"{request.method} {path} without the service-role key")
                return httpx.Response(401, json={"code": "PGRST301", "message": "JWT invalid"})
            failure = self.failures.get((request.method, path))
            if isinstance(failure, Exception):
                raise failure
            if failure is not None:
                return httpx.Response(
                    failure.status_code, headers=failure.headers, content=failure.content
                )
            try:
                return self._answer(request.method, path, request.url.params, body)
            except PostgrestError as error:
                return httpx.Response(error.status, json=error.body)
            except Exception as error:  # a request the fake cannot make sense of
                self.unexpected.append(f"{request.method} {path}: {error!r}")
                raise

    def _authorized(self, request: httpx.Request) -> bool:
        headers = request.headers
        return bool(
            headers.get("apikey") == self.service_key
            and headers.get("Authorization") == f"Bearer {self.service_key}"
            and headers.get("Accept-Profile") == SCHEMA
            and headers.get("Content-Profile") == SCHEMA
        )

    def _answer(
        self, method: str, path: str, params: httpx.QueryParams, body: Any
    ) -> httpx.Response:
        if method == "POST" and path.startswith("/rpc/") and path[5:] in self._rpcs:
            return httpx.Response(200, json=self._rpcs[path[5:]](body))
        if path == "/sync_jobs" and method == "GET":
            return httpx.Response(200, json=self._select_jobs(params))
        if path == "/sync_jobs" and method == "DELETE":
            for job in self._matching_jobs(params):
                self._delete_job(job["id"])
            return httpx.Response(204)
        self.unexpected.append(f"{method} {path}")
        raise PostgrestError(404, "PGRST202", f"no fake for {method} {path}")

    # -- tables --------------------------------------------------------------------------

    def _matching_jobs(self, params: httpx.QueryParams) -> list[Row]:
        jobs = list(self.jobs.values())
        for column, condition in params.multi_items():
            if column in ("select", "limit", "order"):
                continue
            operator, _, value = condition.partition(".")
            if operator == "eq":
                jobs = [j for j in jobs if str(j[column]) == value]
            elif operator == "in":
                allowed = value.strip("()").split(",")
                jobs = [j for j in jobs if str(j[column]) in allowed]
            else:
                self.unexpected.append(f"filter {column}={condition}")
        if "limit" in params:
            jobs = jobs[: int(params["limit"])]
        return jobs

    def _select_jobs(self, params: httpx.QueryParams) -> list[Row]:
        with_tasks = "tasks:sync_job_tasks(*)" in params.get("select", "")
        return [
            {**job, "tasks": [t for t in self.tasks.values() if t["job_id"] == job["id"]]}
            if with_tasks
            else dict(job)
            for job in self._matching_jobs(params)
        ]

    def _delete_job(self, job_id: str) -> None:
        del self.jobs[job_id]
        for task_id in [t["id"] for t in self.tasks.values() if t["job_id"] == job_id]:
            del self.tasks[task_id]

    def _active_job(self, app_key: str, other_than: str | None = None) -> Row | None:
        return next(
            (j for j in self.jobs.values()
             if j["app_key"] == app_key and j["status"] in ACTIVE and j["id"] != other_than),
            None,
        )  # fmt: skip

    # -- jobs ------------------------------------------------------------------------------

    def _admit_request(self, params: Row) -> float:
        return self.admit_wait

    def _create_sync_job(self, params: Row) -> list[Row]:
        types = list(dict.fromkeys(params["p_resource_types"] or []))
        if not types:
            raise PostgrestError(400, "22023", "a sync job needs at least one resource type")
        app_key = params["p_app_key"]
        self._raise_if_active(app_key)
        job_id = self._job_ids.popleft() if self._job_ids else str(uuid4())
        created = now()
        job = self.add_job({
            "id": job_id, "app_key": app_key, "mode": params["p_mode"],
            "resource_types": types, "status": "pending", "total_tasks": len(types),
            "completed_tasks": 0, "failed_tasks": 0, "processed_entities": 0,
            "created_at": created, "started_at": None, "completed_at": None,
            "error_message": None, "immediate": bool(params.get("p_immediate")),
        })  # fmt: skip
        for position, resource_type in enumerate(types, start=1):
            task_id = str(uuid4())
            self.tasks[task_id] = {
                "id": task_id, "job_id": job_id, "resource_type": resource_type,
                "position": position, "status": "pending", "entity_count": 0, "cursor": None,
                "attempts": 0, "last_heartbeat": None, "created_at": created,
                "started_at": None, "completed_at": None, "error_message": None,
                "batch_seq": 0, "checkpoint_attempt": 0,
            }  # fmt: skip
        return [dict(job)]

    def _raise_if_active(self, app_key: str, other_than: str | None = None) -> None:
        active = self._active_job(app_key, other_than)
        if active is not None:
            raise PostgrestError(
                400, "SS002", f"app {app_key} already has an active sync job",
                details=active["id"], hint="wait for it to end, or cancel it",
            )  # fmt: skip

    def _cancel_job(self, params: Row) -> list[Row]:
        job = self.jobs.get(params.get("p_job_id"))
        if job is None or job["status"] not in ACTIVE:
            return []
        job.update(status="cancelled", completed_at=now(),
                   error_message=job["error_message"] or "cancelled")  # fmt: skip
        for task in self.tasks_of(job["id"]):
            if task["status"] in ACTIVE:
                task.update(status="cancelled", completed_at=now())
        return [dict(job)]

    def _retry_job(self, params: Row) -> list[Row]:
        job = self.jobs.get(params.get("p_job_id"))
        if job is None or job["status"] not in ("failed", "cancelled"):
            return []
        self._raise_if_active(job["app_key"], other_than=job["id"])
        failed = [t for t in self.tasks_of(job["id"]) if t["status"] == "failed"]
        job.update(
            status="pending" if job["started_at"] is None else "processing",
            failed_tasks=job["failed_tasks"] - len(failed),
            processed_entities=job["processed_entities"] - sum(t["entity_count"] for t in failed),
            completed_at=None,
            error_message=None,
        )
        for task in self.tasks_of(job["id"]):
            if task["status"] in ("failed", "cancelled"):
                task.update(status="pending", error_message=None, completed_at=None,
                            checkpoint_attempt=task["attempts"])  # fmt: skip
        return [dict(job)]

    def _cleanup_old_jobs(self, params: Row) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=params["p_retention_days"])
        old = [
            j["id"] for j in self.jobs.values()
            if j["status"] in FINISHED
            and datetime.fromisoformat(j["completed_at"] or j["created_at"]) < cutoff
        ]  # fmt: skip
        for job_id in old:
            self._delete_job(job_id)
        return len(old)

    # -- tasks -----------------------------------------------------------------------------

    def _held(self, task_id: str, attempt: Any) -> Row:
        """The task, if it is processing under `attempt` (None: any); else SS001."""
        task = self.tasks.get(task_id)
        if (
            task is None
            or task["status"] != "processing"
            or (attempt is not None and task["attempts"] != attempt)
        ):
            raise lost(task_id, attempt)
        return task

    def _check_lease(self, task_id: str, attempt: Any) -> None:
        if attempt is not None:
            self._held(task_id, attempt)

    def _claim_task(self, params: Row) -> list[Row]:
        if params.get("p_stale_after") is not None:
            self._requeue_stale(params["p_stale_after"], params.get("p_max_attempts", 3))
        job_id = params.get("p_job_id")
        candidates = sorted(
            (t for t in self.tasks.values()
             if t["status"] == "pending" and self.jobs[t["job_id"]]["status"] in ACTIVE
             and (t["job_id"] == job_id
                  or (job_id is None and not self.jobs[t["job_id"]]["immediate"]))),
            key=lambda t: (t["created_at"], t["position"]),
        )  # fmt: skip
        if not candidates:
            return []
        task = candidates[0]
        task.update(status="processing", started_at=task["started_at"] or now(),
                    last_heartbeat=now(), attempts=task["attempts"] + 1)  # fmt: skip
        job = self.jobs[task["job_id"]]
        if job["status"] == "pending":
            job.update(status="processing", started_at=job["started_at"] or now())
        return [self._claimed(task)]

    def _claimed(self, task: Row) -> Row:
        job = self.jobs[task["job_id"]]
        watermarks = {
            collection: state["last_synced_at"]
            for (app_key, collection), state in self.sync_state.items()
            if app_key == job["app_key"] and state["last_synced_at"] is not None
        }
        parent = self.tasks.get(task.get("parent_task_id") or "")
        return {**task, "app_key": job["app_key"], "mode": job["mode"],
                "watermarks": watermarks, "immediate": job["immediate"],
                "parent_started_at": parent["started_at"] if parent else None}  # fmt: skip

    def _shard_task(self, params: Row) -> list[Row]:
        task = self._held(params["p_task_id"], params["p_attempt"])
        task["cursor"] = params["p_cursor"]
        shard = {**task, "id": str(uuid4()), "parent_task_id": task["id"],
                 "created_from": params["p_created_from"], "created_before": None,
                 "status": "processing", "attempts": 1, "cursor": None, "entity_count": 0,
                 "batch_seq": 0, "pending_checkpoints": None, "checkpoint_attempt": 0,
                 "created_at": now(), "started_at": now(), "last_heartbeat": now()}  # fmt: skip
        self.tasks[shard["id"]] = shard
        return [self._claimed(shard)]

    def _requeue_stale(self, stale_after: str, max_attempts: int) -> None:
        seconds = float(re.fullmatch(r"([0-9.]+) seconds", stale_after).group(1))  # type: ignore[union-attr]
        cutoff = datetime.now(UTC) - timedelta(seconds=seconds)
        for task in list(self.tasks.values()):
            beat = task["last_heartbeat"] or task["started_at"] or task["created_at"]
            if task["status"] == "processing" and datetime.fromisoformat(beat) < cutoff:
                self._end_attempt(task, f"no heartbeat for {stale_after}", max_attempts)

    def _end_attempt(self, task: Row, error: str | None, max_attempts: int | None) -> None:
        """Back to pending, or failed: an immediate job's task, or too many attempts
        in a row without progress."""
        job = self.jobs[task["job_id"]]
        without_progress = task["attempts"] - task["checkpoint_attempt"]
        if job["immediate"]:
            reason = error or "stopped before its end"
            self._complete(task, "failed", None, f"immediate run interrupted: {reason}")
            if job["status"] in ACTIVE:
                job["error_message"] = "immediate run interrupted"
                self._cancel_job({"p_job_id": job["id"]})
        elif max_attempts is not None and without_progress >= max_attempts:
            reason = error or "stopped before its end"
            message = f"{reason} ({without_progress} attempts in a row without progress)"
            self._complete(task, "failed", None, message)
        else:
            task.update(status="pending", error_message=error or task["error_message"],
                        last_heartbeat=now())  # fmt: skip

    def _complete(
        self, task: Row, status: str, entity_count: int | None, error: str | None
    ) -> Row | None:
        """Finish a task and count it in its job, which ends with its last task."""
        if task["status"] not in ACTIVE:
            return None
        failed = status == "failed"
        task.update(
            status=status,
            entity_count=task["entity_count"] if entity_count is None else entity_count,
            error_message=(error or "failed without a message") if failed else None,
            completed_at=now(),
            last_heartbeat=now(),
        )
        job = self.jobs[task["job_id"]]
        job.update(
            completed_tasks=job["completed_tasks"] + (not failed),
            failed_tasks=job["failed_tasks"] + failed,
            processed_entities=job["processed_entities"] + task["entity_count"],
        )
        tasks = self.tasks_of(job["id"])
        if job["status"] in ACTIVE and not any(t["status"] in ACTIVE for t in tasks):
            errors = sorted(f"{t['resource_type']}: {t['error_message']}"
                            for t in tasks if t["status"] == "failed")  # fmt: skip
            job.update(
                status="failed" if job["failed_tasks"] else "completed",
                started_at=job["started_at"] or now(),
                completed_at=now(),
                error_message="; ".join(errors) or None,
            )
        return dict(job)

    def _complete_task(self, params: Row) -> list[Row]:
        status = params["p_status"]
        if status not in ("completed", "failed"):
            raise PostgrestError(
                400, "22023", f"a task can only be completed or failed, not {status}"
            )
        task_id = params["p_task_id"]
        self._check_lease(task_id, params.get("p_attempt"))
        task = self.tasks.get(task_id)
        job = None if task is None else self._complete(
            task, status, params.get("p_entity_count"), params.get("p_error_message")
        )  # fmt: skip
        return [] if job is None else [job]

    def _release_task(self, params: Row) -> list[Row]:
        task_id = params["p_task_id"]
        self._check_lease(task_id, params.get("p_attempt"))
        task = self.tasks.get(task_id)
        if task is None or task["status"] != "processing":
            return []
        if params.get("p_cursor") is not None:
            task["cursor"] = params.get("p_cursor")
        if params.get("p_entity_count") is not None:
            task["entity_count"] = params.get("p_entity_count")
        self._end_attempt(task, params.get("p_error"), params.get("p_max_attempts"))
        return [dict(task)]

    def _heartbeat_task(self, params: Row) -> list[Row]:
        task_id = params["p_task_id"]
        self._check_lease(task_id, params.get("p_attempt"))
        task = self.tasks.get(task_id)
        if task is None or task["status"] != "processing":
            return []
        task["last_heartbeat"] = now()
        if params.get("p_entity_count") is not None:
            task["entity_count"] = params.get("p_entity_count")
        if params.get("p_cursor") is not None:
            task["cursor"] = params.get("p_cursor")
        return [dict(task)]

    # -- batches ---------------------------------------------------------------------------

    def _write_batch(self, batch: Row) -> Row:
        task = self._held(batch["task_id"], batch["attempt"])
        app_key = self.jobs[task["job_id"]]["app_key"]
        full = batch.get("mode", "full") == "full"
        created = updated = deleted = 0
        rows = {(r["collection_key"], r["external_id"]): r for r in batch.get("rows", [])}
        for (collection, external_id), row in rows.items():
            key = (app_key, collection, external_id)
            stored = {
                "app_key": app_key, "collection_key": collection, "external_id": external_id,
                "raw_payload": row["raw_payload"],
                "api_version": row.get("api_version") or batch.get("api_version"),
                "archived": bool(row.get("archived")),
                "observed_at": row.get("observed_at") or batch.get("observed_at"),
            }  # fmt: skip
            if key not in self.entities:
                created += 1
            elif self.entities[key]["raw_payload"] != stored["raw_payload"]:
                updated += 1
            self.entities[key] = stored
            if full:
                self._seen.setdefault(task["id"], set()).add((collection, external_id))
        for deletion in batch.get("deletes", []):
            key = (app_key, deletion["collection_key"], deletion["external_id"])
            deleted += self.entities.pop(key, None) is not None
        for child in batch.get("children", []):
            for key, entity in list(self.entities.items()):
                if (key[:2] == (app_key, child["collection_key"])
                        and entity["raw_payload"].get(child["parent_field"]) == child["parent_id"]
                        and key[1:] not in rows):  # fmt: skip
                    del self.entities[key]
                    deleted += 1
        self._advance_checkpoint(task, batch)
        return {"created": created, "updated": updated,
                "unchanged": len(rows) - created - updated, "deleted": deleted}  # fmt: skip

    def _advance_checkpoint(self, task: Row, batch: Row) -> None:
        """Move the cursor over every batch committed without a gap."""
        pending = self._checkpoints.setdefault(f"{task['id']}:{task['attempts']}", {})
        pending[batch.get("seq", task["batch_seq"] + 1)] = batch
        while task["batch_seq"] + 1 in pending:
            done = pending.pop(task["batch_seq"] + 1)
            task.update(batch_seq=task["batch_seq"] + 1, cursor=done["cursor"],
                        entity_count=done["entity_count"],
                        checkpoint_attempt=task["attempts"])  # fmt: skip
        task["last_heartbeat"] = now()

    def _finish_task(self, finish: Row) -> Row:
        task = self._held(finish["task_id"], finish["attempt"])
        parent_id = task.get("parent_task_id")
        if parent_id:  # a shard: the last of its task's finishes the task
            task.update(status="completed", completed_at=now(),
                        entity_count=finish["entity_count"])  # fmt: skip
            self._seen.setdefault(parent_id, set()).update(self._seen.pop(task["id"], set()))
            task = self.tasks[parent_id]
            if task["status"] != "processing" or any(
                t.get("parent_task_id") == parent_id and t["status"] in ACTIVE
                for t in self.tasks.values()
            ):
                return {"deleted": 0, "entity_count": finish["entity_count"], "waiting": True}
        app_key = self.jobs[task["job_id"]]["app_key"]
        count, deleted = finish["entity_count"], 0
        seen = self._seen.pop(task["id"], set())
        if isinstance(finish.get("sweep_collections"), list):
            count = len(seen)
            for key in list(self.entities):
                if (key[0] == app_key and key[1] in finish["sweep_collections"]
                        and key[1:] not in seen):  # fmt: skip
                    del self.entities[key]
                    deleted += 1
        if finish.get("synced_at") is not None:
            for collection in finish.get("state_collections", []):
                self.sync_state[(app_key, collection)] = {
                    "app_key": app_key, "collection_key": collection,
                    "last_synced_at": finish["synced_at"],
                    "last_sync_metadata": finish.get("sync_metadata") or {},
                }  # fmt: skip
        job = self._complete(task, "completed", count, None)
        return {"deleted": deleted, "entity_count": count, "job": job}
