"""Full syncs split into shards by creation time, on the real stack: workers side by side
store every object once, the sweep and the watermark stay those of the resource, shards
cut by other workers stop where their range now starts, shards killed mid-range resume
from their checkpoints, and a failed shard fails its task until a retry resumes it."""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from supasaasy import worker as worker_module
from supasaasy.config import AppConfig, Settings, WorkerSettings
from supasaasy.connectors import Connector, ConnectorMetadata, Page, Resource, register
from supasaasy.db import Database
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.errors import ProviderError
from supasaasy.handlers.job_status import describe
from supasaasy.sync import TaskCursor
from supasaasy.worker import Worker

Pg = psycopg.Connection[tuple[object, ...]]
FLOOR = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Killed(BaseException):
    """Ends a worker as SIGKILL would: nothing released, nothing failed, no last write."""


@register
class Ranged(Connector):
    """A provider listing objects newest first, by ranges of creation time, whose objects a
    test sets (`OBJECTS[app_key]`: id -> created, Unix seconds); it notes every object it
    serves, can be slow, and can fail or kill the worker at a page."""

    metadata: ClassVar[ConnectorMetadata] = ConnectorMetadata(
        name="ranged", display_name="Ranged", api_version="v1",
        resources=(Resource("thing", "ranged_thing", "things", created_field="created"),),
    )  # fmt: skip
    PAGE_SIZE = 50
    OBJECTS: ClassVar[dict[str, dict[str, int]]] = {}
    SERVED: ClassVar[dict[str, list[str]]] = {}
    DELAY: ClassVar[dict[str, float]] = {}
    # app -> (pages served before the fault, the exception), once each
    FAULTS: ClassVar[dict[str, list[tuple[int, BaseException]]]] = {}
    PAGES: ClassVar[dict[str, int]] = {}
    STARTS: ClassVar[dict[str, list[str | None]]] = {}  # the cursor each listing began at
    lock = threading.Lock()

    def shard_floor(self, resource_type: str) -> datetime:
        return FLOOR

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        return self.full_sync_range(resource_type, created_from=FLOOR, created_before=None,
                                    cursor=cursor)  # fmt: skip

    def full_sync_range(
        self,
        resource_type: str,
        *,
        created_from: datetime,
        created_before: datetime | None,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        app = self.app.app_key
        self.STARTS.setdefault(app, []).append(cursor)
        low = created_from.timestamp()
        high = created_before.timestamp() if created_before else float("inf")
        found = sorted(((c, i) for i, c in self.OBJECTS[app].items() if low <= c < high),
                       reverse=True)  # fmt: skip
        if cursor:
            created, _, object_id = cursor.partition("|")
            found = [(c, i) for c, i in found if (c, i) < (int(created), object_id)]
        for start in range(0, len(found), self.PAGE_SIZE) if found else [0]:
            time.sleep(self.DELAY.get(app, 0.0))
            with self.lock:
                self.PAGES[app] = served = self.PAGES.get(app, 0) + 1
                faults = self.FAULTS.get(app, [])
                due = next((f for f in faults if f[0] == served), None)
                if due:
                    faults.remove(due)
            if due:
                raise due[1]
            chunk = found[start : start + self.PAGE_SIZE]
            with self.lock:
                self.SERVED.setdefault(app, []).extend(i for _, i in chunk)
            last = start + self.PAGE_SIZE >= len(found)
            yield Page([self.record(resource_type, {"id": i, "created": c}) for c, i in chunk],
                       cursor=None if last else f"{chunk[-1][0]}|{chunk[-1][1]}")  # fmt: skip


def spread(app_key: str, count: int, days: int, seed: int = 7) -> dict[str, int]:
    """`count` objects created at random over the `days` before NOW."""
    rng = random.Random(seed)
    end = int(NOW.timestamp())
    objects = {f"t{n:05d}": end - rng.randrange(days * 86400) for n in range(count)}
    Ranged.OBJECTS[app_key] = objects
    Ranged.SERVED[app_key] = []
    Ranged.PAGES[app_key] = 0
    return objects


def settings(app_key: str, **worker: Any) -> Settings:
    return Settings(apps=[AppConfig(app_key=app_key, connector="ranged")],
                    worker=WorkerSettings(**worker))  # fmt: skip


def stored(pg: Pg, app_key: str) -> dict[str, int]:
    return {
        str(external_id): int(payload["created"])  # type: ignore[index]
        for external_id, payload in pg.execute(
            "select external_id, raw_payload from supasaasy.entities where app_key = %s",
            (app_key,),
        )
    }


def shards(pg: Pg, job_id: Any) -> list[tuple[Any, ...]]:
    return pg.execute(
        "select created_from, created_before, status, attempts, entity_count"
        " from supasaasy.sync_job_tasks where job_id = %s and parent_task_id is not null"
        " order by created_from", (str(job_id),)).fetchall()  # fmt: skip


def crew(db: Database, config: Settings, job_id: Any, size: int, seconds: float = 60) -> None:
    """`size` workers side by side, each run again until the job ends."""
    deadline = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < deadline and db.get_job(job_id).status in (
            "pending", "processing"):  # fmt: skip
            with contextlib.suppress(Killed):  # the process died; the next one starts
                Worker(db, config).run()
            time.sleep(0.05)

    threads = [threading.Thread(target=work) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of 300 objects, so that a few thousand make several shards."""
    monkeypatch.setattr(worker_module, "SHARD_PIECE_OBJECTS", 300)


def test_workers_side_by_side_store_every_object_once_and_sweep_as_one_task(
    db: Database, pg: Pg, app_key: str
) -> None:
    objects = spread(app_key, 3000, days=40)
    Ranged.DELAY[app_key] = 0.01
    # Stored before: objects gone upstream (swept), and a stale state of a live one.
    pg.execute(
        "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload,"
        " updated_at) select %s, 'ranged_thing', 'gone' || n, '{}'::jsonb,"
        " now() - interval '1 day' from generate_series(1, 30) n", (app_key,))  # fmt: skip
    pg.execute(
        "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)"
        " values (%s, 'ranged_thing', 't00001', '{\"created\": 0}')", (app_key,))  # fmt: skip
    # Live objects stored as they are: not rewritten, kept only by being seen.
    for object_id in list(objects)[2:400]:
        pg.execute(
            "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload,"
            " source_created_at, api_version, updated_at) values (%s, 'ranged_thing', %s, %s,"
            " to_timestamp(%s), 'v1', now() - interval '1 day')",
            (app_key, object_id, Jsonb({"id": object_id, "created": objects[object_id]}),
             objects[object_id]))  # fmt: skip
    job = db.create_sync_job(app_key, "full", ["thing"])

    crew(db, settings(app_key), job.id, size=4)

    status = db.get_job_status(job.id)
    assert status.job.status == "completed", status.job.error_message
    assert stored(pg, app_key) == objects  # every object, in its current state; none gone
    assert set(Ranged.SERVED[app_key]) == set(objects)
    # A shard another worker cut stops soon after its new start: little is listed twice.
    assert len(Ranged.SERVED[app_key]) < 1.5 * len(objects), len(Ranged.SERVED[app_key])
    split = shards(pg, job.id)
    assert len(split) >= 3, split  # other workers took parts of the range
    assert {s[2] for s in split} == {"completed"}
    # Ranges tile [FLOOR, no end): each starts where the previous ended.
    assert split[0][0] == FLOOR and split[-1][1] is None
    assert all(a[1] == b[0] for a, b in itertools.pairwise(split))
    # The job counts the resource's task, once, with its distinct objects.
    assert (status.job.total_tasks, status.job.completed_tasks) == (1, 1)
    assert status.job.processed_entities == len(objects) == status.tasks[0].entity_count
    assert len(status.tasks) == 1 and status.tasks[0].status == "completed"
    shown = describe(status, include_tasks=True)["tasks"][0]
    assert shown["shards"]["total"] == len(split) == shown["shards"]["completed"]
    # The watermark is the task's start, not a shard's.
    task_start = pg.execute(
        "select started_at from supasaasy.sync_job_tasks where id = %s",
        (str(status.tasks[0].id),)).fetchone()  # fmt: skip
    watermark = pg.execute(
        "select last_synced_at from supasaasy.sync_state where app_key = %s", (app_key,)
    ).fetchone()
    assert task_start is not None and watermark == task_start
    assert pg.execute("select count(*) from supasaasy.sync_task_seen s join"
                      " supasaasy.sync_job_tasks t on t.id = s.task_id where t.job_id = %s",
                      (str(job.id),)).fetchone() == (0,)  # fmt: skip


def test_shards_killed_mid_range_resume_from_their_checkpoints(
    db: Database, pg: Pg, app_key: str
) -> None:
    objects = spread(app_key, 2400, days=30, seed=11)
    Ranged.DELAY[app_key] = 0.01
    # Three workers die mid-listing, one after another, with pages fetched and not written.
    Ranged.FAULTS[app_key] = [(25, Killed()), (40, Killed()), (55, Killed())]
    job = db.create_sync_job(app_key, "full", ["thing"])

    crew(db, settings(app_key, stale_after_seconds=2), job.id, size=3)

    status = db.get_job_status(job.id)
    assert status.job.status == "completed", status.job.error_message
    assert stored(pg, app_key) == objects
    assert Ranged.FAULTS[app_key] == []  # all three struck
    resumed = [s for s in shards(pg, job.id) if s[3] > 1]
    assert resumed, "no shard was taken over after its worker died"
    # Taken over from their checkpoints, not listed again from the start.
    assert any(cursor is not None for cursor in Ranged.STARTS[app_key])
    assert len(Ranged.SERVED[app_key]) < 2 * len(objects)
    assert status.job.processed_entities == len(objects)


def test_a_failed_shard_fails_its_task_and_a_retry_resumes_every_shard(
    db: Database, pg: Pg, app_key: str
) -> None:
    objects = spread(app_key, 2000, days=20, seed=3)
    Ranged.DELAY[app_key] = 0.01
    Ranged.FAULTS[app_key] = [(30, ProviderError("Ranged answered 500 three times"))]
    job = db.create_sync_job(app_key, "full", ["thing"])
    config = settings(app_key)

    crew(db, config, job.id, size=3)

    failed = db.get_job_status(job.id)
    assert failed.job.status == "failed"
    assert "objects created from" in (failed.job.error_message or "")
    assert "Ranged answered 500" in (failed.job.error_message or "")
    assert failed.job.failed_tasks == 1 and failed.job.total_tasks == 1
    assert {s[2] for s in shards(pg, job.id)} <= {"failed", "cancelled", "completed"}
    assert stored(pg, app_key).items() <= objects.items()  # nothing swept, nothing wrong

    assert db.retry_job(job.id) is not None
    crew(db, config, job.id, size=2)

    status = db.get_job_status(job.id)
    assert status.job.status == "completed", status.job.error_message
    assert (status.job.completed_tasks, status.job.failed_tasks) == (1, 0)
    assert stored(pg, app_key) == objects
    assert status.job.processed_entities == len(objects)


def test_a_cancel_stops_every_shard_and_a_retry_resumes_them(
    db: Database, pg: Pg, app_key: str
) -> None:
    objects = spread(app_key, 2400, days=20, seed=5)
    Ranged.DELAY[app_key] = 0.02
    job = db.create_sync_job(app_key, "full", ["thing"])
    config = settings(app_key)
    running = threading.Thread(target=crew, args=(db, config, job.id, 3))
    running.start()
    deadline = time.monotonic() + 30
    while len(shards(pg, job.id)) < 3 or len(stored(pg, app_key)) < 300:
        assert time.monotonic() < deadline, "no shards were cut"
        time.sleep(0.05)
    assert db.cancel_job(job.id) is not None
    running.join()

    cancelled = db.get_job_status(job.id)
    assert cancelled.job.status == "cancelled"
    assert {s[2] for s in shards(pg, job.id)} <= {"cancelled", "completed"}
    assert cancelled.tasks[0].status == "cancelled"
    assert 0 < len(stored(pg, app_key)) < len(objects)

    assert db.retry_job(job.id) is not None
    crew(db, config, job.id, size=2)
    status = db.get_job_status(job.id)
    assert status.job.status == "completed", status.job.error_message
    assert stored(pg, app_key) == objects
    assert status.job.processed_entities == len(objects)


def test_a_cut_shard_learns_its_new_start_and_the_pieces_tile_its_range(
    db: Database, pg: Pg, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    shard = db.shard_task(task.id, task.attempts, FLOOR, TaskCursor("full", sharded=True).encode())
    assert shard.parent_task_id == task.id and shard.created_from == FLOOR
    assert shard.parent_started_at is not None and shard.attempts == 1
    # The shard committed 1,000 objects over its newest 10 days.
    newest = int(NOW.timestamp())
    oldest = newest - 10 * 86400
    position = TaskCursor("full", after="x", oldest=oldest, newest=newest)
    db.write_batch({"task_id": str(shard.id), "attempt": 1, "seq": 1, "mode": "full",
                    "cursor": position.encode(), "entity_count": 1000, "rows": [],
                    "deletes": [], "children": []})  # fmt: skip

    # 100 a day: pieces of 300 objects are 3 days; at most 4 pieces.
    taken = db.split_shard(job.id, piece_objects=300, max_pieces=4)
    assert taken is not None and taken.status == "processing" and taken.attempts == 1
    cut = datetime.fromtimestamp(oldest - 3 * 86400, UTC)
    assert (taken.created_from, taken.created_before) == (
        datetime.fromtimestamp(oldest - 6 * 86400, UTC),
        cut,
    )
    ranges = shards(pg, job.id)
    assert [(r[0], r[1]) for r in ranges] == [
        (FLOOR, datetime.fromtimestamp(oldest - 9 * 86400, UTC)),
        (datetime.fromtimestamp(oldest - 9 * 86400, UTC),
         datetime.fromtimestamp(oldest - 6 * 86400, UTC)),
        (datetime.fromtimestamp(oldest - 6 * 86400, UTC), cut),
        (cut, None),
    ]  # fmt: skip
    # The shard hears of its new start with its next write.
    counts = db.write_batch({"task_id": str(shard.id), "attempt": 1, "seq": 2, "mode": "full",
                             "cursor": position.encode(), "entity_count": 1000, "rows": [],
                             "deletes": [], "children": []})  # fmt: skip
    assert counts.created_from == cut
    # The task is never stale while its shards run, nor the job done.
    pg.execute("update supasaasy.sync_job_tasks set last_heartbeat = now() - interval '1 hour'"
               " where id = %s", (str(task.id),))  # fmt: skip
    db.requeue_stale_tasks(timedelta(minutes=5), 3)
    assert db.get_job_status(job.id).tasks[0].status == "processing"
    # Too little left: no further cut.
    assert db.split_shard(job.id, piece_objects=100_000, max_pieces=4) is None


def test_a_shard_resumed_after_a_cut_below_its_position_lists_nothing_more(
    db: Database, pg: Pg, app_key: str
) -> None:
    objects = spread(app_key, 100, days=10)
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    shard = db.shard_task(task.id, task.attempts, FLOOR, TaskCursor("full", sharded=True).encode())
    newest, oldest = max(objects.values()), min(objects.values())
    halfway = TaskCursor("full", after="x", oldest=(newest + oldest) // 2, newest=newest)
    db.write_batch({"task_id": str(shard.id), "attempt": 1, "seq": 1, "mode": "full",
                    "cursor": halfway.encode(), "entity_count": 5000, "rows": [],
                    "deletes": [], "children": []})  # fmt: skip
    assert db.split_shard(job.id, piece_objects=300, max_pieces=4) is not None
    # Before hearing of the cut, the shard listed on past its new start, then stopped.
    passed = TaskCursor("full", after=f"{oldest}|x", oldest=oldest, newest=newest)
    db.write_batch({"task_id": str(shard.id), "attempt": 1, "seq": 2, "mode": "full",
                    "cursor": passed.encode(), "entity_count": 5100, "rows": [],
                    "deletes": [], "children": []})  # fmt: skip
    db.release_task(shard.id, attempt=1)
    Ranged.FAULTS[app_key] = [(1, ProviderError("a cursor outside the range asked for"))]
    start = pg.execute("select created_from from supasaasy.sync_job_tasks where id = %s",
                       (str(shard.id),)).fetchone()  # fmt: skip
    assert start is not None and isinstance(start[0], datetime)
    assert start[0].timestamp() > oldest

    Worker(db, settings(app_key)).run(job.id, max_tasks=1)

    assert Ranged.PAGES[app_key] == 0  # nothing listed again
    done = pg.execute("select status from supasaasy.sync_job_tasks where id = %s",
                      (str(shard.id),)).fetchone()  # fmt: skip
    assert done == ("completed",)


def test_a_sync_run_by_its_own_request_is_not_split(db: Database, pg: Pg, app_key: str) -> None:
    objects = spread(app_key, 120, days=5)
    config = settings(app_key)
    job = db.create_sync_job(app_key, "full", ["thing"], immediate=True)
    Worker(db, config).run(job.id)
    assert db.get_job(job.id).status == "completed"
    assert shards(pg, job.id) == []
    assert stored(pg, app_key) == objects


# -- Stripe through localstripe ------------------------------------------------------------

KEY = "sk_test_shards"


@pytest.fixture
def stripe_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("SHARDS_KEY", KEY)
    with (
        running_localstripe() as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client


def test_stripe_customers_created_over_days_sync_as_shards(
    db: Database, pg: Pg, app_key: str, stripe_api: httpx.Client
) -> None:
    made: set[str] = set()
    for days_ago in (40, 30, 20, 10, 0):
        stripe_api.post("/_config/clock", json={"offset_seconds": -days_ago * 86400})
        made |= {stripe_api.post("/v1/customers", data={"name": f"c{days_ago}-{n}"}).json()["id"]
                 for n in range(60)}  # fmt: skip
    stripe_api.post("/_config/clock", json={"offset_seconds": 0})
    config = Settings(apps=[AppConfig(app_key=app_key, connector="stripe", config={
        "api_key_env": "SHARDS_KEY", "api_base": str(stripe_api.base_url), "page_size": 10,
        "requests_per_second": 1000})])  # fmt: skip
    job = db.create_sync_job(app_key, "full", ["customer"])

    crew(db, config, job.id, size=3)

    status = db.get_job_status(job.id)
    assert status.job.status == "completed", status.job.error_message
    ids = {str(r[0]) for r in pg.execute(
        "select external_id from supasaasy.entities where app_key = %s", (app_key,))}  # fmt: skip
    assert ids == made
    assert status.job.processed_entities == len(made)
    assert len(shards(pg, job.id)) >= 1
