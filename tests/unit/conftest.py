"""Fixtures of the HTTP function tests: each function is built exactly as in production
(functions-framework loads `functions/<name>/main.py`, which reads its environment and
configuration when it is loaded), against a stateful stand-in PostgREST."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest
import respx
from fake_postgrest import FakePostgrest
from flask.testing import FlaskClient
from handler_support import (
    ADMIN_KEY,
    CONFIG_TOML,
    FUNCTIONS,
    RATE_PER_MINUTE,
    SERVICE_KEY,
    SOURCES,
    STRIPE_KEY,
    SUPABASE_URL,
    Build,
    FakeStripe,
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The environment the functions read when they are loaded."""
    config = tmp_path / "supasaasy.toml"
    config.write_text(CONFIG_TOML)
    for name, value in {
        "SUPABASE_URL": SUPABASE_URL,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "SUPASAASY_CONFIG": str(config),
        "BILLING_KEY": STRIPE_KEY,
        "SYNC_RATE_LIMIT_PER_MINUTE": str(RATE_PER_MINUTE),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("SUPASAASY_WORKER_URL", "ENTRY_POINT", "LOG_EXECUTION_ID",
                 "CORS_ALLOWED_ORIGINS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # functions-framework registers each source as module `main` and adds its folder
    # to sys.path: undo both after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "main", None)
    return monkeypatch


@pytest.fixture
def build(env: pytest.MonkeyPatch) -> Iterator[Build]:
    """Build a function as production does, with the environment as it is now."""

    def make(target: str) -> FlaskClient:
        source = FUNCTIONS / SOURCES[target] / "main.py"
        app = functions_framework.create_app(target, str(source))  # type: ignore[no-untyped-call]
        client: FlaskClient = app.test_client()
        return client

    yield make
    gc.unfreeze()  # the entry points freeze what start-up built; a test run goes on


@pytest.fixture
def sync_client(build: Build) -> FlaskClient:
    return build("sync")


@pytest.fixture
def worker_client(build: Build) -> FlaskClient:
    return build("worker")


@pytest.fixture
def status_client(build: Build) -> FlaskClient:
    return build("job_status")


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """Every outgoing HTTP request; one that no route matches fails the handler."""
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def fake(api: respx.MockRouter) -> Iterator[FakePostgrest]:
    """PostgREST, answering from its own tables; asked nothing it does not know."""
    postgrest = FakePostgrest(SERVICE_KEY)
    postgrest.install(api)
    yield postgrest
    assert postgrest.unexpected == []


@pytest.fixture
def stripe(api: respx.MockRouter) -> FakeStripe:
    """The billing app's Stripe, listing nothing until a test gives it objects."""
    provider = FakeStripe()
    provider.install(api)
    return provider


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """postgrest-py sleeps between retries of GET requests: record instead of waiting."""
    delays: list[float] = []
    monkeypatch.setattr("postgrest._sync.request_builder.time.sleep", delays.append)
    return delays
