"""The connector interface: one resource of one app, synced page by page.

A connector only reads the provider. It yields `Page`s, each carrying the entities
it holds and the cursor to resume from after it; `supasaasy.sync` writes them,
checkpoints, and stops between pages when the caller asks (by no longer iterating).
"""

from __future__ import annotations

import hmac
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ..config import AppConfig
from ..errors import ConfigError as ConfigError
from ..errors import ProviderError as ProviderError
from ..errors import SignatureError as SignatureError
from ..errors import WebhookEventError as WebhookEventError

if TYPE_CHECKING:
    from .paginators import Paginator

# What a settings field naming an environment variable must look like.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class Listing:
    """How an HTTP connector lists objects, one request per page (see
    `supasaasy.connectors.http.HttpConnector.listed`): `path` answers a body whose `key`
    holds the objects; `paginator` (a Paginator class, or a function taking the same
    `where, cursor, prefix=` arguments) moves from page to page, None for a listing that
    is one page; `request` holds the query parameters (GET) or JSON body (POST) every
    page sends, and the settings' `page_size` goes at `page_size_param`."""

    path: str
    key: str = "data"
    paginator: Callable[..., Paginator] | None = field(default=None, compare=False)
    method: Literal["GET", "POST"] = "GET"
    request: Mapping[str, Any] = field(default_factory=dict, compare=False)
    page_size_param: str | tuple[str, ...] | None = None
    # The parameters selecting objects created from (inclusive) and before (exclusive) a
    # time, in Unix seconds, when the listing takes them: its full sync can then be split
    # into time ranges that workers list side by side (see `Connector.full_sync_range`).
    created_range: tuple[str, str] | None = None


@dataclass(frozen=True)
class Resource:
    """A resource type a connector syncs into one collection of `entities`, and the
    rules that make its objects records (see `Connector.record`)."""

    resource_type: str
    collection_key: str
    description: str
    supports_incremental: bool = True
    # Children come with their parent's pages and have no task of their own.
    synced_with_parent: str | None = None
    # How a full sync lists it (HTTP connectors); None: the connector lists it itself.
    listing: Listing | None = None
    # Whether an object is stored archived (archived_at set).
    archived: Callable[[dict[str, Any]], bool] | None = field(default=None, compare=False)
    # The object's fields holding when it was created and last changed upstream (Unix
    # seconds or ISO 8601); the creation time also places it inside or outside the app's
    # `sync_from`.
    created_field: str | None = None
    updated_field: str | None = None


@dataclass(frozen=True)
class ConnectorMetadata:
    name: str
    display_name: str
    api_version: str
    resources: tuple[Resource, ...]
    # The connector's migrations (typed views), `<version>_<name>.sql` files in the
    # connector package's `sql/` folder (see supasaasy.migrations).
    sql_files: tuple[str, ...] = ()

    def resource(self, resource_type: str) -> Resource:
        for resource in self.resources:
            if resource.resource_type == resource_type:
                return resource
        known = ", ".join(r.resource_type for r in self.resources)
        raise ConfigError(f"{self.name} has no resource {resource_type!r}; known: {known}")

    @property
    def task_resources(self) -> tuple[Resource, ...]:
        """The resources that get a task of their own (children ride with parents)."""
        return tuple(r for r in self.resources if r.synced_with_parent is None)

    def children_of(self, resource_type: str) -> tuple[Resource, ...]:
        return tuple(r for r in self.resources if r.synced_with_parent == resource_type)


@dataclass(frozen=True)
class Record:
    """One provider object to store. `observed_at` is set for objects taken from a
    change feed (the event's time); objects of list pages are stamped with the time
    their page was requested (see `supasaasy.sync.page_observed_at`). `created_at` and
    `updated_at`: when the object was created and last changed upstream, as the provider
    says (None where it does not); stored as `source_created_at` / `source_updated_at`."""

    collection_key: str
    external_id: str
    raw_payload: dict[str, Any]
    archived: bool = False
    observed_at: datetime | None = None
    api_version: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Deletion:
    collection_key: str
    external_id: str
    observed_at: datetime | None = None


@dataclass(frozen=True)
class ChildSet:
    """After this page, the children of `parent_id` are exactly those it carries (as of
    `observed_at`, the parent's event time; children stored from a later state stay).
    `complete=False`: the provider listed only some of them (it caps the list), so none
    is removed, and a full sync's sweep keeps those stored."""

    collection_key: str
    parent_field: str
    parent_id: str
    observed_at: datetime | None = None
    complete: bool = True


