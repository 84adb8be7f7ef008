"""Interleavings that used to lose, resurrect or strand data, each on the real stack:
self-contradicting pages, resumed change feeds, poisoned tasks, looping cursors, lost
leases, immediate jobs, cancels, overlapping pages and lock waits."""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import psycopg
import pytest

from supasaasy.config import AppConfig, Settings, WorkerSettings
from supasaasy.connectors import Connector, ConnectorMetadata, Page, Record, Resource, register
from supasaasy.db import Database
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.errors import TaskLostError
from supasaasy.models import BatchRow, WriteBatch
from supasaasy.worker import Worker

KEY = "sk_test_interleavings"
Pg = psycopg.Connection[tuple[object, ...]]


@register
class Listed(Connector):
    """A provider whose pages a test sets (`PAGES[app_key]`), counting what it serves."""

    metadata: ClassVar[ConnectorMetadata] = ConnectorMetadata(
        name="listed", display_name="Listed", api_version="v1",
        resources=(Resource("thing", "listed_thing", "things"),
                   Resource("other", "listed_other", "others")),
    )  # fmt: skip
    PAGES: ClassVar[dict[str, list[list[str]]]] = {}
    SERVED: ClassVar[dict[str, int]] = {}
    DELAY: ClassVar[dict[str, float]] = {}

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        pages = self.PAGES[self.app.app_key]
        start = int(cursor) if cursor else 0
        collection = self.metadata.resource(resource_type).collection_key
        for number in range(start, len(pages)):
            time.sleep(self.DELAY.get(self.app.app_key, 0.0))
            self.SERVED[self.app.app_key] = self.SERVED.get(self.app.app_key, 0) + 1
            after = str(number + 1) if number + 1 < len(pages) else None
            yield Page([Record(collection, i, {"id": i}) for i in pages[number]], cursor=after)


def settings(*apps: AppConfig, **worker: Any) -> Settings:
    return Settings(apps=list(apps), worker=WorkerSettings(**worker))


def rows(pg: Pg, app_key: str, collection: str | None = None) -> set[str]:
    query = "select external_id from supasaasy.entities where app_key = %s"
    args: tuple[str, ...] = (app_key,)
    if collection:
        query, args = query + " and collection_key = %s", (app_key, collection)
    return {str(r[0]) for r in pg.execute(query, args)}


def run_job(db: Database, config: Settings, job_id: Any, calls: int = 20, **run: Any) -> None:
    for _ in range(calls):
        Worker(db, config, **run).run(job_id)
        if db.get_job(job_id).status not in ("pending", "processing"):
            return


# -- Stripe through localstripe ------------------------------------------------------------


