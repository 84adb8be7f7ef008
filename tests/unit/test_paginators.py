"""The paginators against respx-mocked list endpoints: each paging style to its end, resumed
from a saved cursor, and refusing degenerate pages (never a loop or a silent end)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from supasaasy.connectors import ProviderError
from supasaasy.connectors.paginators import (
    BodyCursorPaginator,
    NextUrlPaginator,
    PageNumberPaginator,
    Paginator,
    ScrollPaginator,
    SearchAfterPaginator,
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


# -- the next page's URL in the body -------------------------------------------------

FIRST = f"{API}/v2/items"
# Each page names the next as a root-relative, an absolute, a path-relative and a
# query-only URL, relative to the page that names it (not to the first).
LINKED: dict[str | None, dict[str, Any]] = {
    None: {"data": objs("a", "b"), "links": {"next": "/v2/items?cursor=c1&limit=2"}},
    "c1": {"data": objs("c", "d"), "links": {"next": f"{API}/v2/more/items?cursor=c2"}},
    "c2": {"data": objs("e", "f"), "links": {"next": "items?cursor=c3&limit=2"}},
    "c3": {"data": objs("g", "h"), "links": {"next": "?cursor=c4&limit=2"}},
    "c4": {"data": objs("i"), "links": {"next": None}},
}
SAVED = [
    f"url:{API}/v2/items?cursor=c1&limit=2",
    f"url:{API}/v2/more/items?cursor=c2",
    f"url:{API}/v2/more/items?cursor=c3&limit=2",
    f"url:{API}/v2/more/items?cursor=c4&limit=2",
]


def linked(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=LINKED[request.url.params.get("cursor")])


def at_url(paginator: Paginator) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A fetch as a connector writes it for a paginator that names the next page's URL:
    no params for an empty request, as httpx would replace the URL's query with them."""

    def fetch(params: dict[str, Any]) -> dict[str, Any]:
        assert paginator.url is not None
        with httpx.Client(base_url=API) as client:
            found: dict[str, Any] = client.get(paginator.url, params=params or None).json()
            return found

    return fetch


def next_url(cursor: str | None = None, **options: Any) -> NextUrlPaginator:
    options = {"next_path": ("links", "next"), **options}
    return NextUrlPaginator("Example GET /v2/items", cursor, url=FIRST, **options)


def url_pages(paginator: Paginator) -> list[tuple[list[Any], str | None]]:
    return list(pages(at_url(paginator), paginator, {"limit": 2, "state": "open"}))


@respx.mock(base_url=API, assert_all_called=True)
def test_next_urls_are_followed_as_given_and_resume(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(path__regex=r"^/v2/(more/)?items$").mock(side_effect=linked)
    full = url_pages(next_url(prefix="url:"))
    assert full == [
        (["a", "b"], SAVED[0]),
        (["c", "d"], SAVED[1]),
        (["e", "f"], SAVED[2]),
        (["g", "h"], SAVED[3]),
        (["i"], None),
    ]
    urls = [cursor.removeprefix("url:") for cursor in SAVED]
    for n, cursor in enumerate(SAVED, start=1):
        assert url_pages(next_url(cursor, prefix="url:")) == full[n:]
    sent = [str(call.request.url) for call in route.calls]
    assert sent == [f"{FIRST}?limit=2&state=open", *urls, *(u for n in range(4) for u in urls[n:])]


@respx.mock(base_url=API, assert_all_called=True)
def test_next_urls_stop_when_has_more_is_false(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v2/items").mock(side_effect=replies(
        {"data": objs("a"), "paging": {"next": "/v2/items?p=2"}, "more": True},
        {"data": [], "paging": {"next": "/v2/items?p=3"}, "more": True},
        {"data": objs("b"), "paging": {"next": "/v2/items?p=4"}, "more": False},
    ))  # fmt: skip
    paginator = next_url(next_path=("paging", "next"), has_more="more", empty_with_more="follow")
    assert url_pages(paginator) == [
        (["a"], f"{FIRST}?p=2"),
        ([], f"{FIRST}?p=3"),
        (["b"], None),
    ]


