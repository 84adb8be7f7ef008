"""Notion synced into the real stack through the connector and the batched writer, with
Notion mocked at its HTTP edge by a small stateful fake: counts per collection, Notion
ids as external ids, the deletion sweep, incremental sync, and the typed views."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import respx

import supasaasy.connectors.notion  # noqa: F401  (registers the connector)
from supasaasy.config import AppConfig
from supasaasy.connectors import create_connector
from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.handlers.webhook import event_body
from supasaasy.migrations import apply_migrations, package_migrations
from supasaasy.models import SyncMode
from supasaasy.sync import ResourceSync, SharedRateLimiter, SyncOutcome

API = "https://api.notion.com"
TOKEN = "ntn_integration_secret"
Pg = psycopg.Connection[tuple[object, ...]]

TASKS = "1b6e2c4a-1111-4a4a-8a8a-000000000001"
NOTES = "1b6e2c4a-2222-4a4a-8a8a-000000000002"
DATABASE = "9d0f0000-0000-4000-8000-00000000d0d0"
OLD = "2025-01-01T09:00:00.000Z"


def notion_time(moment: datetime) -> str:
    """Notion's format: whole minutes, in UTC, with milliseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")


def property_schema(prop_id: str, name: str, kind: str) -> dict[str, Any]:
    return {"id": prop_id, "name": name, "type": kind, kind: {}}


def notion_page(page_id: str, source_id: str | None, title: str, **extra: Any) -> dict[str, Any]:
    parent = (
        {"type": "data_source_id", "data_source_id": source_id, "database_id": DATABASE}
        if source_id
        else {"type": "workspace", "workspace": True}
    )
    return {
        "object": "page", "id": page_id, "parent": parent,
        "properties": {
            "Name": {"id": "title", "type": "title",
                     "title": [{"plain_text": title[:3]}, {"plain_text": title[3:]}]},
            "Done": {"id": "d%3Ax", "type": "checkbox", "checkbox": False},
        },
        "archived": False, "in_trash": False, "icon": None, "cover": None,
        "created_time": "2024-06-01T08:00:00.000Z", "last_edited_time": OLD,
        "created_by": {"object": "user", "id": "user-ada"},
        "last_edited_by": {"object": "user", "id": "user-ada"},
        "url": f"https://www.notion.so/{page_id.replace('-', '')}", "public_url": None,
        **extra,
    }  # fmt: skip


