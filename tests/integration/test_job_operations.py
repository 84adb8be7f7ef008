"""Job and task operations end to end through PostgREST, on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.errors import InvalidInputError, NotFoundError
from supasaasy.models import Entity

Pg = psycopg.Connection[tuple[object, ...]]


def test_job_lifecycle(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers", "products"])
    assert (job.status, job.total_tasks, job.started_at) == ("pending", 2, None)
    status = db.get_job_status(job.id)
    assert [t.status for t in status.tasks] == ["pending", "pending"]
    assert status.progress_percentage == 0.0

    first = db.claim_task(job.id)
    assert first is not None
    assert (first.status, first.attempts) == ("processing", 1)
    assert first.started_at is not None and first.last_heartbeat is not None
    started = db.get_job_status(job.id).job
    assert started.status == "processing" and started.started_at is not None

    assert db.update_task_heartbeat(first.id, entity_count=40, cursor="cus_040")
    after = db.complete_task(first.id, "completed", 50)
    assert after is not None
    assert (after.status, after.completed_tasks, after.processed_entities) == ("processing", 1, 50)
    assert db.get_job_status(job.id).progress_percentage == 50.0

    second = db.claim_task(job.id)
    assert second is not None and second.id != first.id
    done = db.complete_task(second.id, "completed", 7)
    assert done is not None
    assert (done.status, done.completed_tasks, done.failed_tasks) == ("completed", 2, 0)
    assert done.processed_entities == 57
    assert done.completed_at is not None and done.error_message is None
    assert db.claim_task(job.id) is None
    assert db.get_job_status(job.id).progress_percentage == 100.0


def test_finishing_a_task_twice_changes_nothing(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers", "products"])
    task = db.claim_task(job.id)
    assert task is not None
    assert db.complete_task(task.id, "completed", 10) is not None
    assert db.complete_task(task.id, "completed", 10) is None
    assert db.complete_task(task.id, "failed", 99, "late") is None
    assert not db.update_task_heartbeat(task.id, 5)
    job_now = db.get_job_status(job.id).job
    assert (job_now.completed_tasks, job_now.failed_tasks, job_now.processed_entities) == (1, 0, 10)


def test_failed_task_fails_the_job_with_a_summary(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "incremental", ["customers", "products", "prices"])
    for resource, outcome in (
        ("customers", "completed"),
        ("products", "failed"),
        ("prices", "failed"),
    ):
        task = db.claim_task(job.id)
        assert task is not None and task.resource_type == resource
        message = f"{resource} API returned 500" if outcome == "failed" else None
        db.update_task_status(
            task.id,
            outcome,
            entity_count=3,  # type: ignore[arg-type]
            error_message=message,
        )
    final = db.get_job_status(job.id)
    assert final.job.status == "failed"
    assert (final.job.completed_tasks, final.job.failed_tasks) == (1, 2)
    assert final.job.error_message == (
        "prices: prices API returned 500; products: products API returned 500"
    )
    failed = {t.resource_type: t.error_message for t in final.tasks if t.status == "failed"}
    assert failed == {"products": "products API returned 500", "prices": "prices API returned 500"}


def test_claims_take_the_oldest_pending_task_of_the_job_asked_for(
    db: Database, app_key: str
) -> None:
    older = db.create_sync_job(app_key, "full", ["customers"])
    newer = db.create_sync_job(app_key + "_b", "full", ["customers"])
    task = db.claim_task(newer.id)
    assert task is not None and task.job_id == newer.id
    assert db.claim_task(newer.id) is None
    task = db.claim_task(older.id)
    assert task is not None and task.job_id == older.id


def test_any_job_claim_skips_inactive_jobs(db: Database, pg: Pg, app_key: str) -> None:
    cancelled = db.create_sync_job(app_key, "full", ["customers"])
    db.update_job_status(cancelled.id, "cancelled")
    mine = []
    while (task := db.claim_task()) is not None:
        mine.append(task.job_id)
        db.complete_task(task.id, "completed", 0)
    assert cancelled.id not in mine
    row = pg.execute(
        "select status from supasaasy.sync_job_tasks where job_id = %s", (cancelled.id,)
    ).fetchone()
    assert row == ("pending",)


def test_release_keeps_the_cursor_for_the_next_worker(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])
    task = db.claim_task(job.id)
    assert task is not None
    assert db.update_task_status(task.id, "pending", cursor="cus_500", entity_count=500)
    assert not db.update_task_status(task.id, "pending", cursor="cus_999")  # not processing
    again = db.claim_task(job.id)
    assert again is not None and again.id == task.id
    assert (again.cursor, again.entity_count, again.attempts) == ("cus_500", 500, 2)
    with pytest.raises(ValueError):
        db.update_task_status(task.id, "processing")


def test_stale_tasks_are_requeued_then_failed_after_max_attempts(
    db: Database, pg: Pg, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])

    def claim_and_go_quiet() -> None:
        task = db.claim_task(job.id)
        assert task is not None
        db.update_task_heartbeat(task.id, entity_count=100, cursor="cus_100")
        pg.execute(
            "update supasaasy.sync_job_tasks set last_heartbeat = now() - interval '1 hour'"
            " where id = %s",
            (task.id,),
        )

    claim_and_go_quiet()
    # A fresh heartbeat elsewhere is never requeued; this stale one is.
    assert db.requeue_stale_tasks(timedelta(hours=2)) == 0
    assert db.requeue_stale_tasks(timedelta(minutes=5), max_attempts=2) == 1
    requeued = db.get_job_status(job.id).tasks[0]
    assert (requeued.status, requeued.cursor, requeued.entity_count) == ("pending", "cus_100", 100)

    claim_and_go_quiet()  # second attempt, also dies
    assert db.requeue_stale_tasks(timedelta(minutes=5), max_attempts=2) == 1
    final = db.get_job_status(job.id)
    assert final.tasks[0].status == "failed"
    assert "no heartbeat" in (final.tasks[0].error_message or "")
    assert (final.job.status, final.job.failed_tasks, final.job.processed_entities) == (
        "failed",
        1,
        100,
    )


def test_create_job_tasks_adds_to_an_active_job(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])
    tasks = db.create_job_tasks(job.id, ["products", "customers", "prices"])
    assert sorted(t.resource_type for t in tasks) == ["customers", "prices", "products"]
    assert db.get_job_status(job.id).job.total_tasks == 3
    db.update_job_status(job.id, "cancelled")
    with pytest.raises(NotFoundError):
        db.create_job_tasks(job.id, ["plans"])


def test_update_job_status_sets_timestamps(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])
    running = db.update_job_status(job.id, "processing")
    assert running.started_at is not None and running.completed_at is None
    ended = db.update_job_status(job.id, "cancelled", "stopped by the user")
    assert ended.completed_at is not None and ended.started_at == running.started_at
    assert ended.error_message == "stopped by the user"


def test_unknown_and_malformed_ids(db: Database) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFoundError):
        db.get_job_status(missing)
    with pytest.raises(NotFoundError):
        db.update_job_status(missing, "cancelled")
    assert db.claim_task(missing) is None
    assert db.complete_task(missing, "completed", 1) is None
    with pytest.raises(InvalidInputError):
        db.get_job_status("1; drop table supasaasy.sync_jobs")
    with pytest.raises(InvalidInputError):
        db.complete_task(missing, "processing")  # type: ignore[arg-type]


def test_entities_upsert_and_sync_state(db: Database, pg: Pg, app_key: str) -> None:
    batch = [
        Entity(
            app_key=app_key,
            collection_key="customers",
            external_id=f"cus_{i}",
            api_version="2024-06-20",
            raw_payload={"id": f"cus_{i}", "n": i},
        )
        for i in range(1500)
    ]
    batch.append(batch[0].model_copy(update={"raw_payload": {"id": "cus_0", "n": -1}}))
    assert db.upsert_entities(batch) == 1500
    assert db.upsert_entities(batch[:10]) == 10
    count, first = pg.execute(
        "select count(*), (select raw_payload from supasaasy.entities where app_key = %s"
        " and external_id = 'cus_0') from supasaasy.entities where app_key = %s",
        (app_key, app_key),
    ).fetchone() or (None, None)
    assert count == 1500
    assert first == {"id": "cus_0", "n": 0}

    assert db.get_sync_state(app_key, "customers") is None
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    db.set_sync_state(app_key, "customers", when, {"events_cursor": "evt_1"})
    db.set_sync_state(app_key, "customers", when + timedelta(hours=1), {"events_cursor": "evt_2"})
    state = db.get_sync_state(app_key, "customers")
    assert state is not None
    assert state.last_synced_at == when + timedelta(hours=1)
    assert state.last_sync_metadata == {"events_cursor": "evt_2"}