@dataclass
class Page:
    records: list[Record] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)
    child_sets: list[ChildSet] = field(default_factory=list)
    # Where to resume after this page; None once the resource is done.
    cursor: str | None = None
    # When the request for this page started; the sync notes it when it asks for the page.
    requested_at: datetime | None = None


@dataclass
class WebhookEvent:
    """A verified provider event: its id and type, when it was current upstream (the
    default of its changes' `observed_at`), and its changes as a page, or None when
    nothing in it is synced for the app."""

    event_id: str
    event_type: str
    observed_at: datetime
    page: Page | None = None
    api_version: str | None = None


def source_time(value: Any) -> datetime | None:
    """A provider's timestamp (Unix seconds, or ISO 8601 with a zone) as a datetime;
    None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def hmac_matches(secret: str, message: bytes, signature: str, digest: str = "sha256") -> bool:
    """Whether `signature` is the hex HMAC of `message` keyed with `secret`, compared in
    constant time."""
    expected = hmac.new(secret.encode(), message, digest).hexdigest().encode()
    return hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))


def prefixed_signature(headers: Mapping[str, str], header: str, prefix: str) -> str:
    """The hex digest in a `<prefix><hex>` signature header, or SignatureError."""
    value = headers.get(header.lower(), "").strip()
    if not value.startswith(prefix) or len(value) == len(prefix):
        raise SignatureError(f"missing or malformed {header} header")
    return value.removeprefix(prefix)


S = TypeVar("S", bound=BaseModel)


def connector_settings(model: type[S], app: AppConfig, provider: str) -> S:
    """An app's `config` as the connector's settings model. `api_key_env` defaults to
    `<PROVIDER>_API_KEY_<APP_KEY>`. Errors name each field, never the values given
    (they may be secrets)."""
    config = app.config
    if "api_key_env" not in config:
        default_env = f"{provider.upper()}_API_KEY_" + re.sub(
            r"[^A-Z0-9_]", "_", app.app_key.upper()
        )
        config = {**config, "api_key_env": default_env}
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"app {app.app_key!r} ({provider}): {problems}") from None


def secret_from_env(app: AppConfig, provider: str, variable: str) -> str:
    """The secret in environment variable `variable`, or a ConfigError naming it."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"app {app.app_key!r} ({provider}): environment variable {variable}"
            " (config.api_key_env) is not set"
        )
    return value


