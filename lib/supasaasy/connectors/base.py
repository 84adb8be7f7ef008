"""The connector interface: one resource of one app, synced page by page.

A connector only reads the provider. It yields `Page`s, each carrying the entities
it holds and the cursor to resume from after it; `supasaasy.sync` writes them,
checkpoints, and stops between pages when the caller asks (by no longer iterating).
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from ..config import AppConfig
from ..errors import SupasaasyError
from ..redact import redact


class ConfigError(SupasaasyError):
    """An app's configuration cannot work; the message names the app and the field."""


class ProviderError(SupasaasyError):
    """The provider refused or failed a request, after any retries it deserved. Anything
    in the message shaped like a key is redacted: the message is stored and logged."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(redact(message))
        self.status = status


@dataclass(frozen=True)
class Resource:
    """A resource type a connector syncs into one collection of `entities`."""

    resource_type: str
    collection_key: str
    description: str
    supports_incremental: bool = True
    # Children come with their parent's pages and have no task of their own.
    synced_with_parent: str | None = None


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
    their page was requested (see `supasaasy.sync.page_observed_at`)."""

    collection_key: str
    external_id: str
    raw_payload: dict[str, Any]
    archived: bool = False
    observed_at: datetime | None = None
    api_version: str | None = None


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


class Connector(ABC):
    """Syncs the resources of one app. Subclasses set `metadata` and register by name."""

    metadata: ClassVar[ConnectorMetadata]

    def __init__(self, app: AppConfig, *, rate_limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.rate_limiter = rate_limiter or Unlimited()
        # When (time.monotonic()) the caller's time budget ends: requests and retries
        # that would run past it are not made (OutOfTimeError).
        self.deadline: float | None = None
        # The external ids this app has stored in a collection: for a connector whose
        # listing may leave objects out, to check those it did not list one by one
        # rather than let a full sync's sweep take them for gone.
        self.stored_ids: Callable[[str], list[str]] = lambda collection_key: []

    def seconds_left(self) -> float | None:
        """Of the caller's time budget; None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def secrets(self) -> list[str]:
        """The app's own secrets, to keep out of stored and logged messages."""
        variable = getattr(getattr(self, "settings", None), "api_key_env", None)
        value = os.environ.get(variable, "").strip() if isinstance(variable, str) else ""
        return [value] if value else []

    @abstractmethod
    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        """Every object of the resource (within the app's `sync_from`), page by page."""

    def incremental_sync(
        self, resource_type: str, *, since: datetime, cursor: str | None = None
    ) -> Iterator[Page]:
        """What changed since `since`, including deletions, page by page."""
        raise ConfigError(f"{self.metadata.name} has no incremental sync for {resource_type}")

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