@pytest.mark.parametrize(("bodies", "message"), [
    ([{"data": objs("a"), "next": "/v2/items?cursor=c1"},
      {"data": objs("b"), "next": f"{API}/v2/items?cursor=c1"}],
     f" returned a cursor it had already returned ('{FIRST}?cursor=c1'): its paging loops"),
    ([{"data": [], "next": "/v2/items?cursor=c1"}],
     " returned an empty page that says more follow"),
    ([{"data": [*objs("a"), {"name": "no id"}], "next": None}],
     " returned a malformed object (no id) at position 1"),
    ([{"data": objs("a"), "next": "https://elsewhere.test/v2/items?cursor=c1"}],
     ": the next URL 'https://elsewhere.test/v2/items?cursor=c1' is not on"
     " https://api.example.test: not followed (the credentials would go there)"),
    ([{"data": objs("a"), "next": "//elsewhere.test/v2/items"}],
     ": the next URL 'https://elsewhere.test/v2/items' is not on https://api.example.test"),
    ([{"data": objs("a"), "next": "http://api.example.test/v2/items?cursor=c1"}],
     ": the next URL 'http://api.example.test/v2/items?cursor=c1' is not on"),
    ([{"data": objs("a"), "next": "https://api.example.test:8443/v2/items"}],
     ": the next URL 'https://api.example.test:8443/v2/items' is not on"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_next_urls_refuse_degenerate_pages(
    respx_mock: respx.MockRouter, bodies: list[dict[str, Any]], message: str
) -> None:
    route = respx_mock.get("/v2/items").mock(side_effect=replies(*bodies))
    with pytest.raises(ProviderError, match=re.escape(f"Example GET /v2/items{message}")):
        url_pages(next_url(next_path=("next",)))
    assert route.call_count == len(bodies)


@respx.mock(base_url=API)
def test_next_urls_need_a_url_when_has_more(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/v2/items").mock(side_effect=replies({"data": objs("a"), "has_more": True}))
    with pytest.raises(ProviderError, match=r"returned has_more without a links\.next"):
        url_pages(next_url(has_more="has_more"))


def test_a_saved_next_url_elsewhere_is_refused() -> None:
    with pytest.raises(
        ProviderError, match=r"the saved cursor 'https://elsewhere\.test/x' is not on"
    ):
        next_url("https://elsewhere.test/x")
    with pytest.raises(ValueError, match="url must be absolute"):
        NextUrlPaginator("Example GET /v2/items", url="/v2/items", next_path=("next",))


def test_other_paginators_have_no_url() -> None:
    assert StartingAfterPaginator("Example GET /items").url is None
    assert next_url().url == FIRST and next_url(SAVED[0], prefix="url:").url == SAVED[0][4:]


# -- search after: the last object's sort values -------------------------------------


def keyset(
    items: Objects, fields: tuple[str, ...], size: int
) -> Callable[[httpx.Request], httpx.Response]:
    """A POST /search that sorts `items` on `fields` and answers the page after the
    body's `search_after` (one value for one field)."""

    def answer(request: httpx.Request) -> httpx.Response:
        after = json.loads(request.content).get("search_after")
        key = (lambda o: [o[f] for f in fields]) if len(fields) > 1 else (lambda o: o[fields[0]])
        rest = [o for o in sorted(items, key=key) if after is None or key(o) > after]
        return httpx.Response(200, json={"data": rest[:size]})

    return answer


ITEMS = [{"id": "a", "updated_at": 10}, {"id": "b", "updated_at": 10},
         {"id": "c", "updated_at": 11.5}, {"id": "d", "updated_at": 12},
         {"id": "e", "updated_at": 13}]  # fmt: skip


def search_after(cursor: str | None = None, **options: Any) -> SearchAfterPaginator:
    options = {"fields": ("updated_at", "id"), "page_size": 2, **options}
    return SearchAfterPaginator("Example POST /search", cursor, **options)


@respx.mock(base_url=API, assert_all_called=True)
def test_search_after_two_fields_to_a_short_page_and_resumes(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/search").mock(side_effect=keyset(ITEMS, ("updated_at", "id"), 2))
    request = {"query": {"match_all": {}}, "size": 2}
    full = list(pages(post("/search"), search_after(prefix="after:"), request))
    assert full == [
        (["a", "b"], 'after:[10,"b"]'),
        (["c", "d"], 'after:[12,"d"]'),
        (["e"], None),
    ]
    assert [json.loads(call.request.content).get("search_after") for call in route.calls] == [
        None, [10, "b"], [12, "d"]]  # fmt: skip
    for n, (_, cursor) in enumerate(full[:-1], start=1):
        assert list(pages(post("/search"), search_after(cursor, prefix="after:"), request)) == (
            full[n:])  # fmt: skip
    assert request == {"query": {"match_all": {}}, "size": 2}


@respx.mock(base_url=API, assert_all_called=True)
def test_search_after_one_field_sends_one_value_to_an_empty_page(
    respx_mock: respx.MockRouter,
) -> None:
    items = [{"id": n, "rank": rank} for n, rank in enumerate((0.5, 1.25, 2.0, 7.75))]
    route = respx_mock.post("/search").mock(side_effect=keyset(items, ("rank",), 2))
    full = list(pages(post("/search"), search_after(fields=("rank",)), {"size": 2}))
    assert full == [([0, 1], "[1.25]"), ([2, 3], "[7.75]"), ([], None)]
    assert [json.loads(call.request.content) for call in route.calls] == [
        {"size": 2}, {"size": 2, "search_after": 1.25},
        {"size": 2, "search_after": 7.75}]  # fmt: skip
    for n, (_, cursor) in enumerate(full[:-1], start=1):
        resumed = search_after(cursor, fields=("rank",))
        assert list(pages(post("/search"), resumed, {"size": 2})) == full[n:]


@respx.mock(base_url=API, assert_all_called=True)
def test_search_after_in_a_query_and_has_more(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("/items").mock(side_effect=replies(
        {"data": [{"id": 1}], "has_more": True},
        {"data": [{"id": 2}, {"id": 3}], "has_more": False},
    ))  # fmt: skip
    paginator = search_after(fields=("id",), param="after", has_more="has_more")
    assert list(pages(get("/items"), paginator)) == [([1], "[1]"), ([2, 3], None)]
    assert [call.request.url.params.get("after") for call in route.calls] == [None, "1"]


@respx.mock(base_url=API, assert_all_called=True)
def test_search_after_descending(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("/search").mock(side_effect=replies(
        {"data": [{"id": "b", "at": "2024-05-02"}, {"id": "a", "at": "2024-05-01"}]},
        {"data": [{"id": "c", "at": "2024-04-30"}]},
    ))  # fmt: skip
    paginator = search_after(fields=("at",), descending=True)
    assert list(pages(post("/search"), paginator, {})) == [
        (["b", "a"], '["2024-05-01"]'), (["c"], None)]  # fmt: skip


def rows(*pairs: tuple[Any, Any]) -> Objects:
    return [{"id": i, "updated_at": at} for at, i in pairs]


@pytest.mark.parametrize(("cursor", "bodies", "message"), [
    (None, [{"data": rows((10, "a"), (10, "b"))}, {"data": rows((10, "a"), (10, "b"))}],
     'returned a page ending at [10,"b"], not after [10,"b"]: its paging loops'),
    (None, [{"data": rows((10, "a"), (12, "b"))}, {"data": rows((11, "c"), (11, "d"))}],
     'returned a page ending at [11,"d"], not after [12,"b"]: its paging loops'),
    ('[10,"b"]', [{"data": rows((10, "a"), (10, "b"))}],
     'returned a page ending at [10,"b"], not after [10,"b"]: its paging loops'),
    (None, [{"data": rows((10, "a"), (10, "b"))}, {"data": rows(("x", "c"))}],
     'returned a page ending at ["x","c"], not after [10,"b"]: its paging loops'),
    (None, [{"data": [*rows((10, "a")), {"id": "b"}]}],
     "returned an object without updated_at (a string or number) at position 1"),
    (None, [{"data": [{"id": "a", "updated_at": None}, *rows((11, "b"))]}],
     "returned an object without updated_at (a string or number) at position 0"),
    (None, [{"data": [{"updated_at": 10}]}], "returned a malformed object (no id) at position 0"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_search_after_refuses_degenerate_pages(
    respx_mock: respx.MockRouter, cursor: str | None, bodies: list[dict[str, Any]], message: str
) -> None:
    route = respx_mock.post("/search").mock(side_effect=replies(*bodies))
    with pytest.raises(ProviderError, match=re.escape(f"Example POST /search {message}")):
        list(pages(post("/search"), search_after(cursor), {}))
    assert route.call_count == len(bodies)


@pytest.mark.parametrize(("body", "message"), [
    ({"data": [], "has_more": True}, "returned an empty page that says more follow"),
    ({"data": rows((10, "a"))}, "returned a page without has_more"),
])  # fmt: skip
@respx.mock(base_url=API)
def test_search_after_has_more_refuses_degenerate_pages(
    respx_mock: respx.MockRouter, body: dict[str, Any], message: str
) -> None:
    respx_mock.post("/search").mock(side_effect=replies(body))
    with pytest.raises(ProviderError, match=re.escape(f"Example POST /search {message}")):
        list(pages(post("/search"), search_after(has_more="has_more"), {}))


@pytest.mark.parametrize("cursor", ["not json", "[10]", '{"updated_at": 10}', '[10, {"id": 1}]'])
def test_a_saved_cursor_that_is_not_the_sort_values_is_refused(cursor: str) -> None:
    message = f"the saved cursor {cursor!r} is not a JSON list of 2 sort values (updated_at, id)"
    with pytest.raises(ProviderError, match=re.escape(message)):
        search_after(f"after:{cursor}", prefix="after:")
