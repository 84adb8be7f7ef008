"""apply_webhook_event on the real stack: one event, one transaction with its log row;
duplicates, ordering and deletions; access; and full syncs that run while webhooks land
(older page data never overwrites a webhook's write, the sweep never deletes it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest

from supasaasy.config import AppConfig
from supasaasy.connectors import Connector, ConnectorMetadata, Page, Record, Resource, register
from supasaasy.db import Database
from supasaasy.sync import ResourceSync

Pg = psycopg.Connection[tuple[object, ...]]


def apply(db: Database, app_key: str, event_id: str, **body: Any) -> dict[str, Any]:
    return db.apply_webhook_event(
        {"app_key": app_key, "event_id": event_id, "event_type": "thing.updated", **body}
    )


def row(collection: str, external_id: str, at: datetime, **payload: Any) -> dict[str, Any]:
    return {
        "collection_key": collection,
        "external_id": external_id,
        "raw_payload": {"id": external_id, **payload},
        "observed_at": at.isoformat(),
    }


def stored(pg: Pg, app_key: str) -> dict[str, Any]:
    return dict(
        pg.execute(  # type: ignore[arg-type]
            "select external_id, raw_payload from supasaasy.entities where app_key = %s", (app_key,)
        ).fetchall()
    )


def logged(pg: Pg, app_key: str) -> list[tuple[object, ...]]:
    return pg.execute(
        "select event_id, outcome, error from supasaasy.webhook_logs where app_key = %s"
        " order by id",
        (app_key,),
    ).fetchall()


T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_an_event_writes_its_rows_and_its_log_row_together(
    db: Database, pg: Pg, app_key: str
) -> None:
    answer = apply(db, app_key, "evt_1", rows=[row("thing", "a", T0, name="A")])
    assert answer == {"duplicate": False, "created": 1, "updated": 0, "unchanged": 0, "deleted": 0}
    assert stored(pg, app_key) == {"a": {"id": "a", "name": "A"}}
    assert logged(pg, app_key) == [("evt_1", "applied", None)]

    # A change that fails (a row without its key) writes neither rows nor the log row.
    with pytest.raises(Exception, match="null value"):
        apply(db, app_key, "evt_2", rows=[row("thing", "b", T0), {"collection_key": "thing"}])
    assert set(stored(pg, app_key)) == {"a"} and len(logged(pg, app_key)) == 1


def test_the_same_event_twice_changes_nothing_and_says_so(
    db: Database, pg: Pg, app_key: str
) -> None:
    first = apply(db, app_key, "evt_1", rows=[row("thing", "a", T0, name="A")])
    pg.execute(
        'update supasaasy.entities set raw_payload = \'{"id": "a", "name": "B"}\''
        " where app_key = %s",
        (app_key,),
    )
    again = apply(db, app_key, "evt_1", rows=[row("thing", "a", T0, name="A")])
    assert first["duplicate"] is False and again == {"duplicate": True}
    assert stored(pg, app_key) == {"a": {"id": "a", "name": "B"}}
    assert len(logged(pg, app_key)) == 1
    # An ignored event is recognised too; a failed one is retried.
    assert apply(db, app_key, "evt_2", outcome="ignored")["duplicate"] is False
    assert apply(db, app_key, "evt_2", outcome="ignored") == {"duplicate": True}
    apply(db, app_key, "evt_3", outcome="failed", error="provider unavailable")
    assert apply(db, app_key, "evt_3", rows=[row("thing", "c", T0)])["duplicate"] is False
    assert [r[1] for r in logged(pg, app_key)] == ["applied", "ignored", "failed", "applied"]


def test_an_older_event_never_overwrites_a_newer_one(db: Database, pg: Pg, app_key: str) -> None:
    apply(db, app_key, "evt_new", rows=[row("thing", "a", T0 + timedelta(seconds=5), name="new")])
    answer = apply(db, app_key, "evt_old", rows=[row("thing", "a", T0, name="old")])
    assert answer["unchanged"] == 1 and answer["duplicate"] is False
    assert stored(pg, app_key) == {"a": {"id": "a", "name": "new"}}
    # A newer event with the same payload still moves the guard forward.
    apply(db, app_key, "evt_newer", rows=[row("thing", "a", T0 + timedelta(seconds=9), name="new")])
    apply(db, app_key, "evt_mid", rows=[row("thing", "a", T0 + timedelta(seconds=7), name="mid")])
    assert stored(pg, app_key) == {"a": {"id": "a", "name": "new"}}


def test_an_old_update_after_the_delete_does_not_bring_the_row_back(
    db: Database, pg: Pg, app_key: str
) -> None:
    apply(db, app_key, "evt_1", rows=[row("thing", "a", T0, name="A")], children=[], deletes=[])
    apply(
        db,
        app_key,
        "evt_3",
        deletes=[
            {
                "collection_key": "thing",
                "external_id": "a",
                "observed_at": (T0 + timedelta(seconds=10)).isoformat(),
            }
        ],
    )
    assert stored(pg, app_key) == {}
    apply(db, app_key, "evt_2", rows=[row("thing", "a", T0 + timedelta(seconds=5), name="late")])
    assert stored(pg, app_key) == {}


def test_an_event_replaces_its_objects_children(db: Database, pg: Pg, app_key: str) -> None:
    parent = row("sub", "s", T0)
    items = [{**row("item", i, T0), "raw_payload": {"id": i, "sub": "s"}} for i in ("i1", "i2")]
    apply(
        db,
        app_key,
        "evt_1",
        rows=[parent, *items],
        children=[
            {
                "collection_key": "item",
                "parent_field": "sub",
                "parent_id": "s",
                "observed_at": T0.isoformat(),
            }
        ],
    )
    later = T0 + timedelta(seconds=3)
    apply(
        db,
        app_key,
        "evt_2",
        rows=[
            row("sub", "s", later),
            {**row("item", "i2", later), "raw_payload": {"id": "i2", "sub": "s"}},
        ],
        children=[
            {
                "collection_key": "item",
                "parent_field": "sub",
                "parent_id": "s",
                "observed_at": later.isoformat(),
            }
        ],
    )
    assert set(stored(pg, app_key)) == {"s", "i2"}


def test_only_the_service_role_reaches_the_log_and_the_function(pg: Pg) -> None:
    relation = "supasaasy.webhook_logs"
    assert pg.execute(
        "select relrowsecurity from pg_class where oid = %s::regclass", (relation,)
    ).fetchone() == (True,)
    for role in ("anon", "authenticated"):
        granted = pg.execute(
            "select has_table_privilege(%s, %s, 'select, insert, update, delete, truncate')",
            (role, relation),
        ).fetchone()
        assert granted == (False,), role
    for function in (
        "apply_webhook_event(jsonb)",
        "write_changes(text,jsonb,uuid)",
        "write_batch(jsonb)",
        "finish_task(jsonb)",
        "cleanup_old_jobs(integer)",
    ):
        for role, expected in (("anon", False), ("authenticated", False), ("service_role", True)):
            row_ = pg.execute(
                "select has_function_privilege(%s, %s, 'execute')", (role, f"supasaasy.{function}")
            ).fetchone()
            assert row_ == (expected,), (role, function)
        public = pg.execute(
            "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a"
            " where p.oid = %s::regprocedure and a.grantee = 0)",
            (f"supasaasy.{function}",),
        ).fetchone()
        assert public == (False,), function


def test_the_log_goes_with_the_job_retention_but_not_before_three_days(
    db: Database, pg: Pg, app_key: str
) -> None:
    for n, days in enumerate((1, 4, 8)):
        apply(db, app_key, f"evt_{n}", outcome="ignored")
        pg.execute(
            "update supasaasy.webhook_logs set received_at = now() - %s::interval"
            " where app_key = %s and event_id = %s",
            (f"{days} days", app_key, f"evt_{n}"),
        )
    db.cleanup_old_jobs(7)
    assert [r[0] for r in logged(pg, app_key)] == ["evt_0", "evt_1"]
    db.cleanup_old_jobs(0)
    assert [r[0] for r in logged(pg, app_key)] == ["evt_0"]


# -- full syncs while webhooks land ------------------------------------------------------


@register
class Hooked(Connector):
    """Pages a test sets (`PAGES[app_key]`); `HOOKS[app_key](n)` runs once page n's data
    has been fetched, before the page is handed over: what lands meanwhile."""

    metadata: ClassVar[ConnectorMetadata] = ConnectorMetadata(
        name="hooked",
        display_name="Hooked",
        api_version="v1",
        resources=(Resource("thing", "thing", "things"),),
    )
    PAGES: ClassVar[dict[str, list[list[dict[str, Any]]]]] = {}
    HOOKS: ClassVar[dict[str, Callable[[int], None]]] = {}

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        pages = self.PAGES[self.app.app_key]
        for n in range(int(cursor or 0), len(pages)):
            records = [Record("thing", obj["id"], obj) for obj in pages[n]]
            if (hook := self.HOOKS.get(self.app.app_key)) is not None:
                hook(n)
            yield Page(records, cursor=str(n + 1) if n + 1 < len(pages) else None)


def full_sync(db: Database, app_key: str, *, stop_after_first: bool = False) -> None:
    """A full sync of `thing`; with `stop_after_first`, its first attempt stops after one
    page and releases the task, which a second attempt then finishes."""
    connector = Hooked(AppConfig(app_key=app_key, connector="hooked"))
    job = db.create_sync_job(app_key, "full", ["thing"])
    task = db.claim_task(job.id)
    assert task is not None
    if stop_after_first:
        seen: list[int] = []
        Hooked.HOOKS[app_key] = seen.append
        outcome = ResourceSync(db, connector).run(task, "full", should_stop=lambda: bool(seen))
        assert not outcome.finished
        db.release_task(task.id, outcome.cursor, attempt=task.attempts)
        time.sleep(0.05)
        Hooked.HOOKS[app_key] = LANDING.pop(app_key)
        task = db.claim_task(job.id)
        assert task is not None and task.attempts == 2
    assert ResourceSync(db, connector).run(task, "full").finished


LANDING: dict[str, Callable[[int], None]] = {}


def now_in_whole_seconds() -> datetime:
    """An event's time as Stripe and Intercom stamp it."""
    return datetime.now(UTC).replace(microsecond=0)


