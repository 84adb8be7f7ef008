"""FakeIntercom: cursor lists (`per_page`, `pages.next.starting_after`), the company
scroll (`scroll_param`, an empty page at its end), admins in one list, conversations
retrieved one by one with their parts, and the `updated_at` searches (the change feed,
which leaves deleted objects out)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from .fake import CONTRADICTIONS, FakeProvider, FakeResource, Handler, Refused, Request, Slice

SCROLL_END = ""  # a scroll's position once its last page is served


class FakeIntercom(FakeProvider):
    connector = "intercom"
    resources: ClassVar[dict[str, FakeResource]] = {
        # A scroll has no `has_more`: an empty page is its end, not a contradiction.
        "company": FakeResource(contradictions=frozenset({"missing_id", "repeat_cursor"})),
        "contact": FakeResource(archivable=True, contradictions=frozenset(CONTRADICTIONS)),
        "admin": FakeResource(paged=False, has_created_time=False, has_updated_time=False),
        "conversation": FakeResource(archivable=True, contradictions=frozenset(CONTRADICTIONS)),
        "conversation_part": FakeResource(),
    }

    def __init__(self) -> None:
        super().__init__()
        self.scrolls: dict[str, str | None] = {}  # scroll_param -> the last id served

    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        return [
            ("GET", "/companies/scroll", self.scroll),
            ("GET", "/contacts", lambda r: self.cursor_list(r, "contact", "data")),
            ("GET", "/conversations", lambda r: self.cursor_list(r, "conversation",
                                                                 "conversations")),
            ("GET", "/conversations/{id}", self.conversation),
            ("GET", "/admins", self.admins),
            ("POST", "/contacts/search", lambda r: self.search(r, "contact", "data")),
            ("POST", "/conversations/search", lambda r: self.search(r, "conversation",
                                                                    "conversations")),
        ]  # fmt: skip

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"type": "error.list", "errors": [{"code": f"http_{status}", "message": message}]}

    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        stamp = int(when.timestamp())
        times = {"created_at": stamp, "updated_at": stamp}
        if resource == "company":
            return {"type": "company", "id": f"comp_{number:05d}", "name": f"Company {number}",
                    "company_id": f"remote_{number}", **times}  # fmt: skip
        if resource == "contact":
            return {"type": "contact", "id": f"cont_{number:05d}", "role": "user",
                    "email": f"person{number}@example.com", "archived": False, **times}  # fmt: skip
        if resource == "admin":
            return {"type": "admin", "id": str(990000 + number), "name": f"Admin {number}",
                    "email": f"admin{number}@example.com"}  # fmt: skip
        conversation_id = str(100000 + number)
        for n in (1, 2):
            part = {"type": "conversation_part", "id": f"{conversation_id}{n:02d}",
                    "part_type": "comment", "body": f"<p>{n}</p>", **times}  # fmt: skip
            self.add("conversation_part", part, when, parent=conversation_id)
        return {"type": "conversation", "id": conversation_id, "title": f"About {number}",
                "state": "open", "open": True, **times}  # fmt: skip

    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        obj["updated_at"] = int(when.timestamp())
        obj["title" if resource == "conversation" else "name"] = f"Renamed {obj['id']}"

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        if resource == "conversation":
            obj.update(state="closed", open=False)
        else:
            obj["archived"] = True

    # -- endpoints -----------------------------------------------------------------

    def scroll(self, request: Request) -> dict[str, Any]:
        """One scroll_param for all its pages; the position is kept here."""
        param = request.query.get("scroll_param")
        if param is None:
            param = f"scroll-{len(self.scrolls) + 1}"
            self.scrolls[param] = None
        if param not in self.scrolls:
            raise Refused(404, "scroll_param not found")
        position = self.scrolls[param]
        companies: list[dict[str, Any]] = []
        if position != SCROLL_END:
            page = self.page_of(request, sorted(self.listed("company"), key=lambda c: c["id"]),
                                position, self.page_size)  # fmt: skip
            companies = page.objects
            self.scrolls[param] = page.cursor if page.more else SCROLL_END
        return {"type": "list", "data": companies, "pages": None, "total_count": None,
                "scroll_param": param}  # fmt: skip

    def cursor_list(self, request: Request, resource: str, key: str) -> dict[str, Any]:
        per_page = int(request.query.get("per_page", "50"))
        found = sorted(self.listed(resource), key=lambda o: o["id"])
        page = self.page_of(request, found, request.query.get("starting_after"), per_page)
        return self._list(key, page, per_page)

    def search(self, request: Request, resource: str, key: str) -> dict[str, Any]:
        """`updated_at > value`, newest first, paged by `pagination`."""
        body = request.body
        found = [o for o in self.listed(resource) if o["updated_at"] > body["query"]["value"]]
        found.sort(key=lambda o: (o["updated_at"], o["id"]), reverse=True)
        pagination = body.get("pagination", {})
        per_page = pagination.get("per_page", 50)
        page = self.page_of(request, found, pagination.get("starting_after"), per_page)
        return self._list(key, page, per_page)

    @staticmethod
    def _list(key: str, page: Slice, per_page: int) -> dict[str, Any]:
        pages: dict[str, Any] = {"type": "pages", "per_page": per_page}
        if page.more:
            cursor = {"starting_after": page.cursor} if page.cursor else {}
            pages["next"] = {"per_page": per_page, **cursor}
        return {"type": "list", key: page.objects, "pages": pages}

    def conversation(self, request: Request) -> dict[str, Any]:
        conversation_id = request.params["id"]
        if conversation_id not in self.objects["conversation"]:
            raise Refused(404, "Resource Not Found")
        parts = self.children("conversation_part", conversation_id)
        return {**self.objects["conversation"][conversation_id], "conversation_parts": {
            "type": "conversation_part.list", "conversation_parts": parts,
            "total_count": len(parts)}}  # fmt: skip

    def admins(self, request: Request) -> dict[str, Any]:
        admins = self.listed("admin")
        page = self.page_of(request, admins, None, len(admins) + 1)
        return {"type": "admin.list", "admins": page.objects}
