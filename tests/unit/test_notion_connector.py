"""The Notion connector against respx-mocked Notion responses (API version 2025-09-03)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

import supasaasy.connectors.notion  # noqa: F401  (registers the connector)
from supasaasy.config import AppConfig
from supasaasy.connectors import (
    ConfigError,
    Deletion,
    ProviderError,
    connector_sql,
    create_connector,
)
from supasaasy.connectors.notion import API_VERSION, NotionConnector
from supasaasy.migrations import package_migrations

API = "https://notion.test"
TOKEN = "ntn_unit_secret_token_123"

DS_A = "2f26ee68-df30-4251-aad4-8ddc420cba3d"
DS_B = "7a1c3b9e-0d44-4b50-8888-8dd25736052a"
DATABASE = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
DATA_SOURCE = "notion_data_source"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTION_KEY_UNIT", TOKEN)


def connector(
    sync_from: datetime | None = None, **config: Any
) -> tuple[NotionConnector, list[float]]:
    app = AppConfig(
        app_key="notion_unit",
        connector="notion",
        config={"api_key_env": "NOTION_KEY_UNIT", "api_base": API, **config},
        sync_from=sync_from,
    )
    made = create_connector(app)
    assert isinstance(made, NotionConnector)
    slept: list[float] = []
    made.http.sleep = slept.append
    return made, slept


def listing(results: list[dict[str, Any]], next_cursor: str | None = None) -> dict[str, Any]:
    return {"object": "list", "results": results, "next_cursor": next_cursor,
            "has_more": next_cursor is not None, "type": "page_or_data_source",
            "page_or_data_source": {}}  # fmt: skip


def data_source(
    source_id: str, title: str, properties: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "object": "data_source", "id": source_id,
        "parent": {"type": "database_id", "database_id": DATABASE},
        "title": [{"type": "text", "text": {"content": title, "link": None},
                   "plain_text": title}],
        "properties": properties if properties is not None else {
            "Name": {"id": "title", "name": "Name", "type": "title", "title": {}},
            "Status": {"id": "s%3Dq", "name": "Status", "type": "select",
                       "select": {"options": [{"id": "o1", "name": "Done", "color": "green"}]}},
        },
        "archived": False, "in_trash": False,
        "created_time": "2024-03-01T10:00:00.000Z", "last_edited_time": "2025-01-02T10:00:00.000Z",
        "created_by": {"object": "user", "id": "u-1"},
        "last_edited_by": {"object": "user", "id": "u-1"},
        "url": f"https://www.notion.so/{source_id.replace('-', '')}", **extra,
    }  # fmt: skip


def page(page_id: str, source_id: str = DS_A, **extra: Any) -> dict[str, Any]:
    return {
        "object": "page", "id": page_id,
        "parent": {"type": "data_source_id", "data_source_id": source_id,
                   "database_id": DATABASE},
        "properties": {"Name": {"id": "title", "type": "title",
                                "title": [{"plain_text": f"Page {page_id}"}]}},
        "archived": False, "in_trash": False,
        "created_time": "2024-05-01T09:00:00.000Z", "last_edited_time": "2025-01-01T09:00:00.000Z",
        "created_by": {"object": "user", "id": "u-1"},
        "last_edited_by": {"object": "user", "id": "u-1"},
        "url": f"https://www.notion.so/{page_id}", **extra,
    }  # fmt: skip


def user(user_id: str, name: str) -> dict[str, Any]:
    return {"object": "user", "id": user_id, "type": "person", "name": name,
            "avatar_url": None, "person": {"email": f"{name.lower()}@example.com"}}  # fmt: skip


def sent(call: Any) -> dict[str, Any]:
    body = json.loads(call.request.content)
    assert isinstance(body, dict)
    return body


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


# -- data sources ---------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_data_sources_page_through_search_with_their_properties(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/v1/search").mock(side_effect=[
        httpx.Response(200, json=listing([data_source(DS_A, "Tasks")], next_cursor="cur-1")),
        httpx.Response(200, json=listing([data_source(DS_B, "Notes", {})], next_cursor="cur-2")),
        httpx.Response(200, json=listing([])),
    ])  # fmt: skip
    notion, _ = connector()
    pages = list(notion.full_sync("data_source"))

    assert [p.cursor for p in pages] == ["cur-1", "cur-2", None]
    assert [[(r.collection_key, r.external_id) for r in p.records] for p in pages] == [
        [("notion_data_source", DS_A), ("notion_data_source_property", f"{DS_A}:title"),
         ("notion_data_source_property", f"{DS_A}:s%3Dq")],
        [("notion_data_source", DS_B)],
        [],
    ]  # fmt: skip
    status = pages[0].records[2].raw_payload
    assert status == {"data_source_id": DS_A, "property_id": "s%3Dq", "name": "Status",
                      "type": "select",
                      "config": data_source(DS_A, "x")["properties"]["Status"]}  # fmt: skip
    assert pages[0].records[0].raw_payload["title"][0]["plain_text"] == "Tasks"
    assert [(c.collection_key, c.parent_field, c.parent_id) for p in pages
            for c in p.child_sets] == [
        ("notion_data_source_property", "data_source_id", DS_A),
        ("notion_data_source_property", "data_source_id", DS_B),
    ]  # fmt: skip
    bodies = [sent(call) for call in route.calls]
    assert bodies[0] == {"filter": {"property": "object", "value": "data_source"},
                         "sort": {"timestamp": "last_edited_time", "direction": "ascending"},
                         "page_size": 100}  # fmt: skip
    assert [b.get("start_cursor") for b in bodies] == [None, "cur-1", "cur-2"]
    first = route.calls[0].request
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["Notion-Version"] == API_VERSION == "2025-09-03"
    assert first.headers["Content-Type"] == "application/json"


@respx.mock(base_url=API, assert_all_called=True)
def test_a_data_source_found_without_properties_is_fetched_whole(
    respx_mock: respx.MockRouter,
) -> None:
    partial = {k: v for k, v in data_source(DS_A, "Tasks").items() if k != "properties"}
    respx_mock.post("/v1/search").mock(return_value=httpx.Response(200, json=listing([partial])))
    whole = respx_mock.get(f"/v1/data_sources/{DS_A}").mock(
        return_value=httpx.Response(200, json=data_source(DS_A, "Tasks"))
    )
    notion, _ = connector()
    [only] = list(notion.full_sync("data_source"))
    assert whole.call_count == 1
    assert [r.external_id for r in only.records] == [DS_A, f"{DS_A}:title", f"{DS_A}:s%3Dq"]
    assert "properties" in only.records[0].raw_payload


@respx.mock(base_url=API, assert_all_called=True)
def test_data_sources_resume_from_a_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/v1/search").mock(
        return_value=httpx.Response(200, json=listing([data_source(DS_B, "Notes")]))
    )
    notion, _ = connector()
    pages = list(notion.full_sync("data_source", cursor="cur-7"))
    assert sent(route.calls.last)["start_cursor"] == "cur-7"
    assert [p.records[0].external_id for p in pages] == [DS_B]


@respx.mock(base_url=API, assert_all_called=True)
def test_an_empty_workspace_is_one_empty_final_page(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("/v1/search").mock(return_value=httpx.Response(200, json=listing([])))
    notion, _ = connector()
    pages = list(notion.full_sync("data_source"))
    assert len(pages) == 1 and pages[0].records == [] and pages[0].cursor is None
    assert [p.records for p in notion.full_sync("page")] == [[]]  # no data source, no rows


@respx.mock(base_url=API, assert_all_called=True)
def test_trashed_data_sources_are_archived_and_sync_from_skips_older_ones(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/v1/search").mock(return_value=httpx.Response(200, json=listing([
        data_source(DS_A, "Old", created_time="2023-12-31T23:59:00.000Z"),
        data_source(DS_B, "Trashed", {}, in_trash=True),
    ])))  # fmt: skip
    notion, _ = connector(sync_from=datetime(2024, 1, 1, tzinfo=UTC))
    [only] = list(notion.full_sync("data_source"))
    assert [(r.external_id, r.archived) for r in only.records] == [(DS_B, True)]


# -- pages ----------------------------------------------------------------------


def mock_data_sources(respx_mock: respx.MockRouter, *ids: str) -> respx.Route:
    # Search lists them most recently edited first; the connector orders them by id.
    return respx_mock.post("/v1/search").mock(
        return_value=httpx.Response(200, json=listing([data_source(i, i[:4]) for i in ids]))
    )


@respx.mock(base_url=API, assert_all_called=True)
def test_pages_are_the_rows_of_every_data_source(respx_mock: respx.MockRouter) -> None:
    search = mock_data_sources(respx_mock, DS_B, DS_A)
    rows_a = respx_mock.post(f"/v1/data_sources/{DS_A}/query").mock(side_effect=[
        httpx.Response(200, json=listing([page("p-1"), page("p-2", archived=True)], "qa-1")),
        httpx.Response(200, json=listing([page("p-3", in_trash=True),
                                          {"object": "data_source", "id": "ds-in-wiki"}])),
    ])  # fmt: skip
    rows_b = respx_mock.post(f"/v1/data_sources/{DS_B}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-4", DS_B)]))
    )
    notion, _ = connector()
    pages = list(notion.full_sync("page"))

    assert [[(r.external_id, r.archived) for r in p.records] for p in pages] == [
        [("p-1", False), ("p-2", True)], [("p-3", True)], [("p-4", False)]]  # fmt: skip
    assert {r.collection_key for p in pages for r in p.records} == {"notion_page"}
    assert [p.cursor for p in pages] == [f"{DS_A}:qa-1", f"{DS_B}:", None]
    assert sent(search.calls[0])["filter"] == {"property": "object", "value": "data_source"}
    assert sent(rows_a.calls[0]) == {
        "page_size": 100,
        "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
    }
    assert sent(rows_a.calls[1])["start_cursor"] == "qa-1"
    assert "start_cursor" not in sent(rows_b.calls[0])


@respx.mock(base_url=API, assert_all_called=False)
def test_pages_resume_within_the_data_source_of_the_cursor(
    respx_mock: respx.MockRouter,
) -> None:
    mock_data_sources(respx_mock, DS_A, DS_B)
    rows_a = respx_mock.post(f"/v1/data_sources/{DS_A}/query")
    rows_b = respx_mock.post(f"/v1/data_sources/{DS_B}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-9", DS_B)]))
    )
    notion, _ = connector()
    pages = list(notion.full_sync("page", cursor=f"{DS_B}:qb-3"))
    assert rows_a.call_count == 0
    assert sent(rows_b.calls[0])["start_cursor"] == "qb-3"
    assert [r.external_id for p in pages for r in p.records] == ["p-9"]
    assert pages[-1].cursor is None


@respx.mock(base_url=API, assert_all_called=True)
def test_a_cursor_of_a_vanished_data_source_resumes_at_the_next_one(
    respx_mock: respx.MockRouter,
) -> None:
    mock_data_sources(respx_mock, DS_B)
    rows_b = respx_mock.post(f"/v1/data_sources/{DS_B}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-5", DS_B)]))
    )
    notion, _ = connector()
    gone = "3c90c3cc-0000-0000-0000-000000000000"  # sorts between DS_A and DS_B
    pages = list(notion.full_sync("page", cursor=f"{gone}:qx-1"))
    assert "start_cursor" not in sent(rows_b.calls[0])
    assert [r.external_id for p in pages for r in p.records] == ["p-5"]


@respx.mock(base_url=API, assert_all_called=True)
def test_a_data_source_deleted_during_the_sync_is_skipped(respx_mock: respx.MockRouter) -> None:
    mock_data_sources(respx_mock, DS_A, DS_B)
    respx_mock.post(f"/v1/data_sources/{DS_A}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-1")]))
    )
    respx_mock.post(f"/v1/data_sources/{DS_B}/query").mock(return_value=httpx.Response(
        404, json={"object": "error", "status": 404, "code": "object_not_found",
                   "message": f"Could not find data_source with ID: {DS_B}."}))  # fmt: skip
    notion, _ = connector()
    pages = list(notion.full_sync("page"))
    assert [r.external_id for p in pages for r in p.records] == ["p-1"]
    assert pages[-1].cursor is None and pages[-1].records == []


@respx.mock(base_url=API, assert_all_called=True)
def test_sync_from_filters_the_rows_by_creation_time(respx_mock: respx.MockRouter) -> None:
    mock_data_sources(respx_mock, DS_A)
    rows = respx_mock.post(f"/v1/data_sources/{DS_A}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-1")]))
    )
    notion, _ = connector(sync_from=datetime(2024, 1, 1, tzinfo=UTC), page_size=25)
    list(notion.full_sync("page"))
    body = sent(rows.calls[0])
    assert body["filter"] == {
        "timestamp": "created_time",
        "created_time": {"on_or_after": "2024-01-01T00:00:00+00:00"},
    }
    assert body["page_size"] == 25


# -- users ----------------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_users_page_through_the_users_list(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/v1/users").mock(side_effect=[
        httpx.Response(200, json=listing([user("u-1", "Ada"), user("u-2", "Bob")], "uc-1")),
        httpx.Response(200, json=listing([{"object": "user", "id": "b-1", "type": "bot",
                                           "name": "Sync bot", "bot": {}}])),
    ])  # fmt: skip
    notion, _ = connector()
    pages = list(notion.full_sync("user"))
    assert [[r.external_id for r in p.records] for p in pages] == [["u-1", "u-2"], ["b-1"]]
    assert {r.collection_key for p in pages for r in p.records} == {"notion_user"}
    assert [p.cursor for p in pages] == ["uc-1", None]
    assert [query(c.request) for c in route.calls] == [
        {"page_size": ["100"]}, {"page_size": ["100"], "start_cursor": ["uc-1"]}]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_users_resume_from_a_cursor(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/v1/users").mock(
        return_value=httpx.Response(200, json=listing([user("u-3", "Cy")]))
    )
    notion, _ = connector()
    assert [r.external_id for p in notion.full_sync("user", cursor="uc-2") for r in p.records] == [
        "u-3"
    ]
    assert query(route.calls.last.request)["start_cursor"] == ["uc-2"]


# -- incremental ----------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_incremental_pages_stop_at_the_watermark(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/v1/search").mock(side_effect=[
        httpx.Response(200, json=listing([
            page("p-new", last_edited_time="2027-01-01T12:00:00.000Z"),
            page("p-standalone", last_edited_time="2027-01-01T11:59:00.000Z",
                 parent={"type": "workspace", "workspace": True}),
        ], "s-1")),
        httpx.Response(200, json=listing([
            page("p-trashed", in_trash=True, last_edited_time="2027-01-01T11:00:00.000Z"),
            # 11:00:30 less the 10 minute overlap is 10:50:30: edits of 10:50 count.
            page("p-edge", last_edited_time="2027-01-01T10:50:00.000Z"),
            page("p-old", last_edited_time="2027-01-01T10:49:00.000Z"),
            page("p-older", last_edited_time="2027-01-01T09:00:00.000Z"),
        ], "s-2")),
        # Then the trash, which search lists only when asked for it alone.
        httpx.Response(200, json=listing([
            page("p-binned", in_trash=True, last_edited_time="2027-01-01T11:30:00.000Z"),
            page("p-binned-long-ago", in_trash=True, last_edited_time="2026-12-01T09:00:00.000Z"),
        ], "t-1")),
    ])  # fmt: skip
    notion, _ = connector(incremental_overlap_seconds=600)
    since = datetime(2027, 1, 1, 11, 0, 30, tzinfo=UTC)
    pages = list(notion.incremental_sync("page", since=since))

    assert route.call_count == 3  # neither the page after s-2 nor after t-1
    assert [[(r.external_id, r.archived) for r in p.records] for p in pages] == [
        [("p-new", False)], [("p-trashed", True), ("p-edge", False)],
        [("p-binned", True)]]  # fmt: skip
    assert [p.cursor for p in pages] == ["s-1", "trash:", None]
    bodies = [sent(c) for c in route.calls]
    assert bodies[0] == {"filter": {"property": "object", "value": "page"},
                         "sort": {"timestamp": "last_edited_time", "direction": "descending"},
                         "page_size": 100}  # fmt: skip
    assert bodies[1]["start_cursor"] == "s-1"
    assert bodies[2] == {"filter": {"property": "object", "value": "page", "in_trash": True},
                         "sort": {"timestamp": "last_edited_time", "direction": "descending"},
                         "page_size": 100}  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_a_search_without_a_trash_filter_leaves_the_trash_to_the_full_sync(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/v1/search").mock(side_effect=[
        httpx.Response(200, json=listing([page("p-new",
                                               last_edited_time="2027-01-01T12:00:00.000Z")])),
        httpx.Response(400, json={"object": "error", "status": 400, "code": "validation_error",
                                  "message": "body.filter.in_trash should be not present"}),
    ])  # fmt: skip
    notion, _ = connector()
    pages = list(notion.incremental_sync("page", since=datetime(2027, 1, 1, 11, tzinfo=UTC)))
    assert [[r.external_id for r in p.records] for p in pages] == [["p-new"], []]
    assert [p.cursor for p in pages] == ["trash:", None]


@respx.mock(base_url=API, assert_all_called=True)
def test_a_change_feed_resumed_in_the_trash_reads_only_the_trash(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/v1/search").mock(side_effect=[
        httpx.Response(200, json=listing([data_source(DS_A, "Binned", in_trash=True,
                                                      last_edited_time="2027-03-01T08:00:00.000Z")])),
    ])  # fmt: skip
    notion, _ = connector()
    since = datetime(2027, 2, 15, tzinfo=UTC)
    pages = list(notion.incremental_sync("data_source", since=since, cursor="trash:t-4"))
    assert sent(route.calls[0])["start_cursor"] == "t-4"
    assert sent(route.calls[0])["filter"]["in_trash"] is True
    # In the trash (restorable), as pages there are: stored archived, with its properties.
    assert pages[0].deletions == []
    assert [(r.external_id, r.archived) for r in pages[0].records] == [
        (DS_A, True), (f"{DS_A}:title", False), (f"{DS_A}:s%3Dq", False)]  # fmt: skip
    assert [c.parent_id for c in pages[0].child_sets] == [DS_A]
    assert [p.cursor for p in pages] == [None]


@respx.mock(base_url=API, assert_all_called=True)
def test_incremental_data_sources_stop_at_the_watermark_and_resume(
    respx_mock: respx.MockRouter,
) -> None:
    # A second live search request (reading past the watermark) fails the test; the
    # trash comes next, and is empty.
    route = respx_mock.post("/v1/search").mock(side_effect=[httpx.Response(200, json=listing([
        data_source(DS_B, "Changed", last_edited_time="2027-03-01T08:00:00.000Z"),
        data_source(DS_A, "Unchanged", last_edited_time="2027-02-01T08:00:00.000Z"),
    ], "s-9")), httpx.Response(200, json=listing([]))])  # fmt: skip
    notion, _ = connector()
    pages = list(
        notion.incremental_sync(
            "data_source", since=datetime(2027, 2, 15, tzinfo=UTC), cursor="s-8"
        )
    )
    assert route.call_count == 2
    assert sent(route.calls[0])["start_cursor"] == "s-8"
    assert sent(route.calls[0])["sort"]["direction"] == "descending"
    assert [r.external_id for r in pages[0].records] == [DS_B, f"{DS_B}:title", f"{DS_B}:s%3Dq"]
    assert [c.parent_id for c in pages[0].child_sets] == [DS_B]
    assert [p.cursor for p in pages] == ["trash:", None]


def test_users_and_properties_have_no_sync_of_their_own() -> None:
    notion, _ = connector()
    with pytest.raises(ConfigError, match="notion user has no incremental sync"):
        list(notion.incremental_sync("user", since=datetime(2027, 1, 1, tzinfo=UTC)))
    with pytest.raises(ConfigError, match="data_source_property is synced with its data_source"):
        list(notion.full_sync("data_source_property"))


# -- retries and failures -------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_429_is_retried_after_the_time_notion_asks(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/v1/search").mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "7"},
                       json={"object": "error", "status": 429, "code": "rate_limited",
                             "message": "You have been rate limited."}),
        httpx.Response(502),
        httpx.Response(200, json=listing([data_source(DS_A, "Tasks", {})])),
    ])  # fmt: skip
    notion, slept = connector()
    records = [r for p in notion.full_sync("data_source") for r in p.records]
    assert [r.external_id for r in records] == [DS_A]
    assert slept[0] == 7.0
    assert len(slept) == 2 and 0 < slept[1] <= 1.0
    assert all(sent(c) == sent(route.calls[0]) for c in route.calls)  # the same request again


@respx.mock(base_url=API, assert_all_called=True)
def test_5xx_until_retries_run_out_fails_with_a_clear_message(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/v1/search").mock(return_value=httpx.Response(
        500, json={"object": "error", "status": 500, "code": "internal_server_error",
                   "message": "Unexpected error occurred."}))  # fmt: skip
    notion, slept = connector(max_retries=3)
    with pytest.raises(ProviderError) as err:
        list(notion.full_sync("page"))
    assert str(err.value) == (
        "Notion POST /v1/search failed after 3 retries: "
        "500 internal_server_error: Unexpected error occurred.")  # fmt: skip
    assert err.value.status == 500
    assert route.call_count == 4 and len(slept) == 3
    assert TOKEN not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_other_errors_fail_at_once_without_the_token(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/users").mock(return_value=httpx.Response(
        401, json={"object": "error", "status": 401, "code": "unauthorized",
                   "message": "API token is invalid."}))  # fmt: skip
    notion, slept = connector()
    with pytest.raises(ProviderError) as err:
        list(notion.full_sync("user"))
    assert str(err.value) == "Notion GET /v1/users failed: 401 unauthorized: API token is invalid."
    assert err.value.status == 401 and slept == [] and TOKEN not in str(err.value)


@respx.mock(base_url=API, assert_all_called=True)
def test_transport_errors_are_retried(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v1/users").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=listing([]))]
    )
    notion, slept = connector()
    assert [p.records for p in notion.full_sync("user")] == [[]]
    assert len(slept) == 1


@pytest.mark.parametrize(("body", "message"), [
    ({"object": "list", "results": [{"object": "user", "name": "no id"}], "has_more": False},
     "Notion GET /v1/users returned a malformed object (no id) at position 0"),
    ({"object": "list", "results": "nope", "has_more": False},
     "GET /v1/users returned a page without results/has_more"),
    ({"object": "list", "results": []}, "without results/has_more"),
    ({"object": "list", "results": [], "has_more": True, "next_cursor": None},
     "has_more without a next_cursor"),
    ({**listing([]), "request_status": {"type": "incomplete",
                                        "incomplete_reason": "query_result_limit_reached"}},
     "incomplete results: query_result_limit_reached"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_a_malformed_or_incomplete_page_fails_the_resource(
    respx_mock: respx.MockRouter, body: dict[str, Any], message: str
) -> None:
    respx_mock.get("/v1/users").mock(return_value=httpx.Response(200, json=body))
    notion, _ = connector()
    with pytest.raises(ProviderError, match=re.escape(message)):
        list(notion.full_sync("user"))


@respx.mock(base_url=API)
def test_an_object_without_a_valid_edit_time_fails_an_incremental_sync(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/v1/search").mock(
        return_value=httpx.Response(200, json=listing([page("p-1", last_edited_time="soon")]))
    )
    notion, _ = connector()
    with pytest.raises(ProviderError, match="page p-1 has no valid last_edited_time"):
        list(notion.incremental_sync("page", since=datetime(2027, 1, 1, tzinfo=UTC)))


# -- configuration and metadata -------------------------------------------------


def test_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTION_API_KEY_WIKI_MAIN", raising=False)
    app = AppConfig(app_key="wiki-main", connector="notion")
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    assert str(err.value) == (
        "app 'wiki-main' (notion): environment variable NOTION_API_KEY_WIKI_MAIN "
        "(config.api_key_env) is not set")  # fmt: skip


def test_the_default_variable_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTION_API_KEY_WIKI", TOKEN)
    made = create_connector(AppConfig(app_key="wiki", connector="notion"))
    assert isinstance(made, NotionConnector)
    assert made.settings.api_key_env == "NOTION_API_KEY_WIKI"
    assert str(made.http.client.base_url) == "https://api.notion.com"
    assert made.requests_per_second == 3.0
    assert made.incremental_horizon is None
    made.close()


def test_bad_settings_are_named_and_secrets_never_shown() -> None:
    app = AppConfig(
        app_key="wiki",
        connector="notion",
        config={"api_key_env": "NOTION_KEY_UNIT", "page_size": 101, "requests_per_second": 0,
                "api_base": "notion.so", "api_key": TOKEN},
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        create_connector(app)
    message = str(err.value)
    for field in ("config.page_size", "config.requests_per_second", "config.api_base",
                  "config.api_key"):  # fmt: skip
        assert field in message
    assert message.startswith("app 'wiki' (notion): ")
    assert TOKEN not in message


def test_metadata_describes_the_resources(project_root: Path) -> None:
    metadata = NotionConnector.metadata
    assert (metadata.name, metadata.api_version) == ("notion", "2025-09-03")
    assert [(r.resource_type, r.collection_key, r.supports_incremental)
            for r in metadata.task_resources] == [
        ("data_source", "notion_data_source", True),
        ("page", "notion_page", True),
        ("user", "notion_user", False),
    ]  # fmt: skip
    [child] = metadata.children_of("data_source")
    assert (child.collection_key, child.synced_with_parent, child.supports_incremental) == (
        "notion_data_source_property", "data_source", False)  # fmt: skip
    assert metadata.sql_files == (
        "20261202000600_notion_views.sql", "20261202001400_notion_entity_ids.sql")  # fmt: skip
    [(name, sql), (later, keyed)] = connector_sql("notion")
    shipped = [(m.file_name, m.sql) for m in package_migrations()]
    assert (name, sql) in shipped and (later, keyed) in shipped
    assert "create trigger entities_notion_id" in keyed
    for view in ("notion_data_sources", "notion_data_source_properties", "notion_pages",
                 "notion_users"):  # fmt: skip
        assert f"create or replace view supasaasy.{view} with (security_invoker = true)" in sql


@respx.mock(base_url=API, assert_all_called=True)
def test_stored_data_sources_search_leaves_out_are_kept_archived_or_deleted(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/v1/search").mock(return_value=httpx.Response(200, json=listing([])))
    trashed, gone = DS_A, DS_B
    respx_mock.get(f"/v1/data_sources/{trashed}").mock(return_value=httpx.Response(
        200, json=data_source(trashed, "Binned", in_trash=True)))  # fmt: skip
    respx_mock.get(f"/v1/data_sources/{gone}").mock(return_value=httpx.Response(
        404, json={"object": "error", "status": 404, "code": "object_not_found",
                   "message": "Could not find data_source"}))  # fmt: skip
    notion, _ = connector()
    notion.stored_ids = lambda collection: [trashed, gone] if collection == DATA_SOURCE else []
    [only] = list(notion.full_sync("data_source"))
    assert [(r.external_id, r.archived) for r in only.records] == [
        (trashed, True), (f"{trashed}:title", False), (f"{trashed}:s%3Dq", False)]  # fmt: skip
    assert only.deletions == [Deletion(DATA_SOURCE, gone)]
    assert [c.parent_id for c in only.child_sets] == [trashed, gone]


def notion_event(kind: str, entity_id: str, entity_type: str = "data_source") -> dict[str, Any]:
    return {"id": f"ev-{kind}", "timestamp": "2030-01-01T00:00:00.000Z", "type": kind,
            "workspace_id": "w", "subscription_id": "s", "integration_id": "i",
            "entity": {"id": entity_id, "type": entity_type}, "data": {}}  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_a_deleted_data_source_is_archived_and_an_undeleted_one_restored(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get(f"/v1/data_sources/{DS_A}")
    notion, _ = connector()

    route.return_value = httpx.Response(200, json=data_source(DS_A, "Tasks", in_trash=True))
    deleted = notion.webhook_event(notion_event("data_source.deleted", DS_A)).page
    assert deleted is not None and deleted.deletions == []
    assert [(r.external_id, r.archived) for r in deleted.records] == [
        (DS_A, True), (f"{DS_A}:title", False), (f"{DS_A}:s%3Dq", False)]  # fmt: skip

    route.return_value = httpx.Response(200, json=data_source(DS_A, "Tasks"))
    restored = notion.webhook_event(notion_event("data_source.undeleted", DS_A)).page
    assert restored is not None
    assert (restored.records[0].external_id, restored.records[0].archived) == (DS_A, False)

    route.return_value = httpx.Response(
        404, json={"object": "error", "status": 404, "code": "object_not_found", "message": "x"}
    )
    gone = notion.webhook_event(notion_event("data_source.deleted", DS_A)).page
    assert gone is not None and gone.records == []
    assert gone.deletions == [Deletion(DATA_SOURCE, DS_A)]
    assert [c.parent_id for c in gone.child_sets] == [DS_A]


@respx.mock(base_url=API, assert_all_called=True)
def test_rows_of_a_stored_data_source_notion_refuses_to_query_are_skipped(
    respx_mock: respx.MockRouter,
) -> None:
    # DS_B is stored (in the trash, say) and search no longer lists it: whether Notion
    # answers its query with 404 or 400, the other data sources' rows are read.
    mock_data_sources(respx_mock, DS_A)
    respx_mock.post(f"/v1/data_sources/{DS_A}/query").mock(
        return_value=httpx.Response(200, json=listing([page("p-1")]))
    )
    refused = respx_mock.post(f"/v1/data_sources/{DS_B}/query").mock(return_value=httpx.Response(
        400, json={"object": "error", "status": 400, "code": "validation_error",
                   "message": "Can't query a data source that is archived."}))  # fmt: skip
    trashed = respx_mock.get(f"/v1/data_sources/{DS_B}").mock(
        return_value=httpx.Response(200, json={"object": "data_source", "id": DS_B,
                                               "in_trash": True}))  # fmt: skip
    notion, _ = connector()
    notion.stored_ids = lambda collection: [DS_B] if collection == DATA_SOURCE else []
    pages = list(notion.full_sync("page"))
    assert refused.call_count == 1
    assert [r.external_id for p in pages for r in p.records] == ["p-1"]
    assert pages[-1].cursor is None

    # Out of the trash, a 400 is a failure: its rows must not be swept as if it were gone.
    trashed.return_value = httpx.Response(200, json={"object": "data_source", "id": DS_B})
    with pytest.raises(ProviderError, match="archived"):
        list(notion.full_sync("page"))

    # A data source search lists is queried as any other: a 400 there is a failure.
    respx_mock.post(f"/v1/data_sources/{DS_A}/query").mock(return_value=httpx.Response(
        400, json={"object": "error", "status": 400, "code": "validation_error",
                   "message": "body failed validation"}))  # fmt: skip
    with pytest.raises(ProviderError, match="body failed validation"):
        list(notion.full_sync("page"))
