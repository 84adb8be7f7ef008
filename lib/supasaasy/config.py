"""Configuration, validated with pydantic and loaded from one TOML (or JSON) file.

    [[apps]]
    app_key = "stripe_main"
    connector = "stripe"
    sync_from = "2024-01-01T00:00:00Z"        # optional
    resources = ["customer", "subscription"]  # optional: default, all of them
    config = { api_key_env = "STRIPE_API_KEY_MAIN" }

    [[sync_schedules]]
    app_key = "stripe_main"
    cron = "*/15 * * * *"                     # an incremental sync every 15 minutes

    [worker]
    time_budget_seconds = 45

String values may name environment variables as `${NAME}` or `${NAME:-default}`;
secrets are never written in the file: connector settings name the variables
that hold them (e.g. `api_key_env`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from croniter import croniter
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigFileError as ConfigFileError

APP_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CONFIG_ENV = "SUPASAASY_CONFIG"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppConfig(_Strict):
    """One configured app: which connector syncs it, with that connector's settings."""

    app_key: str = Field(pattern=APP_KEY_PATTERN)
    name: str | None = None
    connector: str
    config: dict[str, Any] = Field(default_factory=dict)
    sync_from: AwareDatetime | None = None
    # The resource types a sync of this app covers by default (all, when not set).
    resources: list[str] | None = None


class SyncSchedule(_Strict):
    app_key: str = Field(pattern=APP_KEY_PATTERN)
    cron: str
    mode: Literal["full", "incremental"] = "incremental"
    resource_types: list[str] | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a 5-field cron expression: {value!r}")
        return value


class WorkerSettings(_Strict):
    # Wall time a worker call may spend; it stops between pages when it runs out.
    time_budget_seconds: float = Field(default=45.0, gt=0, le=3600)
    # A processing task whose heartbeat is older than this goes back to pending.
    stale_after_seconds: float = Field(default=300.0, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=100)


class Settings(_Strict):
    apps: list[AppConfig] = Field(default_factory=list)
    sync_schedules: list[SyncSchedule] = Field(default_factory=list)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    job_retention_days: int = Field(default=7, ge=0, le=3650)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        from .connectors import ConfigError, connector_class

        keys = [app.app_key for app in self.apps]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"app_key configured more than once: {', '.join(duplicates)}")
        for i, app in enumerate(self.apps):
            try:
                metadata = connector_class(app).metadata
            except ConfigError as exc:
                raise ValueError(f"apps.{i}.connector: {exc}") from None
            for resource in app.resources or []:
                try:
                    metadata.resource(resource)
                except ConfigError as exc:
                    raise ValueError(f"apps.{i}.resources: {exc}") from None
        for i, schedule in enumerate(self.sync_schedules):
            if schedule.app_key not in keys:
                raise ValueError(f"sync_schedules.{i}.app_key: no app {schedule.app_key!r}")
        return self

    def app(self, app_key: str) -> AppConfig | None:
        return next((app for app in self.apps if app.app_key == app_key), None)


def _expand(value: Any) -> Any:
    """Replace ${NAME} and ${NAME:-default} in every string of a parsed file."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found:
                return found
            if default is not None:
                return default
            raise ConfigFileError(f"environment variable {name} is not set (used as ${{{name}}})")

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def parse_settings(raw: dict[str, Any], source: str = "configuration") -> Settings:
    """Validate already-parsed configuration; ConfigFileError names each bad field."""
    try:
        return Settings.model_validate(_expand(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigFileError(f"{source} is invalid: {problems}") from None


def function_settings(main_file: str | Path) -> Settings:
    """The configuration of the function whose `main.py` is `main_file`: $SUPASAASY_CONFIG,
    else the first `supasaasy.toml` in the function's folder (deployed alone, with a copy
    of the file), its parent (`functions/`) or its grandparent (the project)."""
    if os.environ.get(CONFIG_ENV):
        return load_settings()
    folder = Path(main_file).parent
    places = [folder / "supasaasy.toml", folder.parent / "supasaasy.toml",
              folder.parent.parent / "supasaasy.toml"]  # fmt: skip
    found = next((place for place in places if place.is_file()), None)
    if found is None:
        looked = ", ".join(str(place) for place in places)
        raise ConfigFileError(f"no configuration: set {CONFIG_ENV}, or place supasaasy.toml "
                              f"in one of {looked}")  # fmt: skip
    return load_settings(found)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load the file at `path` (or $SUPASAASY_CONFIG): TOML, or JSON for `.json`."""
    chosen = Path(os.environ.get(CONFIG_ENV) or path or "supasaasy.toml")
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read the configuration {chosen}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if chosen.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(
            f"{chosen} is not valid {chosen.suffix[1:] or 'TOML'}: {exc}"
        ) from None
    return parse_settings(raw, str(chosen))