def test_a_full_sync_page_fetched_before_a_webhook_does_not_overwrite_it(
    db: Database, pg: Pg, app_key: str
) -> None:
    Hooked.PAGES[app_key] = [[{"id": "a", "name": "listed"}], [{"id": "b"}]]

    def webhook_lands(page: int) -> None:
        if page == 0:  # page 0 is fetched (with the old name) when the rename arrives
            apply(
                db,
                app_key,
                "evt_rename",
                rows=[row("thing", "a", now_in_whole_seconds(), name="renamed")],
            )

    Hooked.HOOKS[app_key] = webhook_lands
    full_sync(db, app_key)
    assert stored(pg, app_key)["a"] == {"id": "a", "name": "renamed"}

    # A later full sync, whose page was fetched after the event, does bring its state.
    Hooked.HOOKS.pop(app_key)
    time.sleep(1.05)
    full_sync(db, app_key)
    assert stored(pg, app_key)["a"] == {"id": "a", "name": "listed"}


@pytest.mark.parametrize("resumed", [False, True])
def test_the_sweep_keeps_an_object_a_webhook_created_during_the_sync(
    db: Database, pg: Pg, app_key: str, resumed: bool
) -> None:
    Hooked.PAGES[app_key] = [[{"id": "a"}, {"id": "gone"}], [{"id": "b"}]]
    full_sync(db, app_key)
    assert set(stored(pg, app_key)) == {"a", "gone", "b"}

    # Upstream: `gone` is deleted before the next sync, `new` created during it (after
    # the listing passed where it would be).
    Hooked.PAGES[app_key] = [[{"id": "a"}], [{"id": "b"}]]

    def webhook_lands(page: int) -> None:
        if page == 1:
            apply(db, app_key, "evt_new", rows=[row("thing", "new", now_in_whole_seconds())])

    if resumed:  # it lands between the task's first attempt and the one that finishes
        LANDING[app_key] = webhook_lands
    else:
        Hooked.HOOKS[app_key] = webhook_lands
    full_sync(db, app_key, stop_after_first=resumed)
    assert set(stored(pg, app_key)) == {"a", "b", "new"}
