"""Many workers claiming and finishing one job's tasks at once, through PostgREST."""

from __future__ import annotations

import threading
from collections import Counter
from uuid import UUID

from supasaasy.db import Database
from supasaasy.models import SyncJob

TASKS = 300
WORKERS = 16


def test_sixteen_workers_claim_every_task_exactly_once(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", [f"resource_{i:03d}" for i in range(TASKS)])
    claimed: Counter[UUID] = Counter()
    entities: dict[UUID, int] = {}
    finals: list[SyncJob] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)

    def worker() -> None:
        try:
            start.wait()
            while (task := db.claim_task(job.id)) is not None:
                count = int(task.resource_type[-3:]) + 1
                after = db.complete_task(task.id, "completed", count)
                with lock:
                    claimed[task.id] += 1
                    entities[task.id] = count
                    if after is not None and after.status != "processing":
                        finals.append(after)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    assert len(claimed) == TASKS
    assert set(claimed.values()) == {1}
    assert len(finals) == 1  # exactly one completion saw the job end
    final = db.get_job_status(job.id).job
    assert final.status == "completed" and finals[0].status == "completed"
    assert (final.completed_tasks, final.failed_tasks) == (TASKS, 0)
    assert final.processed_entities == sum(entities.values()) == TASKS * (TASKS + 1) // 2
