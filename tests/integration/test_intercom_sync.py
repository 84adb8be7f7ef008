"""Intercom synced into the real stack through the connector and the batched writer, with
Intercom mocked at its HTTP edge by a small stateful fake: rows per collection, parts
linked to their conversation, the deletion sweep, incremental search, and the views."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import orjson
import psycopg
import pytest
import respx

import supasaasy.connectors.intercom.connector as intercom_connector
from supasaasy.config import AppConfig
from supasaasy.connectors import create_connector
from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.handlers.webhook import event_body
from supasaasy.models import SyncMode
from supasaasy.sync import ResourceSync, SharedRateLimiter, SyncOutcome

API_HOST = "api.intercom.io"
TOKEN = "dG9rOmludGVncmF0aW9uX3NlY3JldA=="
TOKEN_ENV = "INTERCOM_TOKEN_INTEGRATION"
Pg = psycopg.Connection[tuple[object, ...]]
TASKS = ("company", "contact", "admin", "conversation")
OLD = 1_700_000_000  # 2023-11-14T22:13:20Z
VIEWS = ("intercom_companies", "intercom_contacts", "intercom_admins",
         "intercom_conversations", "intercom_conversation_parts")  # fmt: skip


def _cursor(position: int) -> str:
    return base64.b64encode(orjson.dumps([position])).decode()


def _position(cursor: str | None) -> int:
    return int(orjson.loads(base64.b64decode(cursor))[0]) if cursor else 0


class FakeIntercom:
    """Intercom's endpoints over objects in memory, in the shapes its docs give."""

    def __init__(self) -> None:
        self.companies: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.admins: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, dict[str, Any]] = {}  # as lists show them
        self.parts: dict[str, list[dict[str, Any]]] = {}
        self.searches: list[tuple[str, Any]] = []
        self.retrieved: list[str] = []
        # Conversations whose retrieval lists only their first part, as past the cap.
        self.capped: set[str] = set()
        self.tokens: set[str] = set()
        self.scrolls: dict[str, tuple[int, float]] = {}  # scroll_param -> position, last use
        self.scroll_expiry = 60.0  # seconds unused
        self.opened = 0
        self.scroll_faults = 0  # next scroll requests that move on, then answer a 500

    @classmethod
    def seeded(cls) -> FakeIntercom:
        fake = cls()
        for n in range(1, 4):
            fake.companies[f"comp_{n}"] = {
                "type": "company", "id": f"comp_{n}", "company_id": f"remote_{n}",
                "name": f"Company {n}", "plan": {"type": "plan", "id": "269315", "name": "Pro"},
                "size": 10 * n, "monthly_spend": 99.5, "user_count": n,
                "created_at": OLD + n, "updated_at": OLD + 100 + n}  # fmt: skip
        for n in range(1, 6):
            fake.contacts[f"cont_{n}"] = {
                "type": "contact", "id": f"cont_{n}", "role": "user" if n % 2 else "lead",
                "email": f"person{n}@example.com", "name": f"Person {n}",
                "location": {"type": "location", "country": "Ireland", "city": "Dublin"},
                "created_at": OLD + n, "updated_at": OLD + 200 + n}  # fmt: skip
        fake.contacts["cont_5"]["archived"] = True
        for n in (1, 2):
            fake.admins[f"99126{n}"] = {"type": "admin", "id": f"99126{n}", "name": f"Admin {n}",
                                        "email": f"admin{n}@example.com", "team_ids": [814865],
                                        "away_mode_enabled": False}  # fmt: skip
        fake.add_conversation("1001", ["90011", "90012"], contact="cont_1")
        fake.add_conversation("1002", ["90021"], contact="cont_2", state="closed")
        fake.add_conversation("1003", ["90031", "90032", "90033"], contact="cont_3")
        return fake

    def add_conversation(
        self,
        conversation_id: str,
        part_ids: list[str],
        *,
        contact: str,
        state: str = "open",
        updated_at: int = OLD + 300,
    ) -> None:
        self.conversations[conversation_id] = {
            "type": "conversation", "id": conversation_id, "title": f"About {conversation_id}",
            "state": state, "open": state == "open", "read": True, "priority": "not_priority",
            "admin_assignee_id": 991261, "team_assignee_id": None,
            "contacts": {"type": "contact.list",
                         "contacts": [{"type": "contact", "id": contact}]},
            "source": {"type": "conversation", "id": "403918316", "delivered_as":
                       "customer_initiated", "subject": "", "body": "<p>Hi</p>",
                       "author": {"type": "user", "id": contact}},
            "statistics": {"type": "conversation_statistics",
                           "count_conversation_parts": len(part_ids)},
            "created_at": OLD + 10, "updated_at": updated_at}  # fmt: skip
        self.parts[conversation_id] = [self.part(conversation_id, p) for p in part_ids]

    @staticmethod
    def part(conversation_id: str, part_id: str) -> dict[str, Any]:
        return {"type": "conversation_part", "id": part_id, "part_type": "comment",
                "body": f"<p>{part_id} in {conversation_id}</p>", "created_at": OLD + 20,
                "updated_at": OLD + 20, "notified_at": OLD + 21, "redacted": False,
                "author": {"type": "admin", "id": "991261", "name": "Admin 1",
                           "email": "admin1@example.com"}, "attachments": []}  # fmt: skip

    # -- the HTTP edge -------------------------------------------------------------

    def mock(self, router: respx.MockRouter) -> None:
        host = {"scheme": "https", "host": API_HOST}
        router.get(path="/companies/scroll", **host).mock(side_effect=self.scroll)
        router.get(path="/contacts", **host).mock(
            side_effect=lambda r: self.cursor_list(r, self.contacts, "data", "list")
        )
        router.get(path="/admins", **host).mock(
            side_effect=lambda r: self.ok(
                r, {"type": "admin.list", "admins": list(self.admins.values())}
            )
        )
        router.get(path="/conversations", **host).mock(
            side_effect=lambda r: self.cursor_list(
                r, self.conversations, "conversations", "conversation.list"
            )
        )
        router.get(path__regex=r"^/conversations/(?P<cid>[^/]+)$", **host).mock(
            side_effect=self.retrieve
        )
        router.post(path="/contacts/search", **host).mock(
            side_effect=lambda r: self.search(r, self.contacts, "data", "list")
        )
        router.post(path="/conversations/search", **host).mock(side_effect=lambda r: self.search(
            r, self.conversations, "conversations", "conversation.list"))  # fmt: skip

    def ok(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        self.tokens.add(request.headers.get("Authorization", ""))
        assert request.headers["Intercom-Version"] == "2.14"
        return httpx.Response(200, json=body)

    def scroll(self, request: httpx.Request) -> httpx.Response:
        """As Intercom scrolls: one open scroll per app, one scroll_param for all its
        pages, the position kept here (a lost answer has moved it on anyway), and a
        scroll unused for `scroll_expiry` seconds gone."""
        now = time.monotonic()
        self.scrolls = {k: v for k, v in self.scrolls.items() if now - v[1] < self.scroll_expiry}
        param = request.url.params.get("scroll_param")
        if param is None:
            if self.scrolls:
                return httpx.Response(400, json={"type": "error.list", "errors": [
                    {"code": "scroll_exists", "message": "scroll already exists"}]})  # fmt: skip
            self.opened += 1
            param = f"scroll-{self.opened}"
            self.scrolls[param] = (0, now)
        if param not in self.scrolls:
            return httpx.Response(404, json={"type": "error.list", "errors": [
                {"code": "not_found", "message": "scroll_param not found"}]})  # fmt: skip
        offset = self.scrolls[param][0]
        chunk = sorted(self.companies)[offset : offset + 2]
        self.scrolls[param] = (offset + 2, now)
        if self.scroll_faults:
            self.scroll_faults -= 1
            return httpx.Response(500, json={"type": "error.list", "errors": [
                {"code": "server_error", "message": "Request failed due to an internal network"
                 " error. Please restart the scroll operation."}]})  # fmt: skip
        if not chunk:
            del self.scrolls[param]  # the end: the scroll expires
        return self.ok(request, {"type": "list", "data": [self.companies[c] for c in chunk],
                                 "pages": None, "total_count": None,
                                 "scroll_param": param})  # fmt: skip

    def _page(
        self, objects: list[dict[str, Any]], key: str, kind: str, per_page: int, after: str | None
    ) -> dict[str, Any]:
        start = _position(after)
        pages: dict[str, Any] = {"type": "pages", "page": start // per_page + 1,
                                 "per_page": per_page,
                                 "total_pages": -(-len(objects) // per_page)}  # fmt: skip
        if start + per_page < len(objects):
            pages["next"] = {
                "page": start // per_page + 2,
                "starting_after": _cursor(start + per_page),
            }
        return {"type": kind, key: objects[start : start + per_page],
                "total_count": len(objects), "pages": pages}  # fmt: skip

    def cursor_list(
        self, request: httpx.Request, objects: dict[str, dict[str, Any]], key: str, kind: str
    ) -> httpx.Response:
        params = request.url.params
        listed = [objects[i] for i in sorted(objects)]
        page = self._page(listed, key, kind, int(params.get("per_page", "20")),
                          params.get("starting_after"))  # fmt: skip
        return self.ok(request, page)

    def search(
        self, request: httpx.Request, objects: dict[str, dict[str, Any]], key: str, kind: str
    ) -> httpx.Response:
        body = orjson.loads(request.content)
        self.searches.append((request.url.path, body))
        found = [o for o in objects.values() if o["updated_at"] > body["query"]["value"]]
        found.sort(key=lambda o: (o["updated_at"], o["id"]), reverse=True)
        pagination = body.get("pagination", {})
        page = self._page(found, key, kind, pagination.get("per_page", 50),
                          pagination.get("starting_after"))  # fmt: skip
        return self.ok(request, page)

    def retrieve(self, request: httpx.Request, cid: str) -> httpx.Response:
        self.retrieved.append(cid)
        if cid not in self.conversations:
            return httpx.Response(404, json={"type": "error.list", "errors": [
                {"code": "not_found", "message": "Resource Not Found"}]})  # fmt: skip
        parts = self.parts[cid]
        listed = parts[:1] if cid in self.capped else parts
        return self.ok(request, {**self.conversations[cid], "conversation_parts": {
            "type": "conversation_part.list", "conversation_parts": listed,
            "total_count": len(parts)}})  # fmt: skip


@pytest.fixture
def intercom(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIntercom]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    fake = FakeIntercom.seeded()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # our own PostgREST
        fake.mock(router)
        yield fake
    assert fake.tokens == {f"Bearer {TOKEN}"}


def app(app_key: str) -> AppConfig:
    return AppConfig(app_key=app_key, connector="intercom",
                     config={"api_key_env": TOKEN_ENV, "page_size": 2})  # fmt: skip


def run_job(
    db: Database, application: AppConfig, mode: SyncMode, resources: tuple[str, ...]
) -> dict[str, SyncOutcome]:
    """Create a job and run each of its tasks to its end."""
    job = db.create_sync_job(application.app_key, mode, list(resources))
    limiter = SharedRateLimiter(db, application.app_key, per_second=500)
    connector = create_connector(application, rate_limiter=limiter)
    outcomes: dict[str, SyncOutcome] = {}
    try:
        while (task := db.claim_task(job.id)) is not None:
            outcomes[task.resource_type] = ResourceSync(db, connector).run(task, mode)
    finally:
        connector.close()
        limiter.close()
    assert sorted(outcomes) == sorted(resources)
    assert all(outcome.finished for outcome in outcomes.values())
    assert db.get_job_status(job.id).job.status == "completed"
    return outcomes


def stored(pg: Pg, app_key: str, collection: str) -> dict[str, dict[str, Any]]:
    rows = pg.execute(
        "select external_id, raw_payload from supasaasy.entities"
        " where app_key = %s and collection_key = %s",
        (app_key, collection),
    )
    return {r[0]: r[1] for r in rows}  # type: ignore[misc]


def parts_by_conversation(pg: Pg, app_key: str) -> dict[str, list[str]]:
    linked: dict[str, list[str]] = {}
    for part_id, payload in sorted(stored(pg, app_key, "intercom_conversation_part").items()):
        linked.setdefault(payload["conversation_id"], []).append(part_id)
    return linked


def archived(pg: Pg, app_key: str) -> list[tuple[object, ...]]:
    return pg.execute(
        "select collection_key, external_id from supasaasy.entities"
        " where app_key = %s and archived_at is not null order by 1, 2",
        (app_key,),
    ).fetchall()


def test_full_sync_stores_everything_and_sweeps_what_upstream_dropped(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    application = app(app_key)
    first = run_job(db, application, "full", TASKS)

    assert {c: sorted(stored(pg, app_key, f"intercom_{c}")) for c in TASKS} == {
        "company": ["comp_1", "comp_2", "comp_3"],
        "contact": ["cont_1", "cont_2", "cont_3", "cont_4", "cont_5"],
        "admin": ["991261", "991262"],
        "conversation": ["1001", "1002", "1003"],
    }
    assert parts_by_conversation(pg, app_key) == {
        "1001": ["90011", "90012"], "1002": ["90021"], "1003": ["90031", "90032", "90033"],
    }  # fmt: skip
    assert stored(pg, app_key, "intercom_contact")["cont_2"] == intercom.contacts["cont_2"]
    assert archived(pg, app_key) == [("intercom_contact", "cont_5"),
                                     ("intercom_conversation", "1002")]  # fmt: skip
    assert first["conversation"].progress.created == 3 + 6
    assert first["contact"].progress.pages == 3  # 2 + 2 + 1 with page_size 2
    assert intercom.retrieved == ["1001", "1002", "1003"]  # one request per conversation

    # Upstream drops objects, a conversation with its parts, and one part of another.
    del intercom.companies["comp_2"], intercom.contacts["cont_4"], intercom.admins["991262"]
    del intercom.conversations["1003"]
    intercom.parts["1001"] = [p for p in intercom.parts["1001"] if p["id"] != "90012"]

    second = run_job(db, application, "full", TASKS)
    assert {c: sorted(stored(pg, app_key, f"intercom_{c}")) for c in TASKS} == {
        "company": ["comp_1", "comp_3"],
        "contact": ["cont_1", "cont_2", "cont_3", "cont_5"],
        "admin": ["991261"],
        "conversation": ["1001", "1002"],
    }
    assert parts_by_conversation(pg, app_key) == {"1001": ["90011"], "1002": ["90021"]}
    assert {r: o.progress.deleted for r, o in second.items()} == {
        "company": 1, "contact": 1, "admin": 1, "conversation": 1 + 3 + 1}  # fmt: skip
    # 1001's payload embeds its parts, so losing one changes it; 1002 and both parts do not.
    progress = second["conversation"].progress
    assert (progress.created, progress.updated, progress.unchanged) == (0, 1, 3)


def test_parts_past_the_cap_are_not_swept_by_a_full_sync(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    application = app(app_key)
    run_job(db, application, "full", ["conversation"])
    intercom.capped = {"1003"}  # it grew past the cap: only its first part is listed
    run_job(db, application, "full", ["conversation"])
    assert parts_by_conversation(pg, app_key)["1003"] == ["90031", "90032", "90033"]


def test_a_company_scroll_that_fails_midway_restarts_and_sweeps_only_what_is_gone(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Intercom's minute, scaled down: the failed scroll stays open until it expires.
    intercom.scroll_expiry = 1.0
    monkeypatch.setattr(intercom_connector, "SCROLL_BUSY_WAIT", 0.7)
    application = app(app_key)
    intercom.companies["comp_4"] = {**intercom.companies["comp_3"], "id": "comp_4"}
    run_job(db, application, "full", ("company",))
    assert sorted(stored(pg, app_key, "intercom_company")) == [
        "comp_1", "comp_2", "comp_3", "comp_4"]  # fmt: skip

    # comp_2 goes upstream; the scroll's second request moves it past comp_3 and comp_4,
    # and its answer asks for a restart. Asked again with the same scroll_param, the
    # scroll would end there, and the sweep would take comp_3 and comp_4 for gone. A new
    # scroll waits for the failed one to expire.
    del intercom.companies["comp_2"]
    intercom.scroll_faults = 1
    outcome = run_job(db, application, "full", ("company",))["company"]
    assert sorted(stored(pg, app_key, "intercom_company")) == ["comp_1", "comp_3", "comp_4"]
    assert outcome.progress.deleted == 1
    assert intercom.opened == 3


def test_incremental_sync_searches_updates_and_replaces_parts(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    application = app(app_key)
    run_job(db, application, "full", ("contact", "conversation"))

    now = int(time.time())
    intercom.contacts["cont_2"] = {**intercom.contacts["cont_2"], "name": "Renamed",
                                   "updated_at": now}  # fmt: skip
    intercom.contacts["cont_9"] = {"type": "contact", "id": "cont_9", "role": "lead",
                                   "email": "new@example.com", "created_at": now,
                                   "updated_at": now}  # fmt: skip
    intercom.add_conversation("1001", ["90011", "90013"], contact="cont_1", updated_at=now)
    intercom.add_conversation("1004", ["90041"], contact="cont_9", updated_at=now + 1)
    intercom.parts["1003"] = []  # not searched (no update): its parts stay
    intercom.retrieved.clear()

    outcomes = run_job(db, application, "incremental", ("contact", "conversation"))
    assert {r: o.progress.mode for r, o in outcomes.items()} == {
        "contact": "incremental", "conversation": "incremental"}  # fmt: skip
    searched = [(path, body["query"]) for path, body in intercom.searches]
    assert [path for path, _ in searched] == ["/contacts/search", "/conversations/search"]
    assert all(q["field"] == "updated_at" and q["operator"] == ">" for _, q in searched)
    assert intercom.retrieved == ["1004", "1001"]  # newest first, only what changed

    contacts = stored(pg, app_key, "intercom_contact")
    assert sorted(contacts) == ["cont_1", "cont_2", "cont_3", "cont_4", "cont_5", "cont_9"]
    assert contacts["cont_2"]["name"] == "Renamed"
    assert parts_by_conversation(pg, app_key) == {
        "1001": ["90011", "90013"], "1002": ["90021"], "1003": ["90031", "90032", "90033"],
        "1004": ["90041"]}  # fmt: skip
    assert outcomes["conversation"].progress.deleted == 1  # 90012, by the conversation's ChildSet
    assert (outcomes["contact"].progress.created, outcomes["contact"].progress.updated) == (1, 1)


def test_views_type_the_collections_and_refuse_anon(
    stack: StackInfo, db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    run_job(db, app(app_key), "full", TASKS)

    def view(name: str, columns: str) -> list[dict[str, Any]]:
        query = db.rest.table(name).select(columns).eq("app_key", app_key).order("external_id")
        return cast(list[dict[str, Any]], query.execute().data)

    assert view("intercom_contacts", "external_id,email,role,country")[3:] == [
        {"external_id": "cont_4", "email": "person4@example.com", "role": "lead",
         "country": "Ireland"},
        {"external_id": "cont_5", "email": "person5@example.com", "role": "user",
         "country": "Ireland"},
    ]  # fmt: skip
    contacts_archived = [row["archived_at"] is not None
                         for row in view("intercom_contacts", "archived_at")]  # fmt: skip
    assert contacts_archived == [False, False, False, False, True]
    assert view("intercom_companies", "external_id,name,size,plan_name,intercom_created_at")[0] == {
        "external_id": "comp_1", "name": "Company 1", "size": 10, "plan_name": "Pro",
        "intercom_created_at": "2023-11-14T22:13:21+00:00"}  # fmt: skip
    assert view("intercom_admins", "external_id,email,team_ids") == [
        {"external_id": "991261", "email": "admin1@example.com", "team_ids": [814865]},
        {"external_id": "991262", "email": "admin2@example.com", "team_ids": [814865]},
    ]
    assert view("intercom_conversations", "external_id,state,admin_assignee_id,contact_ids,"
                "parts_count")[1] == {"external_id": "1002", "state": "closed",
                                      "admin_assignee_id": "991261", "contact_ids": ["cont_2"],
                                      "parts_count": 1}  # fmt: skip
    assert view("intercom_conversation_parts", "external_id,conversation_id,author_id,"
                "notified_at") == [
        {"external_id": p, "conversation_id": c, "author_id": "991261",
         "notified_at": "2023-11-14T22:13:41+00:00"}
        for c, p in (("1001", "90011"), ("1001", "90012"), ("1002", "90021"), ("1003", "90031"),
                     ("1003", "90032"), ("1003", "90033"))
    ]  # fmt: skip
    typed = pg.execute(
        "select pg_typeof(size)::text, pg_typeof(monthly_spend)::text,"
        " pg_typeof(intercom_created_at)::text from supasaasy.intercom_companies"
        " where app_key = %s limit 1",
        (app_key,),
    ).fetchone()
    assert typed == ("bigint", "numeric", "timestamp with time zone")

    for name in VIEWS:
        # Signed-in users may select; rows only for readers (test_readers.py).
        for role, expected in (("anon", False), ("authenticated", True), ("service_role", True)):
            granted = pg.execute("select has_table_privilege(%s, %s, 'select')",
                                 (role, f"supasaasy.{name}")).fetchone()  # fmt: skip
            assert granted == (expected,), (role, name)
        refused = httpx.get(
            f"{stack.supabase_url}/rest/v1/{name}",
            headers={"apikey": stack.anon_key, "Authorization": f"Bearer {stack.anon_key}",
                     "Accept-Profile": "supasaasy"},
        )  # fmt: skip
        assert refused.status_code in (401, 403), (name, refused.text)
        assert "example.com" not in refused.text


def test_a_deleted_conversation_notification_removes_it_and_its_parts(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    application = app(app_key)
    run_job(db, application, "full", ("conversation",))
    stored_1002 = stored(pg, app_key, "intercom_conversation")["1002"]

    # What Intercom sends for `conversation.deleted`: the conversation's identity only.
    connector = create_connector(application)
    try:
        found = connector.webhook_event({
            "type": "notification_event", "id": "notif_del_1001", "topic": "conversation.deleted",
            "created_at": int(time.time()),
            "data": {"type": "notification_event_data",
                     "item": {"type": "conversation", "id": "1001", "deleted": True}}})  # fmt: skip
        answer = db.apply_webhook_event(event_body(application, connector, found))
    finally:
        connector.close()
    assert answer["deleted"] == 1 + 2 and answer["created"] == 0
    assert sorted(stored(pg, app_key, "intercom_conversation")) == ["1002", "1003"]
    assert parts_by_conversation(pg, app_key) == {
        "1002": ["90021"], "1003": ["90031", "90032", "90033"]}  # fmt: skip
    assert stored(pg, app_key, "intercom_conversation")["1002"] == stored_1002


def test_views_expose_the_browser_language_and_the_assignments_count(
    db: Database, pg: Pg, app_key: str, intercom: FakeIntercom
) -> None:
    intercom.contacts["cont_1"]["browser_language"] = "en-IE"
    intercom.conversations["1001"]["statistics"]["count_assignments"] = 2
    run_job(db, app(app_key), "full", ("contact", "conversation"))
    languages = pg.execute(
        "select external_id, browser_language from supasaasy.intercom_contacts"
        " where app_key = %s and external_id in ('cont_1', 'cont_2') order by 1",
        (app_key,)).fetchall()  # fmt: skip
    assert languages == [("cont_1", "en-IE"), ("cont_2", None)]
    assignments = pg.execute(
        "select external_id, assignments_count, parts_count from supasaasy.intercom_conversations"
        " where app_key = %s order by 1", (app_key,)).fetchall()  # fmt: skip
    assert assignments == [("1001", 2, 2), ("1002", None, 1), ("1003", None, 3)]
    # The columns shipped before keep their place; the new ones come last.
    for view, last in (("intercom_contacts", "browser_language"),
                       ("intercom_conversations", "assignments_count")):  # fmt: skip
        columns = [c for (c,) in pg.execute(
            "select column_name from information_schema.columns where table_schema ="
            " 'supasaasy' and table_name = %s order by ordinal_position", (view,))]  # fmt: skip
        assert columns[-4:] == ["archived_at", "created_at", "updated_at", last], view