class FakeNotion:
    """The endpoints the connector uses, over objects the test can change."""

    def __init__(self) -> None:
        self.data_sources: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.standalone: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        # Data sources search leaves out, as Notion's documentation warns it may.
        self.unlisted: set[str] = set()

    def add_data_source(
        self, source_id: str, title: str, props: list[tuple[str, str, str]]
    ) -> None:
        self.data_sources[source_id] = {
            "object": "data_source", "id": source_id,
            "parent": {"type": "database_id", "database_id": DATABASE},
            "database_parent": {"type": "workspace", "workspace": True},
            "title": [{"type": "text", "text": {"content": title, "link": None},
                       "plain_text": title}],
            "description": [],
            "properties": {name: property_schema(pid, name, kind) for pid, name, kind in props},
            "archived": False, "in_trash": False, "icon": {"type": "emoji", "emoji": "✅"},
            "cover": None, "created_time": "2024-02-01T10:00:00.000Z", "last_edited_time": OLD,
            "created_by": {"object": "user", "id": "user-ada"},
            "last_edited_by": {"object": "user", "id": "user-ada"},
            "url": f"https://www.notion.so/{source_id.replace('-', '')}", "public_url": None,
        }  # fmt: skip
        self.rows[source_id] = []

    @staticmethod
    def _listing(items: list[dict[str, Any]], size: int, cursor: str | None) -> httpx.Response:
        start = int(cursor or 0)
        more = start + size < len(items)
        return httpx.Response(200, json={
            "object": "list", "results": items[start:start + size],
            "next_cursor": str(start + size) if more else None, "has_more": more,
            "type": "page_or_data_source", "page_or_data_source": {}})  # fmt: skip

    def search(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(("search", body["filter"]["value"]))
        if body["filter"]["value"] == "data_source":
            items = [s for s in self.data_sources.values() if s["id"] not in self.unlisted]
        else:
            items = [p for rows in self.rows.values() for p in rows] + self.standalone
        # Live objects, or (asked for alone) those in the trash.
        in_trash = body["filter"].get("in_trash", False)
        items = [o for o in items if o.get("in_trash", False) == in_trash]
        descending = body["sort"]["direction"] == "descending"
        items.sort(key=lambda o: (o["last_edited_time"], o["id"]), reverse=descending)
        return self._listing(items, body["page_size"], body.get("start_cursor"))

    def query(self, request: httpx.Request, source_id: str) -> httpx.Response:
        self.requests.append(("query", source_id))
        if source_id not in self.data_sources:
            gone = {"object": "error", "status": 404, "code": "object_not_found", "message": "gone"}
            return httpx.Response(404, json=gone)
        body = json.loads(request.content)
        rows = sorted(self.rows[source_id], key=lambda o: (o["created_time"], o["id"]))
        return self._listing(rows, body["page_size"], body.get("start_cursor"))

    def get_data_source(self, request: httpx.Request, source_id: str) -> httpx.Response:
        self.requests.append(("get", source_id))
        if source_id not in self.data_sources:
            gone = {"object": "error", "status": 404, "code": "object_not_found", "message": "gone"}
            return httpx.Response(404, json=gone)
        return httpx.Response(200, json=self.data_sources[source_id])

    def list_users(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(("users", ""))
        params = request.url.params
        return self._listing(self.users, int(params["page_size"]), params.get("start_cursor"))


@pytest.fixture
def notion(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNotion]:
    monkeypatch.setenv("NOTION_TEST_TOKEN", TOKEN)
    fake = FakeNotion()
    fake.add_data_source(TASKS, "Tasks", [("title", "Name", "title"), ("d%3Ax", "Done", "checkbox"),
                                          ("p%7Cq", "Owner", "people")])  # fmt: skip
    fake.add_data_source(NOTES, "Notes", [("title", "Name", "title"), ("t%40g", "Tag", "select")])
    fake.rows[TASKS] = [notion_page(f"page-task-{n}", TASKS, f"Task {n}") for n in range(1, 5)]
    fake.rows[TASKS].append(notion_page("page-task-5", TASKS, "Task 5", in_trash=True,
                                        archived=True))  # fmt: skip
    fake.rows[NOTES] = [notion_page(f"page-note-{n}", NOTES, f"Note {n}") for n in (1, 2)]
    fake.standalone = [notion_page("page-standalone", None, "Workspace home")]
    fake.users = [
        {"object": "user", "id": "user-ada", "type": "person", "name": "Ada",
         "avatar_url": None, "person": {"email": "ada@example.com"}},
        {"object": "user", "id": "user-bob", "type": "person", "name": "Bob",
         "avatar_url": "https://example.com/bob.png", "person": {"email": "bob@example.com"}},
        {"object": "user", "id": "user-bot", "type": "bot", "name": "Sync bot", "avatar_url": None,
         "bot": {"owner": {"type": "workspace", "workspace": True},
                 "workspace_name": "Acme"}},
    ]  # fmt: skip
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as respx_mock:
        respx_mock.route(host="127.0.0.1").pass_through()  # our own PostgREST
        respx_mock.post(f"{API}/v1/search").mock(side_effect=fake.search)
        respx_mock.post(url__regex=rf"{API}/v1/data_sources/(?P<source_id>[^/]+)/query").mock(
            side_effect=fake.query
        )
        respx_mock.get(f"{API}/v1/users").mock(side_effect=fake.list_users)
        respx_mock.get(url__regex=rf"{API}/v1/data_sources/(?P<source_id>[^/]+)$").mock(
            side_effect=fake.get_data_source
        )
        yield fake


def app(app_key: str) -> AppConfig:
    return AppConfig(app_key=app_key, connector="notion",
                     config={"api_key_env": "NOTION_TEST_TOKEN", "page_size": 2})  # fmt: skip


def sync(
    db: Database, application: AppConfig, resources: list[str], mode: SyncMode = "full"
) -> dict[str, SyncOutcome]:
    """One job over `resources`, each task claimed and run to its end."""
    job = db.create_sync_job(application.app_key, mode, resources)
    outcomes: dict[str, SyncOutcome] = {}
    while (task := db.claim_task(job.id)) is not None:
        limiter = SharedRateLimiter(db, application.app_key, per_second=500)
        connector = create_connector(application, rate_limiter=limiter)
        try:
            outcomes[task.resource_type] = ResourceSync(db, connector, batch_rows=3).run(task, mode)
        finally:
            connector.close()
    assert db.get_active_job(application.app_key) is None  # every task finished
    return outcomes


def stored(pg: Pg, app_key: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for collection, external_id in pg.execute(
        "select collection_key, external_id from supasaasy.entities"
        " where app_key = %s and deleted_at is null",
        (app_key,),
    ):
        found.setdefault(str(collection), set()).add(str(external_id))
    return found


def test_full_sync_stores_every_object_and_sweeps_what_is_gone(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    application = app(app_key)
    first = sync(db, application, ["data_source", "page", "user"])
    assert all(o.finished and o.progress.mode == "full" for o in first.values())
    assert stored(pg, app_key) == {
        "notion_data_source": {TASKS, NOTES},
        "notion_data_source_property": {f"{TASKS}:title", f"{TASKS}:d%3Ax", f"{TASKS}:p%7Cq",
                                        f"{NOTES}:title", f"{NOTES}:t%40g"},
        "notion_page": {"page-task-1", "page-task-2", "page-task-3", "page-task-4",
                        "page-task-5", "page-note-1", "page-note-2"},
        "notion_user": {"user-ada", "user-bob", "user-bot"},
    }  # fmt: skip
    assert (first["data_source"].progress.created, first["page"].progress.created,
            first["user"].progress.created) == (7, 7, 3)  # fmt: skip
    assert first["page"].progress.pages == 4  # pages of two, data source by data source
    archived = pg.execute(
        "select external_id from supasaasy.entities where app_key = %s"
        " and archived_at is not null", (app_key,)).fetchall()  # fmt: skip
    assert archived == [("page-task-5",)]
    assert ("query", TASKS) in notion.requests and ("query", NOTES) in notion.requests

    # Upstream: the Notes data source and a Tasks row are deleted, a Tasks property
    # is removed, a user leaves, a row is renamed.
    del notion.data_sources[NOTES]
    del notion.rows[NOTES]
    del notion.data_sources[TASKS]["properties"]["Owner"]
    notion.rows[TASKS] = [p for p in notion.rows[TASKS] if p["id"] != "page-task-2"]
    notion.rows[TASKS][0]["properties"]["Name"]["title"] = [{"plain_text": "Renamed"}]
    notion.users = [u for u in notion.users if u["id"] != "user-bob"]

    second = sync(db, application, ["data_source", "page", "user"])
    assert stored(pg, app_key) == {
        "notion_data_source": {TASKS},
        "notion_data_source_property": {f"{TASKS}:title", f"{TASKS}:d%3Ax"},
        "notion_page": {"page-task-1", "page-task-3", "page-task-4", "page-task-5"},
        "notion_user": {"user-ada", "user-bot"},
    }  # fmt: skip
    # Notes, its two properties, and the Owner property of Tasks.
    assert second["data_source"].progress.deleted == 4
    assert (second["page"].progress.deleted, second["page"].progress.updated) == (3, 1)
    assert (second["user"].progress.deleted, second["user"].progress.unchanged) == (1, 2)
    renamed = pg.execute(
        "select raw_payload -> 'properties' -> 'Name' -> 'title' -> 0 ->> 'plain_text'"
        " from supasaasy.entities where app_key = %s and external_id = 'page-task-1'",
        (app_key,)).fetchone()  # fmt: skip
    assert renamed == ("Renamed",)


def test_a_data_source_search_leaves_out_is_checked_not_swept(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    application = app(app_key)
    sync(db, application, ["data_source", "page"])
    before = stored(pg, app_key)
    notion.unlisted = {NOTES}  # still there, but search does not list it
    notion.data_sources[TASKS]["in_trash"] = True  # listed by nothing either once trashed
    notion.unlisted.add(TASKS)
    second = sync(db, application, ["data_source", "page"])
    after = stored(pg, app_key)
    # Tasks is in the trash, whence it can be restored: kept archived, with its schema.
    assert after["notion_data_source"] == {TASKS, NOTES}
    assert after["notion_data_source_property"] == before["notion_data_source_property"]
    assert archived(pg, app_key, "notion_data_source") == {TASKS}
    assert {"page-note-1", "page-note-2"} <= after["notion_page"]
    assert before["notion_data_source"] == {TASKS, NOTES}
    assert second["data_source"].progress.deleted == 0
    assert second["data_source"].progress.updated == 1  # Tasks, now in the trash
    assert ("get", NOTES) in notion.requests and ("query", NOTES) in notion.requests

    # Deleted for good (Notion answers 404): gone, with its properties.
    del notion.data_sources[TASKS]
    third = sync(db, application, ["data_source"])
    assert stored(pg, app_key)["notion_data_source"] == {NOTES}
    assert stored(pg, app_key)["notion_data_source_property"] == {
        f"{NOTES}:title", f"{NOTES}:t%40g"}  # fmt: skip
    assert third["data_source"].progress.deleted == 4  # Tasks and its three properties


def archived(pg: Pg, app_key: str, collection: str) -> set[str]:
    return {str(external_id) for (external_id,) in pg.execute(
        "select external_id from supasaasy.entities where app_key = %s and collection_key = %s"
        " and archived_at is not null", (app_key, collection))}  # fmt: skip


def test_incremental_sync_reads_the_edits_since_the_watermark(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    application = app(app_key)
    sync(db, application, ["data_source", "page", "user"])

    now = notion_time(datetime.now(UTC))
    notion.rows[TASKS][2]["properties"]["Done"]["checkbox"] = True
    notion.rows[TASKS][2]["last_edited_time"] = now
    notion.rows[NOTES].append(notion_page("page-note-3", NOTES, "Note 3", created_time=now,
                                          last_edited_time=now))  # fmt: skip
    notion.standalone[0]["last_edited_time"] = now  # not a data source row: not synced
    notion.users.append({"object": "user", "id": "user-cy", "type": "person", "name": "Cy"})
    notion.requests.clear()

    again = sync(db, application, ["data_source", "page", "user"], mode="incremental")
    assert {r: o.progress.mode for r, o in again.items()} == {
        "data_source": "incremental", "page": "incremental", "user": "full"}  # fmt: skip
    page = again["page"].progress
    assert (page.created, page.updated, page.unchanged, page.deleted) == (1, 1, 0, 0)
    assert again["data_source"].progress.entity_count == 0  # no data source was edited
    assert again["user"].progress.created == 1
    assert not [r for r in notion.requests if r[0] == "query"]  # the search alone
    rows = stored(pg, app_key)
    assert "page-note-3" in rows["notion_page"] and "page-standalone" not in rows["notion_page"]
    done = pg.execute(
        "select (raw_payload -> 'properties' -> 'Done' ->> 'checkbox')::boolean"
        " from supasaasy.entities where app_key = %s and external_id = 'page-task-3'",
        (app_key,)).fetchone()  # fmt: skip
    assert done == (True,)


def test_an_incremental_sync_catches_what_went_to_the_trash(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    application = app(app_key)
    sync(db, application, ["data_source", "page"])
    now = notion_time(datetime.now(UTC))
    notion.rows[TASKS][0].update(in_trash=True, last_edited_time=now)
    notion.data_sources[NOTES].update(in_trash=True, last_edited_time=now)
    sync(db, application, ["data_source", "page"], mode="incremental")
    rows = stored(pg, app_key)
    # Both in the trash, so both stored archived: Notes keeps its properties.
    assert rows["notion_data_source"] == {TASKS, NOTES}
    assert rows["notion_data_source_property"] == {
        f"{TASKS}:title", f"{TASKS}:d%3Ax", f"{TASKS}:p%7Cq", f"{NOTES}:title",
        f"{NOTES}:t%40g"}  # fmt: skip
    assert archived(pg, app_key, "notion_data_source") == {NOTES}
    assert "page-task-1" in archived(pg, app_key, "notion_page")

    # Restored from the trash: the next change feed clears archived_at.
    later = notion_time(datetime.now(UTC) + timedelta(minutes=1))
    notion.data_sources[NOTES].update(in_trash=False, last_edited_time=later)
    sync(db, application, ["data_source"], mode="incremental")
    assert archived(pg, app_key, "notion_data_source") == set()


def deliver(db: Database, application: AppConfig, kind: str, entity_id: str) -> dict[str, Any]:
    """A Notion event for a data source, applied as the webhook function applies it."""
    connector = create_connector(application)
    try:
        found = connector.webhook_event({
            "id": f"ev-{kind}-{datetime.now(UTC).timestamp()}", "type": kind,
            "timestamp": datetime.now(UTC).isoformat(),
            "entity": {"id": entity_id, "type": "data_source"}, "data": {}})  # fmt: skip
        return db.apply_webhook_event(event_body(application, connector, found))
    finally:
        connector.close()


def test_data_source_deleted_and_undeleted_events_archive_and_restore_it(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    application = app(app_key)
    sync(db, application, ["data_source"])
    before = stored(pg, app_key)

    notion.data_sources[NOTES]["in_trash"] = True
    answer = deliver(db, application, "data_source.deleted", NOTES)
    assert (answer["created"], answer["deleted"]) == (0, 0)
    assert stored(pg, app_key) == before  # Notes and its properties stay
    assert archived(pg, app_key, "notion_data_source") == {NOTES}

    notion.data_sources[NOTES]["in_trash"] = False
    deliver(db, application, "data_source.undeleted", NOTES)
    assert archived(pg, app_key, "notion_data_source") == set()

    del notion.data_sources[NOTES]  # deleted for good
    answer = deliver(db, application, "data_source.deleted", NOTES)
    assert answer["deleted"] == 3  # Notes and its two properties
    assert stored(pg, app_key)["notion_data_source"] == {TASKS}


VIEWS = ("notion_data_sources", "notion_data_source_properties", "notion_pages", "notion_users")


def test_typed_views_read_the_synced_rows_and_refuse_anon(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion, stack: StackInfo
) -> None:
    sync(db, app(app_key), ["data_source", "page", "user"])

    sources = pg.execute(
        "select external_id, title, description, database_id, archived, in_trash,"
        " icon ->> 'emoji', created_by_id, notion_created_at, notion_last_edited_at"
        " from supasaasy.notion_data_sources where app_key = %s order by external_id",
        (app_key,)).fetchall()  # fmt: skip
    created = datetime(2024, 2, 1, 10, tzinfo=UTC)
    edited = datetime(2025, 1, 1, 9, tzinfo=UTC)
    assert sources == [
        (TASKS, "Tasks", None, DATABASE, False, False, "✅", "user-ada", created, edited),
        (NOTES, "Notes", None, DATABASE, False, False, "✅", "user-ada", created, edited),
    ]
    props = pg.execute(
        "select external_id, data_source_id, property_id, name, type, config ->> 'type'"
        " from supasaasy.notion_data_source_properties where app_key = %s"
        " and data_source_id = %s order by name", (app_key, TASKS)).fetchall()  # fmt: skip
    assert props == [
        (f"{TASKS}:d%3Ax", TASKS, "d%3Ax", "Done", "checkbox", "checkbox"),
        (f"{TASKS}:title", TASKS, "title", "Name", "title", "title"),
        (f"{TASKS}:p%7Cq", TASKS, "p%7Cq", "Owner", "people", "people"),
    ]
    pages = pg.execute(
        "select external_id, data_source_id, database_id, title, archived, in_trash,"
        " archived_at is not null, properties -> 'Done' ->> 'type', last_edited_by_id"
        " from supasaasy.notion_pages where app_key = %s and external_id like 'page-task-%%'"
        " order by external_id", (app_key,)).fetchall()  # fmt: skip
    assert pages[0] == ("page-task-1", TASKS, DATABASE, "Task 1", False, False, False,
                        "checkbox", "user-ada")  # fmt: skip
    assert pages[4] == ("page-task-5", TASKS, DATABASE, "Task 5", True, True, True,
                        "checkbox", "user-ada")  # fmt: skip
    users = pg.execute(
        "select external_id, name, type, email, bot_owner_type, bot_workspace_name"
        " from supasaasy.notion_users where app_key = %s order by external_id",
        (app_key,)).fetchall()  # fmt: skip
    assert users == [
        ("user-ada", "Ada", "person", "ada@example.com", None, None),
        ("user-bob", "Bob", "person", "bob@example.com", None, None),
        ("user-bot", "Sync bot", "bot", None, "workspace", "Acme"),
    ]

    # Through PostgREST: the service role reads the views; anon is refused.
    via_rest = (
        db.rest.table("notion_pages").select("external_id,title,notion_created_at")
        .eq("app_key", app_key).eq("external_id", "page-note-2").execute().data
    )  # fmt: skip
    assert via_rest == [{"external_id": "page-note-2", "title": "Note 2",
                         "notion_created_at": "2024-06-01T08:00:00+00:00"}]  # fmt: skip
    for view in VIEWS:
        refused = httpx.get(
            f"{stack.supabase_url}/rest/v1/{view}",
            headers={"apikey": stack.anon_key, "Authorization": f"Bearer {stack.anon_key}",
                     "Accept-Profile": "supasaasy"},
        )  # fmt: skip
        assert refused.status_code in (401, 403), (view, refused.text)
        assert app_key not in refused.text
        # Signed-in users may select; rows only for readers (test_readers.py).
        for role, expected in (("anon", False), ("authenticated", True), ("service_role", True)):
            granted = pg.execute("select has_table_privilege(%s, %s, 'select')",
                                 (role, f"supasaasy.{view}")).fetchone()  # fmt: skip
            assert granted == (expected,), (role, view)


# -- rows keyed by Notion's ids ----------------------------------------------------


def ids(pg: Pg, app_key: str) -> dict[tuple[str, str], str]:
    """(collection, external_id) -> entities.id of an app's rows."""
    return {(str(c), str(x)): str(i) for c, x, i in pg.execute(
        "select collection_key, external_id, id from supasaasy.entities where app_key = %s",
        (app_key,))}  # fmt: skip


def test_data_sources_pages_and_users_are_keyed_by_their_notion_ids(
    db: Database, pg: Pg, app_key: str, notion: FakeNotion
) -> None:
    source, row, person = (str(uuid.uuid4()) for _ in range(3))
    notion.add_data_source(source, "Fresh", [("title", "Name", "title")])
    notion.rows[source] = [notion_page(row, source, "Row")]
    notion.users.append({"object": "user", "id": person, "type": "person", "name": "Di"})
    sync(db, app(app_key), ["data_source", "page", "user"])

    keyed = ids(pg, app_key)
    for collection, external_id in (("notion_data_source", source), ("notion_page", row),
                                    ("notion_user", person)):  # fmt: skip
        assert keyed[(collection, external_id)] == external_id, collection
    # A property's external_id is not a UUID: a generated id.
    assert keyed[("notion_data_source_property", f"{source}:title")] not in (source, row, person)
    # Ids that are not UUIDs keep generated ones.
    assert uuid.UUID(keyed[("notion_user", "user-ada")])
    # The views join on them.
    joined = pg.execute(
        "select d.title from supasaasy.notion_pages p join supasaasy.notion_data_sources d"
        " on d.id = (p.data_source_id)::uuid where p.id = %s", (row,)).fetchone()  # fmt: skip
    assert joined == ("Fresh",)

    # Another app sharing the same objects syncs them too, under generated ids.
    other = f"{app_key}_b"
    sync(db, app(other), ["data_source", "page", "user"])
    theirs = ids(pg, other)
    assert theirs.keys() == keyed.keys()
    assert theirs[("notion_page", row)] != row
    assert set(theirs.values()).isdisjoint(keyed.values())


NOTION_IDS = "20261202001400"


TIMES = "select app_key, collection_key, external_id, updated_at from supasaasy.entities"


def test_rows_stored_before_are_given_their_notion_ids_without_duplicates(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    apply_migrations(url, [m for m in package_migrations() if m.version < NOTION_IDS])
    shared, keyed_already, source, person = (str(uuid.uuid4()) for _ in range(4))
    # (app, collection, external_id, id or None for a generated one), oldest first.
    rows = [
        ("wiki", "notion_page", shared, None),
        ("wiki", "notion_data_source", source, None),
        ("wiki", "notion_user", person, None),
        ("wiki", "notion_data_source_property", f"{source}:title", None),
        ("wiki", "notion_page", "not-a-uuid", None),
        ("wiki_b", "notion_page", shared, None),  # the same page in another app
        ("old", "notion_page", keyed_already, keyed_already),  # imported from the original
        ("wiki", "notion_page", keyed_already, None),
        ("pay", "stripe_customer", str(uuid.uuid4()), None),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for n, (app_key, collection, external_id, given) in enumerate(rows):
            conn.execute(
                "insert into supasaasy.entities (id, app_key, collection_key, external_id,"
                " raw_payload, created_at) values (coalesce(%s::uuid, gen_random_uuid()),"
                " %s, %s, %s, %s, now() - make_interval(mins => %s))",
                (given, app_key, collection, external_id,
                 json.dumps({"id": external_id}), 100 - n))  # fmt: skip
        before = dict(((a, c, x), (str(i), p)) for a, c, x, i, p in conn.execute(
            "select app_key, collection_key, external_id, id, raw_payload"
            " from supasaasy.entities"))  # fmt: skip

        written = sorted(conn.execute(TIMES))

    applied = [m.version for m in apply_migrations(url)]
    assert applied and applied[0] == NOTION_IDS

    with psycopg.connect(url, autocommit=True) as conn:
        after = dict(((a, c, x), (str(i), p)) for a, c, x, i, p in conn.execute(
            "select app_key, collection_key, external_id, id, raw_payload"
            " from supasaasy.entities"))  # fmt: skip
        # Nothing lost, nothing doubled, payloads as they were, updated_at as it was.
        assert after.keys() == before.keys()
        assert sorted(conn.execute(TIMES)) == written
        assert {k: p for k, (_, p) in after.items()} == {k: p for k, (_, p) in before.items()}
        rekeyed = {k for k in after if after[k][0] != before[k][0]}
        assert rekeyed == {("wiki", "notion_page", shared), ("wiki", "notion_data_source", source),
                           ("wiki", "notion_user", person)}  # fmt: skip
        assert all(after[k][0] == k[2] for k in rekeyed)
        assert after[("old", "notion_page", keyed_already)][0] == keyed_already

        # Rows inserted from now on are keyed so at once.
        fresh = str(uuid.uuid4())
        inserted = conn.execute(
            "insert into supasaasy.entities (app_key, collection_key, external_id, raw_payload)"
            " values ('wiki', 'notion_page', %s, '{}') returning id",
            (fresh,),
        ).fetchone()
        assert inserted is not None and str(inserted[0]) == fresh
