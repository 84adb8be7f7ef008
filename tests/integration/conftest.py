"""The real local stack (Postgres + PostgREST + gateway), started once per test session.

Ports are picked free, the cluster lives in a throwaway folder, and with
SUPASAASY_DB_URL set the stack uses that Postgres instead of the embedded one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.keys import new_jwt_secret
from supasaasy.devstack.migrations import bootstrap
from supasaasy.devstack.processes import free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(project_root: Path) -> Iterator[StackInfo]:
    state = Path(tempfile.mkdtemp(prefix="supasaasy-test-stack-"))
    settings = StackSettings(
        project_dir=project_root,
        state_dir=state,
        gateway_port=free_port(),
        db_port=free_port(),
        rest_port=free_port(),
        rest_admin_port=free_port(),
        db_url=os.environ.get("SUPASAASY_DB_URL") or None,
        durable=False,
        jwt_secret=new_jwt_secret(),
    )
    try:
        with LocalStack(settings) as info:
            yield info
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def db(stack: StackInfo) -> Database:
    return Database.connect(stack.supabase_url, stack.service_role_key)


@pytest.fixture
def pg(stack: StackInfo) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser connection for arranging and checking what PostgREST cannot."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app_key() -> str:
    """An app of this test's own, so the one-active-job rule never spans tests."""
    return f"app_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def new_database(stack: StackInfo) -> Iterator[Callable[[], str]]:
    """Makes fresh databases in the stack's cluster holding only what a new Supabase
    project has; dropped when the module ends."""
    made: list[str] = []

    def make() -> str:
        name = f"fresh_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        made.append(name)
        url = f"{stack.database_url.rsplit('/', 1)[0]}/{name}"
        bootstrap(url, None)
        return url

    yield make
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f"drop database if exists {name} with (force)")
