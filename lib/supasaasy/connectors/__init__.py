"""Connectors register here by name; an app names the one that syncs it.

The built-in connectors register on import. Third-party ones are packages declaring an
entry point in the group `supasaasy.connectors` (`name = "package.module:Class"`, the
class a Connector whose metadata has that name); they are loaded the first time a name
is not found among those registered, or when the connectors are listed.
"""

from __future__ import annotations

from importlib import metadata, resources

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
    RateLimits,
    Record,
    Resource,
    SignatureError,
    Unlimited,
    WebhookEvent,
    WebhookEventError,
)

ENTRY_POINT_GROUP = "supasaasy.connectors"
BUILT_IN = "built-in"

_REGISTRY: dict[str, type[Connector]] = {}
# Where each connector came from: built-in, or the distribution that declares it; and
# the entry points that could not be loaded, with why.
_SOURCES: dict[str, str] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_plugins_loaded = False


def register(cls: type[Connector], source: str = BUILT_IN) -> type[Connector]:
    """Class decorator: make `cls` available under `cls.metadata.name`."""
    found = getattr(cls, "metadata", None)
    if not isinstance(found, ConnectorMetadata) or not found.resources:
        raise TypeError(f"{cls.__name__} needs a ConnectorMetadata with resources")
    _REGISTRY[found.name] = cls
    _SOURCES[found.name] = source
    return cls


def load_plugins() -> None:
    """Register the connectors of the `supasaasy.connectors` entry points, once. One that
    cannot be loaded, is not a Connector, names another connector or a taken name is
    skipped and kept in `plugin_errors()`; the others still load."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        source = f"{dist.name} {dist.version}" if dist is not None else entry.value
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise TypeError(f"{entry.value} is not a Connector class")
            if cls.metadata.name != entry.name:
                raise TypeError(f"{entry.value} is connector {cls.metadata.name!r}")
            # A plugin's module may register its class itself (as the built-in ones do).
            if _REGISTRY.get(entry.name, cls) is not cls:
                raise TypeError(f"{entry.name!r} is taken by {_SOURCES[entry.name]}")
            register(cls, source)
        except Exception as exc:  # a broken plugin must not stop the others
            _PLUGIN_ERRORS[entry.name] = f"{source}: {exc.__class__.__name__}: {exc}"


def connector_sources() -> dict[str, str]:
    """Every connector (third-party ones loaded) -> where it comes from."""
    load_plugins()
    return dict(sorted(_SOURCES.items()))


def plugin_errors() -> dict[str, str]:
    """Entry points of the group that could not be loaded -> why."""
    load_plugins()
    return dict(_PLUGIN_ERRORS)


def known_connectors() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY)


def connector_class(app: AppConfig) -> type[Connector]:
    """The class registered for `app.connector`, or a ConfigError naming the choices."""
    if app.connector not in _REGISTRY:
        load_plugins()
    try:
        return _REGISTRY[app.connector]
    except KeyError:
        why = _PLUGIN_ERRORS.get(app.connector)
        raise ConfigError(
            f"app {app.app_key!r}: unknown connector {app.connector!r}"
            + (f" (its plugin failed to load: {why})" if why else "")
            + f"; known connectors: {', '.join(sorted(_REGISTRY))}"
        ) from None


def connector_sql(name: str) -> list[tuple[str, str]]:
    """(file name, SQL text) of each SQL file the named connector ships."""
    cls = _REGISTRY[name]
    if not cls.metadata.sql_files:
        return []
    package = resources.files(cls.__module__.rsplit(".", 1)[0]).joinpath("sql")
    return [(f, package.joinpath(f).read_text()) for f in cls.metadata.sql_files]


def create_connector(
    app: AppConfig,
    *,
    rate_limiter: RateLimiter | None = None,
    rate_limits: RateLimits | None = None,
) -> Connector:
    """A connector for `app`, its configuration validated (ConfigError otherwise); see
    `Connector` for the rate limiter arguments."""
    return connector_class(app)(app, rate_limiter=rate_limiter, rate_limits=rate_limits)


__all__ = [
    "ChildSet",
    "ConfigError",
    "Connector",
    "ConnectorMetadata",
    "Deletion",
    "Page",
    "ProviderError",
    "RateLimiter",
    "RateLimits",
    "Record",
    "Resource",
    "SignatureError",
    "Unlimited",
    "WebhookEvent",
    "WebhookEventError",
    "connector_class",
    "connector_sources",
    "connector_sql",
    "create_connector",
    "known_connectors",
    "load_plugins",
    "plugin_errors",
    "register",
]

# The built-in connectors register themselves on import.
from . import intercom as _intercom  # noqa: E402, F401
from . import notion as _notion  # noqa: E402, F401
from . import stripe as _stripe  # noqa: E402, F401