class RateLimiter(ABC):
    """Called before every provider request; blocks until the request may go."""

    @abstractmethod
    def acquire(self) -> None: ...

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Give back what was reserved and not used."""


class Unlimited(RateLimiter):
    def acquire(self) -> None:
        return None


# How a caller limits a connector's requests: given the connector's
# `requests_per_second`, the limiter every request of it goes through.
RateLimits = Callable[[float], RateLimiter]


class Connector(ABC):
    """Syncs the resources of one app. Subclasses set `metadata` and register by name."""

    metadata: ClassVar[ConnectorMetadata]

    def __init__(
        self,
        app: AppConfig,
        *,
        rate_limiter: RateLimiter | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        """`rate_limiter`: the limiter of every provider request; else `rate_limits`
        makes one from the connector's `requests_per_second` when first needed (so that
        the rate may depend on settings read after this); else none."""
        self.app = app
        self._rate_limiter = rate_limiter
        self._rate_limits = rate_limits
        # When (time.monotonic()) the caller's time budget ends: requests and retries
        # that would run past it are not made (OutOfTimeError).
        self.deadline: float | None = None
        # The external ids this app has stored in a collection: for a connector whose
        # listing may leave objects out, to check those it did not list one by one
        # rather than let a full sync's sweep take them for gone.
        self.stored_ids: Callable[[str], list[str]] = lambda collection_key: []

    @property
    def rate_limiter(self) -> RateLimiter:
        if self._rate_limiter is None:
            rate = self.requests_per_second
            limits = self._rate_limits
            self._rate_limiter = limits(rate) if limits is not None and rate else Unlimited()
        return self._rate_limiter

    @rate_limiter.setter
    def rate_limiter(self, limiter: RateLimiter) -> None:
        self._rate_limiter = limiter

    def seconds_left(self) -> float | None:
        """Of the caller's time budget; None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def secrets(self) -> list[str]:
        """The app's own secrets, to keep out of stored and logged messages."""
        found = []
        for name in ("api_key_env", "webhook_secret_env"):
            variable = getattr(getattr(self, "settings", None), name, None)
            value = os.environ.get(variable, "").strip() if isinstance(variable, str) else ""
            found += [value] if value else []
        return found

    def syncs(self, resource_type: str) -> bool:
        """Whether the app syncs the resource: it is one of the app's `resources` (all
        when unset), or a child of one."""
        resource = self.metadata.resource(resource_type)
        chosen = {
            self.metadata.resource(r).synced_with_parent or r for r in self.app.resources or ()
        }
        return not chosen or (resource.synced_with_parent or resource_type) in chosen

    def task_resource(self, resource_type: str) -> Resource:
        """The resource of a task: ConfigError for one that is unknown or is synced with
        its parent."""
        resource = self.metadata.resource(resource_type)
        if resource.synced_with_parent is not None:
            raise ConfigError(f"{self.metadata.name} {resource_type} is synced with its "
                              f"{resource.synced_with_parent}")  # fmt: skip
        return resource

    def record(
        self,
        resource_type: str,
        obj: dict[str, Any],
        *,
        archived: bool | None = None,
        observed_at: datetime | None = None,
        api_version: str | None = None,
    ) -> Record:
        """The record of one object of the resource, by its rules: its `id`, archived
        (unless `archived` says), created and updated times."""
        resource = self.metadata.resource(resource_type)
        if archived is None:
            archived = resource.archived is not None and resource.archived(obj)
        return Record(
            resource.collection_key,
            str(obj["id"]),
            obj,
            archived=archived,
            observed_at=observed_at,
            api_version=api_version,
            created_at=_field_time(obj, resource.created_field),
            updated_at=_field_time(obj, resource.updated_field),
        )

    def in_window(self, resource_type: str, obj: dict[str, Any]) -> bool:
        """Whether the object was created at or after the app's `sync_from` (objects
        without a creation time count as inside)."""
        sync_from = self.app.sync_from
        if sync_from is None:
            return True
        created = _field_time(obj, self.metadata.resource(resource_type).created_field)
        return created is None or created >= sync_from

    # -- webhooks (see supasaasy.handlers.webhook) ---------------------------------

    @property
    def webhook_secret_env(self) -> str | None:
        """The environment variable holding the app's webhook signing secret, if any."""
        variable = getattr(getattr(self, "settings", None), "webhook_secret_env", None)
        return variable if isinstance(variable, str) else None

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], secret: str) -> None:
        """Raise SignatureError unless the raw `body` is signed with `secret` as the
        provider signs its webhooks. `headers`: the request's, names in lower case."""
        raise SignatureError(f"{self.metadata.display_name} sends no webhooks here")

    def webhook_verification(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """The token of a provider's unsigned set-up request, or None for any other."""
        return None

    def webhook_event(self, event: dict[str, Any]) -> WebhookEvent:
        """What a verified event changes for this app. WebhookEventError when the body is
        not one of the provider's events; ProviderError when a request it needs fails."""
        raise WebhookEventError(f"{self.metadata.display_name} sends no webhooks here")

    @abstractmethod
    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        """Every object of the resource (within the app's `sync_from`), page by page."""

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        """What changed since `since`, including deletions, page by page."""
        raise ConfigError(f"{self.metadata.name} has no incremental sync for {resource_type}")

    def shard_floor(self, resource_type: str) -> datetime | None:
        """When the resource's full sync can be split into ranges of creation times
        (`full_sync_range`), the earliest time its objects (within the app's `sync_from`)
        can have been created; None where it cannot be split, and is listed in one go."""
        return None

    def full_sync_range(
        self,
        resource_type: str,
        *,
        created_from: datetime,
        created_before: datetime | None,
        cursor: str | None = None,
    ) -> Iterator[Page]:
        """The objects of the resource created from `created_from` and before
        `created_before` (no upper bound when None), newest first, page by page."""
        raise ConfigError(f"{self.metadata.name} cannot list {resource_type} by creation time")

    @property
    def api_version(self) -> str:
        """The provider API version this app's payloads are in (stored with each row)."""
        return self.metadata.api_version

    @property
    def requests_per_second(self) -> float | None:
        """The provider request rate all workers of this app share (None: unlimited)."""
        return None

    @property
    def incremental_horizon(self) -> float | None:
        """How far back (seconds) an incremental sync can reach; older means full."""
        return None

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections."""


def _field_time(obj: dict[str, Any], name: str | None) -> datetime | None:
    return source_time(obj.get(name)) if name is not None else None
