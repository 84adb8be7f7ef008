"""The paginators against respx-mocked list endpoints: each paging style to its end, resumed
from a saved cursor, and refusing degenerate pages (never a loop or a silent end)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from supasaasy.connectors import ProviderError
from supasaasy.connectors.paginators import (
    BodyCursorPaginator,
    PageNumberPaginator,
    Paginator,
    ScrollPaginator,
    StartingAfterPaginator,
    paginate,
)

API = "https://api.example.test"
Objects = list[dict[str, Any]]


def objs(*ids: Any) -> Objects:
    return [{"id": i} for i in ids]


def data(body: dict[str, Any]) -> Objects:
    found = body.get("data")
    return found if isinstance(found, list) else []


def get(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def fetch(params: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=API) as client:
            found: dict[str, Any] = client.get(path, params=params).json()
            return found

    return fetch


def post(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def fetch(body: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=API) as client:
            found: dict[str, Any] = client.post(path, json=body).json()
            return found

    return fetch


def pages(
    fetch: Callable[[dict[str, Any]], dict[str, Any]],
    paginator: Paginator,
    request: dict[str, Any] | None = None,
) -> Iterator[tuple[list[Any], str | None]]:
    for found, cursor in paginate(fetch, request or {"limit": 2}, paginator, data):
        yield [o["id"] for o in found], cursor


def replies(*bodies: dict[str, Any]) -> list[httpx.Response]:
    return [httpx.Response(200, json=body) for body in bodies]


# -- starting_after from the last object's id ----------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_starting_after_pages_to_the_end_and_resumes(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/items").mock(side_effect=replies(
        {"data": objs("a", "b"), "has_more": True},
        {"data": objs("c"), "has_more": False},
        {"data": objs("c"), "has_more": False},
    ))  # fmt: skip
    where = "Example GET /items"
    assert list(pages(get("/items"), StartingAfterPaginator(where))) == [
        (["a", "b"], "b"),
        (["c"], None),
    ]
    assert list(pages(get("/items"), StartingAfterPaginator(where, "b"))) == [(["c"], None)]
    sent = [dict(call.request.url.params) for call in route.calls]
    assert sent == [{"limit": "2"}, {"limit": "2", "starting_after": "b"},
                    {"limit": "2", "starting_after": "b"}]  # fmt: skip


@pytest.mark.parametrize(("bodies", "message"), [
    ([{"data": [], "has_more": True}],
     "Example GET /items returned an empty page that says more follow"),
    ([{"data": objs("a"), "has_more": True}, {"data": objs("a"), "has_more": True}],
     "Example GET /items returned a cursor it had already returned ('a'): its paging loops"),
    ([{"data": [{"name": "no id"}], "has_more": False}],
     "Example GET /items returned a malformed object (no id) at position 0"),
    ([{"data": objs("a")}], "Example GET /items returned a page without has_more"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_starting_after_refuses_degenerate_pages(
    respx_mock: respx.MockRouter, bodies: list[dict[str, Any]], message: str
) -> None:
    route = respx_mock.get("/items").mock(side_effect=replies(*bodies))
    with pytest.raises(ProviderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(pages(get("/items"), StartingAfterPaginator("Example GET /items")))
    assert route.call_count == len(bodies)


@respx.mock(base_url=API)
def test_starting_after_cannot_follow_an_empty_page(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/items").mock(side_effect=replies({"data": [], "has_more": True}))
    paginator = StartingAfterPaginator("Example GET /items", empty_with_more="follow")
    with pytest.raises(ProviderError, match="no cursor to go on from"):
        list(pages(get("/items"), paginator))


def test_an_unknown_empty_page_rule_is_refused() -> None:
    options: dict[str, Any] = {"empty_with_more": "stop"}
    with pytest.raises(ValueError, match="empty_with_more"):
        StartingAfterPaginator("Example GET /items", **options)


# -- a cursor in the body ------------------------------------------------------------


def notion_style(cursor: str | None = None, **options: Any) -> BodyCursorPaginator:
    return BodyCursorPaginator("Example GET /items", cursor, param="start_cursor",
                               next_path=("next_cursor",), has_more="has_more",
                               **options)  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_body_cursor_pages_and_resumes_with_a_prefix(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/items").mock(side_effect=replies(
        {"data": objs("a"), "has_more": True, "next_cursor": "c1"},
        {"data": [], "has_more": True, "next_cursor": "c2"},
        {"data": objs("b"), "has_more": False, "next_cursor": None},
        {"data": objs("b"), "has_more": False, "next_cursor": "ignored"},
    ))  # fmt: skip
    follow = notion_style(None, empty_with_more="follow", prefix="trash:")
    assert list(pages(get("/items"), follow)) == [
        (["a"], "trash:c1"),
        ([], "trash:c2"),
        (["b"], None),
    ]
    resumed = notion_style("trash:c2", empty_with_more="follow", prefix="trash:")
    assert list(pages(get("/items"), resumed)) == [(["b"], None)]
    assert [call.request.url.params.get("start_cursor") for call in route.calls] == [
        None, "c1", "c2", "c2"]  # fmt: skip


def test_a_bare_prefix_is_the_start() -> None:
    paginator = notion_style("trash:", prefix="trash:")
    assert paginator.raw is None and paginator.prepare({"limit": 2}) == {"limit": 2}


@pytest.mark.parametrize(("bodies", "message"), [
    ([{"data": [], "has_more": True, "next_cursor": "c1"}],
     "returned an empty page that says more follow"),
    ([{"data": objs("a"), "has_more": True, "next_cursor": None}],
     "returned has_more without a next_cursor"),
    ([{"data": objs("a"), "has_more": True, "next_cursor": "c1"},
      {"data": objs("b"), "has_more": True, "next_cursor": "c1"}],
     "returned a cursor it had already returned ('c1'): its paging loops"),
    ([{"data": [{"id": ""}], "has_more": False}], "malformed object (no id) at position 0"),
    ([{"data": objs("a"), "next_cursor": "c1"}], "returned a page without has_more"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_body_cursor_refuses_degenerate_pages(
    respx_mock: respx.MockRouter, bodies: list[dict[str, Any]], message: str
) -> None:
    respx_mock.get("/items").mock(side_effect=replies(*bodies))
    with pytest.raises(ProviderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(pages(get("/items"), notion_style()))


@respx.mock(base_url=API)
def test_a_resumed_cursor_that_comes_back_is_a_loop(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/items").mock(
        side_effect=replies({"data": objs("a"), "has_more": True, "next_cursor": "c1"})
    )
    with pytest.raises(ProviderError, match="its paging loops"):
        list(pages(get("/items"), notion_style("c1")))


def intercom_style(cursor: str | None = None) -> BodyCursorPaginator:
    return BodyCursorPaginator("Example POST /search", cursor,
                               param=("pagination", "starting_after"),
                               next_path=("pages", "next", "starting_after"),
                               empty_with_more="follow")  # fmt: skip


def following(after: str | None) -> dict[str, Any]:
    return {"type": "pages", "next": {"starting_after": after}} if after else {"type": "pages"}


@respx.mock(base_url=API, assert_all_called=True)
def test_a_nested_cursor_goes_into_the_request_body(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/search").mock(side_effect=replies(
        {"data": objs(1), "pages": following("WzFd")},
        {"data": [], "pages": following("WzJd")},
        {"data": objs(3), "pages": following(None)},
    ))  # fmt: skip
    request = {"query": {"field": "x"}, "pagination": {"per_page": 2}}
    assert list(pages(post("/search"), intercom_style(), request)) == [
        ([1], "WzFd"),
        ([], "WzJd"),
        ([3], None),
    ]
    sent = [json.loads(call.request.content) for call in route.calls]
    assert [s["pagination"] for s in sent] == [
        {"per_page": 2},
        {"per_page": 2, "starting_after": "WzFd"},
        {"per_page": 2, "starting_after": "WzJd"},
    ]
    assert all(s["query"] == {"field": "x"} for s in sent)
    assert request == {"query": {"field": "x"}, "pagination": {"per_page": 2}}


@respx.mock(base_url=API)
def test_a_nested_cursor_that_repeats_fails(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("/search").mock(side_effect=replies(
        {"data": [], "pages": following("WzFd")},
        {"data": [], "pages": following("WzFd")},
    ))  # fmt: skip
    with pytest.raises(ProviderError, match="Example POST /search returned a cursor it had"):
        list(pages(post("/search"), intercom_style(), {"pagination": {"per_page": 2}}))


# -- scroll --------------------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_a_scroll_sends_its_param_back_and_counts_pages(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/scroll").mock(side_effect=replies(
        {"data": objs("a"), "scroll_param": "s1"},
        {"data": objs("b"), "scroll_param": "s1"},
        {"data": [], "scroll_param": "s1"},
    ))  # fmt: skip
    scroll = ScrollPaginator("Example GET /scroll", "scroll:4", param="scroll_param")
    assert list(pages(get("/scroll"), scroll, {})) == [
        (["a"], "scroll:5"),
        (["b"], "scroll:6"),
        ([], None),
    ]
    assert [call.request.url.params.get("scroll_param") for call in route.calls] == [
        None, "s1", "s1"]  # fmt: skip


@respx.mock(base_url=API, assert_all_called=True)
def test_a_restarted_scroll_starts_over_and_counts_on(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/scroll").mock(side_effect=replies(
        {"data": objs("a"), "scroll_param": "s1"},
        {"data": objs("a"), "scroll_param": "s2"},
        {"data": []},
    ))  # fmt: skip
    scroll = ScrollPaginator("Example GET /scroll", "an older form", param="scroll_param")
    first = paginate(get("/scroll"), {}, scroll, data)
    assert next(first)[1] == "scroll:1"
    first.close()
    scroll.restart()
    assert [c for _, c in paginate(get("/scroll"), {}, scroll, data)] == ["scroll:2", None]
    assert [call.request.url.params.get("scroll_param") for call in route.calls] == [
        None, None, "s2"]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), [
    ({"data": objs("a")}, "returned companies without a scroll_param: the scroll cannot go on"),
    ({"data": objs("a"), "scroll_param": ""}, "returned companies without a scroll_param"),
    ({"data": [{"id": None}], "scroll_param": "s1"}, r"malformed object \(no id\) at position 0"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_a_scroll_refuses_degenerate_pages(
    respx_mock: respx.MockRouter, body: dict[str, Any], message: str
) -> None:
    respx_mock.get("/scroll").mock(side_effect=replies(body))
    scroll = ScrollPaginator("Example GET /scroll", param="scroll_param", noun="companies")
    with pytest.raises(ProviderError, match=message):
        list(pages(get("/scroll"), scroll, {}))


# -- page number ---------------------------------------------------------------------


@respx.mock(base_url=API, assert_all_called=True)
def test_page_numbers_end_at_a_short_page_and_resume(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/items").mock(side_effect=replies(
        {"data": objs("a", "b")},
        {"data": objs("c")},
        {"data": objs("c")},
    ))  # fmt: skip
    assert list(pages(get("/items"), PageNumberPaginator("Example GET /items", page_size=2))) == [
        (["a", "b"], "2"),
        (["c"], None),
    ]
    resumed = PageNumberPaginator("Example GET /items", "2", page_size=2)
    assert list(pages(get("/items"), resumed)) == [(["c"], None)]
    assert [call.request.url.params["page"] for call in route.calls] == ["1", "2", "2"]


@respx.mock(base_url=API, assert_all_called=True)
def test_page_numbers_follow_a_total(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/items").mock(side_effect=replies(
        {"data": objs("a"), "total_pages": 2},
        {"data": objs("b", "c"), "total_pages": 2},
    ))  # fmt: skip
    paginator = PageNumberPaginator("Example GET /items", page_size=2, total_pages="total_pages")
    assert list(pages(get("/items"), paginator)) == [(["a"], "2"), (["b", "c"], None)]


@pytest.mark.parametrize(("bodies", "message"), [
    ([{"data": [], "total_pages": 3}], "returned an empty page that says more follow"),
    ([{"data": [{"x": 1}], "total_pages": 1}], r"malformed object \(no id\) at position 0"),
    ([{"data": objs("a")}], "returned a page without total_pages"),
    ([{"data": objs("a"), "total_pages": 3}, {"data": objs("a"), "total_pages": 3}],
     "returned page 2 the same as the page before: its paging loops"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_page_numbers_refuse_degenerate_pages(
    respx_mock: respx.MockRouter, bodies: list[dict[str, Any]], message: str
) -> None:
    respx_mock.get("/items").mock(side_effect=replies(*bodies))
    paginator = PageNumberPaginator("Example GET /items", page_size=2, total_pages="total_pages")
    with pytest.raises(ProviderError, match=message):
        list(pages(get("/items"), paginator))


def test_a_saved_cursor_that_is_not_a_page_number_is_refused() -> None:
    with pytest.raises(ProviderError, match="'x9' is not a page number"):
        PageNumberPaginator("Example GET /items", "x9", page_size=2)
