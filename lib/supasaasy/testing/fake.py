"""FakeProvider: a provider's API over objects in memory, served by a real HTTP server on
127.0.0.1 (a random port) in a background thread, with injected faults and pages that
contradict themselves. See the package docstring for how to write one."""

from __future__ import annotations

import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..config import AppConfig

Contradiction = Literal["missing_id", "empty_with_more", "repeat_cursor", "more_without_cursor"]
CONTRADICTIONS: tuple[Contradiction, ...] = (
    "missing_id", "empty_with_more", "repeat_cursor", "more_without_cursor")  # fmt: skip
Change = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class FakeResource:
    """What a fake provider holds and does for one resource type of its connector.

    `paged`: listed over several pages (`populate` makes three pages' worth).
    `archivable`: `archive` gives an object the connector must store archived.
    `feed`: the changes its change feed (what the incremental sync reads) reports; a
    deletion comes as a Deletion or a record marked archived. Deleted objects the feed
    leaves out go with a full sync's sweep.
    `has_created_time` / `has_updated_time`: its objects say when they were created and
    last changed (records must carry those times).
    `contradictions`: those its listing can express (default: `missing_id`, and when
    paged `empty_with_more` and `repeat_cursor`; `more_without_cursor` where a page can
    say more follow without naming a cursor)."""

    paged: bool = True
    archivable: bool = False
    feed: frozenset[Change] = frozenset({"created", "updated"})
    has_created_time: bool = True
    has_updated_time: bool = True
    contradictions: frozenset[Contradiction] | None = None

    @property
    def contradicted_by(self) -> frozenset[Contradiction]:
        if self.contradictions is not None:
            return self.contradictions
        return frozenset(CONTRADICTIONS[:3] if self.paged else ("missing_id",))


@dataclass
class Request:
    """One request the fake received: `query` (last value of each parameter), `body`
    (parsed JSON, or None), `headers` (names in lower case), `params` (the route's
    `{placeholders}`), `at` (time.monotonic() on arrival), `status` (answered with)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    at: float = 0.0
    status: int | None = None


@dataclass(frozen=True)
class Reply:
    """An answer other than `200` with a JSON object."""

    status: int
    body: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Refused(Exception):
    """Raised by a handler: answer `status` with the provider's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Slice:
    """One page of a listing: its objects, whether more follow, and the cursor of the
    next page (the id of the page's last object; None at the end)."""

    objects: list[dict[str, Any]]
    more: bool
    cursor: str | None


@dataclass
class _Fault:
    status: int
    remaining: int
    path: str | None
    retry_after: float | None


@dataclass
class _Armed:
    kind: Contradiction
    path: str | None
    remaining: int | None


Handler = Callable[[Request], "dict[str, Any] | Reply"]


