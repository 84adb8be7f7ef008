"""Notion: data sources with their properties, the pages in them, and users.

API version 2025-09-03, where data sources (the tables of a database) are objects of
their own. Pages are read as raw JSON with httpx and Notion's cursor pagination
(`start_cursor` in, `has_more` / `next_cursor` out, at most 100 objects a page):

- data sources: `POST /v1/search` filtered to data sources. A full sync reads them
  least recently edited first, so that one edited during the sync moves ahead of the
  reader (and is read) instead of behind it (where the deletion sweep would take it
  for gone). Each brings its properties (its schema), a child collection replaced
  with it; a data source found without them is fetched whole.
- pages: a full sync queries each data source (`POST /v1/data_sources/{id}/query`),
  the exhaustive listing of its rows (search may lag behind edits). The cursor names
  the data source and Notion's cursor within it: `<data source id>:<next_cursor>`.
- users: `GET /v1/users`; users have no edit time, so there is no incremental sync.

Data sources, pages and users are stored under their Notion ids (as Notion writes them,
with dashes) as `external_id`, and their rows are keyed by them too (`entities.id`, see
migration 20261202001400); a property's external_id is `<data source id>:<property id>`.

Incremental syncs of data sources and pages read the search, most recently edited
first, and stop at the watermark less an overlap: Notion stamps edits to the minute
and its search index lags a little behind edits.

Objects in the trash (`archived`, `in_trash`) are stored with `archived_at`, data
sources and pages alike: the trash can give them back (`*.undeleted`, or restored by
hand), and Notion answers 404 once they are deleted for good, when they are deleted here.

Webhook events carry ids only (`entity`), signed as `X-Notion-Signature: sha256=<hex
HMAC-SHA256 of the body keyed with the subscription's verification token>`: the page or
data source is fetched, and stored as it is then (stamped with the time of that request,
finer than Notion's minutes), or deleted when Notion answers 404. The subscription's
one-time verification request (`{"verification_token": ...}`) is not signed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import httpx
import orjson
from pydantic import Field

from .. import register
from ..base import (
    ChildSet,
    ConfigError,
    ConnectorMetadata,
    Deletion,
    Listing,
    Page,
    ProviderError,
    Record,
    Resource,
    SignatureError,
    WebhookEvent,
    WebhookEventError,
    hmac_matches,
    prefixed_signature,
)
from ..http import HttpConnector, HttpSettings, ProviderClient
from ..paginators import BodyCursorPaginator, Objects

log = logging.getLogger("supasaasy.notion")

API_VERSION = "2025-09-03"

DATA_SOURCE = "notion_data_source"
PROPERTY = "notion_data_source_property"
PAGE = "notion_page"
# A change feed's cursor in its second part: the objects moved to the trash since the
# watermark (search leaves them out unless asked for them alone).
TRASH = "trash:"
USER = "notion_user"
# Flags Notion sets on objects in the trash (`is_archived` in later API versions).
ARCHIVE_FLAGS = ("archived", "in_trash", "is_archived")


def _archived(obj: dict[str, Any]) -> bool:
    return any(obj.get(flag) is True for flag in ARCHIVE_FLAGS)


# Notion's cursor paging: `start_cursor` in, `has_more` / `next_cursor` out. An empty page
# with a next cursor is followed (filtered queries return them).
_pages = partial(
    BodyCursorPaginator,
    param="start_cursor",
    next_path=("next_cursor",),
    has_more="has_more",
    empty_with_more="follow",
)


def _list(path: str, method: Literal["GET", "POST"] = "GET") -> Listing:
    return Listing(path, "results", _pages, method, page_size_param="page_size")


SEARCH = _list("/v1/search", "POST")
RESOURCES = (
    Resource("data_source", DATA_SOURCE, "Notion data sources (the tables of databases)",
             archived=_archived, created_field="created_time",
             updated_field="last_edited_time"),
    Resource("data_source_property", PROPERTY, "Notion data source properties (their schema)",
             supports_incremental=False, synced_with_parent="data_source"),
    Resource("page", PAGE, "Notion pages in data sources (database rows)",
             archived=_archived, created_field="created_time",
             updated_field="last_edited_time"),
    Resource("user", USER, "Notion workspace users (people and bots)",
             supports_incremental=False, listing=_list("/v1/users")),
)  # fmt: skip

# Webhook events, by the prefix of their type: the resource their entity is.
WEBHOOK_RESOURCES = {"page.": "page", "data_source.": "data_source"}
# The verification request's body is small: one token.
MAX_VERIFICATION_BYTES = 1024
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class NotionSettings(HttpSettings):
    """The `config` of an app whose connector is `notion`; `webhook_secret_env` names the
    webhook subscription's verification token, which signs its events."""

    api_base: str = Field(default="https://api.notion.com", pattern=r"^https?://\S+$")
    page_size: int = Field(default=100, ge=1, le=100)
    # How far before the watermark an incremental sync reads edits again.
    incremental_overlap_seconds: float = Field(default=300.0, ge=0)


