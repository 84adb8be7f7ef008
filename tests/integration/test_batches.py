"""write_batch, finish_task and the shared rate allowance on the real database."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.errors import TaskLostError
from supasaasy.models import BatchRow, SyncTask, WriteBatch

Pg = psycopg.Connection[tuple[object, ...]]


def claimed(db: Database, app_key: str, resource: str = "customer") -> SyncTask:
    job = db.create_sync_job(app_key, "full", [resource])
    task = db.claim_task(job.id)
    assert task is not None
    return task


def batch(task: SyncTask, rows: list[BatchRow], **extra: Any) -> WriteBatch:
    body: WriteBatch = {
        "task_id": str(task.id), "attempt": task.attempts, "cursor": "c1",
        "entity_count": len(rows), "mode": "full", "api_version": "2025-02-24.acacia",
        "rows": rows,
    }  # fmt: skip
    body.update(extra)  # type: ignore[typeddict-item]
    return body


def row(n: int, **payload: Any) -> BatchRow:
    created = 1_700_000_000 + n
    return {"collection_key": "stripe_customer", "external_id": f"cus_{n}",
            "raw_payload": {"id": f"cus_{n}", "created": created, **payload},
            "source_created_at": datetime.fromtimestamp(created, UTC).isoformat()}  # fmt: skip


def stored(pg: Pg, app_key: str) -> dict[str, tuple[Any, ...]]:
    rows = pg.execute(
        "select external_id, raw_payload, archived_at, xmin::text, api_version from"
        " supasaasy.entities where app_key = %s",
        (app_key,),
    )
    return {r[0]: r[1:] for r in rows}  # type: ignore[misc]


def test_counts_are_truthful_and_unchanged_rows_are_not_rewritten(
    db: Database, pg: Pg, app_key: str
) -> None:
    task = claimed(db, app_key)
    first = db.write_batch(batch(task, [row(1), row(2), row(3)]))
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    before = stored(pg, app_key)

    second = db.write_batch(batch(task, [row(1), row(2, name="B"), row(3), row(4)], cursor="c2"))
    assert (second.created, second.updated, second.unchanged, second.deleted) == (1, 1, 2, 0)
    after = stored(pg, app_key)
    assert after["cus_1"][2] == before["cus_1"][2]  # same tuple: not rewritten
    assert after["cus_2"][2] != before["cus_2"][2]
    assert after["cus_2"][0]["name"] == "B"
    assert after["cus_4"][3] == "2025-02-24.acacia"

    checkpoint = db.get_job_status(task.job_id).tasks[0]
    assert (checkpoint.cursor, checkpoint.entity_count) == ("c2", 4)


def test_the_json_and_text_forms_of_write_batch_agree(db: Database, pg: Pg, app_key: str) -> None:
    """The worker sends batches as text/plain (PostgREST does not parse them); SQL and
    JSON callers reach write_batch(jsonb). Both write the same rows and counts."""
    task = claimed(db, app_key)
    as_json = db._rpc_large("write_batch", batch(task, [row(1), row(2)], seq=1))
    as_text = db._rpc_large("write_batch", batch(task, [row(1), row(3)], seq=2), as_text=True)
    assert as_json == {"created": 2, "updated": 0, "unchanged": 0, "deleted": 0}
    assert as_text == {"created": 1, "updated": 0, "unchanged": 1, "deleted": 0}
    assert sorted(stored(pg, app_key)) == ["cus_1", "cus_2", "cus_3"]


def test_a_nul_in_a_payload_is_stored_as_a_replacement_character(
    db: Database, pg: Pg, app_key: str
) -> None:
    """jsonb cannot hold U+0000: without this, one such string fails its batch forever."""
    task = claimed(db, app_key)
    strings = {"name": "a\x00b", "note": "\\u0000 is text", "path": "C:\\\x00"}
    assert db.write_batch(batch(task, [row(1, **strings)])).created == 1
    payload = stored(pg, app_key)["cus_1"][0]
    assert (payload["name"], payload["note"], payload["path"]) == (
        "a\ufffdb",
        "\\u0000 is text",
        "C:\\\ufffd",
    )


def test_a_body_that_is_not_json_is_refused_and_writes_nothing(
    db: Database, pg: Pg, app_key: str
) -> None:
    task = claimed(db, app_key)
    response = db.rest.session.post(
        "/rpc/write_batch",
        content=b'{"task_id": "%s", "attempt": 1, "rows": [' % str(task.id).encode(),
        headers={"Content-Type": "text/plain; charset=utf-8", "Content-Profile": "supasaasy"},
    )
    assert response.status_code == 400
    assert response.json()["message"] == "invalid input syntax for type json"
    assert stored(pg, app_key) == {}
    assert db.get_job_status(task.job_id).tasks[0].cursor is None


def test_a_replayed_batch_changes_nothing(db: Database, pg: Pg, app_key: str) -> None:
    task = claimed(db, app_key)
    body = batch(task, [row(1), row(2)])
    db.write_batch(body)
    before = stored(pg, app_key)
    again = db.write_batch(body)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert stored(pg, app_key) == before


def test_a_worker_that_lost_its_task_writes_nothing(db: Database, pg: Pg, app_key: str) -> None:
    task = claimed(db, app_key)
    db.write_batch(batch(task, [row(1)]))
    db.release_task(task.id)
    again = db.claim_task(task.job_id)  # another worker's claim: attempt 2
    assert again is not None and again.attempts == 2
    with pytest.raises(TaskLostError) as err:
        db.write_batch(batch(task, [row(1, name="stale"), row(9)], cursor="stale"))
    assert err.value.code == "SS001"
    assert set(stored(pg, app_key)) == {"cus_1"}
    assert db.get_job_status(task.job_id).tasks[0].cursor == "c1"


def test_archived_objects_and_their_return(db: Database, pg: Pg, app_key: str) -> None:
    task = claimed(db, app_key, "product")
    product = {"collection_key": "stripe_product", "external_id": "prod_1",
               "raw_payload": {"id": "prod_1", "active": False}}  # fmt: skip
    db.write_batch(batch(task, [{**product, "archived": True}]))  # type: ignore[list-item]
    archived_at = stored(pg, app_key)["prod_1"][1]
    assert archived_at is not None
    db.write_batch(
        batch(
            task,
            [
                {
                    **product,
                    "archived": True,  # type: ignore[list-item]
                    "raw_payload": {"id": "prod_1", "active": False, "n": 2},
                }
            ],
        )
    )
    assert stored(pg, app_key)["prod_1"][1] == archived_at  # kept from the first time
    db.write_batch(batch(task, [{**product, "raw_payload": {"id": "prod_1", "active": True}}]))
    assert stored(pg, app_key)["prod_1"][1] is None


def test_older_events_never_replace_newer_state(db: Database, pg: Pg, app_key: str) -> None:
    task = claimed(db, app_key)
    t0 = datetime(2027, 1, 1, tzinfo=UTC)
    newer = {**row(1, name="newer"), "observed_at": (t0 + timedelta(minutes=5)).isoformat()}
    older = {**row(1, name="older"), "observed_at": t0.isoformat()}
    db.write_batch(batch(task, [newer], mode="incremental"))  # type: ignore[list-item]
    result = db.write_batch(batch(task, [older], mode="incremental"))  # type: ignore[list-item]
    assert (result.updated, result.unchanged) == (0, 1)
    assert stored(pg, app_key)["cus_1"][0]["name"] == "newer"
    # A deletion older than the stored state does not delete it either; a newer one does.
    old_delete = {"collection_key": "stripe_customer", "external_id": "cus_1",
                  "observed_at": t0.isoformat()}  # fmt: skip
    assert db.write_batch(batch(task, [], deletes=[old_delete])).deleted == 0
    new_delete = {**old_delete, "observed_at": (t0 + timedelta(hours=1)).isoformat()}
    assert db.write_batch(batch(task, [], deletes=[new_delete])).deleted == 1
    assert stored(pg, app_key) == {}


def test_child_sets_remove_children_the_parent_no_longer_has(
    db: Database, pg: Pg, app_key: str
) -> None:
    task = claimed(db, app_key, "subscription")

    def item(n: int, sub: str) -> BatchRow:
        return {"collection_key": "stripe_subscription_item", "external_id": f"si_{n}",
                "raw_payload": {"id": f"si_{n}", "subscription": sub}}  # fmt: skip

    db.write_batch(batch(task, [item(1, "sub_1"), item(2, "sub_1"), item(3, "sub_2")]))
    result = db.write_batch(batch(
        task, [item(2, "sub_1")], mode="incremental",
        children=[{"collection_key": "stripe_subscription_item", "parent_field": "subscription",
                   "parent_id": "sub_1"}],
    ))  # fmt: skip
    assert result.deleted == 1
    assert set(stored(pg, app_key)) == {"si_2", "si_3"}


def test_source_times_are_stored_and_a_row_whose_times_changed_is_rewritten(
    db: Database, pg: Pg, app_key: str
) -> None:
    task = claimed(db, app_key)
    updated = {"source_updated_at": "2027-01-02T03:04:05+00:00"}
    db.write_batch(batch(task, [row(1), {**row(2), **updated}]))  # type: ignore[typeddict-item]
    times = "select external_id, source_created_at, source_updated_at, xmin::text from" \
            " supasaasy.entities where app_key = %s order by external_id"  # fmt: skip
    before = pg.execute(times, (app_key,)).fetchall()
    assert [(r[0], r[1], r[2]) for r in before] == [
        ("cus_1", datetime.fromtimestamp(1_700_000_001, UTC), None),
        ("cus_2", datetime.fromtimestamp(1_700_000_002, UTC),
         datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ]  # fmt: skip
    later = {"source_updated_at": "2027-01-03T00:00:00+00:00"}
    again = db.write_batch(batch(task, [row(1), {**row(2), **later}], cursor="c2"))  # type: ignore[typeddict-item]
    assert (again.updated, again.unchanged) == (1, 1)
    after = pg.execute(times, (app_key,)).fetchall()
    assert after[0] == before[0] and after[1][2] == datetime(2027, 1, 3, tzinfo=UTC)


def test_finish_sweeps_unseen_rows_in_the_window_and_records_the_watermark(
    db: Database, pg: Pg, app_key: str
) -> None:
    # Rows from an earlier sync: 1-6, and one with no creation time. Upstream now has
    # 1, 2, 5 and a new 7.
    setup = claimed(db, app_key)
    undated: BatchRow = {"collection_key": "stripe_customer", "external_id": "undated",
                         "raw_payload": {"id": "undated"}}  # fmt: skip
    db.write_batch(batch(setup, [*(row(n) for n in range(1, 7)), undated]))
    db.complete_task(setup.id, "completed", 6)

    task = claimed(db, app_key)
    db.write_batch(batch(task, [row(1), row(2)], cursor="p1"))
    db.write_batch(batch(task, [row(5), row(7)], cursor=None))
    watermark = datetime(2027, 3, 1, tzinfo=UTC)
    finished = db.finish_task({
        "task_id": str(task.id), "attempt": task.attempts, "entity_count": 4,
        "sweep_collections": ["stripe_customer"],
        # created upstream at 1_700_000_004 or later: 3 is outside the window and stays
        "sweep_created_from": datetime.fromtimestamp(1_700_000_004, UTC).isoformat(),
        "state_collections": ["stripe_customer"], "synced_at": watermark.isoformat(),
    })  # fmt: skip
    assert finished.deleted == 3  # 4, 6 and the undated one
    assert sorted(stored(pg, app_key)) == ["cus_1", "cus_2", "cus_3", "cus_5", "cus_7"]
    assert finished.job is not None and finished.job.status == "completed"
    assert finished.job.processed_entities == 4
    state = db.get_sync_state(app_key, "stripe_customer")
    assert state is not None and state.last_synced_at == watermark
    left = pg.execute("select count(*) from supasaasy.sync_task_seen where task_id = %s",
                      (task.id,)).fetchone()  # fmt: skip
    assert left == (0,)
    with pytest.raises(TaskLostError):  # finishing again is refused, and sweeps nothing
        db.finish_task({"task_id": str(task.id), "attempt": task.attempts, "entity_count": 0,
                        "sweep_collections": ["stripe_customer"]})  # fmt: skip
    assert len(stored(pg, app_key)) == 5


def test_the_sweep_handles_more_rows_than_postgrest_returns(
    db: Database, pg: Pg, app_key: str
) -> None:
    setup = claimed(db, app_key)
    db.write_batch(batch(setup, [row(n) for n in range(2500)]))
    db.complete_task(setup.id, "completed", 2500)
    task = claimed(db, app_key)
    db.write_batch(batch(task, [row(n) for n in range(0, 2500, 2)], cursor=None))
    finished = db.finish_task(
        {
            "task_id": str(task.id),
            "attempt": task.attempts,
            "entity_count": 1250,
            "sweep_collections": ["stripe_customer"],
        }
    )
    assert finished.deleted == 1250
    assert len(stored(pg, app_key)) == 1250


def test_rate_allowance_is_shared_by_concurrent_workers(db: Database, app_key: str) -> None:
    rate, chunk, workers, chunks_each = 200.0, 10, 8, 5
    granted: list[float] = []
    lock = threading.Lock()
    start = time.monotonic()

    def worker() -> None:
        for _ in range(chunks_each):
            wait = db.take_rate_allowance(app_key, rate, chunk)
            with lock:
                granted.append(time.monotonic() - start + wait)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 400 requests at 200/s with a burst of 200: by any moment t, at most 200 + 200 t
    # requests may have been let through, and the last chunk cannot go before 1 s.
    burst, slack = rate, 0.05
    for i, at in enumerate(sorted(granted), start=1):
        assert i * chunk <= burst + rate * (at + slack), (i, at)
    total = workers * chunks_each * chunk
    assert max(granted) >= (total - burst) / rate - slack


def test_the_checkpoint_only_moves_over_batches_committed_without_a_gap(
    db: Database, pg: Pg, app_key: str
) -> None:
    task = claimed(db, app_key)

    def checkpoint() -> tuple[object, ...]:
        row = pg.execute("select batch_seq, cursor, entity_count from supasaasy.sync_job_tasks"
                         " where id = %s", (task.id,)).fetchone()  # fmt: skip
        assert row is not None
        return tuple(row)

    db.write_batch(batch(task, [row(3)], seq=2, cursor="after-2", entity_count=2))
    assert checkpoint() == (0, None, 0)  # batch 1 is not committed yet: no move
    assert set(stored(pg, app_key)) == {"cus_3"}  # its rows are, and replay safely
    db.write_batch(batch(task, [row(5)], seq=3, cursor="after-3", entity_count=3))
    db.write_batch(batch(task, [row(1)], seq=1, cursor="after-1", entity_count=1))
    assert checkpoint() == (3, "after-3", 3)  # 1 closes the gap: over 1, 2 and 3

    # A worker that took the task over starts after the committed checkpoint; what a
    # previous claim left pending is not taken for its own.
    db.write_batch(batch(task, [row(9)], seq=5, cursor="stale-5", entity_count=5))
    db.release_task(task.id)
    again = db.claim_task(task.job_id)
    assert again is not None and (again.batch_seq, again.cursor) == (3, "after-3")
    db.write_batch(batch(again, [row(7)], seq=4, cursor="after-4", entity_count=4))
    assert checkpoint() == (4, "after-4", 4)
    db.write_batch(batch(again, [row(8)], seq=5, cursor="after-5", entity_count=5))
    assert checkpoint() == (5, "after-5", 5)


def test_batches_written_side_by_side_lose_nothing(db: Database, pg: Pg, app_key: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    task = claimed(db, app_key)
    bodies = [batch(task, [row(n) for n in range(k * 100, k * 100 + 100)], seq=k + 1,
                    cursor=f"after-{k + 1}", entity_count=(k + 1) * 100)
              for k in range(20)]  # fmt: skip
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(db.write_batch, bodies))
    assert sum(r.created for r in results) == 2000
    saved = db.get_job_status(task.job_id).tasks[0]
    assert (saved.batch_seq, saved.cursor, saved.entity_count) == (20, "after-20", 2000)
    assert len(stored(pg, app_key)) == 2000


def test_unused_allowance_given_back_frees_the_rate_for_others(db: Database, app_key: str) -> None:
    assert db.take_rate_allowance(app_key, 10, 10) == 0  # within the burst
    assert db.take_rate_allowance(app_key, 10, 10) > 0.8  # a second later
    db.return_rate_allowance(app_key, 10, 10)
    db.return_rate_allowance(app_key, 10, 10)
    assert db.take_rate_allowance(app_key, 10, 10) == 0


def test_the_sweep_is_planned_without_nested_loops(pg: Pg) -> None:
    # With stale statistics a nested loop compared every stored row with every seen one
    # (quadratic: bench/row_cost.py); finish_task runs with nested loops off.
    config = pg.execute(
        "select proconfig from pg_proc where oid = 'supasaasy.finish_task(jsonb)'::regprocedure"
    ).fetchone()
    assert config == (["enable_nestloop=off"],)
