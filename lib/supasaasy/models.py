"""Typed rows of the supasaasy schema, as PostgREST returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal["pending", "processing", "completed", "failed", "cancelled"]
TaskStatusName = Literal["pending", "processing", "completed", "failed", "cancelled"]
SyncMode = Literal["full", "incremental"]

ACTIVE_JOB_STATUSES: tuple[JobStatusName, ...] = ("pending", "processing")


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SyncJob(_Row):
    id: UUID
    app_key: str
    mode: SyncMode
    resource_types: list[str]
    status: JobStatusName
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    processed_entities: int
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None


class SyncTask(_Row):
    id: UUID
    job_id: UUID
    resource_type: str
    position: int = 0
    status: TaskStatusName
    entity_count: int
    cursor: str | None = None
    batch_seq: int = 0
    attempts: int
    last_heartbeat: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    checkpoint_attempt: int = 0  # the attempt that last moved the checkpoint
    # A shard (see supasaasy.sync) lists its task's objects created in [from, before).
    parent_task_id: UUID | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None


class ClaimedTask(SyncTask):
    """A task just claimed, with what its worker needs from its job."""

    app_key: str
    mode: SyncMode
    # The app's sync watermarks: collection key -> when its last completed sync began.
    watermarks: dict[str, datetime] = Field(default_factory=dict)
    parent_started_at: datetime | None = None  # a shard's: when its task started
    immediate: bool = False  # run by the request that created its job


class JobStatus(_Row):
    """A job with its tasks and how far it has got; `shards` the shards of its tasks."""

    job: SyncJob
    tasks: list[SyncTask]
    shards: list[SyncTask] = Field(default_factory=list)

    def shards_of(self, task: SyncTask) -> list[SyncTask]:
        return [s for s in self.shards if s.parent_task_id == task.id]

    @property
    def progress_percentage(self) -> float:
        """(completed + failed) / total tasks, as a percentage; 0 for a job with no tasks."""
        total = self.job.total_tasks
        if total == 0:
            return 0.0
        done = self.job.completed_tasks + self.job.failed_tasks
        return round(100.0 * done / total, 2)


class Entity(_Row):
    """One provider object to store in supasaasy.entities."""

    app_key: str
    collection_key: str
    external_id: str
    raw_payload: dict[str, Any]
    api_version: str | None = None
    archived_at: datetime | None = None
    deleted_at: datetime | None = None


class SyncState(_Row):
    app_key: str
    collection_key: str
    last_synced_at: datetime | None = None
    last_sync_metadata: dict[str, Any] = Field(default_factory=dict)


class WebhookLogEntry(_Row):
    """One verified webhook event: applied, ignored, verification (Notion's set-up
    request, its token in `detail`) or failed (see `error`)."""

    id: int
    app_key: str
    event_id: str | None = None
    event_type: str | None = None
    outcome: Literal["applied", "ignored", "verification", "failed"]
    error: str | None = None
    detail: dict[str, Any] | None = None
    received_at: datetime


class BatchRow(TypedDict):
    collection_key: str
    external_id: str
    raw_payload: dict[str, Any]
    archived: NotRequired[bool]
    api_version: NotRequired[str]
    observed_at: NotRequired[str]  # ISO 8601
    source_created_at: NotRequired[str]  # ISO 8601
    source_updated_at: NotRequired[str]  # ISO 8601


class BatchDeletion(TypedDict):
    collection_key: str
    external_id: str
    observed_at: NotRequired[str]


class BatchChildSet(TypedDict):
    collection_key: str
    parent_field: str
    parent_id: str
    observed_at: NotRequired[str]
    complete: NotRequired[bool]  # false: the provider truncated the list


class WriteBatch(TypedDict):
    """The body of `supasaasy.write_batch`: rows, deletions and the task's checkpoint.

    A plain dict, not a model: payloads go to the wire as they came from the provider.
    """

    task_id: str
    attempt: int
    seq: NotRequired[int]
    cursor: str | None
    entity_count: int
    mode: SyncMode
    api_version: NotRequired[str]
    observed_at: NotRequired[str]
    rows: list[BatchRow]
    deletes: NotRequired[list[BatchDeletion]]
    children: NotRequired[list[BatchChildSet]]
    lock_timeout_ms: NotRequired[int]  # how long any lock may be waited for


class BatchCounts(_Row):
    created: int
    updated: int
    unchanged: int
    deleted: int
    created_from: datetime | None = None  # a shard's range now starts here


class FinishTask(TypedDict):
    """The body of `supasaasy.finish_task`."""

    task_id: str
    attempt: int
    entity_count: int
    sweep_collections: NotRequired[list[str]]
    sweep_created_from: NotRequired[str]
    state_collections: NotRequired[list[str]]
    synced_at: NotRequired[str]
    sync_metadata: NotRequired[dict[str, Any]]
    lock_timeout_ms: NotRequired[int]


class FinishedTask(_Row):
    deleted: int
    entity_count: int | None = None  # a full sync's distinct objects
    job: SyncJob | None = None
    waiting: bool = False  # the task still has shards running; one of them finishes it
