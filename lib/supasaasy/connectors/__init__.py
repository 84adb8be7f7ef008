"""Connectors register here by name; an app names the one that syncs it."""

from __future__ import annotations

from importlib import resources

from ..config import AppConfig
from .base import (
    ChildSet,
    ConfigError,
    Connector,
    ConnectorMetadata,
    Deletion,
    Page,
    ProviderError,
    RateLimiter,
    Record,
    Resource,
    SignatureError,
    Unlimited,
    WebhookEvent,
    WebhookEventError,
)

_REGISTRY: dict[str, type[Connector]] = {}


def register(cls: type[Connector]) -> type[Connector]:
    """Class decorator: make `cls` available under `cls.metadata.name`."""
    metadata = getattr(cls, "metadata", None)
    if not isinstance(metadata, ConnectorMetadata) or not metadata.resources:
        raise TypeError(f"{cls.__name__} needs a ConnectorMetadata with resources")
    _REGISTRY[metadata.name] = cls
    return cls


def known_connectors() -> list[str]:
    return sorted(_REGISTRY)


def connector_class(app: AppConfig) -> type[Connector]:
    """The class registered for `app.connector`, or a ConfigError naming the choices."""
    try:
        return _REGISTRY[app.connector]
    except KeyError:
        raise ConfigError(
            f"app {app.app_key!r}: unknown connector {app.connector!r}; "
            f"known connectors: {', '.join(sorted(_REGISTRY))}"
        ) from None


def connector_sql(name: str) -> list[tuple[str, str]]:
    """(file name, SQL text) of each SQL file the named connector ships."""
    cls = _REGISTRY[name]
    if not cls.metadata.sql_files:
        return []
    package = resources.files(cls.__module__.rsplit(".", 1)[0]).joinpath("sql")
    return [(f, package.joinpath(f).read_text()) for f in cls.metadata.sql_files]


def create_connector(app: AppConfig, *, rate_limiter: RateLimiter | None = None) -> Connector:
    """A connector for `app`, its configuration validated (ConfigError otherwise)."""
    return connector_class(app)(app, rate_limiter=rate_limiter)


__all__ = [
    "ChildSet",
    "ConfigError",
    "Connector",
    "ConnectorMetadata",
    "Deletion",
    "Page",
    "ProviderError",
    "RateLimiter",
    "Record",
    "Resource",
    "SignatureError",
    "Unlimited",
    "WebhookEvent",
    "WebhookEventError",
    "connector_class",
    "connector_sql",
    "create_connector",
    "known_connectors",
    "register",
]

# The built-in connectors register themselves on import.
from . import intercom as _intercom  # noqa: E402, F401
from . import notion as _notion  # noqa: E402, F401
from . import stripe as _stripe  # noqa: E402, F401
