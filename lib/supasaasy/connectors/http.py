"""Provider HTTP with bounded retries: 429 and 5xx are retried with backoff that
honours Retry-After; exhausted retries and other errors raise ProviderError."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from ..errors import OutOfTimeError
from ..redact import redact
from .base import ProviderError

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
