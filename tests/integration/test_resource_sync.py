"""ResourceSync's own behaviour with a provider that stalls or fails, on the real database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from supasaasy.config import AppConfig
from supasaasy.connectors import Connector, ConnectorMetadata, Page, ProviderError, Record, Resource
from supasaasy.db import Database
from supasaasy.sync import ResourceSync, TaskCursor

Pg = psycopg.Connection[tuple[object, ...]]


class Scripted(Connector):
    """A provider that serves two pages, and between them stalls or fails as told."""

    metadata = ConnectorMetadata(
        name="scripted", display_name="Scripted", api_version="v1",
        resources=(Resource("thing", "test_thing", "things"),),
    )  # fmt: skip

    def __init__(self, app: AppConfig, between: str) -> None:
        super().__init__(app)
        self.between = between
        self.release = threading.Event()

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        if cursor is None:
            yield Page([Record("test_thing", f"t{i}", {"i": i}) for i in range(3)], cursor="p1")
        if self.between == "fail":
            raise ProviderError("Scripted GET /things failed after 5 retries: 503")
        if self.between == "stall":
            self.release.wait(30)
        yield Page([Record("test_thing", "t9", {"i": 9})], cursor=None)

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        raise AssertionError("not used")


def things(pg: Pg, app_key: str) -> list[str]:
    rows = pg.execute("select external_id from supasaasy.entities where app_key = %s"
                      " order by external_id", (app_key,))  # fmt: skip
    return [r[0] for r in rows]  # type: ignore[misc]


def test_a_stalled_provider_keeps_the_task_alive_and_can_be_stopped(
    db: Database, pg: Pg, app_key: str
) -> None:
    connector = Scripted(AppConfig(app_key=app_key, connector="scripted"), between="stall")
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    deadline = time.monotonic() + 1.0
    runner = ResourceSync(db, connector, batch_seconds=0.2)
    try:
        outcome = runner.run(task, "full", should_stop=lambda: time.monotonic() > deadline)
    finally:
        connector.release.set()
    assert not outcome.finished
    assert outcome.cursor == TaskCursor("full", "p1").encode()
    assert things(pg, app_key) == ["t0", "t1", "t2"]
    saved = db.get_job_status(job.id).tasks[0]
    assert saved.cursor == outcome.cursor and saved.entity_count == 3
    assert saved.last_heartbeat is not None and task.last_heartbeat is not None
    assert (saved.last_heartbeat - task.last_heartbeat).total_seconds() >= 0.6  # kept alive

    db.release_task(task.id, outcome.cursor)
    again = db.claim_task(job.id)
    assert again is not None
    resumed = ResourceSync(db, Scripted(connector.app, between="nothing")).run(again, "full")
    assert resumed.finished and resumed.progress.created == 1
    assert things(pg, app_key) == ["t0", "t1", "t2", "t9"]
    assert db.get_job_status(job.id).job.status == "completed"


def test_a_provider_failure_keeps_what_was_committed(db: Database, pg: Pg, app_key: str) -> None:
    connector = Scripted(AppConfig(app_key=app_key, connector="scripted"), between="fail")
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    with pytest.raises(ProviderError, match="after 5 retries"):
        ResourceSync(db, connector).run(task, "full")
    saved = db.get_job_status(job.id).tasks[0]
    assert saved.status == "processing"  # the worker decides: fail or retry
    # Nothing was written: the failure came before the batch was due.
    assert things(pg, app_key) == []
    assert saved.cursor is None
