"""Sync one claimed task: page through its resource and write the pages in batches.

Pages are fetched in a background thread while the previous batch is written.
Each batch is one `write_batch` call carrying the rows and the task's checkpoint
(the cursor after the last page in it), so a resumed task never skips or repeats
committed work. When the resource is done, `finish_task` sweeps upstream
deletions (full sync), records the watermark and completes the task atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from .connectors import ChildSet, Connector, Deletion, Page, RateLimiter, Record
from .db import Database
from .errors import OutOfTimeError, TaskLostError
from .models import (
    BatchChildSet,
    BatchCounts,
    BatchDeletion,
    BatchRow,
    ClaimedTask,
    FinishTask,
    SyncJob,
    SyncMode,
    WriteBatch,
)

log = logging.getLogger("supasaasy.sync")

BATCH_ROWS = 1000  # rows per write call: 500-1,000 was 1.5-2x faster than 100
BATCH_SECONDS = 5.0  # a slow provider still checkpoints (and heartbeats) this often
PREFETCH_PAGES = 4
MAX_CHUNK = 100  # provider requests reserved per round trip to the shared rate
CHUNK_SECONDS = 1.0  # how long a worker's reservation should last at its pace
WRITERS = 2  # batches in flight at once: the database works on one while the next is sent
LEASE_CHECK_SECONDS = 1.0  # with no batch sent for this long, check the task is still ours
STOP_POLL_SECONDS = 0.2  # how often a stop is looked for while a page is awaited
# A shard that has not heard from the database for this long (a write's result says
# where its range starts) looks it up, so as to stop soon after passing it: another
# worker may have taken part of its range.
RANGE_CHECK_SECONDS = 0.5
# A shard's first batch is written after this many rows: until a shard has committed,
# its pace is unknown and no other worker can take part of its range.
FIRST_SHARD_BATCH_ROWS = 200
MIN_LOCK_TIMEOUT_MS = 1000


@dataclass
class Progress:
    """Where a task stands; reported after every batch."""

    mode: SyncMode
    entity_count: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    pages: int = 0
    batches: int = 0
    # A shard's range start, as its last write found it (split_shard may move it up).
    created_from: datetime | None = None


@dataclass
class SyncOutcome:
    """`finished`: the task was completed; otherwise it stopped at `cursor` on request."""

    finished: bool
    progress: Progress
    cursor: str | None = None
    job: SyncJob | None = None


@dataclass(frozen=True)
class TaskCursor:
    """What the task's `cursor` column holds: the mode it runs in and the connector's
    cursor after the last committed page (`done` once every page is committed).
    `sharded`: the task is split into shards, which do its listing. A shard's cursor also
    has the creation times (Unix seconds) of the `oldest` and `newest` objects it has
    committed, from which `supasaasy.split_shard` reckons what it has left."""

    mode: SyncMode
    after: str | None = None
    done: bool = False
    sharded: bool = False
    oldest: int | None = None
    newest: int | None = None

    def encode(self) -> str:
        raw: dict[str, object] = {"mode": self.mode, "after": self.after, "done": self.done}
        if self.sharded:
            raw["sharded"] = True
        if self.oldest is not None and self.newest is not None:
            raw |= {"oldest": self.oldest, "newest": self.newest}
        return json.dumps(raw)

    @classmethod
    def decode(cls, text: str | None) -> TaskCursor | None:
        if not text:
            return None
        try:
            raw = json.loads(text)
            mode: Literal["full", "incremental"] = raw["mode"]
            if mode not in ("full", "incremental"):
                raise ValueError(mode)
            oldest, newest = raw.get("oldest"), raw.get("newest")
            return cls(mode=mode, after=raw.get("after"), done=bool(raw.get("done")),
                       sharded=bool(raw.get("sharded")),
                       oldest=None if oldest is None else int(oldest),
                       newest=None if newest is None else int(newest))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"task cursor is not one this version wrote: {text[:80]!r}") from None

    def passed(self, page: Page, collection_key: str | None = None) -> TaskCursor:
        """This cursor moved over `page`; with `collection_key`, its times widened by the
        page's objects of that collection."""
        times = [int(r.created_at.timestamp()) for r in page.records
                 if r.collection_key == collection_key and r.created_at is not None]  # fmt: skip
        if not times:
            return replace(self, after=page.cursor, done=page.cursor is None)
        return replace(
            self,
            after=page.cursor,
            done=page.cursor is None,
            oldest=min(times) if self.oldest is None else min(self.oldest, *times),
            newest=max(times) if self.newest is None else max(self.newest, *times),
        )