class NotionHttp(ProviderClient):
    """ProviderClient reading Notion's error bodies (`{"object": "error", "code": ...,
    "message": ...}`)."""

    @staticmethod
    def _message(response: httpx.Response) -> str:
        """Notion's own error code and message, if its body has them (never our request)."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return response.reason_phrase
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str):
            return response.reason_phrase
        code = body.get("code")
        return (f"{code}: {message}" if isinstance(code, str) else message)[:300]


@register
class NotionConnector(HttpConnector):
    metadata = ConnectorMetadata(
        name="notion",
        display_name="Notion",
        api_version=API_VERSION,
        resources=RESOURCES,
        sql_files=("20261202000600_notion_views.sql", "20261202001400_notion_entity_ids.sql"),
    )

    settings_model = NotionSettings
    settings: NotionSettings
    client_class = NotionHttp
    # Notion's documented average rate for an integration.
    default_requests_per_second = 3.0

    def headers(self, api_key: str) -> dict[str, str]:
        return {**super().headers(api_key), "Notion-Version": API_VERSION}

    @property
    def incremental_horizon(self) -> float | None:
        return None  # the search reaches back to any edit

    # -- sync ------------------------------------------------------------------

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        self.task_resource(resource_type)
        if resource_type == "data_source":
            return self._data_sources(cursor, since=None)
        if resource_type == "page":
            return self._data_source_rows(cursor)
        return super().full_sync(resource_type, cursor=cursor)

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        resource = self.task_resource(resource_type)
        if not resource.supports_incremental:
            raise ConfigError(f"notion {resource_type} has no incremental sync; run a full sync")
        if resource_type == "data_source":
            yield from self._data_sources(cursor, since=since)
        else:
            yield from self._edited_pages(since, cursor)

    # -- data sources and their properties -------------------------------------

    def _data_sources(self, cursor: str | None, since: datetime | None) -> Iterator[Page]:
        """Every data source (least recently edited first), or those edited since `since`
        (most recently edited first, stopping at the watermark).

        Search may leave data sources out (it never lists those in the trash), so a full
        sync's last page also carries every stored data source the search did not list,
        fetched one by one: as it is (archived while in the trash), or as a deletion
        (with its properties) when Notion answers 404. Nothing is swept for merely not
        being listed."""
        if since is not None and cursor is not None and cursor.startswith(TRASH):
            yield from self._trashed_data_sources(since, cursor)
            return
        floor = self._edited_floor(since) if since is not None else None
        direction = "ascending" if since is None else "descending"
        listed: set[str] = set()
        for objects, after in self._search("data_source", direction, cursor):
            page = Page(cursor=after)
            for obj in objects:
                if obj.get("object") != "data_source":
                    continue
                if floor is not None and _timestamp(obj, "last_edited_time") < floor:
                    page.cursor = None  # the rest were edited before the watermark
                    break
                listed.add(obj["id"])
                if not self._before_sync_from(obj):
                    self._add_data_source(page, obj)
            if page.cursor is None and since is None:
                for source_id in sorted(set(self.stored_ids(DATA_SOURCE)) - listed):
                    self._check_data_source(page, source_id)
            if page.cursor is None and since is not None:
                page.cursor = TRASH
            yield page
            if page.cursor in (None, TRASH):
                break
        if since is not None:
            yield from self._trashed_data_sources(since, TRASH)

    def _trashed_data_sources(self, since: datetime, cursor: str) -> Iterator[Page]:
        """Data sources moved to the trash since `since`: stored archived, with their
        properties (the trash can give them back), as rows in the trash are."""
        for objects, after in self._trashed("data_source", since, cursor):
            page = Page(cursor=after)
            for obj in objects:
                if self._before_sync_from(obj):
                    continue
                if isinstance(obj.get("properties"), dict):
                    self._add_data_source(page, obj)
                else:
                    self._check_data_source(page, obj["id"])
            yield page

    def _check_data_source(self, page: Page, source_id: str) -> None:
        """A data source as Notion has it now (archived while in the trash), or deleted
        with its properties when Notion answers 404 (deleted for good, or no longer
        shared with the integration)."""
        try:
            source = self.http.get_json(f"/v1/data_sources/{source_id}")
        except ProviderError as exc:
            if exc.status != 404:
                raise
            log.info("notion data source %s is gone upstream", source_id)
            page.deletions.append(Deletion(DATA_SOURCE, source_id))
            page.child_sets.append(ChildSet(PROPERTY, "data_source_id", source_id))
            return
        if not self._before_sync_from(source):
            self._add_data_source(page, source)

    def _add_data_source(self, page: Page, found: dict[str, Any]) -> None:
        source_id = found["id"]
        source = found
        if not isinstance(found.get("properties"), dict):
            try:
                source = self.http.get_json(f"/v1/data_sources/{source_id}")
            except ProviderError as exc:
                if exc.status != 404:
                    raise
                log.warning("notion data source %s is gone; skipped", source_id)
                return
        properties = source.get("properties")
        if source.get("id") != source_id or not isinstance(properties, dict):
            raise ProviderError(f"Notion data source {source_id} came without its properties")
        page.records.append(self.record("data_source", source))
        for name, schema in properties.items():
            if not isinstance(schema, dict) or not isinstance(schema.get("id"), str):
                raise ProviderError(
                    f"Notion data source {source_id} has a malformed property {name!r} (no id)"
                )
            page.records.append(
                Record(
                    PROPERTY,
                    f"{source_id}:{schema['id']}",
                    {
                        "data_source_id": source_id,
                        "property_id": schema["id"],
                        "name": name,
                        "type": schema.get("type"),
                        "config": schema,
                    },
                )
            )
        # After this page, the data source's properties are exactly those above.
        page.child_sets.append(ChildSet(PROPERTY, "data_source_id", source_id))

    # -- pages -----------------------------------------------------------------

    def _data_source_rows(self, cursor: str | None) -> Iterator[Page]:
        """The rows of every data source, data source by data source in id order, each
        oldest first. A cursor whose data source is gone resumes at the next one. A data
        source Notion will not query is skipped (its rows leave with the sweep): one gone
        (404), or one search does not list whose query answers 400 and that Notion has in
        the trash (a 400 for any other is a failure: its rows are not swept)."""
        resume_id, _, resume_after = (cursor or "").partition(":")
        every, listed = self._data_source_ids()
        ids = [i for i in every if i >= resume_id]
        if not ids:
            yield Page()
            return
        request: dict[str, Any] = {
            "sorts": [{"timestamp": "created_time", "direction": "ascending"}],
        }
        if self.app.sync_from is not None:
            request["filter"] = {
                "timestamp": "created_time",
                "created_time": {"on_or_after": self.app.sync_from.isoformat()},
            }
        for n, source_id in enumerate(ids):
            following = f"{ids[n + 1]}:" if n + 1 < len(ids) else None
            start = (resume_after or None) if source_id == resume_id else None
            path = f"/v1/data_sources/{source_id}/query"
            try:
                for objects, after in self.listed(_list(path, "POST"), start, request):
                    page = Page(cursor=f"{source_id}:{after}" if after else following)
                    for obj in objects:
                        if obj.get("object") == "page":
                            page.records.append(self.record("page", obj))
                    yield page
            except ProviderError as exc:
                refused = exc.status == 400 and source_id not in listed
                if not (exc.status == 404 or (refused and self._in_trash(source_id))):
                    raise
                log.warning("notion data source %s cannot be queried (%s); its pages skipped",
                            source_id, exc)  # fmt: skip
                if following is None:
                    yield Page()

    def _edited_pages(self, since: datetime, cursor: str | None) -> Iterator[Page]:
        """Rows of data sources edited since `since`, most recently edited first; then
        those moved to the trash since then (stored with archived_at, as a full sync
        stores rows in the trash)."""
        if cursor is None or not cursor.startswith(TRASH):
            floor = self._edited_floor(since)
            for objects, after in self._search("page", "descending", cursor):
                page = Page(cursor=after)
                for obj in objects:
                    if obj.get("object") != "page":
                        continue
                    if _timestamp(obj, "last_edited_time") < floor:
                        page.cursor = None
                        break
                    if _in_data_source(obj) and not self._before_sync_from(obj):
                        page.records.append(self.record("page", obj))
                page.cursor = page.cursor or TRASH
                yield page
                if page.cursor == TRASH:
                    break
            cursor = TRASH
        for objects, after in self._trashed("page", since, cursor):
            records = [self.record("page", obj, archived=True) for obj in objects
                       if _in_data_source(obj) and not self._before_sync_from(obj)]  # fmt: skip
            yield Page(records=records, cursor=after)

    def _trashed(
        self, kind: str, since: datetime, cursor: str
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Objects of `kind` moved to the trash (edited) since `since`, newest first, with
        the cursor after each page (`trash:<Notion's cursor>`, None at the end). Where
        search takes no trash filter (400), there are none to read: they leave with the
        next full sync."""
        floor = self._edited_floor(since)
        request = {
            "filter": {"property": "object", "value": kind, "in_trash": True},
            "sort": {"timestamp": "last_edited_time", "direction": "descending"},
        }
        try:
            for objects, after in self.listed(SEARCH, cursor, request, prefix=TRASH):
                found = [o for o in objects if o.get("object") == kind]
                recent = [o for o in found if _timestamp(o, "last_edited_time") >= floor]
                if after is None or len(recent) < len(found):  # the rest are older
                    yield recent, None
                    return
                yield recent, after
        except ProviderError as exc:
            if exc.status != 400:
                raise
            log.warning("notion search takes no trash filter here (%s): objects moved to the"
                        " trash leave with the next full sync", exc)  # fmt: skip
            yield [], None

    # -- users -----------------------------------------------------------------

    # -- webhooks --------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], secret: str) -> None:
        """`X-Notion-Signature: sha256=<hex>`, the HMAC-SHA256 of the body keyed with the
        verification token."""
        signature = prefixed_signature(headers, "X-Notion-Signature", "sha256=")
        if not hmac_matches(secret, body, signature):
            raise SignatureError("X-Notion-Signature does not match the body")

    def webhook_verification(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """The token of the subscription's verification request: an unsigned body that is
        `{"verification_token": "..."}` alone."""
        if "x-notion-signature" in headers or len(body) > MAX_VERIFICATION_BYTES:
            return None
        try:
            found = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        token = found.get("verification_token") if isinstance(found, dict) else None
        return token if isinstance(token, str) and token and len(found) == 1 else None

    def webhook_event(self, event: dict[str, Any]) -> WebhookEvent:
        """The event's page or data source as Notion has it now; events of other objects
        (databases, comments) or of resources the app does not sync change nothing."""
        event_id, event_type, entity = event.get("id"), event.get("type"), event.get("entity")
        entity_id = entity.get("id") if isinstance(entity, dict) else None
        if not (isinstance(event_id, str) and event_id and isinstance(event_type, str)
                and isinstance(entity_id, str) and entity_id):  # fmt: skip
            raise WebhookEventError("not a Notion event (id, type, entity.id)")
        found = WebhookEvent(event_id, event_type, datetime.now(UTC))
        resource = next((r for prefix, r in WEBHOOK_RESOURCES.items()
                         if event_type.startswith(prefix)), None)  # fmt: skip
        if resource is None or not self.syncs(resource):
            return found
        found.page = Page()
        if resource == "data_source":
            self._check_data_source(found.page, entity_id)
            return found
        try:
            obj = self.http.get_json(f"/v1/pages/{entity_id}")
        except ProviderError as exc:
            if exc.status != 404:
                raise
            found.page.deletions.append(Deletion(PAGE, entity_id))
            return found
        if _in_data_source(obj) and not self._before_sync_from(obj):
            found.page.records.append(self.record("page", obj))
        else:  # a page outside any data source is not synced
            found.page = None
        return found

    # -- helpers ---------------------------------------------------------------

    def _in_trash(self, source_id: str) -> bool:
        """Whether Notion has the data source in the trash (False when it is gone)."""
        try:
            return _archived(self.http.get_json(f"/v1/data_sources/{source_id}"))
        except ProviderError as exc:
            if exc.status != 404:
                raise
            return False

    def _data_source_ids(self) -> tuple[list[str], set[str]]:
        """The data sources whose rows a full sync reads, in id order: those search lists,
        and those stored (search may leave some out, and never lists those in the trash);
        and the set of those search lists."""
        listed = {
            obj["id"]
            for objects, _ in self._search("data_source", "ascending", None)
            for obj in objects
            if obj.get("object") == "data_source"
        }
        return sorted(listed | set(self.stored_ids(DATA_SOURCE))), listed

    def _search(
        self, kind: str, direction: str, cursor: str | None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        request = {
            "filter": {"property": "object", "value": kind},
            "sort": {"timestamp": "last_edited_time", "direction": direction},
        }
        return self.listed(SEARCH, cursor, request)

    def page_objects(self, body: dict[str, Any], key: str, where: str) -> Objects:
        """A list page's objects; a page without `has_more`, or whose results are
        incomplete, fails."""
        if not isinstance(body.get(key), list) or not isinstance(body.get("has_more"), bool):
            raise ProviderError(f"{where} returned a page without {key}/has_more")
        status = body.get("request_status")
        if isinstance(status, dict) and status.get("type") == "incomplete":
            # What was not listed would pass for deleted (or unchanged): fail instead.
            raise ProviderError(
                f"{where} returned incomplete results: {status.get('incomplete_reason')}"
            )
        return super().page_objects(body, key, where)

    def _edited_floor(self, since: datetime) -> datetime:
        """The oldest edit time an incremental sync from `since` reads: the watermark less
        the overlap, down to the minute (Notion's edit times are whole minutes)."""
        floor = since - timedelta(seconds=self.settings.incremental_overlap_seconds)
        return floor.replace(second=0, microsecond=0)

    def _before_sync_from(self, obj: dict[str, Any]) -> bool:
        sync_from = self.app.sync_from
        return sync_from is not None and _timestamp(obj, "created_time") < sync_from


def _timestamp(obj: dict[str, Any], field: str) -> datetime:
    value = obj.get(field)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ProviderError(
            f"Notion {obj.get('object', 'object')} {obj['id']} has no valid {field}"
        )
    return parsed


def _in_data_source(page: dict[str, Any]) -> bool:
    parent = page.get("parent")
    return isinstance(parent, dict) and parent.get("type") == "data_source_id"
