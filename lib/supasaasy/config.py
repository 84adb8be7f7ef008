"""Configuration of the apps to sync, validated with pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

APP_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class AppConfig(BaseModel):
    """One configured app: which connector syncs it, with that connector's settings.

    Secrets are never written here: connector settings name the environment
    variables that hold them (e.g. `api_key_env`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_key: str = Field(pattern=APP_KEY_PATTERN)
    name: str | None = None
    connector: str
    config: dict[str, Any] = Field(default_factory=dict)
    sync_from: AwareDatetime | None = None
