"""Paginators: how one listing moves from page to page, one class per paging style.

- StartingAfterPaginator: the last object's id as the next page's cursor (Stripe).
- BodyCursorPaginator: the next page's cursor read from the body (Notion, Intercom).
- NextUrlPaginator: the next page's URL read from the body, requested as it is.
- ScrollPaginator: one scroll value sent back until an empty page (Intercom companies).
- PageNumberPaginator: numbered pages, to a short page or a total.
- SearchAfterPaginator: the last object's sort values as the next page's start (keyset).

A paginator is made for one listing, from the cursor a task saved (None: from the
start). `prepare` turns the listing's request (query parameters or a JSON body) into the
request for the next page, and `url`, when not None, is where that page is (the fetch
given to `paginate` requests it instead of the listing's path); `update` reads the page
that came back and sets `cursor` to the saved form of the next page's cursor, or None at
the end. `paginate` drives the loop. A provider that contradicts itself fails the
listing with ProviderError instead of ending it early (a full sync would then sweep away
what it did not see) or looping: an object without an id, a cursor that comes back (or
sort values that do not move on), an empty page that says more follow (unless the
paginator is told to follow such pages), more said without a way on.

Saved cursors keep the form a paginator was given (`prefix` + the provider's cursor):
tasks store them and resume from them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from .base import ProviderError

Objects = list[dict[str, Any]]
# Where a cursor goes in a request: a key, or a path of keys into nested objects.
Param = str | Sequence[str]
# What a cursor paginator does with an empty page that says more follow.
EmptyWithMore = Literal["fail", "follow"]


class CursorTrail:
    """The cursors one listing has moved through. A cursor that comes back means the
    provider is looping: ProviderError."""

    def __init__(self, where: str, start: str | None = None) -> None:
        self.where = where
        self.seen: set[str] = {start} if start else set()

    def advance(self, cursor: str) -> str:
        if cursor in self.seen:
            raise ProviderError(
                f"{self.where} returned a cursor it had already returned ({cursor[:64]!r}): "
                "its paging loops"
            )
        self.seen.add(cursor)
        return cursor


def more_without_objects(where: str) -> ProviderError:
    """The error for a page with no objects that says more follow, and no way on."""
    return ProviderError(
        f"{where} returned an empty page that says more follow: the listing cannot go on "
        "and is not complete"
    )


class Paginator(ABC):
    """One listing's paging state. `where` names the listing in errors (e.g. `Stripe GET
    /v1/customers`); `cursor` is the saved cursor of the next page, None for the first
    page of a new listing and, after `update`, at the end."""

    def __init__(self, where: str, cursor: str | None = None, *, prefix: str = "") -> None:
        self.where = where
        self.prefix = prefix
        self.cursor = cursor
        self.done = False

    @property
    def raw(self) -> str | None:
        """The provider's cursor inside the saved one (None or empty: the start)."""
        return (self.cursor.removeprefix(self.prefix) or None) if self.cursor else None

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request for the next page: `request` with the cursor set, if any."""
        return request

    @property
    def url(self) -> str | None:
        """Where the next page is when the paging names it (NextUrlPaginator), else None:
        the fetch requests this absolute URL instead of the listing's, with the prepared
        request as its query, or None when that is empty (httpx replaces a URL's query
        with any params given, even {})."""
        return None

    @abstractmethod
    def update(self, body: dict[str, Any], objects: Objects) -> None:
        """Read a page (its body and its objects): set `cursor` and `done`."""

    def _check_ids(self, objects: Objects) -> None:
        for position, obj in enumerate(objects):
            value = obj.get("id") if isinstance(obj, dict) else None
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise ProviderError(
                    f"{self.where} returned a malformed object (no id) at position {position}"
                )


class _CursorPaginator(Paginator):
    """Paging by a cursor that must not come back, sent as `param` (a query parameter,
    or a path into a JSON body). `empty_with_more`: "fail" refuses an empty page that
    says more follow; "follow" follows its cursor (filtered listings return such
    pages)."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        param: Param,
        empty_with_more: EmptyWithMore = "fail",
        prefix: str = "",
    ) -> None:
        if empty_with_more not in ("fail", "follow"):
            raise ValueError(f"empty_with_more must be 'fail' or 'follow', not {empty_with_more!r}")
        super().__init__(where, cursor, prefix=prefix)
        self.param = (param,) if isinstance(param, str) else tuple(param)
        self.empty_with_more = empty_with_more
        self.trail = CursorTrail(where, self.raw)

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        raw = self.raw
        return with_value(request, self.param, raw) if raw else request

    def update(self, body: dict[str, Any], objects: Objects) -> None:
        self._check_ids(objects)
        following = self._next(body, objects)
        if following is not None and not objects and self.empty_with_more == "fail":
            raise more_without_objects(self.where)
        if following is not None:
            self.trail.advance(following)
        self.cursor = None if following is None else self.prefix + following
        self.done = following is None

    @abstractmethod
    def _next(self, body: dict[str, Any], objects: Objects) -> str | None:
        """The provider's cursor of the next page, None at the end."""


class StartingAfterPaginator(_CursorPaginator):
    """The last object's id as the next page's cursor (`starting_after`), while the
    body's `has_more` (a boolean) says more follow. Stripe's lists and events."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        param: Param = "starting_after",
        has_more: str = "has_more",
        empty_with_more: EmptyWithMore = "fail",
        prefix: str = "",
    ) -> None:
        super().__init__(where, cursor, param=param, empty_with_more=empty_with_more, prefix=prefix)
        self.has_more = has_more

    def _next(self, body: dict[str, Any], objects: Objects) -> str | None:
        more = body.get(self.has_more)
        if not isinstance(more, bool):
            raise ProviderError(f"{self.where} returned a page without {self.has_more}")
        if not more:
            return None
        if not objects:
            if self.empty_with_more == "fail":
                raise more_without_objects(self.where)
            raise ProviderError(
                f"{self.where} returned an empty page that says more follow: without an "
                "object there is no cursor to go on from"
            )
        return str(objects[-1]["id"])


class BodyCursorPaginator(_CursorPaginator):
    """The next page's cursor read from the body at `next_path`; with `has_more`, a
    boolean in the body says whether more follow (and then the cursor must be there);
    with `more_at`, a value at that path says more follow (and then the cursor must be
    there); without either, a missing cursor is the end. Notion (`next_cursor`,
    `has_more`), Intercom (`pages.next.starting_after`, `pages.next`)."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        param: Param,
        next_path: Sequence[str],
        has_more: str | None = None,
        more_at: Sequence[str] | None = None,
        empty_with_more: EmptyWithMore = "fail",
        prefix: str = "",
    ) -> None:
        super().__init__(where, cursor, param=param, empty_with_more=empty_with_more, prefix=prefix)
        self.next_path = tuple(next_path)
        self.has_more = has_more
        self.more_at = tuple(more_at) if more_at is not None else None

    def _next(self, body: dict[str, Any], objects: Objects) -> str | None:
        found = value_at(body, self.next_path)
        following = found if isinstance(found, str) and found else None
        if self.more_at is not None and value_at(body, self.more_at) is not None and not following:
            said, way = ".".join(self.more_at), ".".join(self.next_path)
            raise ProviderError(f"{self.where} returned {said} without a {way}: more follow,"
                                " with no way on")  # fmt: skip
        if self.has_more is None:
            return following
        more = body.get(self.has_more)
        if not isinstance(more, bool):
            raise ProviderError(f"{self.where} returned a page without {self.has_more}")
        if more and following is None:
            raise ProviderError(
                f"{self.where} returned {self.has_more} without a {'.'.join(self.next_path)}"
            )
        return following if more else None


class NextUrlPaginator(BodyCursorPaginator):
    """The next page's URL read from the body at `next_path` (absolute, or relative to
    the page that names it), with `has_more` as in BodyCursorPaginator. `url` is the
    listing's absolute URL: the first page, requested with the listing's request; next
    pages are requested at their URL as it is (its query holds everything), with an
    empty request. A URL on another origin (scheme, host, port) than `url` is refused:
    the credentials would go there. Saved cursors are `prefix` and the absolute URL.

    The fetch given to `paginate` requests `paginator.url`, e.g.
    `paginate(lambda query: http.get_json(pages.url, query or None), ...)`."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        url: str,
        next_path: Sequence[str],
        has_more: str | None = None,
        empty_with_more: EmptyWithMore = "fail",
        prefix: str = "",
    ) -> None:
        if not urlsplit(url).netloc:
            raise ValueError(f"url must be absolute, not {url!r}")
        # param=(): the cursor is the URL itself, never a parameter (see prepare).
        super().__init__(where, cursor, param=(), next_path=next_path, has_more=has_more,
                         empty_with_more=empty_with_more, prefix=prefix)  # fmt: skip
        self.first = url
        if self.raw:
            self._same_origin(self.raw, "saved cursor")

    @property
    def url(self) -> str:
        return self.raw or self.first

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        return {} if self.raw else request

    def _next(self, body: dict[str, Any], objects: Objects) -> str | None:
        following = super()._next(body, objects)
        if following is None:
            return None
        return self._same_origin(urljoin(self.url, following), "next URL")

    def _same_origin(self, url: str, what: str) -> str:
        origin = urlsplit(self.first)
        found = urlsplit(url)
        if (found.scheme.lower(), found.netloc.lower()) != (
            origin.scheme.lower(), origin.netloc.lower()):  # fmt: skip
            raise ProviderError(
                f"{self.where}: the {what} {url[:200]!r} is not on {origin.scheme}://"
                f"{origin.netloc}: not followed (the credentials would go there)"
            )
        return url


class ScrollPaginator(Paginator):
    """A scroll: the body's `param` (one value for the whole scroll, not a place in it)
    is sent back for the next page, and an empty page ends it. A scroll cannot resume
    from a given point: its saved cursors are `prefix` and a page number, counted on
    from the saved one, that only keep checkpoints distinct. `restart` starts the
    scroll again (after an expired or failed one), counting on. A page of nothing but
    objects the scroll has already passed is a loop."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        param: str,
        prefix: str = "scroll:",
        noun: str = "objects",
    ) -> None:
        super().__init__(where, cursor, prefix=prefix)
        self.noun = noun
        number = self.raw or ""
        self.page_number = int(number) if cursor and cursor.startswith(prefix) and (
            number.isdigit()) else 0  # fmt: skip
        self.param = param
        self.scroll: str | None = None
        self.scrolled: set[Any] = set()  # the ids this scroll has passed

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        return {**request, self.param: self.scroll} if self.scroll else request

    def restart(self) -> None:
        self.scroll = None
        self.done = False
        self.scrolled.clear()

    def update(self, body: dict[str, Any], objects: Objects) -> None:
        self._check_ids(objects)
        self.page_number += 1
        if not objects:
            self.cursor, self.done = None, True
            return
        ids = {obj["id"] for obj in objects}
        if ids <= self.scrolled:
            raise ProviderError(f"{self.where} returned a page of {self.noun} it had already "
                                "returned: its scroll loops")  # fmt: skip
        self.scrolled |= ids
        scroll = body.get(self.param)
        if not isinstance(scroll, str) or not scroll:
            raise ProviderError(
                f"{self.where} returned {self.noun} without a {self.param}: the scroll cannot go"
                " on and is not complete"
            )
        self.scroll = scroll
        self.cursor = f"{self.prefix}{self.page_number}"


class PageNumberPaginator(Paginator):
    """Numbered pages (`param`, from `first`), ending at a page with fewer than
    `page_size` objects, or past `total_pages` when the body has that number. A page
    the same as the one before (a page number ignored) is a loop. Saved cursors are the
    next page's number."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        param: Param = "page",
        page_size: int,
        first: int = 1,
        total_pages: str | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__(where, cursor, prefix=prefix)
        raw = self.raw
        if raw is not None and not raw.isdigit():
            raise ProviderError(f"{where}: the saved cursor {raw[:64]!r} is not a page number")
        self.param = (param,) if isinstance(param, str) else tuple(param)
        self.page = int(raw) if raw is not None else first
        self.page_size = page_size
        self.total_pages = total_pages
        self.last_ids: list[Any] = []

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        return with_value(request, self.param, self.page)

    def update(self, body: dict[str, Any], objects: Objects) -> None:
        self._check_ids(objects)
        total = body.get(self.total_pages) if self.total_pages else None
        if self.total_pages is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise ProviderError(f"{self.where} returned a page without {self.total_pages}")
        more = self.page < total if isinstance(total, int) else len(objects) >= self.page_size
        if more and not objects:
            raise more_without_objects(self.where)
        ids = [obj["id"] for obj in objects]
        if ids and ids == self.last_ids:
            raise ProviderError(
                f"{self.where} returned page {self.page} the same as the page before: its"
                " paging loops"
            )
        self.last_ids = ids
        self.page += 1
        self.cursor = f"{self.prefix}{self.page}" if more else None
        self.done = not more


class SearchAfterPaginator(Paginator):
    """Keyset paging (Elasticsearch's `search_after`, `after` on a sort key): the next
    page starts after the last object's values of `fields` (the listing's sort, all one
    way: `descending` or not), sent as `param`, a list (one value for one field). A page
    shorter than `page_size` ends it or, given `has_more`, that boolean in the body says
    whether more follow. Values that are not after the page before's are a loop. Saved
    cursors are `prefix` and the values as a JSON list."""

    def __init__(
        self,
        where: str,
        cursor: str | None = None,
        *,
        fields: Sequence[str],
        page_size: int,
        param: Param = "search_after",
        has_more: str | None = None,
        descending: bool = False,
        prefix: str = "",
    ) -> None:
        super().__init__(where, cursor, prefix=prefix)
        self.fields = tuple(fields)
        self.page_size = page_size
        self.param = (param,) if isinstance(param, str) else tuple(param)
        self.has_more = has_more
        self.descending = descending
        raw = self.raw
        self.values = None if raw is None else self._saved(raw)

    def _saved(self, raw: str) -> list[Any]:
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, list) or len(values) != len(self.fields) or not all(
            map(_sortable, values)):  # fmt: skip
            raise ProviderError(
                f"{self.where}: the saved cursor {raw[:64]!r} is not a JSON list of"
                f" {len(self.fields)} sort values ({', '.join(self.fields)})"
            )
        return values

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.values is None:
            return request
        values = self.values if len(self.values) > 1 else self.values[0]
        return with_value(request, self.param, values)

    def update(self, body: dict[str, Any], objects: Objects) -> None:
        self._check_ids(objects)
        rows = [[self._value(obj, field, at) for field in self.fields]
                for at, obj in enumerate(objects)]  # fmt: skip
        more = body.get(self.has_more) if self.has_more else len(objects) >= self.page_size
        if not isinstance(more, bool):
            raise ProviderError(f"{self.where} returned a page without {self.has_more}")
        if more and not objects:
            raise more_without_objects(self.where)
        if rows and self.values is not None and not self._after(rows[-1], self.values):
            raise ProviderError(
                f"{self.where} returned a page ending at {_compact(rows[-1])}, not after"
                f" {_compact(self.values)}: its paging loops"
            )
        self.values = rows[-1] if rows else self.values
        self.cursor = self.prefix + _compact(rows[-1]) if more else None
        self.done = not more

    def _value(self, obj: dict[str, Any], field: str, position: int) -> Any:
        value = obj.get(field)
        if not _sortable(value):
            raise ProviderError(
                f"{self.where} returned an object without {field} (a string or number)"
                f" at position {position}"
            )
        return value

    def _after(self, values: list[Any], before: list[Any]) -> bool:
        try:
            return values < before if self.descending else values > before
        except TypeError:
            return False


def paginate(
    fetch: Callable[[dict[str, Any]], dict[str, Any]],
    request: dict[str, Any],
    paginator: Paginator,
    objects: Callable[[dict[str, Any]], Objects],
) -> Iterator[tuple[Objects, str | None]]:
    """(objects, saved cursor after them or None at the end) for each page: `fetch` gets
    the request of each page, `objects` reads (and checks) a page's objects."""
    while True:
        body = fetch(paginator.prepare(request))
        found = objects(body)
        paginator.update(body, found)
        yield found, paginator.cursor
        if paginator.done:
            return


def _sortable(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _compact(values: list[Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


def value_at(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` (keys into nested objects) in `body`, or None."""
    found: Any = body
    for key in path:
        found = found.get(key) if isinstance(found, dict) else None
    return found


def with_value(request: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `request` with `value` at `path` (copying the objects along it)."""
    head, *rest = path
    if not rest:
        return {**request, head: value}
    inner = request.get(head)
    nested = inner if isinstance(inner, dict) else {}
    return {**request, head: with_value(nested, tuple(rest), value)}