@pytest.fixture
def stripe_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("INTERLEAVINGS_KEY", KEY)
    with (
        running_localstripe() as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client


def stripe_app(app_key: str, client: httpx.Client, **config: Any) -> AppConfig:
    config = {"api_key_env": "INTERLEAVINGS_KEY", "api_base": str(client.base_url), **config}
    return AppConfig(app_key=app_key, connector="stripe", config=config)


def create_customers(client: httpx.Client, count: int) -> list[str]:
    return [client.post("/v1/customers", data={"name": f"c{i}"}).json()["id"]
            for i in range(count)]  # fmt: skip


@pytest.mark.parametrize("good_pages", [0, 1])
def test_an_empty_page_that_says_more_fails_the_full_sync_and_sweeps_nothing(
    db: Database, pg: Pg, app_key: str, stripe_api: httpx.Client, good_pages: int
) -> None:
    create_customers(stripe_api, 25)
    config = settings(stripe_app(app_key, stripe_api, page_size=10))
    first = db.create_sync_job(app_key, "full", ["customer"])
    run_job(db, config, first.id)
    assert len(rows(pg, app_key)) == 25

    stripe_api.post("/_config/faults", json={"path_prefix": "/v1/customers",
                                             "kind": "empty_more", "skip": good_pages})  # fmt: skip
    second = db.create_sync_job(app_key, "full", ["customer"])
    run_job(db, config, second.id)
    status = db.get_job_status(second.id)
    assert status.job.status == "failed"
    assert "empty page that says more follow" in (status.tasks[0].error_message or "")
    assert len(rows(pg, app_key)) == 25


def test_a_cursor_that_loops_fails_the_task(
    db: Database, pg: Pg, app_key: str, stripe_api: httpx.Client
) -> None:
    create_customers(stripe_api, 25)
    stripe_api.post("/_config/faults", json={"path_prefix": "/v1/customers", "kind": "repeat"})
    config = settings(stripe_app(app_key, stripe_api, page_size=10))
    job = db.create_sync_job(app_key, "full", ["customer"])
    run_job(db, config, job.id, calls=3)
    status = db.get_job_status(job.id)
    assert status.job.status == "failed"
    assert "paging loops" in (status.tasks[0].error_message or "")


def test_a_provider_echoing_the_key_leaves_it_in_no_message_and_no_log(
    db: Database, app_key: str, stripe_api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"Invalid API Key provided: Authorization: Bearer {KEY}; key {KEY}"
    stripe_api.post("/_config/faults", json={"path_prefix": "/v1/customers", "status": 401,
                                             "message": echo})  # fmt: skip
    job = db.create_sync_job(app_key, "full", ["customer"])
    with caplog.at_level("DEBUG", logger="supasaasy"):
        run_job(db, settings(stripe_app(app_key, stripe_api)), job.id, calls=2)
    status = db.get_job_status(job.id)
    assert status.job.status == "failed"
    task_error, job_error = status.tasks[0].error_message or "", status.job.error_message or ""
    assert "Invalid API Key provided" in task_error
    for text in (task_error, job_error, caplog.text):
        assert KEY not in text and "interleavings" not in text


def test_a_resumed_change_feed_does_not_bring_back_what_it_deleted(
    db: Database, pg: Pg, app_key: str, stripe_api: httpx.Client
) -> None:
    """Events newest first: X deleted, 1,100 creations, X created. The 12th events page
    fails; the retry resumes after the 10 pages committed and replays X's creation."""
    config = settings(stripe_app(app_key, stripe_api, max_retries=0))
    first = db.create_sync_job(app_key, "full", ["customer"])
    run_job(db, config, first.id)
    time.sleep(1.1)  # events after the watermark's second
    doomed = create_customers(stripe_api, 1)[0]
    created = create_customers(stripe_api, 1100)
    assert stripe_api.delete(f"/v1/customers/{doomed}").is_success

    stripe_api.post("/_config/faults", json={"path_prefix": "/v1/events", "status": 500,
                                             "skip": 11, "count": 1})  # fmt: skip
    job = db.create_sync_job(app_key, "incremental", ["customer"])
    run_job(db, config, job.id, calls=1)
    assert db.get_job(job.id).status == "failed"
    assert db.retry_job(job.id) is not None
    run_job(db, config, job.id)
    assert db.get_job(job.id).status == "completed"
    assert rows(pg, app_key) == set(created)


# -- Database-level interleavings ----------------------------------------------------------


def batch(task: Any, seq: int, rows_: list[BatchRow], mode: str = "incremental",
          **extra: Any) -> WriteBatch:  # fmt: skip
    return {
        "task_id": str(task.id),
        "attempt": task.attempts,
        "seq": seq,
        "cursor": str(seq),
        "entity_count": seq,
        "mode": mode,
        "rows": rows_,
        **extra,
    }  # type: ignore[typeddict-item]


def test_a_deletion_leaves_a_tombstone_that_older_states_cannot_pass(
    db: Database, pg: Pg, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "incremental", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    t = datetime(2026, 1, 1, tzinfo=UTC)
    db.write_batch(batch(task, 1, [], deletes=[
        {"collection_key": "c", "external_id": "x", "observed_at": t.isoformat()}]))  # fmt: skip
    older = {"collection_key": "c", "external_id": "x", "raw_payload": {"v": 1},
             "observed_at": (t - timedelta(seconds=5)).isoformat()}  # fmt: skip
    db.write_batch(batch(task, 2, [older]))  # type: ignore[list-item]
    assert rows(pg, app_key) == set()
    newer = {**older, "observed_at": (t + timedelta(seconds=5)).isoformat()}
    db.write_batch(batch(task, 3, [newer]))  # type: ignore[list-item]
    assert rows(pg, app_key) == {"x"}  # created again upstream, later: kept


def test_an_older_child_set_replayed_neither_removes_newer_children_nor_brings_back_old(
    db: Database, pg: Pg, app_key: str
) -> None:
    """A subscription's items as of T3 (a, c: b removed), then its state as of T2 (a, b)
    replayed by a resumed change feed: the items stay a and c."""
    job = db.create_sync_job(app_key, "incremental", ["subscription"])
    task = db.claim_task(job.id)
    assert task is not None
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def state(seq: int, at: datetime, items: list[str]) -> WriteBatch:
        stamp = at.isoformat()
        subscription = {"collection_key": "sub", "external_id": "s", "raw_payload": {"n": seq},
                        "observed_at": stamp}  # fmt: skip
        children = [{"collection_key": "item", "external_id": i, "observed_at": stamp,
                     "raw_payload": {"id": i, "subscription": "s"}} for i in items]  # fmt: skip
        child_set = {"collection_key": "item", "parent_field": "subscription", "parent_id": "s",
                     "observed_at": stamp}  # fmt: skip
        return batch(task, seq, [subscription, *children], children=[child_set])  # type: ignore[list-item]

    db.write_batch(state(1, t0, ["a", "b"]))
    db.write_batch(state(2, t0 + timedelta(seconds=3), ["a", "c"]))
    assert rows(pg, app_key, "item") == {"a", "c"}
    db.write_batch(state(3, t0 + timedelta(seconds=2), ["a", "b"]))
    assert rows(pg, app_key, "item") == {"a", "c"}


def test_a_truncated_child_set_keeps_the_stored_children_from_the_sweep(
    db: Database, pg: Pg, app_key: str
) -> None:
    """A conversation with more parts than the provider lists (it caps them): a full
    sync that sees only the first part keeps the others."""
    for listed, complete in ((["p1", "p2", "p3"], True), (["p1"], False)):
        job = db.create_sync_job(app_key, "full", ["conversation"])
        task = db.claim_task(job.id)
        assert task is not None
        parts = [{"collection_key": "part", "external_id": p,
                  "raw_payload": {"id": p, "conversation_id": "c"}} for p in listed]  # fmt: skip
        conversation = {"collection_key": "conversation", "external_id": "c", "raw_payload": {}}
        child_set = {"collection_key": "part", "parent_field": "conversation_id",
                     "parent_id": "c", "complete": complete}  # fmt: skip
        db.write_batch(batch(task, 1, [conversation, *parts], mode="full",  # type: ignore[list-item]
                             children=[child_set]))  # fmt: skip
        db.finish_task({"task_id": str(task.id), "attempt": task.attempts, "entity_count": 0,
                        "sweep_collections": ["conversation", "part"]})  # fmt: skip
        assert rows(pg, app_key, "part") == {"p1", "p2", "p3"}


@register
class Poisoned(Connector):
    """Serves one object whose id no index can hold (54000: a program limit)."""

    metadata: ClassVar[ConnectorMetadata] = ConnectorMetadata(
        name="poisoned", display_name="Poisoned", api_version="v1",
        resources=(Resource("thing", "poisoned_thing", "things"),),
    )  # fmt: skip

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        rng = random.Random(7)
        huge = "".join(rng.choices(string.ascii_letters + string.digits, k=9000))
        yield Page([Record("poisoned_thing", huge, {"id": "huge"})], cursor=None)


def test_a_task_that_can_never_succeed_fails_with_its_message_and_starves_nothing(
    db: Database, pg: Pg, app_key: str
) -> None:
    healthy = f"{app_key}_ok"
    Listed.PAGES[healthy] = [["a", "b"]]
    config = settings(AppConfig(app_key=app_key, connector="poisoned"),
                      AppConfig(app_key=healthy, connector="listed"))  # fmt: skip
    poisoned = db.create_sync_job(app_key, "full", ["thing"])
    other = db.create_sync_job(healthy, "full", ["thing"])
    result = Worker(db, config).run()
    assert result.success
    status = db.get_job_status(poisoned.id)
    assert status.job.status == "failed"
    assert status.tasks[0].attempts == 1
    assert "index row" in (status.tasks[0].error_message or "")
    assert db.get_job(other.id).status == "completed"
    assert rows(pg, healthy) == {"a", "b"}


def test_a_stale_holder_can_neither_heartbeat_release_nor_complete(
    db: Database, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["thing"])
    first = db.claim_task(job.id)
    assert first is not None
    assert db.requeue_stale_tasks(timedelta(0), 5) >= 1
    second = db.claim_task(job.id)
    assert second is not None and second.attempts == first.attempts + 1
    with pytest.raises(TaskLostError):
        db.update_task_heartbeat(first.id, attempt=first.attempts)
    with pytest.raises(TaskLostError):
        db.release_task(first.id, "stale", attempt=first.attempts)
    with pytest.raises(TaskLostError):
        db.complete_task(first.id, "failed", None, "stale", attempt=first.attempts)
    task = db.get_job_status(job.id).tasks[0]
    assert task.status == "processing" and task.attempts == second.attempts
    assert task.cursor is None and task.error_message != "stale"
    assert db.update_task_heartbeat(second.id, attempt=second.attempts)


def test_a_claim_requeues_stale_tasks_and_brings_what_the_worker_needs(
    db: Database, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "incremental", ["thing"])
    first = db.claim_task(job.id)
    assert first is not None and first.app_key == app_key and first.mode == "incremental"
    assert first.watermarks == {}
    again = db.claim_task(job.id, stale_after=timedelta(0), max_attempts=5)
    assert again is not None and again.id == first.id and again.attempts == 2


def test_attempts_without_progress_are_capped_however_the_task_went_back(
    db: Database, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    db.release_task(task.id, attempt=task.attempts, error="database unavailable",
                    max_attempts=3)  # fmt: skip
    task = db.claim_task(job.id)
    assert task is not None
    db.release_task(task.id, attempt=task.attempts, max_attempts=3)  # time budget spent
    task = db.claim_task(job.id, stale_after=timedelta(0), max_attempts=3)  # stale: third
    assert task is not None and task.error_message == "database unavailable"
    db.write_batch(batch(task, 1, [], mode="full"))  # progress: the count starts again
    db.release_task(task.id, attempt=task.attempts, max_attempts=3)
    for _ in range(2):
        task = db.claim_task(job.id)
        assert task is not None
        db.release_task(task.id, attempt=task.attempts, error="provider hangs", max_attempts=3)
    assert db.get_job(job.id).status == "processing"
    task = db.claim_task(job.id)
    assert task is not None
    db.release_task(task.id, attempt=task.attempts, error="provider hangs", max_attempts=3)
    status = db.get_job_status(job.id)
    assert status.job.status == "failed"
    assert status.tasks[0].error_message == "provider hangs (3 attempts in a row without progress)"


def test_immediate_jobs_are_invisible_to_other_workers_and_end_when_interrupted(
    db: Database, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["thing", "other"], immediate=True)
    while (other := db.claim_task()) is not None:  # tasks of other tests' jobs
        assert other.job_id != job.id
        db.complete_task(other.id, "completed", 0)
    task = db.claim_task(job.id)
    assert task is not None
    # Its request dies: the stale task fails and the job ends, so the app can sync again.
    db.requeue_stale_tasks(timedelta(0), 3)
    status = db.get_job_status(job.id)
    assert status.job.status in ("failed", "cancelled")
    assert {t.status for t in status.tasks} <= {"failed", "cancelled"}
    assert "immediate run interrupted" in (status.job.error_message or "")
    db.create_sync_job(app_key, "full", ["thing"])


def test_pages_that_overlap_count_each_object_once(db: Database, pg: Pg, app_key: str) -> None:
    Listed.PAGES[app_key] = [["a", "b", "c"], ["c", "d"], ["d", "e"]]
    job = db.create_sync_job(app_key, "full", ["thing"])
    run_job(db, settings(AppConfig(app_key=app_key, connector="listed")), job.id)
    status = db.get_job_status(job.id)
    assert status.job.status == "completed"
    assert status.tasks[0].entity_count == 5 and status.job.processed_entities == 5


def test_a_cancel_stops_the_worker_within_a_second(db: Database, pg: Pg, app_key: str) -> None:
    Listed.PAGES[app_key] = [[f"{p}-{i}" for i in range(10)] for p in range(400)]
    Listed.DELAY[app_key] = 0.02  # 50 pages a second
    config = settings(AppConfig(app_key=app_key, connector="listed"))
    job = db.create_sync_job(app_key, "full", ["thing"])
    worker = threading.Thread(target=Worker(db, config).run, args=(job.id,))
    worker.start()
    while not Listed.SERVED.get(app_key):
        time.sleep(0.01)
    time.sleep(0.5)
    assert db.cancel_job(job.id) is not None
    served, cancelled_at = Listed.SERVED[app_key], time.monotonic()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 2.0
    assert Listed.SERVED[app_key] - served <= 60  # about a second of pages, not the rest
    assert db.get_job(job.id).status == "cancelled"


def test_a_write_blocked_on_a_lock_gives_up_with_the_budget(
    db: Database, pg: Pg, stack: Any, app_key: str
) -> None:
    Listed.PAGES[app_key] = [["a", "b"], ["c"]]
    config = settings(AppConfig(app_key=app_key, connector="listed"))
    job = db.create_sync_job(app_key, "full", ["thing"])
    with psycopg.connect(stack.database_url) as locker:
        locker.execute(
            "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)"
            " values (%s, 'listed_thing', 'a', '{}')", (app_key,))  # fmt: skip
        # The transaction stays open: the row's lock is held.
        started = time.monotonic()
        result = Worker(db, config, budget_seconds=3).run(job.id)
        elapsed = time.monotonic() - started
        locker.rollback()
    assert elapsed < 6, elapsed
    assert result.shutdown_reason in ("time_budget", "database_unavailable")
    task = db.get_job_status(job.id).tasks[0]
    assert task.status == "pending" and task.error_message
    run_job(db, config, job.id)
    assert rows(pg, app_key) == {"a", "b", "c"}


def test_a_provider_that_hangs_fails_the_task_after_its_attempts(
    db: Database, pg: Pg, app_key: str, stripe_api: httpx.Client
) -> None:
    """Each request outlasts its timeout: retries stop at the time budget, each worker
    call hands the task back without progress, and the third one fails it."""
    create_customers(stripe_api, 3)
    stripe_api.post("/_config/faults", json={"path_prefix": "/v1/customers", "kind": "slow",
                                             "seconds": 3})  # fmt: skip
    config = settings(stripe_app(app_key, stripe_api, timeout_seconds=1.5), max_attempts=3)
    job = db.create_sync_job(app_key, "full", ["customer"])
    for call in range(3):
        started = time.monotonic()
        result = Worker(db, config, budget_seconds=3).run(job.id)
        assert time.monotonic() - started < 5
        assert result.success
        if call < 2:  # customers are listed as a shard of their task
            [shard] = db.get_job_status(job.id).shards
            assert shard.status == "pending"
    status = db.get_job_status(job.id)
    assert status.job.status == "failed"
    assert "without progress" in (status.tasks[0].error_message or "")


def test_a_failed_write_stops_the_fetching(db: Database, pg: Pg, app_key: str) -> None:
    rng = random.Random(3)
    huge = "".join(rng.choices(string.ascii_letters, k=9000))  # too large for any index
    pages = [[f"{p}-{i}" for i in range(100)] for p in range(100)]
    pages[2][0] = huge
    Listed.PAGES[app_key] = pages
    Listed.DELAY[app_key] = 0.05  # slower than a failing write, even on a busy machine
    job = db.create_sync_job(app_key, "full", ["thing"])
    Worker(db, settings(AppConfig(app_key=app_key, connector="listed"))).run(job.id)
    assert db.get_job(job.id).status == "failed"
    # The failing batch held pages 1-10; a few more came while it was written and a few
    # were prefetched, but not two more batches' worth (nor the other 90).
    assert Listed.SERVED[app_key] <= 25


def test_a_worker_that_lost_its_task_to_another_stops_and_changes_nothing(
    db: Database, pg: Pg, app_key: str
) -> None:
    """Worker A's task is requeued as stale and claimed by B (attempt 2) while A still
    runs: A's next lease check stops it, and neither its heartbeat, its writes nor its
    release at the end of its budget touch B's task."""
    Listed.PAGES[app_key] = [[f"{p}-{i}" for i in range(5)] for p in range(40)]
    Listed.DELAY[app_key] = 0.1
    config = settings(AppConfig(app_key=app_key, connector="listed"))
    job = db.create_sync_job(app_key, "full", ["thing"])
    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.append(Worker(db, config, budget_seconds=3).run(job.id))
    )
    first.start()
    while not Listed.SERVED.get(app_key):
        time.sleep(0.01)
    time.sleep(0.5)
    db.requeue_stale_tasks(timedelta(0), 5)  # as if A had looked dead
    taken = db.claim_task(job.id)  # worker B
    assert taken is not None and taken.attempts == 2
    first.join(10)
    assert results and results[0].tasks_processed == 0 and results[0].released == 0
    task = db.get_job_status(job.id).tasks[0]
    assert (task.status, task.attempts) == ("processing", 2)
    assert Listed.SERVED[app_key] < 25  # A stopped within about a second
