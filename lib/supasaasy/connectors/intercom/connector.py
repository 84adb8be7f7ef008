"""Intercom: companies, contacts, admins, conversations and their parts.

Pages are read as raw JSON with httpx, `Intercom-Version` pinned: response shapes change
between versions (the company scroll's list key, for one), so the version is not a
setting. Each resource pages the way its endpoint does:

- contacts, conversations: `GET /contacts`, `GET /conversations` with `per_page` and
  the `starting_after` cursor Intercom returns in `pages.next`; a Page's cursor is that
  `starting_after`.
- companies: the scroll API (`GET /companies/scroll`, then `scroll_param`):
  `/companies` and `/companies/list` page by offset and stop at 10,000 companies. A
  scroll cannot continue from a given point, and its `scroll_param` names the scroll,
  not a place in it, so its requests are not retried (but for a 429): an expired scroll,
  a 5xx (Intercom's 500 asks for a restart) or a lost answer start it again from the
  beginning, and so does a resumed task (its cursor is a page number, kept only to keep
  checkpoints distinct). Companies written before a restart stay seen by the task; the
  new scroll re-reads them, and the writer finds them unchanged. Intercom allows one open
  scroll per app: a `scroll_exists` 400 waits and tries again, a bounded number of times.
- admins: one `GET /admins`, not paged.
- conversation parts: only `GET /conversations/{id}` carries them (the list and the
  search leave them out, and it caps them at 500), so each conversation costs one request
  of its own besides its share of a list page. Each part is a record of its own, with
  the conversation's id added as `conversation_id`.

Incremental syncs (contacts and conversations) search on `updated_at` through
`POST /contacts/search` and `POST /conversations/search`, newest first, paged with
`starting_after` in the body. Contact search compares timestamps by UTC day only, so
it asks for the whole day of the watermark; conversations from the watermark's second.
Both reach `search_overlap_seconds` further back, for the search index's delay. An
incremental conversation also states its whole set of parts (a ChildSet), so parts
removed upstream go. Search does not return deleted objects: they leave with the next
full sync's sweep. Companies and admins cannot be searched by update time and always
sync in full.

Webhooks are notifications (`topic`, `created_at`, the object in `data.item`) signed as
`X-Hub-Signature: sha1=<hex HMAC-SHA1 of the body keyed with the app's client secret>`.
The item is stored as it comes, ordered by its `updated_at`; a deleted contact, company
or conversation (its parts along) leaves with its notification, whose item is only the
object's identity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import orjson
from pydantic import Field

from ...errors import OutOfTimeError
from .. import register
from ..base import (
    ChildSet,
    ConfigError,
    ConnectorMetadata,
    Deletion,
    Listing,
    Page,
    ProviderError,
    Resource,
    SignatureError,
    WebhookEvent,
    WebhookEventError,
    hmac_matches,
    prefixed_signature,
)
from ..http import HttpConnector, HttpSettings, ProviderClient
from ..paginators import BodyCursorPaginator, Objects, ScrollPaginator, paginate

log = logging.getLogger("supasaasy.connectors.intercom")

API_VERSION = "2.14"
DAY_SECONDS = 24 * 3600
# A company scroll that fails (expired, asked to restart, already open) is started again
# at most this often per sync call.
MAX_SCROLL_RESTARTS = 3
# Seconds to wait when another scroll is open: an abandoned one expires a minute after
# its last use.
SCROLL_BUSY_WAIT = 30.0
# Company page cursors: this and a page number. They only keep checkpoints distinct.
SCROLL_MARK = "scroll:"


def _archived(obj: dict[str, Any]) -> bool:
    """Objects Intercom marks archived or deleted."""
    return obj.get("archived") is True or obj.get("deleted") is True


def _closed(conversation: dict[str, Any]) -> bool:
    """Closed conversations are stored archived, as the original connector has it."""
    return conversation.get("state") == "closed"


# Intercom's cursor paging: `pages.next.starting_after`; `pages.next` is absent on the last
# page, and a `pages.next` without its cursor is refused. An empty page that names a next
# one is followed, never taken as the end.
_cursor_pages = partial(
    BodyCursorPaginator,
    param="starting_after",
    next_path=("pages", "next", "starting_after"),
    more_at=("pages", "next"),
    empty_with_more="follow",
)
_search_pages = partial(_cursor_pages, param=("pagination", "starting_after"))


def _search(path: str, key: str) -> Listing:
    """A search on `updated_at`, newest first (as the writer expects of a change feed)."""
    return Listing(path, key, _search_pages, "POST",
                   {"sort": {"field": "updated_at", "order": "descending"}},
                   ("pagination", "per_page"))  # fmt: skip


RESOURCES = (
    Resource("company", "intercom_company", "Intercom companies", supports_incremental=False,
             archived=_archived, created_field="created_at", updated_field="updated_at"),
    Resource("contact", "intercom_contact", "Intercom contacts (users and leads)",
             listing=Listing("/contacts", "data", _cursor_pages, page_size_param="per_page"),
             archived=_archived, created_field="created_at", updated_field="updated_at"),
    Resource("admin", "intercom_admin", "Intercom admins (teammates)",
             supports_incremental=False, listing=Listing("/admins", "admins"),
             archived=_archived),
    Resource("conversation", "intercom_conversation", "Intercom conversations",
             listing=Listing("/conversations", "conversations", _cursor_pages,
                             page_size_param="per_page"),
             archived=_closed, created_field="created_at", updated_field="updated_at"),
    Resource("conversation_part", "intercom_conversation_part",
             "Intercom conversation parts (messages and actions)",
             supports_incremental=False, synced_with_parent="conversation",
             created_field="created_at", updated_field="updated_at"),
)  # fmt: skip

PART_COLLECTION = "intercom_conversation_part"
PART_PARENT_FIELD = "conversation_id"

SEARCHES = {
    "contact": _search("/contacts/search", "data"),
    "conversation": _search("/conversations/search", "conversations"),
}
# A notification's item, by its `type`: the resource it is an object of.
WEBHOOK_ITEMS = {"contact": "contact", "user": "contact", "lead": "contact",
                 "company": "company", "conversation": "conversation"}  # fmt: skip
# Topics whose item is gone upstream: `<object>[.<kind>].deleted`, whose item is the
# object's identity only (type and id), never to be stored in place of the object.
# `conversation.deleted` takes the conversation's parts along.
DELETED_SUFFIX = ".deleted"


class IntercomSettings(HttpSettings):
    """The `config` of an app whose connector is `intercom`; `webhook_secret_env` names
    the app's client secret, which signs its webhooks."""

    api_base: str = Field(default="https://api.intercom.io", pattern=r"^https?://\S+$")
    page_size: int = Field(default=50, ge=1, le=150)
    search_overlap_seconds: int = Field(default=300, ge=0, le=DAY_SECONDS)