class SharedRateLimiter(RateLimiter):
    """A per-key request rate shared by every worker through the database, reserved in
    chunks so that most provider requests cost no database round trip.

    A chunk is sized to this worker's own pace, to last about CHUNK_SECONDS: it starts at
    a tenth of a second's worth of the rate, doubles while chunks run out sooner than half
    that, and halves when one lasts over twice that. Workers side by side then share the
    rate from their first request; a fixed chunk of a second's worth made the eighth of
    eight workers wait seven seconds for its first. `chunk` fixes the size instead."""

    def __init__(
        self,
        db: Database,
        key: str,
        per_second: float,
        chunk: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.key = key
        self.per_second = per_second
        self.adapts = chunk is None
        # Up to a second's worth at a time (what is left is given back at the end).
        self.max_chunk = chunk or max(1, min(math.ceil(per_second), MAX_CHUNK))
        self.chunk = chunk or max(1, math.ceil(per_second / 10))
        self.sleep = sleep
        self.monotonic = monotonic
        self.left = 0
        self.taken_at: float | None = None

    def acquire(self) -> None:
        if self.left == 0:
            if self.adapts and self.taken_at is not None:
                lasted = self.monotonic() - self.taken_at
                if lasted < CHUNK_SECONDS / 2:
                    self.chunk = min(self.chunk * 2, self.max_chunk)
                elif lasted > CHUNK_SECONDS * 2:
                    self.chunk = max(self.chunk // 2, 1)
            wait = self.db.take_rate_allowance(self.key, self.per_second, self.chunk)
            if wait > 0:
                self.sleep(wait)
            self.taken_at = self.monotonic()
            self.left = self.chunk
        self.left -= 1

    def close(self) -> None:
        if self.left:
            self.db.return_rate_allowance(self.key, self.per_second, self.left)
            self.left = 0


@dataclass
class ResourceSync:
    """Runs one claimed task of one app's connector to its end, or until told to stop."""

    db: Database
    connector: Connector
    batch_rows: int = BATCH_ROWS
    batch_seconds: float = BATCH_SECONDS
    prefetch_pages: int = PREFETCH_PAGES
    writers: int = WRITERS
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    deadline: float | None = None  # time.monotonic() when the caller's budget ends

    def shard(self, task: ClaimedTask, requested: SyncMode) -> ClaimedTask | None:
        """Split the task into shards when it is a full sync from its start of a resource
        its connector lists by creation time (and its job is not run by the request that
        made it), and return its first shard, claimed for this worker; else None."""
        if task.parent_task_id is not None or task.cursor or task.immediate:
            return None
        floor = self.connector.shard_floor(task.resource_type)
        if floor is None or self._choose_mode(task, requested)[0] != "full":
            return None
        marker = TaskCursor("full", sharded=True).encode()
        shard = self.db.shard_task(task.id, task.attempts, floor, marker)
        log.info("%s %s: full sync split into shards by creation time",
                 self.connector.app.app_key, task.resource_type)  # fmt: skip
        return shard

    def run(
        self,
        task: ClaimedTask,
        requested: SyncMode,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SyncOutcome:
        resource = self.connector.metadata.resource(task.resource_type)
        app_key = self.connector.app.app_key
        self.connector.stored_ids = lambda collection: self.db.stored_external_ids(
            app_key, collection
        )
        resumed = TaskCursor.decode(task.cursor)
        shard = task.parent_task_id is not None
        start = task.created_from.timestamp() if shard and task.created_from else None
        if start is not None and resumed and resumed.oldest is not None and resumed.oldest < start:
            # Cut by another worker below where it had got to: its range is listed (and
            # a provider need not accept a cursor outside the range now asked for).
            resumed = replace(resumed, done=True)
        mode: SyncMode
        since: datetime | None
        if shard:
            mode, since = "full", None
        else:
            mode, since = (resumed.mode, None) if resumed else self._choose_mode(task, requested)
        if resumed and mode == "incremental":
            since = self._watermark(task)
            if since is None:  # its watermark is gone: start over with a full sync
                log.warning("task %s: no watermark to resume from; full sync", task.id)
                resumed, mode = None, "full"
        progress = Progress(mode=mode, entity_count=task.entity_count)
        attempt = task.attempts
        log.info(
            "%s %s: %s sync%s%s",
            self.connector.app.app_key,
            task.resource_type,
            mode,
            f" of objects created from {task.created_from}" if shard else "",
            f" resumed at {resumed.after}" if resumed else "",
        )

        if resumed is None or not (resumed.done or resumed.sharded):
            after = resumed.after if resumed else None
            if shard:
                assert task.created_from is not None
                progress.created_from = task.created_from
                pages = self.connector.full_sync_range(
                    task.resource_type, created_from=task.created_from,
                    created_before=task.created_before, cursor=after)  # fmt: skip
            elif mode == "full":
                pages = self.connector.full_sync(task.resource_type, cursor=after)
            else:
                assert since is not None
                pages = self.connector.incremental_sync(
                    task.resource_type, since=since, cursor=after
                )
            position = resumed or TaskCursor(mode)
            stopped, cursor = self._write_pages(
                task, attempt, position, pages, progress, should_stop,
                resource.collection_key if shard else None)  # fmt: skip
            if stopped:
                return SyncOutcome(finished=False, progress=progress, cursor=cursor)

        collections = [resource.collection_key] + [
            child.collection_key
            for child in self.connector.metadata.children_of(resource.resource_type)
        ]
        finish: FinishTask = {
            "task_id": str(task.id),
            "attempt": attempt,
            "entity_count": progress.entity_count,
            "state_collections": collections,
            "synced_at": (task.parent_started_at or task.started_at or task.created_at).isoformat(),
            "sync_metadata": {"mode": mode, "job_id": str(task.job_id)},
        }
        if mode == "full":
            finish["sweep_collections"] = collections
            if self.connector.app.sync_from is not None:
                finish["sweep_created_from"] = self.connector.app.sync_from.isoformat()
        if (timeout := self._lock_timeout_ms()) is not None:
            finish["lock_timeout_ms"] = timeout
        finished = self.db.finish_task(finish)
        if finished.waiting:
            log.info("%s %s: %s; the last of its shards finishes the task",
                     self.connector.app.app_key, task.resource_type,
                     "shard listed" if shard else "shards still running")  # fmt: skip
            return SyncOutcome(finished=True, progress=progress)
        progress.deleted += finished.deleted
        if finished.entity_count is not None:
            progress.entity_count = finished.entity_count
        if mode == "full":
            log.info(
                "%s %s: removed %d rows deleted upstream",
                self.connector.app.app_key,
                task.resource_type,
                finished.deleted,
            )
        return SyncOutcome(finished=True, progress=progress, job=finished.job)

    def _choose_mode(
        self, task: ClaimedTask, requested: SyncMode
    ) -> tuple[SyncMode, datetime | None]:
        """Incremental from the last watermark when it can reach that far back, else full."""
        resource = self.connector.metadata.resource(task.resource_type)
        if requested == "full" or not resource.supports_incremental:
            return "full", None
        since = self._watermark(task)
        horizon = self.connector.incremental_horizon
        if since is None or (
            horizon is not None and (self.clock() - since).total_seconds() > horizon
        ):
            return "full", None
        return "incremental", since

    def _watermark(self, task: ClaimedTask) -> datetime | None:
        resource = self.connector.metadata.resource(task.resource_type)
        return task.watermarks.get(resource.collection_key)

    def _lock_timeout_ms(self) -> int | None:
        """How long a write may wait for a lock: what is left of the budget."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        return max(MIN_LOCK_TIMEOUT_MS, int(left * 1000))

    def _write_pages(
        self,
        task: ClaimedTask,
        attempt: int,
        position: TaskCursor,
        pages: Iterator[Page],
        progress: Progress,
        should_stop: Callable[[], bool],
        shard_collection: str | None = None,
    ) -> tuple[bool, str | None]:
        """Write every page in batches; (stopped early, the cursor committed last).

        Stops early when `should_stop()` says so, or when the connector runs out of time;
        a write that fails, or a task that is no longer ours (cancelled, requeued), ends
        the fetching at once. A shard (`shard_collection`: its objects' collection) notes
        the creation times it has passed, and ends once it has passed the start of its
        range, which another worker may have taken part of."""
        mode = position.mode
        rows: dict[tuple[str, str], BatchRow] = {}
        batch = self._new_batch(task, attempt, mode)
        requested: datetime | None = None  # when the batch's first page was requested
        pending: TaskCursor | None = None  # cursor of the last page not yet sent
        sent = task.cursor
        seq = task.batch_seq
        last_write = last_contact = time.monotonic()
        # Incremental batches go one at a time: their order carries meaning.
        depth = self.writers if mode == "full" else 1
        first = shard_collection is not None and position.oldest is None  # a new shard
        with (
            _Prefetch(
                pages, self.prefetch_pages, self.batch_seconds, should_stop, self.clock
            ) as fetched,
            _Writer(self.db, progress, depth) as writer,
        ):
            try:
                for page in fetched:  # None: no page came for a while, or a stop is asked
                    cut = False
                    silent = time.monotonic() - last_contact >= RANGE_CHECK_SECONDS
                    if shard_collection and page is not None and silent:
                        now_held = self.db.heartbeat(task.id, attempt=attempt)
                        if now_held is None:
                            raise TaskLostError(f"task {task.id} is no longer processing")
                        progress.created_from = now_held.created_from
                        last_contact = time.monotonic()
                    if page is not None:
                        progress.pages += 1
                        progress.entity_count += self._add_page(batch, rows, page)
                        requested = requested or page.requested_at
                        pending = position = position.passed(page, shard_collection)
                        start = progress.created_from
                        if (shard_collection and start is not None and not pending.done
                                and pending.oldest is not None
                                and pending.oldest < start.timestamp()):  # fmt: skip
                            pending = position = replace(pending, done=True)
                            cut = True
                    writer.check()
                    stop = should_stop()
                    now = time.monotonic()
                    rows_due = self.batch_rows
                    if first and seq == task.batch_seq:
                        rows_due = FIRST_SHARD_BATCH_ROWS
                    due = len(rows) >= rows_due or now - last_write >= self.batch_seconds
                    if pending is not None and (stop or due or pending.done):
                        seq += 1
                        writer.send(
                            self._finish_batch(batch, rows, pending, progress, seq, requested)
                        )
                        sent, pending = pending.encode(), None
                        batch, rows, requested = self._new_batch(task, attempt, mode), {}, None
                        last_write = last_contact = now
                        if cut:
                            break
                    elif now - last_contact >= min(LEASE_CHECK_SECONDS, self.batch_seconds):
                        # Still ours? (a cancel stops the task here) And still alive.
                        if not self.db.update_task_heartbeat(task.id, attempt=attempt):
                            raise TaskLostError(f"task {task.id} is no longer processing")
                        last_contact = now
                        if page is None:
                            last_write = now
                    if stop and (page is None or page.cursor is not None):
                        writer.drain()
                        return True, sent
            except OutOfTimeError as exc:
                log.info("task %s: %s; stopping at the last page written", task.id, exc)
                if pending is not None:
                    seq += 1
                    writer.send(self._finish_batch(batch, rows, pending, progress, seq, requested))
                    sent = pending.encode()
                writer.drain()
                return True, sent
            writer.drain()
        return False, sent

    def _new_batch(self, task: ClaimedTask, attempt: int, mode: SyncMode) -> WriteBatch:
        return {
            "task_id": str(task.id),
            "attempt": attempt,
            "cursor": None,
            "entity_count": 0,
            "mode": mode,
            "api_version": self.connector.api_version,
            "rows": [],
            "deletes": [],
            "children": [],
        }

    @staticmethod
    def _add_page(batch: WriteBatch, rows: dict[tuple[str, str], BatchRow], page: Page) -> int:
        """Add a page to the batch; how many of its objects the batch did not have yet."""
        incremental = batch["mode"] == "incremental"
        added = 0
        for record in page.records:
            key = (record.collection_key, record.external_id)
            if key in rows:
                if incremental:
                    continue  # newest first: the state already taken is the latest
            else:
                added += 1
            rows[key] = batch_row(record)
        batch.setdefault("deletes", []).extend(batch_deletion(d) for d in page.deletions)
        batch.setdefault("children", []).extend(batch_child_set(c) for c in page.child_sets)
        return added

    def _finish_batch(
        self,
        batch: WriteBatch,
        rows: dict[tuple[str, str], BatchRow],
        cursor: TaskCursor,
        progress: Progress,
        seq: int,
        requested: datetime | None,
    ) -> WriteBatch:
        # In key order, so that batches written side by side lock rows in one order.
        batch["rows"] = [rows[key] for key in sorted(rows)]
        batch["seq"] = seq
        batch["cursor"] = cursor.encode()
        batch["entity_count"] = progress.entity_count
        batch["observed_at"] = page_observed_at(requested or self.clock()).isoformat()
        if (timeout := self._lock_timeout_ms()) is not None:
            batch["lock_timeout_ms"] = timeout
        return batch


def page_observed_at(requested: datetime) -> datetime:
    """What a list page fetched by a request started at `requested` is stamped with: the
    start of that second, less a microsecond. The page may predate any change made once
    the request was sent, and providers stamp events in whole seconds (Stripe's
    `created`, Intercom's `updated_at`): an event from that same second must still win
    over the page, whichever is written first."""
    return requested.replace(microsecond=0) - timedelta(microseconds=1)


class _Writer:
    """Sends batches with up to `depth` in flight, and counts their results in order.

    The database moves the task's checkpoint only over batches that are all committed,
    so batches may commit in any order.
    """

    def __init__(self, db: Database, progress: Progress, depth: int) -> None:
        self.db = db
        self.progress = progress
        self.depth = depth
        self.pool = ThreadPoolExecutor(depth, "supasaasy-writer") if depth > 1 else None
        self.in_flight: deque[Future[BatchCounts]] = deque()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # nothing is left writing behind our back

    def send(self, batch: WriteBatch) -> None:
        if self.pool is None:
            self._count(self.db.write_batch(batch))
            return
        while len(self.in_flight) >= self.depth:
            self._count(self.in_flight.popleft().result())
        self.in_flight.append(self.pool.submit(self.db.write_batch, batch))

    def check(self) -> None:
        """Raise the failure of a batch already finished, without waiting for others."""
        if self.in_flight and self.in_flight[0].done():
            self._count(self.in_flight.popleft().result())

    def drain(self) -> None:
        """Wait for every batch in flight; raise the first failure."""
        failure: BaseException | None = None
        while self.in_flight:
            try:
                self._count(self.in_flight.popleft().result())
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _count(self, counts: BatchCounts) -> None:
        self.progress.batches += 1
        if counts.created_from is not None:
            self.progress.created_from = counts.created_from
        self.progress.created += counts.created
        self.progress.updated += counts.updated
        self.progress.unchanged += counts.unchanged
        self.progress.deleted += counts.deleted


def batch_row(record: Record) -> BatchRow:
    row: BatchRow = {
        "collection_key": record.collection_key,
        "external_id": record.external_id,
        "raw_payload": record.raw_payload,
    }
    if record.archived:
        row["archived"] = True
    if record.api_version:
        row["api_version"] = record.api_version
    if record.observed_at:
        row["observed_at"] = record.observed_at.isoformat()
    if record.created_at:
        row["source_created_at"] = record.created_at.isoformat()
    if record.updated_at:
        row["source_updated_at"] = record.updated_at.isoformat()
    return row


def batch_child_set(child_set: ChildSet) -> BatchChildSet:
    row: BatchChildSet = {
        "collection_key": child_set.collection_key,
        "parent_field": child_set.parent_field,
        "parent_id": child_set.parent_id,
    }
    if child_set.observed_at:
        row["observed_at"] = child_set.observed_at.isoformat()
    if not child_set.complete:
        row["complete"] = False
    return row


def batch_deletion(deletion: Deletion) -> BatchDeletion:
    row: BatchDeletion = {
        "collection_key": deletion.collection_key,
        "external_id": deletion.external_id,
    }
    if deletion.observed_at:
        row["observed_at"] = deletion.observed_at.isoformat()
    return row


_END = object()


class _Prefetch:
    """Iterates `pages` in a background thread, up to `depth` pages ahead, noting when
    each was asked for (`Page.requested_at`)."""

    def __init__(
        self,
        pages: Iterator[Page],
        depth: int,
        idle_after: float,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pages = pages
        self.idle_after = idle_after
        self.should_stop = should_stop
        self.clock = clock
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="supasaasy-prefetch", daemon=True)

    def __enter__(self) -> Iterator[Page | None]:
        self.thread.start()
        return self._consume()

    def __exit__(self, *exc: object) -> None:
        """Stop fetching. A producer blocked in a slow request is left to finish it on
        its own (it is a daemon thread and drops what it fetched), so that stopping
        never waits for the provider."""
        self.stopping.set()
        deadline = time.monotonic() + 1.0
        while self.thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):  # unblock a producer on a full queue
                self.queue.get(timeout=0.05)

    def _produce(self) -> None:
        """Each page with the time its request started: when it was asked for."""
        try:
            while True:
                requested = self.clock()
                page = next(self.pages, None)
                if page is None:
                    break
                page.requested_at = page.requested_at or requested
                if not self._put(page):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        finally:
            close = getattr(self.pages, "close", None)
            if close is not None:
                close()

    def _put(self, item: object) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _consume(self) -> Iterator[Page | None]:
        """The pages in order, and None whenever none came for `idle_after` seconds or
        (within STOP_POLL_SECONDS) while a stop is asked."""
        waited = 0.0
        while True:
            try:
                item = self.queue.get(timeout=min(STOP_POLL_SECONDS, self.idle_after))
            except queue.Empty:
                waited += min(STOP_POLL_SECONDS, self.idle_after)
                if waited >= self.idle_after or self.should_stop():
                    waited = 0.0
                    yield None
                continue
            waited = 0.0
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Page)
            yield item
