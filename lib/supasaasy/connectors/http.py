"""Connectors over a provider's HTTP API.

`ProviderClient` sends requests with bounded retries: 429 and 5xx are retried with
backoff that honours Retry-After; exhausted retries and other errors raise
ProviderError. `HttpConnector` is the base of a connector on it: its settings extend
`HttpSettings` (key variable, `api_base`, page size, request rate, retries, timeout),
its resources say how they are listed (`Listing`), and a full sync of such a resource
pages through its listing with no code of the connector's own.
"""

from __future__ import annotations

import functools
import math
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from ..config import AppConfig
from ..errors import OutOfTimeError
from ..redact import redact
from .base import (
    ENV_NAME,
    ConfigError,
    Connector,
    Listing,
    Page,
    ProviderError,
    RateLimiter,
    RateLimits,
    Resource,
    connector_settings,
    secret_from_env,
)
from .paginators import Objects, paginate, with_value

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry number `attempt` (1-based): what Retry-After asks, at
        most max_delay; without a usable one, exponential backoff with jitter."""
        asked = None if retry_after is None else retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_delay)
        backoff = self.base_delay * 2 ** (attempt - 1)
        return float(min(backoff * random.uniform(0.5, 1.0), self.max_delay))


def retry_after_seconds(value: str, now: datetime | None = None) -> float | None:
    """Retry-After (RFC 9110) as seconds to wait: a finite number of seconds of 0 or
    more, or an HTTP date (its distance from `now`, 0 when past); None for anything else,
    such as `nan`, `inf` or `-5`."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # asctime form or "-0000": HTTP dates are in GMT
            when = when.replace(tzinfo=UTC)
        return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class ProviderClient:
    """JSON from one provider, with retries and a shared request rate. Subclasses
    read their provider's error bodies (`_message`) and rate-limit headers
    (`_retry_after`)."""

    def __init__(
        self,
        name: str,
        client: httpx.Client,
        acquire: Callable[[], None],
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seconds_left: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.name = name
        self.client = client
        self.acquire = acquire  # blocks until the shared request rate allows one more
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        # Of the caller's time budget (None: no budget): no request or retry outlasts it.
        self.seconds_left = seconds_left
        self.clock = time.time  # the wall clock, for rate-limit reset times

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, once: bool = False
    ) -> dict[str, Any]:
        return self.request_json("GET", path, params=params, once=once)

    def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request_json("POST", path, body=body)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        once: bool = False,
    ) -> dict[str, Any]:
        """The JSON object answered; ProviderError once retries run out, or at once for
        an answer that retrying cannot change; OutOfTimeError when the caller's time
        budget ends first (each request's timeout is cut to what is left of it).

        `once`: for a request that must not run twice (it may have changed state before
        its answer was lost), only a 429 is retried; other failures raise at once."""
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        failure = "no request made"
        while True:
            timeout = self._timeout(method, path, failure)
            self.acquire()
            try:
                response = self.client.request(
                    method, path, params=params, content=content, headers=headers,
                    timeout=timeout,
                )  # fmt: skip
            except httpx.TransportError as exc:
                failure = exc.__class__.__name__
                status, retry_after = None, None
            else:
                if response.is_success:
                    return self._object(method, path, response)
                status = response.status_code
                message = redact(self._message(response), self._secrets())
                if status not in RETRYABLE:
                    raise ProviderError(
                        f"{self.name} {method} {path} failed: {status} {message}", status=status
                    )
                failure = f"{status} {message}"
                retry_after = self._retry_after(response)
            attempt += 1
            if once and status != 429:
                raise ProviderError(f"{self.name} {method} {path} failed: {failure}", status=status)
            if attempt > self.retry.max_retries:
                raise ProviderError(
                    f"{self.name} {method} {path} failed after {self.retry.max_retries} "
                    f"retries: {failure}",
                    status=status,
                )
            delay = self.retry.delay(attempt, retry_after)
            left = self.seconds_left()
            if left is not None and delay >= left:
                raise OutOfTimeError(
                    f"{self.name} {method} {path}: no time left to retry ({failure})"
                )
            self.sleep(delay)

    def _timeout(
        self, method: str, path: str, failure: str
    ) -> httpx.Timeout | httpx._client.UseClientDefault:
        """The client's timeout, cut to what is left of the time budget."""
        left = self.seconds_left()
        if left is None:
            return httpx.USE_CLIENT_DEFAULT
        if left <= 0:
            raise OutOfTimeError(f"{self.name} {method} {path}: the time budget is spent"
                                 f" ({failure})")  # fmt: skip
        configured = self.client.timeout.read
        return httpx.Timeout(min(configured, left) if configured is not None else left)

    def _object(self, method: str, path: str, response: httpx.Response) -> dict[str, Any]:
        if not response.content.strip():
            return {}
        try:
            body = orjson.loads(response.content)  # pages are large: orjson is 3x faster
        except orjson.JSONDecodeError:
            raise ProviderError(
                f"{self.name} {method} {path} returned a body that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise ProviderError(f"{self.name} {method} {path} returned JSON that is not an object")
        return body

    def _secrets(self) -> tuple[str, ...]:
        """The credential this client sends, never to be repeated in a message."""
        return (self.client.headers.get("Authorization", "").partition(" ")[2],)

    def _retry_after(self, response: httpx.Response) -> str | None:
        """How long the provider asks us to wait, in seconds (Retry-After)."""
        given: str | None = response.headers.get("Retry-After")
        return given

    @staticmethod
    def _message(response: httpx.Response) -> str:
        """The provider's own error message, if its body has one (never our request),
        with anything shaped like a key redacted."""
        try:
            error = orjson.loads(response.content).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return response.reason_phrase
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return redact(str(error["message"]))[:300]
        if isinstance(error, str):
            return redact(error)[:300]
        return response.reason_phrase


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every provider client (httpx's default, made once): loading the
    CA bundle takes tens of milliseconds, and a worker makes a connector per task."""
    return httpx.create_ssl_context()


class HttpSettings(BaseModel):
    """The `config` every HTTP connector takes; a connector's settings extend it (with
    its own defaults and fields). `api_key_env` defaults to `<CONNECTOR>_API_KEY_<APP>`;
    `requests_per_second` None: the connector's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_env: str = Field(min_length=1, pattern=ENV_NAME)
    api_base: str = Field(pattern=r"^https?://\S+$")
    page_size: int = Field(default=100, ge=1)
    requests_per_second: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # The variable holding the secret that signs the app's webhooks, if it takes any.
    webhook_secret_env: str | None = Field(default=None, pattern=ENV_NAME)


class HttpConnector(Connector):
    """A connector over one provider's HTTP API: `settings_model` its settings,
    `client_class` its ProviderClient (the provider's error bodies and rate-limit
    headers), `headers` what every request carries. A full sync of a resource with a
    `listing` pages through it, each object made a record by `add`; connectors override
    `full_sync` for resources they list otherwise, and `add` for children."""

    settings_model: ClassVar[type[HttpSettings]]
    client_class: ClassVar[type[ProviderClient]] = ProviderClient
    # The request rate when the settings name none (None: unlimited).
    default_requests_per_second: ClassVar[float | None] = None
    # The earliest creation time of the provider's objects, for resources whose listing
    # takes a `created_range` (None: their full sync is not split).
    created_floor: ClassVar[datetime | None] = None

    def __init__(
        self,
        app: AppConfig,
        *,
        rate_limiter: RateLimiter | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        super().__init__(app, rate_limiter=rate_limiter, rate_limits=rate_limits)
        name = self.metadata.name
        self.settings = connector_settings(self.settings_model, app, name)
        api_key = secret_from_env(app, name, self.settings.api_key_env)
        self.http = self.client_class(
            self.metadata.display_name,
            httpx.Client(
                base_url=self.settings.api_base,
                headers=self.headers(api_key),
                timeout=self.settings.timeout_seconds,
                verify=tls_context(),
            ),
            lambda: self.rate_limiter.acquire(),
            RetryPolicy(max_retries=self.settings.max_retries),
            seconds_left=self.seconds_left,
        )

    def headers(self, api_key: str) -> dict[str, str]:
        """The headers of every request: the key as a bearer token, JSON accepted."""
        return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    @property
    def requests_per_second(self) -> float | None:
        return self.settings.requests_per_second or self.default_requests_per_second

    def close(self) -> None:
        self.http.client.close()

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        resource = self.task_resource(resource_type)
        return self.list_pages(resource, cursor, self.list_request(resource))

    def shard_floor(self, resource_type: str) -> datetime | None:
        resource = self.task_resource(resource_type)
        if self.created_floor is None or resource.listing is None:
            return None
        if resource.listing.created_range is None:
            return None
        return max(self.created_floor, self.app.sync_from or self.created_floor)

    def full_sync_range(
        self,
        resource_type: str,
        *,
        created_from: datetime,
        created_before: datetime | None,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        resource = self.task_resource(resource_type)
        if resource.listing is None or resource.listing.created_range is None:
            return super().full_sync_range(
                resource_type, created_from=created_from, created_before=created_before,
                cursor=cursor)  # fmt: skip
        since, before = resource.listing.created_range
        request = {**self.list_request(resource), since: math.ceil(created_from.timestamp())}
        if created_before is not None:
            request[before] = math.ceil(created_before.timestamp())
        return self.list_pages(resource, cursor, request)

    def list_pages(
        self, resource: Resource, cursor: str | None, request: Mapping[str, Any] | None = None
    ) -> Iterator[Page]:
        """The resource's listing (with `request` added) as pages of records, each
        object put in by `add`."""
        if resource.listing is None:
            raise ConfigError(f"{self.metadata.name} {resource.resource_type} has no listing")
        for objects, after in self.listed(resource.listing, cursor, request):
            page = Page(cursor=after)
            for obj in objects:
                self.add(page, resource, obj)
            yield page

    def list_request(self, resource: Resource) -> dict[str, Any]:
        """What a full sync of `resource` adds to its listing's request (e.g. the app's
        `sync_from` as a filter); nothing by default."""
        return {}

    def add(self, page: Page, resource: Resource, obj: dict[str, Any]) -> None:
        """What one listed object puts in its page: its record, when inside the app's
        `sync_from`. Connectors with children extend it."""
        if self.in_window(resource.resource_type, obj):
            page.records.append(self.record(resource.resource_type, obj))

    def listed(
        self,
        listing: Listing,
        cursor: str | None,
        request: Mapping[str, Any] | None = None,
        *,
        prefix: str = "",
    ) -> Iterator[tuple[Objects, str | None]]:
        """(objects, saved cursor after them or None at the end) for each page of
        `listing`, from `cursor`, with `request` added to the listing's own; saved
        cursors start with `prefix`."""
        where = f"{self.metadata.display_name} {listing.method} {listing.path}"
        sent: dict[str, Any] = {**listing.request, **(request or {})}
        if listing.page_size_param is not None:
            param = listing.page_size_param
            sent = with_value(sent, (param,) if isinstance(param, str) else param,
                         self.settings.page_size)  # fmt: skip

        pager = listing.paginator(where, cursor, prefix=prefix) if listing.paginator else None

        def fetch(body: dict[str, Any]) -> dict[str, Any]:
            # A paginator that follows next-page URLs names the page's own.
            path = (pager.url if pager is not None else None) or listing.path
            if listing.method == "GET":
                return self.http.get_json(path, body or None)
            return self.http.post_json(path, body)

        def objects(body: dict[str, Any]) -> Objects:
            return self.page_objects(body, listing.key, where)

        if pager is None:
            yield objects(fetch(sent)), None
            return
        yield from paginate(fetch, sent, pager, objects)

    def page_objects(self, body: dict[str, Any], key: str, where: str) -> Objects:
        """The objects of a page (its `key`), each an object with an id, or ProviderError
        naming what is wrong."""
        found = body.get(key)
        if not isinstance(found, list):
            raise ProviderError(f"{where} returned a page without {key}")
        for position, obj in enumerate(found):
            value = obj.get("id") if isinstance(obj, dict) else None
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                problem = "no id" if isinstance(obj, dict) else "not an object"
                raise ProviderError(
                    f"{where} returned a malformed object ({problem}) at position {position}"
                )
        return found
