"""The Intercom connector against respx-mocked Intercom, in its documented shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
import respx

import supasaasy.connectors.intercom  # noqa: F401  (registers the connector)
from supasaasy.config import AppConfig
from supasaasy.connectors import (
    ChildSet,
    ConfigError,
    Deletion,
    ProviderError,
    RateLimiter,
    connector_sql,
    create_connector,
    known_connectors,
)
from supasaasy.connectors.intercom import API_VERSION, IntercomConnector
from supasaasy.connectors.intercom.connector import MAX_SCROLL_RESTARTS, SCROLL_BUSY_WAIT
from supasaasy.migrations import package_migrations

API = "https://intercom.test"
TOKEN = "dG9rOmludGVyY29tX3VuaXRfc2VjcmV0XzEyMw=="
ROOT = Path(__file__).resolve().parents[2]


class Counting(RateLimiter):
    def __init__(self) -> None:
        self.taken = 0

    def acquire(self) -> None:
        self.taken += 1


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_TOKEN_UNIT", TOKEN)


def connector(
    sync_from: datetime | None = None, limiter: RateLimiter | None = None, **config: Any
) -> tuple[IntercomConnector, list[float]]:
    app = AppConfig(
        app_key="intercom_unit",
        connector="intercom",
        config={"api_key_env": "INTERCOM_TOKEN_UNIT", "api_base": API, **config},
        sync_from=sync_from,
    )
    made = create_connector(app, rate_limiter=limiter)
    assert isinstance(made, IntercomConnector)
    slept: list[float] = []
    made.http.sleep = slept.append
    return made, slept


def listing(
    key: str, objects: list[Any], after: str | None = None, kind: str = "list"
) -> dict[str, Any]:
    """A cursor-paged list or search page: `pages.next.starting_after` while more follow."""
    pages: dict[str, Any] = {"type": "pages", "page": 1, "per_page": 50, "total_pages": 1}
    if after is not None:
        pages["next"] = {"page": 2, "starting_after": after}
    return {"type": kind, key: objects, "total_count": len(objects), "pages": pages}


def contact(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "contact", "id": f"65a0c{n:03d}", "role": "user",
            "email": f"c{n}@example.com", "created_at": 1_700_000_000 + n,
            "updated_at": 1_700_100_000 + n, **extra}  # fmt: skip


def company(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "company", "id": f"6762f0{n:03d}", "company_id": f"remote_{n}",
            "name": f"Company {n}", "created_at": 1_700_000_000 + n, **extra}  # fmt: skip


def summary(n: int, created_at: int = 1_700_000_000) -> dict[str, Any]:
    """A conversation as lists and searches return it: without its parts."""
    return {"type": "conversation", "id": str(1000 + n), "state": "open",
            "created_at": created_at, "updated_at": created_at + 60}  # fmt: skip


def part(n: int) -> dict[str, Any]:
    return {"type": "conversation_part", "id": str(90_000 + n), "part_type": "comment",
            "body": f"<p>part {n}</p>", "created_at": 1_700_000_100 + n,
            "author": {"type": "admin", "id": "814860"}}  # fmt: skip


def conversation(
    n: int, parts: list[dict[str, Any]], state: str = "open", total: int | None = None
) -> dict[str, Any]:
    """A conversation as `GET /conversations/{id}` returns it: with its parts."""
    listed = {"type": "conversation_part.list", "conversation_parts": parts,
              "total_count": len(parts) if total is None else total}  # fmt: skip
    return {**summary(n), "state": state, "open": state == "open", "conversation_parts": listed}


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


def body(request: httpx.Request) -> Any:
    return orjson.loads(request.content)


def intercom_error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error.list", "request_id": "req_1",
            "errors": [{"code": code, "message": message}]}  # fmt: skip


# -- full sync ------------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_contacts_page_with_the_starting_after_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/contacts").mock(side_effect=[
        httpx.Response(200, json=listing("data", [contact(1), contact(2)], after="WzE3MDAsMl0=")),
        httpx.Response(200, json=listing("data", [contact(3), contact(4)], after="WzE3MDAsNF0=")),
        httpx.Response(200, json=listing("data", [contact(5)])),
    ])  # fmt: skip
    intercom, _ = connector(page_size=2)
    pages = list(intercom.full_sync("contact"))

    assert [[r.external_id for r in p.records] for p in pages] == [
        ["65a0c001", "65a0c002"], ["65a0c003", "65a0c004"], ["65a0c005"]]  # fmt: skip
    assert [p.cursor for p in pages] == ["WzE3MDAsMl0=", "WzE3MDAsNF0=", None]
    assert {r.collection_key for p in pages for r in p.records} == {"intercom_contact"}
    assert pages[0].records[0].raw_payload == contact(1)
    sent = [query(call.request) for call in route.calls]
    assert [q.get("starting_after") for q in sent] == [None, ["WzE3MDAsMl0="], ["WzE3MDAsNF0="]]
    assert all(q["per_page"] == ["2"] for q in sent)
    headers = route.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Intercom-Version"] == API_VERSION == "2.14"
    assert headers["Accept"] == "application/json"


@respx.mock(base_url=API, assert_all_called=True)
def test_a_full_sync_resumes_after_its_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/contacts").mock(
        return_value=httpx.Response(200, json=listing("data", [contact(9)]))
    )
    intercom, _ = connector()
    pages = list(intercom.full_sync("contact", cursor="WzE3MDAsOF0="))
    assert query(route.calls.last.request)["starting_after"] == ["WzE3MDAsOF0="]
    assert route.call_count == 1
    assert [r.external_id for p in pages for r in p.records] == ["65a0c009"]


@respx.mock(base_url=API, assert_all_called=True)
def test_empty_lists_are_one_empty_final_page(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/contacts").mock(return_value=httpx.Response(200, json=listing("data", [])))
    respx_mock.get("/admins").mock(
        return_value=httpx.Response(200, json={"type": "admin.list", "admins": []})
    )
    respx_mock.get("/companies/scroll").mock(
        return_value=httpx.Response(200, json={"type": "list", "data": [], "scroll_param": "s"})
    )
    intercom, _ = connector()
    for resource in ("contact", "admin", "company"):
        pages = list(intercom.full_sync(resource))
        assert len(pages) == 1, resource
        assert pages[0].records == [] and pages[0].cursor is None, resource


@respx.mock(base_url=API, assert_all_called=True)
def test_archived_or_deleted_contacts_are_archived(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/contacts").mock(return_value=httpx.Response(200, json=listing("data", [
        contact(1), contact(2, archived=True), contact(3, deleted=True), contact(4, archived=False),
    ])))  # fmt: skip
    intercom, _ = connector()
    records = [r for p in intercom.full_sync("contact") for r in p.records]
    assert [(r.external_id, r.archived) for r in records] == [
        ("65a0c001", False), ("65a0c002", True), ("65a0c003", True), ("65a0c004", False),
    ]  # fmt: skip


def scroll_page(companies: list[dict[str, Any]], param: str = "25b649f7") -> httpx.Response:
    return httpx.Response(200, json={"type": "list", "data": companies, "pages": None,
                                     "total_count": None, "scroll_param": param})  # fmt: skip


RESTART = intercom_error(
    "server_error",
    "Request failed due to an internal network error. Please restart the scroll operation.",
)


@respx.mock(base_url=API, assert_all_called=True)
def test_companies_scroll_to_an_empty_page(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1), company(2)]),
        scroll_page([company(3, archived=True)]),
        scroll_page([]),
    ])  # fmt: skip
    intercom, _ = connector()
    pages = list(intercom.full_sync("company"))

    assert [[(r.external_id, r.archived) for r in p.records] for p in pages] == [
        [("6762f0001", False), ("6762f0002", False)], [("6762f0003", True)], []]  # fmt: skip
    # The scroll_param names the scroll, not a place in it: each page's cursor is its own.
    assert [p.cursor for p in pages] == ["scroll:1", "scroll:2", None]
    assert {r.collection_key for p in pages for r in p.records} == {"intercom_company"}
    assert [query(c.request) for c in route.calls] == [
        {}, {"scroll_param": ["25b649f7"]}, {"scroll_param": ["25b649f7"]}]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_a_scroll_asked_to_restart_starts_again_from_the_beginning(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1)], "first"),
        httpx.Response(500, json=RESTART),  # never retried with the same scroll_param
        scroll_page([company(1), company(2)], "second"),
        scroll_page([], "second"),
    ])  # fmt: skip
    intercom, slept = connector()
    pages = list(intercom.full_sync("company"))

    assert [query(c.request) for c in route.calls] == [
        {}, {"scroll_param": ["first"]}, {}, {"scroll_param": ["second"]}]  # fmt: skip
    assert [[r.external_id for r in p.records] for p in pages] == [
        ["6762f0001"], ["6762f0001", "6762f0002"], []]  # fmt: skip
    assert [p.cursor for p in pages] == ["scroll:1", "scroll:2", None]
    assert slept == []


@respx.mock(base_url=API, assert_all_called=True)
def test_an_expired_scroll_or_a_lost_answer_starts_it_again(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1)], "a"),
        httpx.Response(404, json=intercom_error("not_found", "scroll_param not found")),
        scroll_page([company(1)], "b"),
        httpx.ReadTimeout("timed out"),  # the scroll may have moved on: never asked again
        scroll_page([company(1)], "c"),
        scroll_page([], "c"),
    ])  # fmt: skip
    intercom, slept = connector()
    pages = list(intercom.full_sync("company"))
    assert [query(c.request).get("scroll_param") for c in route.calls] == [
        None, ["a"], None, ["b"], None, ["c"]]  # fmt: skip
    assert [p.cursor for p in pages] == ["scroll:1", "scroll:2", "scroll:3", None]
    assert slept == []


@respx.mock(base_url=API, assert_all_called=True)
def test_a_resumed_company_sync_starts_a_new_scroll(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1)], "fresh"), scroll_page([], "fresh"),
        scroll_page([company(1)], "again"), scroll_page([], "again"),
    ])  # fmt: skip
    intercom, _ = connector()
    resumed = list(intercom.full_sync("company", cursor="scroll:7"))
    # A cursor saved by an older version (a raw scroll_param) is not resumed either.
    legacy = list(intercom.full_sync("company", cursor="25b649f7"))

    assert [query(c.request) for c in route.calls] == [
        {}, {"scroll_param": ["fresh"]}, {}, {"scroll_param": ["again"]}]  # fmt: skip
    assert [p.cursor for p in resumed] == ["scroll:8", None]  # distinct from those before
    assert [p.cursor for p in legacy] == ["scroll:1", None]
    assert [r.external_id for p in resumed + legacy for r in p.records] == ["6762f0001"] * 2


@respx.mock(base_url=API, assert_all_called=True)
def test_restarts_are_bounded(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(return_value=httpx.Response(500, json=RESTART))
    intercom, slept = connector()
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("company"))
    assert route.call_count == 1 + MAX_SCROLL_RESTARTS and slept == []
    assert str(err.value) == (
        f"Intercom GET /companies/scroll: the company scroll was started {1 + MAX_SCROLL_RESTARTS}"
        " times and failed each time; last: Intercom GET /companies/scroll failed: 500 Request"
        " failed due to an internal network error. Please restart the scroll operation."
        " (server_error)")  # fmt: skip
    assert err.value.status == 500


@respx.mock(base_url=API, assert_all_called=True)
def test_other_scroll_errors_fail_at_once(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1)]),
        httpx.Response(200, json={"type": "list", "data": [{"type": "company"}]}),
        httpx.Response(401, json=intercom_error("unauthorized", "Access Token Invalid")),
    ])  # fmt: skip
    intercom, _ = connector()
    with pytest.raises(ProviderError, match=r"malformed object \(no id\) at position 0"):
        list(intercom.full_sync("company"))
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("company"))
    assert (
        str(err.value) == "Intercom GET /companies/scroll failed: 401 Access Token Invalid"
        " (unauthorized)"
    )
    assert route.call_count == 3


SCROLL_EXISTS = intercom_error("scroll_exists", "scroll already exists for this workspace")


@respx.mock(base_url=API, assert_all_called=True)
def test_a_scroll_already_open_is_waited_for(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(side_effect=[
        httpx.Response(400, json=SCROLL_EXISTS), scroll_page([company(1)]), scroll_page([]),
    ])  # fmt: skip
    intercom, slept = connector()
    pages = list(intercom.full_sync("company"))
    assert slept == [SCROLL_BUSY_WAIT]  # an abandoned scroll expires a minute after its last use
    assert route.call_count == 3
    assert [r.external_id for p in pages for r in p.records] == ["6762f0001"]


@respx.mock(base_url=API, assert_all_called=True)
def test_a_scroll_that_stays_open_elsewhere_fails_clearly(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/companies/scroll").mock(
        return_value=httpx.Response(400, json=SCROLL_EXISTS)
    )
    intercom, slept = connector()
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("company"))
    assert route.call_count == 1 + MAX_SCROLL_RESTARTS
    assert slept == [SCROLL_BUSY_WAIT] * MAX_SCROLL_RESTARTS
    assert str(err.value).startswith(
        "Intercom GET /companies/scroll: another company scroll is open for this app (Intercom"
        " allows one at a time: is another sync or integration scrolling companies?)"
    )
    assert err.value.status == 400


@respx.mock(base_url=API, assert_all_called=True)
def test_sync_from_keeps_objects_created_since(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/companies/scroll").mock(side_effect=[
        scroll_page([company(1, created_at=1_704_067_199), company(2, created_at=1_704_067_200)]),
        scroll_page([]),
    ])  # fmt: skip
    intercom, _ = connector(sync_from=datetime(2024, 1, 1, tzinfo=UTC))
    assert [r.external_id for p in intercom.full_sync("company") for r in p.records] == [
        "6762f0002"]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_admins_are_one_list(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/admins").mock(return_value=httpx.Response(200, json={
        "type": "admin.list",
        "admins": [{"type": "admin", "id": "991267", "name": "Ciaran", "email": "c@example.com",
                    "away_mode_enabled": False, "team_ids": [814865]},
                   {"type": "admin", "id": "991268", "name": "Nico"}],
    }))  # fmt: skip
    intercom, _ = connector()
    [page] = list(intercom.full_sync("admin"))
    assert [(r.collection_key, r.external_id) for r in page.records] == [
        ("intercom_admin", "991267"), ("intercom_admin", "991268")]  # fmt: skip
    assert page.cursor is None and route.call_count == 1


def _conversations(respx_mock: respx.MockRouter, full: dict[str, dict[str, Any]]) -> respx.Route:
    """`GET /conversations/{id}` answering from `full` (404 for an unknown id)."""

    def retrieve(request: httpx.Request, cid: str) -> httpx.Response:
        if cid not in full:
            return httpx.Response(404, json=intercom_error("not_found", "Resource Not Found"))
        return httpx.Response(200, json=full[cid])

    return respx_mock.get(path__regex=r"^/conversations/(?P<cid>\d+)$").mock(side_effect=retrieve)


@respx.mock(base_url=API, assert_all_called=True)
def test_conversations_bring_their_parts(respx_mock: respx.MockRouter) -> None:
    listed = respx_mock.get("/conversations").mock(side_effect=[
        httpx.Response(200, json=listing("conversations", [summary(1), summary(2)],
                                         after="WzEwMDJd", kind="conversation.list")),
        httpx.Response(200, json=listing("conversations", [summary(3)], kind="conversation.list")),
    ])  # fmt: skip
    retrieved = _conversations(respx_mock, {
        "1001": conversation(1, [part(1), part(2)]),
        "1002": conversation(2, [], state="closed"),
        "1003": conversation(3, [part(3)]),
    })  # fmt: skip
    limiter = Counting()
    intercom, _ = connector(page_size=2, limiter=limiter)
    pages = list(intercom.full_sync("conversation"))

    assert [[(r.collection_key, r.external_id) for r in p.records] for p in pages] == [
        [("intercom_conversation", "1001"), ("intercom_conversation_part", "90001"),
         ("intercom_conversation_part", "90002"), ("intercom_conversation", "1002")],
        [("intercom_conversation", "1003"), ("intercom_conversation_part", "90003")],
    ]  # fmt: skip
    assert [p.cursor for p in pages] == ["WzEwMDJd", None]
    first = pages[0].records
    assert first[1].raw_payload == {**part(1), "conversation_id": "1001"}
    assert first[0].raw_payload == conversation(1, [part(1), part(2)])
    assert [(r.external_id, r.archived) for p in pages for r in p.records
            if r.collection_key == "intercom_conversation"] == [
        ("1001", False), ("1002", True), ("1003", False)]  # fmt: skip
    assert all(p.child_sets == [] and p.deletions == [] for p in pages)  # the sweep does it
    assert [query(c.request).get("starting_after") for c in listed.calls] == [None, ["WzEwMDJd"]]
    assert [c.request.url.path for c in retrieved.calls] == [
        "/conversations/1001", "/conversations/1002", "/conversations/1003"]  # fmt: skip
    # Two list pages and one retrieval per conversation, each through the rate limiter.
    assert limiter.taken == 2 + 3


@respx.mock(base_url=API, assert_all_called=True)
def test_a_conversation_gone_before_its_retrieval_is_skipped(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/conversations").mock(
        return_value=httpx.Response(
            200, json=listing("conversations", [summary(1), summary(2)], kind="conversation.list")
        )
    )
    _conversations(respx_mock, {"1002": conversation(2, [part(5)])})
    intercom, _ = connector()
    [page] = list(intercom.full_sync("conversation"))
    assert [r.external_id for r in page.records] == ["1002", "90005"]
    assert page.deletions == [] and page.child_sets == []


# -- incremental sync -------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_incremental_conversations_search_updated_at_and_replace_parts(
    respx_mock: respx.MockRouter,
) -> None:
    search = respx_mock.post("/conversations/search").mock(side_effect=[
        httpx.Response(200, json=listing("conversations", [summary(1), summary(2)],
                                         after="WzE3MDAsMl0=", kind="conversation.list")),
        httpx.Response(200, json=listing("conversations", [summary(3)], kind="conversation.list")),
    ])  # fmt: skip
    _conversations(respx_mock, {
        "1001": conversation(1, [part(1)]),
        "1003": conversation(3, [part(2), part(3)], total=620),  # past the 500-part cap
    })  # fmt: skip
    intercom, _ = connector(page_size=2)
    since = datetime(2027, 1, 10, 12, 0, 30, 500_000, tzinfo=UTC)
    pages = list(intercom.incremental_sync("conversation", since=since))

    # From the watermark's second, less the 300 s overlap: `>` one second before that.
    after = int(datetime(2027, 1, 10, 11, 55, 30, tzinfo=UTC).timestamp()) - 1
    sent = [body(c.request) for c in search.calls]
    assert sent[0] == {
        "query": {"field": "updated_at", "operator": ">", "value": after},
        "pagination": {"per_page": 2},
        "sort": {"field": "updated_at", "order": "descending"},
    }
    assert sent[1]["pagination"] == {"per_page": 2, "starting_after": "WzE3MDAsMl0="}
    assert sent[1]["query"] == sent[0]["query"]
    assert search.calls[0].request.headers["Content-Type"] == "application/json"
    assert search.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [p.cursor for p in pages] == ["WzE3MDAsMl0=", None]

    assert [(r.collection_key, r.external_id) for r in pages[0].records] == [
        ("intercom_conversation", "1001"), ("intercom_conversation_part", "90001")]  # fmt: skip
    # 1001: its parts are exactly these now. 1002 is gone upstream: deleted, parts too.
    # 1003 holds only part of its parts: they are written, and none is removed.
    assert pages[0].child_sets == [
        ChildSet("intercom_conversation_part", "conversation_id", "1001"),
        ChildSet("intercom_conversation_part", "conversation_id", "1002"),
    ]
    assert pages[0].deletions == [Deletion("intercom_conversation", "1002")]
    assert [r.external_id for r in pages[1].records] == ["1003", "90002", "90003"]
    assert pages[1].child_sets == [
        ChildSet("intercom_conversation_part", "conversation_id", "1003", complete=False)
    ]
    assert pages[1].deletions == []


@pytest.mark.parametrize(("since", "day"), [
    (datetime(2027, 1, 10, 12, 0, 30, tzinfo=UTC), datetime(2027, 1, 9, tzinfo=UTC)),
    # The overlap reaches into the day before: that day is searched too.
    (datetime(2027, 1, 10, 0, 2, tzinfo=UTC), datetime(2027, 1, 8, tzinfo=UTC)),
])  # fmt: skip
@respx.mock(base_url=API, assert_all_called=True)
def test_incremental_contacts_search_by_day(
    respx_mock: respx.MockRouter, since: datetime, day: datetime
) -> None:
    search = respx_mock.post("/contacts/search").mock(side_effect=[
        httpx.Response(200, json=listing("data", [contact(1), contact(2, archived=True)],
                                         after="WzIsMl0=")),
        httpx.Response(200, json=listing("data", [])),
    ])  # fmt: skip
    intercom, _ = connector()
    pages = list(intercom.incremental_sync("contact", since=since))

    # Contact search compares by UTC day: `> day` finds everything from the next day on.
    sent = [body(c.request) for c in search.calls]
    assert sent[0]["query"] == {"field": "updated_at", "operator": ">",
                                "value": int(day.timestamp())}  # fmt: skip
    assert sent[0]["sort"] == {"field": "updated_at", "order": "descending"}
    assert [s["pagination"] for s in sent] == [
        {"per_page": 50}, {"per_page": 50, "starting_after": "WzIsMl0="}]  # fmt: skip
    assert [[(r.external_id, r.archived) for r in p.records] for p in pages] == [
        [("65a0c001", False), ("65a0c002", True)], []]  # fmt: skip
    assert [p.cursor for p in pages] == ["WzIsMl0=", None]
    assert all(p.child_sets == [] for p in pages)


def test_resources_without_search_have_no_incremental_sync() -> None:
    intercom, _ = connector()
    since = datetime(2027, 1, 1, tzinfo=UTC)
    for resource in ("company", "admin"):
        assert not intercom.metadata.resource(resource).supports_incremental
        with pytest.raises(ConfigError, match=f"no incremental sync for {resource}"):
            list(intercom.incremental_sync(resource, since=since))
    with pytest.raises(ConfigError, match="conversation_part is synced with its conversation"):
        list(intercom.full_sync("conversation_part"))
    with pytest.raises(ConfigError, match="no resource 'ticket'"):
        list(intercom.full_sync("ticket"))


@respx.mock(base_url=API, assert_all_called=True)
def test_an_incremental_sync_resumes_after_its_cursor(respx_mock: respx.MockRouter) -> None:
    search = respx_mock.post("/contacts/search").mock(
        return_value=httpx.Response(200, json=listing("data", [contact(7)]))
    )
    intercom, _ = connector()
    pages = list(intercom.incremental_sync(
        "contact", since=datetime(2027, 1, 1, tzinfo=UTC), cursor="WzcsN10="))  # fmt: skip
    assert body(search.calls.last.request)["pagination"] == {
        "per_page": 50, "starting_after": "WzcsN10="}  # fmt: skip
    assert [r.external_id for p in pages for r in p.records] == ["65a0c007"]


@respx.mock(base_url=API, assert_all_called=True)
def test_an_empty_page_that_names_a_next_one_is_followed(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/contacts").mock(side_effect=[
        httpx.Response(200, json=listing("data", [], after="WzEsMV0=")),
        httpx.Response(200, json=listing("data", [contact(2)])),
    ])  # fmt: skip
    search = respx_mock.post("/conversations/search").mock(side_effect=[
        httpx.Response(200, json=listing("conversations", [], after="WzIsMl0=")),
        httpx.Response(200, json=listing("conversations", [summary(3)])),
    ])  # fmt: skip
    respx_mock.get("/conversations/1003").mock(
        return_value=httpx.Response(200, json=conversation(3, []))
    )
    intercom, _ = connector()
    listed = list(intercom.full_sync("contact"))
    searched = list(
        intercom.incremental_sync("conversation", since=datetime(2027, 1, 1, tzinfo=UTC))
    )

    assert [(len(p.records), p.cursor) for p in listed] == [(0, "WzEsMV0="), (1, None)]
    assert [(len(p.records), p.cursor) for p in searched] == [(0, "WzIsMl0="), (1, None)]
    assert body(search.calls.last.request)["pagination"]["starting_after"] == "WzIsMl0="


@respx.mock(base_url=API, assert_all_called=True)
def test_a_cursor_returned_twice_fails_the_task(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/conversations").mock(side_effect=[
        httpx.Response(200, json=listing("conversations", [], after="WzEsMV0=")),
        httpx.Response(200, json=listing("conversations", [], after="WzEsMV0=")),
    ])  # fmt: skip
    search = respx_mock.post("/contacts/search").mock(side_effect=[
        httpx.Response(200, json=listing("data", [contact(1)], after="WzIsMl0=")),
        httpx.Response(200, json=listing("data", [contact(2)], after="WzMsM10=")),
        httpx.Response(200, json=listing("data", [contact(3)], after="WzIsMl0=")),
    ])  # fmt: skip
    intercom, _ = connector()
    with pytest.raises(ProviderError) as listed:
        list(intercom.full_sync("conversation"))
    with pytest.raises(ProviderError) as searched:
        list(intercom.incremental_sync("contact", since=datetime(2027, 1, 1, tzinfo=UTC)))

    assert str(listed.value) == ("Intercom GET /conversations returned a cursor it had already"
                                 " returned ('WzEsMV0='): its paging loops")  # fmt: skip
    assert str(searched.value) == ("Intercom POST /contacts/search returned a cursor it had"
                                   " already returned ('WzIsMl0='): its paging loops")  # fmt: skip
    assert search.call_count == 3


# -- errors and retries -------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_429_waits_until_the_rate_limit_resets(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/contacts").mock(side_effect=[
        httpx.Response(429, headers={"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
                                     "X-RateLimit-Reset": "1800000007"},
                       json=intercom_error("rate_limit_exceeded", "Exceeded rate limit")),
        httpx.Response(429, headers={"Retry-After": "2", "X-RateLimit-Reset": "1800000050"}),
        httpx.Response(429, headers={"X-RateLimit-Reset": "1800009999"}),  # beyond max_delay
        httpx.Response(429, headers={"X-RateLimit-Reset": "1799999990"}),  # already past
        httpx.Response(200, json=listing("data", [contact(1)])),
    ])  # fmt: skip
    intercom, slept = connector()
    intercom.http.clock = lambda: 1_800_000_000.5
    records = [r for p in intercom.full_sync("contact") for r in p.records]
    assert [r.external_id for r in records] == ["65a0c001"]
    assert slept[:3] == [6.5, 2.0, 30.0]  # Retry-After first; capped by the retry policy
    assert len(slept) == 4 and 0 < slept[3] <= 4.0  # no usable reset: backoff (4th retry)


@respx.mock(base_url=API, assert_all_called=True)
def test_5xx_until_retries_run_out_fails_naming_the_path(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/conversations/search").mock(
        return_value=httpx.Response(
            503, json=intercom_error("service_unavailable", "Service Unavailable")
        )
    )
    intercom, slept = connector(max_retries=3)
    with pytest.raises(ProviderError) as err:
        list(intercom.incremental_sync("conversation", since=datetime(2027, 1, 1, tzinfo=UTC)))
    assert str(err.value) == ("Intercom POST /conversations/search failed after 3 retries: "
                              "503 Service Unavailable (service_unavailable)")  # fmt: skip
    assert err.value.status == 503
    assert route.call_count == 4 and len(slept) == 3
    assert TOKEN not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_5xx_without_a_body_and_transport_errors(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/admins").mock(side_effect=[
        httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(502),
    ])  # fmt: skip
    intercom, slept = connector(max_retries=2)
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("admin"))
    assert str(err.value) == "Intercom GET /admins failed after 2 retries: 502 Bad Gateway"
    assert len(slept) == 2 and TOKEN not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_other_errors_fail_at_once_without_the_token(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/contacts").mock(
        return_value=httpx.Response(
            401, json=intercom_error("unauthorized", "Access Token Invalid")
        )
    )
    intercom, slept = connector()
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("contact"))
    assert str(err.value) == (
        "Intercom GET /contacts failed: 401 Access Token Invalid (unauthorized)")  # fmt: skip
    assert err.value.status == 401 and slept == [] and TOKEN not in str(err.value)


@pytest.mark.parametrize(("answer", "problem"), [
    (listing("contacts", [contact(1)]), "Intercom GET /contacts returned a page without data"),
    ({"type": "list", "data": None}, "Intercom GET /contacts returned a page without data"),
    (listing("data", [contact(1), {"type": "contact", "email": "no id"}]),
     "Intercom GET /contacts returned a malformed object (no id) at position 1"),
    (listing("data", ["65a0c001"]), "Intercom GET /contacts returned a malformed object (not an "
                                    "object) at position 0"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_a_malformed_page_fails_the_resource(
    respx_mock: respx.MockRouter, answer: dict[str, Any], problem: str
) -> None:
    respx_mock.get("/contacts").mock(return_value=httpx.Response(200, json=answer))
    intercom, _ = connector()
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("contact"))
    assert str(err.value) == problem


@respx.mock(base_url=API)
def test_a_body_that_is_not_json_fails(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/admins").mock(return_value=httpx.Response(200, text="<html>oops</html>"))
    intercom, _ = connector()
    with pytest.raises(ProviderError) as err:
        list(intercom.full_sync("admin"))
    assert str(err.value) == "Intercom GET /admins returned a body that is not JSON"


# -- configuration and metadata -----------------------------------------------------


def test_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERCOM_API_KEY_SUPPORT_EU", raising=False)
    app = AppConfig(app_key="support-eu", connector="intercom")
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    assert str(err.value) == (
        "app 'support-eu' (intercom): environment variable INTERCOM_API_KEY_SUPPORT_EU "
        "(config.api_key_env) is not set")  # fmt: skip


def test_the_default_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCOM_API_KEY_SUPPORT_EU", TOKEN)
    made = create_connector(AppConfig(app_key="support-eu", connector="intercom"))
    assert isinstance(made, IntercomConnector)
    assert made.http.client.headers["Authorization"] == f"Bearer {TOKEN}"
    assert str(made.http.client.base_url) == "https://api.intercom.io"
    assert made.requests_per_second == 100.0 and made.incremental_horizon is None
    made.close()


def test_bad_settings_are_named_and_the_token_never_shown() -> None:
    app = AppConfig(
        app_key="support",
        connector="intercom",
        config={"api_key_env": "INTERCOM_TOKEN_UNIT", "page_size": 500, "api_key": TOKEN,
                "api_base": f"ftp://{TOKEN}@intercom", "api_version": "2.14",
                "max_retries": -1},
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    message = str(err.value)
    for field in ("page_size", "api_key", "api_base", "api_version", "max_retries"):
        assert f"config.{field}:" in message, field
    assert message.startswith("app 'support' (intercom): ")
    assert TOKEN not in message


def test_a_bad_variable_name_is_named() -> None:
    app = AppConfig(app_key="support", connector="intercom",
                    config={"api_key_env": "not a name"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"config\.api_key_env: String should match pattern"):
        create_connector(app)


def test_metadata_describes_the_resources() -> None:
    metadata = IntercomConnector.metadata
    assert "intercom" in known_connectors()
    assert (metadata.name, metadata.display_name, metadata.api_version) == (
        "intercom", "Intercom", "2.14")  # fmt: skip
    assert [(r.resource_type, r.collection_key, r.supports_incremental)
            for r in metadata.task_resources] == [
        ("company", "intercom_company", False), ("contact", "intercom_contact", True),
        ("admin", "intercom_admin", False), ("conversation", "intercom_conversation", True),
    ]  # fmt: skip
    part_resource = metadata.resource("conversation_part")
    assert part_resource.collection_key == "intercom_conversation_part"
    assert part_resource.synced_with_parent == "conversation"
    assert metadata.children_of("conversation") == (part_resource,)
    assert metadata.sql_files == (
        "20261202000500_intercom_views.sql",
        "20261202001300_intercom_view_columns.sql",
    )


def test_the_views_ship_as_migrations() -> None:
    [(name, sql), (later, columns)] = connector_sql("intercom")
    shipped = [(m.file_name, m.sql) for m in package_migrations()]
    assert (name, sql) in shipped and (later, columns) in shipped
    for view in ("companies", "contacts", "admins", "conversations", "conversation_parts"):
        assert f"create or replace view supasaasy.intercom_{view} with (security_invoker" in sql
    # The later one appends columns to two of them, keeping security_invoker.
    for view in ("contacts", "conversations"):
        assert f"create or replace view supasaasy.intercom_{view} with (security_invoker" in columns


# -- webhooks ---------------------------------------------------------------------


def notification(topic: str, item: dict[str, Any], created_at: int = 1_800_000_100) -> Any:
    return {"type": "notification_event", "id": f"notif_{topic}", "topic": topic,
            "app_id": "abc", "created_at": created_at,
            "data": {"type": "notification_event_data", "item": item}}  # fmt: skip


@pytest.mark.parametrize(
    "item",
    [
        # What `*.deleted` topics carry: the object's identity, not the object.
        {"type": "conversation", "id": "1001"},
        {"type": "conversation", "id": "1001", "deleted": True},
    ],
)
def test_a_deleted_conversation_goes_with_its_parts(item: dict[str, Any]) -> None:
    intercom, _ = connector()
    found = intercom.webhook_event(notification("conversation.deleted", item))
    assert found.page is not None
    assert found.page.records == []  # the stub never replaces the stored conversation
    assert found.page.deletions == [Deletion("intercom_conversation", "1001")]
    assert found.page.child_sets == [
        ChildSet("intercom_conversation_part", "conversation_id", "1001")
    ]
    assert found.observed_at == datetime.fromtimestamp(1_800_000_100, UTC)


def test_every_deleted_topic_of_a_synced_object_deletes_it() -> None:
    intercom, _ = connector()
    for topic, item, collection in (
        ("contact.deleted", {"type": "contact", "id": "c1"}, "intercom_contact"),
        ("contact.lead.deleted", {"type": "lead", "id": "c2"}, "intercom_contact"),
        ("user.deleted", {"type": "user", "id": "c3"}, "intercom_contact"),
        ("company.deleted", {"type": "company", "id": "co1"}, "intercom_company"),
    ):
        found = intercom.webhook_event(notification(topic, item))
        assert found.page is not None and found.page.records == [], topic
        assert found.page.deletions == [Deletion(collection, item["id"])], topic
    # Tags taken off an object are not the object's deletion.
    untagged = notification("contact.tag.deleted", {"type": "contact_tag", "id": "t1"})
    assert intercom.webhook_event(untagged).page is None