class FakeProvider(ABC):
    """A provider's API in memory. Subclasses set `connector` and `resources`, and
    implement `routes`, `new_object` and `touch` (and `mark_archived` when a resource is
    archivable); `changed` hears every change (for change feeds), `delete` and `archive`
    may be overridden where the provider does otherwise."""

    connector: ClassVar[str]
    resources: ClassVar[Mapping[str, FakeResource]]
    page_size: ClassVar[int] = 3
    app_key: ClassVar[str] = "conformance"
    # Settings the connector must refuse, each naming its field.
    invalid_settings: ClassVar[Mapping[str, Any]] = {"page_size": 0}

    def __init__(self) -> None:
        self.api_key_env = re.sub(r"[^A-Z0-9]", "_", self.connector.upper()) + "_CONFORMANCE_KEY"
        self.api_key = f"conformance-secret-{secrets.token_hex(12)}"
        self.objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in self.resources}
        self.removed: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in self.resources}
        self.created_at: dict[tuple[str, str], datetime] = {}
        self.updated_at: dict[tuple[str, str], datetime] = {}
        self.parents: dict[tuple[str, str], str] = {}
        self.requests: list[Request] = []
        self.served: list[tuple[Contradiction, str]] = []
        self.errors: list[str] = []  # exceptions of handlers: bugs of the fake
        self.epoch = self.now() - timedelta(days=30)
        self._numbers = 0
        self._faults: list[_Fault] = []
        self._armed: list[_Armed] = []
        self._lock = threading.RLock()
        self._routes = [
            (method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), handler)
            for method, path, handler in self.routes()
        ]
        self._server: _Server | None = None

    # -- what a provider defines ---------------------------------------------------

    @abstractmethod
    def routes(self) -> Iterable[tuple[str, str, Handler]]:
        """(method, path with `{placeholders}`, handler) of each endpoint; a handler takes
        the Request and returns a JSON object (200) or a Reply, or raises Refused."""

    @abstractmethod
    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        """Object `number` of `resource` in the provider's shape, created (and last
        changed) at `when`; it may `add` children."""

    @abstractmethod
    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        """Change `obj` as an edit at `when` would (its update time included)."""

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        """Make `obj` one the connector should store archived."""
        raise NotImplementedError(f"{type(self).__name__} cannot archive a {resource}")

    def changed(  # noqa: B027  (optional hook)
        self, resource: str, change: Change, obj: dict[str, Any], when: datetime
    ) -> None:
        """Called after each change (a change feed records it here)."""

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The provider's error body."""
        return {"error": {"message": message}}

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def settings(self) -> dict[str, Any]:
        """The app's `config` pointing the connector here (small pages)."""
        return {"api_key_env": self.api_key_env, "api_base": self.base_url,
                "page_size": self.page_size}  # fmt: skip

    # -- running -------------------------------------------------------------------

    def start(self) -> FakeProvider:
        server = _Server(self)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()  # fmt: skip
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def app_config(self, **config: Any) -> AppConfig:
        """An app of the connector against this fake; `config` adds or replaces settings."""
        return AppConfig(app_key=self.app_key, connector=self.connector,
                         config={**self.settings(), **config})  # fmt: skip

    def environ(self) -> dict[str, str]:
        """The environment variables the connector reads (the API key)."""
        return {self.api_key_env: self.api_key}

    # -- objects -------------------------------------------------------------------

    @staticmethod
    def now() -> datetime:
        """The current time, to the minute (every provider can say it exactly)."""
        return datetime.now(UTC).replace(second=0, microsecond=0)

    def add(
        self, resource: str, obj: dict[str, Any], when: datetime, *, parent: str | None = None
    ) -> None:
        """Hold `obj` (its `id` a string) as created at `when`, a child of `parent`."""
        key = (resource, obj["id"])
        self.objects[resource][obj["id"]] = obj
        self.created_at[key] = self.updated_at[key] = when
        if parent is not None:
            self.parents[key] = parent

    def create(self, resource: str, count: int = 1, *, at: datetime | None = None) -> list[str]:
        """`count` new objects, created a minute apart from 30 days ago, or all `at`."""
        made = []
        for _ in range(count):
            self._numbers += 1
            when = at or self.epoch + timedelta(minutes=self._numbers)
            obj = self.new_object(resource, self._numbers, when)
            self.add(resource, obj, when)
            self.changed(resource, "created", obj, when)
            made.append(obj["id"])
        return made

    def populate(self, resource: str) -> list[str]:
        """Objects enough for three pages (two when not paged); their ids."""
        return self.create(resource, 2 * self.page_size + 1 if self.resources[resource].paged
                           else 2)  # fmt: skip

    def update(self, resource: str, object_id: str) -> None:
        when = self.now()
        obj = self.objects[resource][object_id]
        self.touch(resource, obj, when)
        self.updated_at[(resource, object_id)] = when
        self.changed(resource, "updated", obj, when)

    def archive(self, resource: str, object_id: str) -> None:
        when = self.now()
        obj = self.objects[resource][object_id]
        self.touch(resource, obj, when)
        self.mark_archived(resource, obj)
        self.updated_at[(resource, object_id)] = when
        self.changed(resource, "updated", obj, when)

    def delete(self, resource: str, object_id: str) -> None:
        """Gone from listings (kept in `removed`), with its children."""
        obj = self.objects[resource].pop(object_id)
        self.removed[resource][object_id] = obj
        for (child, child_id), parent in list(self.parents.items()):
            if parent == object_id and child_id in self.objects[child]:
                self.removed[child][child_id] = self.objects[child].pop(child_id)
        self.changed(resource, "deleted", obj, self.now())

    def ids(self, resource: str) -> list[str]:
        return list(self.objects[resource])

    def listed(self, resource: str) -> list[dict[str, Any]]:
        return list(self.objects[resource].values())

    def children(self, resource: str, parent_id: str) -> list[dict[str, Any]]:
        return [o for i, o in self.objects[resource].items()
                if self.parents.get((resource, i)) == parent_id]  # fmt: skip

    def parent_of(self, resource: str, object_id: str) -> str | None:
        return self.parents.get((resource, object_id))

    # -- faults --------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int, *, path: str | None = None, retry_after: float | None = None
    ) -> None:
        """The next `count` requests (to `path`, if given) answer `status`, with a
        Retry-After of `retry_after` seconds if given; queued after earlier faults."""
        with self._lock:
            self._faults.append(_Fault(status, count, path, retry_after))

    def contradict(
        self, kind: Contradiction, *, path: str | None = None, times: int | None = 1
    ) -> None:
        """The next `times` list pages (of `path`, if given; None: every page from now on)
        contradict themselves: `missing_id`, an object without an id; `empty_with_more`
        and `repeat_cursor` (on pages that continue a listing), an empty page that says
        more follow, or the page before again, each naming the cursor it was asked for;
        `more_without_cursor`, a page that says more follow and names no cursor."""
        with self._lock:
            self._armed.append(_Armed(kind, path, times))

    def page_of(
        self, request: Request, objects: Sequence[dict[str, Any]], after: str | None, size: int
    ) -> Slice:
        """The page of `objects` after the one whose id is `after` (the start when None),
        as armed contradictions have it; an unknown cursor is refused (400)."""
        ids = [o.get("id") for o in objects]
        if after is not None and after not in ids:
            raise Refused(400, f"unknown cursor {after!r}")
        start = 0 if after is None else ids.index(after) + 1
        page = list(objects[start : start + size])
        more = start + size < len(objects)
        found = Slice(page, more, str(page[-1]["id"]) if more else None)
        kind = self._take_contradiction(request.path, continuing=after is not None, empty=not page)
        if kind == "missing_id":
            page[0] = {k: v for k, v in page[0].items() if k != "id"}
            found = Slice(page, found.more, found.cursor)
        elif kind == "empty_with_more":
            found = Slice([], True, after)
        elif kind == "repeat_cursor":
            found = Slice(list(objects[max(0, start - size) : start]), True, after)
        elif kind == "more_without_cursor":
            found = Slice(page, True, None)
        if kind is not None:
            self.served.append((kind, request.path))
        return found

    def _take_contradiction(
        self, path: str, *, continuing: bool, empty: bool
    ) -> Contradiction | None:
        with self._lock:
            for armed in self._armed:
                if armed.path not in (None, path) or armed.remaining == 0:
                    continue
                if (armed.kind == "missing_id" and empty) or (
                    armed.kind in ("empty_with_more", "repeat_cursor") and not continuing
                ):
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                return armed.kind
        return None

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.path in (None, path):
                    fault.remaining -= 1
                    return fault
        return None

    # -- answering -----------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        """The reply to one request: a fault, a refusal, or its route's answer."""
        with self._lock:
            self.requests.append(request)
            if not self.authorized(request):
                return Reply(401, self.error_body(401, "missing or wrong API key"))
            fault = self._take_fault(request.path)
            if fault is not None:
                # Echoes the credential, as some providers do: it must not reach a message.
                credential = request.headers.get("authorization", "").rpartition(" ")[2]
                message = f"injected {fault.status} for the key {credential}"
                headers = {} if fault.retry_after is None else {
                    "Retry-After": str(fault.retry_after)}  # fmt: skip
                return Reply(fault.status, self.error_body(fault.status, message), headers)
            for method, pattern, handler in self._routes:
                matched = pattern.match(request.path)
                if method == request.method and matched:
                    request.params = matched.groupdict()
                    try:
                        body = handler(request)
                    except Refused as refused:
                        return Reply(refused.status, self.error_body(refused.status, str(refused)))
                    except Exception as exc:
                        self.errors.append(f"{request.method} {request.path}: {exc!r}")
                        return Reply(500, self.error_body(500, "the fake failed"))
                    return body if isinstance(body, Reply) else Reply(200, body)
            return Reply(404, self.error_body(404, f"no route {request.method} {request.path}"))


class _Server(ThreadingHTTPServer):
    def __init__(self, provider: FakeProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client
    disable_nagle_algorithm = True  # small answers go at once, not after a delayed ACK

    def _serve(self) -> None:
        assert isinstance(self.server, _Server)
        provider = self.server.provider
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = Request(self.command, url.path, dict(parse_qsl(url.query)), None,
                          {k.lower(): v for k, v in self.headers.items()},
                          at=time.monotonic())  # fmt: skip
        try:
            request.body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            reply = Reply(400, provider.error_body(400, "the body is not JSON"))
        else:
            reply = provider.answer(request)
        request.status = reply.status
        content = orjson.dumps(reply.body) if reply.body is not None else b""
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the provider keeps `requests`."""