class IntercomClient(ProviderClient):
    """ProviderClient with Intercom's error bodies and its rate-limit header: a 429
    without Retry-After waits until `X-RateLimit-Reset` (epoch seconds), within the retry
    policy's `max_delay`."""

    def _retry_after(self, response: httpx.Response) -> str | None:
        """Retry-After if given; for a 429, else the seconds until X-RateLimit-Reset."""
        given: str | None = response.headers.get("Retry-After")
        if given is not None or response.status_code != 429:
            return given
        try:
            wait = float(response.headers["X-RateLimit-Reset"]) - self.clock()
        except (KeyError, ValueError):
            return None
        return str(wait) if wait > 0 else None

    @staticmethod
    def _message(response: httpx.Response) -> str:
        """Intercom's own messages (`errors: [{code, message}]`), never our request."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return response.reason_phrase
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list):
            texts = []
            for error in errors:
                if isinstance(error, dict) and isinstance(error.get("message"), str):
                    code = error.get("code")
                    texts.append(f"{error['message']} ({code})" if code else error["message"])
            if texts:
                return "; ".join(texts)[:300]
        return ProviderClient._message(response)


@register
class IntercomConnector(HttpConnector):
    metadata = ConnectorMetadata(
        name="intercom",
        display_name="Intercom",
        api_version=API_VERSION,
        resources=RESOURCES,
        sql_files=("20261202000500_intercom_views.sql", "20261202001300_intercom_view_columns.sql"),
    )

    settings_model = IntercomSettings
    settings: IntercomSettings
    client_class = IntercomClient
    # Intercom allows an app 10,000 requests a minute (spread over 10-second windows).
    default_requests_per_second = 100.0

    def headers(self, api_key: str) -> dict[str, str]:
        """The token, and the API version (response shapes change between versions)."""
        return {**super().headers(api_key), "Intercom-Version": API_VERSION}

    @property
    def incremental_horizon(self) -> float | None:
        """None: the search endpoints reach back to any watermark."""
        return None

    # -- full sync -------------------------------------------------------------

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        if self.task_resource(resource_type).listing is None:  # companies
            return self._companies(cursor)
        return super().full_sync(resource_type, cursor=cursor)

    def _companies(self, cursor: str | None) -> Iterator[Page]:
        """The company scroll, from its beginning whatever the cursor: Intercom cannot
        continue a scroll from a given point, and pages prefetched past the last one
        written would be skipped. Rows written before a restart stay seen by the task,
        and the new scroll reads and marks them again."""
        scroll = ScrollPaginator(
            "Intercom GET /companies/scroll", cursor, param="scroll_param", prefix=SCROLL_MARK,
            noun="companies",
        )  # fmt: skip
        if cursor is not None:
            log.info("%s company: a scroll cannot resume; starting a new one", self.app.app_key)
        resource = self.metadata.resource("company")
        starts = 0
        while True:
            starts += 1
            try:
                for companies, after in paginate(self._scroll_request, {}, scroll, self._scrolled):
                    page = Page(cursor=after)
                    for company in companies:
                        self.add(page, resource, company)
                    yield page
                return
            except _ScrollRequestFailed as failed:
                exc = failed.error
                busy = _scroll_exists(exc)
                if not (busy or _restarts_scroll(exc)):
                    raise exc from None
                if starts > MAX_SCROLL_RESTARTS:
                    reason = (
                        "another company scroll is open for this app (Intercom allows one at a"
                        " time: is another sync or integration scrolling companies?)"
                        if busy
                        else f"the company scroll was started {starts} times and failed each time"
                    )
                    raise ProviderError(
                        f"Intercom GET /companies/scroll: {reason}; last: {exc}", status=exc.status
                    ) from exc
                if busy:
                    self._wait_for_open_scroll(exc)
                log.warning("%s company: %s; starting the scroll again", self.app.app_key, exc)
                scroll.restart()

    def _scrolled(self, body: dict[str, Any]) -> Objects:
        """A scroll page's companies; the scroll's end is an empty page (some versions
        leave `data` out there)."""
        if body.get("data") is None:
            return []
        return self.page_objects(body, "data", "Intercom GET /companies/scroll")

    def _scroll_request(self, params: dict[str, Any]) -> dict[str, Any]:
        """One scroll page. Never retried but for a 429: the scroll_param names the
        scroll, not a place in it, so a request whose answer was lost may already have
        moved it on."""
        try:
            return self.http.get_json("/companies/scroll", params or None, once=True)
        except ProviderError as exc:
            raise _ScrollRequestFailed(exc) from exc

    def _wait_for_open_scroll(self, exc: ProviderError) -> None:
        """Wait for another open scroll to end or expire, within the time budget."""
        left = self.seconds_left()
        if left is not None and left <= SCROLL_BUSY_WAIT:
            raise OutOfTimeError(f"Intercom GET /companies/scroll: no time left to wait ({exc})")
        self.http.sleep(SCROLL_BUSY_WAIT)

    # -- incremental sync ------------------------------------------------------

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        resource = self.task_resource(resource_type)
        if not resource.supports_incremental:
            raise ConfigError(
                f"intercom has no incremental sync for {resource_type}: it syncs in full"
            )
        query = {"field": "updated_at", "operator": ">",
                 "value": self._updated_after(resource_type, since)}  # fmt: skip
        for objects, after in self.listed(SEARCHES[resource_type], cursor, {"query": query}):
            page = Page(cursor=after)
            for obj in objects:
                self.add(page, resource, obj, incremental=True)
            yield page

    def _updated_after(self, resource_type: str, since: datetime) -> int:
        """The `updated_at >` value that finds every change from `since` on."""
        start = math.floor(since.timestamp()) - self.settings.search_overlap_seconds
        if resource_type == "contact":
            # By UTC day: `> t` means from the day after t's day, so name the day before.
            return start - start % DAY_SECONDS - DAY_SECONDS
        return start - 1

    # -- helpers ---------------------------------------------------------------

    def add(
        self, page: Page, resource: Resource, obj: dict[str, Any], *, incremental: bool = False
    ) -> None:
        """A listed object inside the app's `sync_from`: its record; for a conversation,
        the conversation as retrieved on its own, with its parts."""
        if not self.in_window(resource.resource_type, obj):
            return
        if resource.resource_type == "conversation":
            self._add_conversation(page, _id(obj), incremental)
        else:
            page.records.append(self.record(resource.resource_type, obj))

    def _add_conversation(self, page: Page, conversation_id: str, incremental: bool) -> None:
        """The conversation as retrieved on its own (the only way to its parts), and a
        record per part."""
        try:
            conversation = self.http.get_json(f"/conversations/{conversation_id}")
        except ProviderError as exc:
            if exc.status != 404:
                raise
            # Deleted since it was listed: a full sync's sweep removes it; a change feed
            # says so.
            if incremental:
                page.deletions.append(Deletion("intercom_conversation", conversation_id))
                page.child_sets.append(
                    ChildSet(PART_COLLECTION, PART_PARENT_FIELD, conversation_id)
                )
            return
        self._add_conversation_parts(page, conversation, incremental)

    def _add_conversation_parts(
        self, page: Page, conversation: dict[str, Any], incremental: bool
    ) -> None:
        """A record for the conversation and one per part it lists, and (in a change
        feed, or when the list is cut short) its set of parts."""
        conversation_id = _id(conversation)
        page.records.append(self.record("conversation", conversation))
        listing = conversation.get("conversation_parts")
        found = listing.get("conversation_parts") if isinstance(listing, dict) else None
        where = f"Intercom: the parts of conversation {conversation_id}"
        parts = self.page_objects(listing, "conversation_parts", where) if isinstance(
            listing, dict) and isinstance(found, list) else []  # fmt: skip
        for part in parts:
            page.records.append(
                self.record("conversation_part", {**part, PART_PARENT_FIELD: conversation_id})
            )
        # Parts are replaced only from a whole list. Past Intercom's 500-part cap the list
        # is cut short: the parts stored beyond it stay, in a change feed and in a full
        # sync's sweep alike.
        total = listing.get("total_count") if isinstance(listing, dict) else None
        whole = isinstance(found, list) and (not isinstance(total, int) or total <= len(parts))
        if incremental or not whole:
            page.child_sets.append(
                ChildSet(PART_COLLECTION, PART_PARENT_FIELD, conversation_id, complete=whole)
            )

    # -- webhooks --------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], secret: str) -> None:
        """`X-Hub-Signature: sha1=<hex>`, the HMAC-SHA1 of the body with the client secret."""
        signature = prefixed_signature(headers, "X-Hub-Signature", "sha1=")
        if not hmac_matches(secret, body, signature, "sha1"):
            raise SignatureError("X-Hub-Signature does not match the body")

    def webhook_event(self, event: dict[str, Any]) -> WebhookEvent:
        """The notification's item, stored as of its `updated_at` (a conversation with the
        parts it lists), or deleted as of the notification (`*.deleted` topics; a
        conversation with its parts); other topics (`ping`, tags, admins) change nothing."""
        event_id, topic, created = event.get("id"), event.get("topic"), event.get("created_at")
        data = event.get("data")
        item = data.get("item") if isinstance(data, dict) else None
        if not (isinstance(event_id, str) and event_id and isinstance(topic, str)
                and type(created) is int):  # fmt: skip
            raise WebhookEventError("not an Intercom notification (id, topic, created_at)")
        found = WebhookEvent(event_id, topic, datetime.fromtimestamp(created, UTC))
        resource = WEBHOOK_ITEMS.get(str(item.get("type"))) if isinstance(item, dict) else None
        if resource is None or not self.syncs(resource):
            return found
        assert isinstance(item, dict)
        try:
            item_id = _id(item)
        except ProviderError:
            raise WebhookEventError(f"Intercom {topic} notification: its item has no id") from None
        collection = self.metadata.resource(resource).collection_key
        if topic.endswith(DELETED_SUFFIX):
            found.page = Page(deletions=[Deletion(collection, item_id)])
            if resource == "conversation":
                found.page.child_sets.append(ChildSet(PART_COLLECTION, PART_PARENT_FIELD, item_id))
            return found
        if not self.in_window(resource, item):
            return found
        updated = item.get("updated_at")
        if type(updated) is int:
            found.observed_at = datetime.fromtimestamp(updated, UTC)
        found.page = Page()
        if resource == "conversation":
            self._add_conversation_parts(found.page, item, incremental=True)
            # A notification lists the parts it is about, not all: none is removed.
            found.page.child_sets = []
        else:
            found.page.records.append(self.record(resource, item))
        return found


def _id(obj: dict[str, Any]) -> str:
    value = obj.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ProviderError(f"Intercom returned a malformed {obj.get('type') or 'object'} (no id)")
    return str(value)


class _ScrollRequestFailed(Exception):
    """A company scroll request failed (not a page found malformed)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


def _scroll_exists(exc: ProviderError) -> bool:
    """Intercom's 400 `scroll_exists`: the app has a scroll open already."""
    return exc.status == 400 and "(scroll_exists)" in str(exc)


def _restarts_scroll(exc: ProviderError) -> bool:
    """A failure after which the scroll must start again: an expired scroll_param (404),
    a server error (Intercom's 500 asks for a restart) or no answer at all."""
    return exc.status is None or exc.status == 404 or exc.status >= 500
