"""FakeNotion: the search (`/v1/search`, by last edit time, the trash when asked for it
alone), data sources with their properties, their rows (`/v1/data_sources/{id}/query`),
users, and pages by id; cursors `start_cursor` in, `has_more` / `next_cursor` out. A
deleted data source or page goes to the trash, where the change feed finds it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from .fake import CONTRADICTIONS, Change, FakeProvider, FakeResource, Handler, Refused, Request

TRASHABLE = ("data_source", "page")
ALL_CHANGES: frozenset[Change] = frozenset({"created", "updated", "deleted"})
# `has_more` with a null `next_cursor` says more follow without a cursor.
ALL_CONTRADICTIONS = frozenset(CONTRADICTIONS)


def notion_id(number: int) -> str:
    """A Notion id: a UUID, with dashes."""
    return str(uuid.UUID(int=number))


def notion_time(when: datetime) -> str:
    """Notion's timestamps: whole minutes, UTC, with milliseconds."""
    return when.strftime("%Y-%m-%dT%H:%M:00.000Z")


class FakeNotion(FakeProvider):
    connector = "notion"
    resources: ClassVar[dict[str, FakeResource]] = {
        "data_source": FakeResource(feed=ALL_CHANGES, contradictions=ALL_CONTRADICTIONS),
        "data_source_property": FakeResource(has_created_time=False, has_updated_time=False),
        # An archived row is in the trash, still listed by its data source.
        "page": FakeResource(archivable=True, feed=ALL_CHANGES, contradictions=ALL_CONTRADICTIONS),
        "user": FakeResource(
            has_created_time=False, has_updated_time=False, contradictions=ALL_CONTRADICTIONS
        ),
    }

    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/search", self.search),
            ("GET", "/v1/data_sources/{id}", lambda r: self.retrieve(r, "data_source")),
            ("POST", "/v1/data_sources/{id}/query", self.query),
            ("GET", "/v1/users", self.users),
            ("GET", "/v1/pages/{id}", lambda r: self.retrieve(r, "page")),
        ]

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"object": "error", "status": status, "code": f"http_{status}", "message": message}

    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        times = {"created_time": notion_time(when), "last_edited_time": notion_time(when),
                 "in_trash": False, "archived": False}  # fmt: skip
        if resource == "user":
            return {
                "object": "user",
                "id": notion_id(number),
                "type": "person",
                "name": f"Person {number}",
                "person": {"email": f"p{number}@example.com"},
            }
        if resource == "data_source":
            source_id = notion_id(number)
            properties = {"Name": {"id": "title", "name": "Name", "type": "title", "title": {}},
                          "Done": {"id": f"d{number}", "name": "Done", "type": "checkbox",
                                   "checkbox": {}}}  # fmt: skip
            for schema in properties.values():
                self.add("data_source_property", {"id": f"{source_id}:{schema['id']}"}, when,
                         parent=source_id)  # fmt: skip
            return {"object": "data_source", "id": source_id, "properties": properties,
                    "title": [{"type": "text", "plain_text": f"Table {number}"}],
                    "parent": {"type": "database_id", "database_id": str(uuid.uuid4())},
                    **times}  # fmt: skip
        # Rows spread over two data sources (made when there are fewer).
        sources = self.ids("data_source")
        sources += self.create("data_source", max(0, 2 - len(sources)))
        return {"object": "page", "id": notion_id(number),
                "parent": {"type": "data_source_id", "data_source_id": sources[number % 2]},
                "properties": {"Name": {"id": "title", "type": "title",
                                        "title": [{"plain_text": f"Row {number}"}]}},
                **times}  # fmt: skip

    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        if resource == "user":
            obj["name"] = f"Renamed {obj['id']}"
        else:
            obj["last_edited_time"] = notion_time(when)

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        obj.update(in_trash=True, archived=True)

    def delete(self, resource: str, object_id: str) -> None:
        if resource in TRASHABLE:
            self.touch(resource, self.objects[resource][object_id], self.now())
            self.mark_archived(resource, self.objects[resource][object_id])
        super().delete(resource, object_id)

    # -- endpoints -----------------------------------------------------------------

    def search(self, request: Request) -> dict[str, Any]:
        """Live objects of one kind by last edit time, or (asked for alone) those in the
        trash."""
        body = request.body
        kind, in_trash = body["filter"]["value"], body["filter"].get("in_trash", False)
        found = self.listed(kind) + (list(self.removed[kind].values()) if in_trash else [])
        found = [o for o in found if o["in_trash"] == in_trash]
        found.sort(key=lambda o: (o["last_edited_time"], o["id"]),
                   reverse=body["sort"]["direction"] == "descending")  # fmt: skip
        return self._list(request, found, body.get("start_cursor"), body.get("page_size", 100))

    def query(self, request: Request) -> dict[str, Any]:
        source_id = request.params["id"]
        if source_id not in self.objects["data_source"]:
            raise Refused(404, f"Could not find data source with ID: {source_id}")
        rows = [p for p in self.listed("page") if p["parent"]["data_source_id"] == source_id]
        rows.sort(key=lambda o: (o["created_time"], o["id"]))
        body = request.body or {}
        return self._list(request, rows, body.get("start_cursor"), body.get("page_size", 100))

    def users(self, request: Request) -> dict[str, Any]:
        return self._list(request, self.listed("user"), request.query.get("start_cursor"),
                          int(request.query.get("page_size", "100")))  # fmt: skip

    def retrieve(self, request: Request, resource: str) -> dict[str, Any]:
        """A data source or page, also from the trash."""
        object_id = request.params["id"]
        found = self.objects[resource].get(object_id) or self.removed[resource].get(object_id)
        if found is None:
            raise Refused(404, f"Could not find {resource} with ID: {object_id}")
        return found

    def _list(
        self, request: Request, objects: list[dict[str, Any]], cursor: str | None, size: int
    ) -> dict[str, Any]:
        page = self.page_of(request, objects, cursor, size)
        return {"object": "list", "results": page.objects, "next_cursor": page.cursor,
                "has_more": page.more}  # fmt: skip
