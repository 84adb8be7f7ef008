"""Readers: signed-in users on the allow-list read the synced data through PostgREST
with their own JWT; other signed-in users read no rows, anon nothing, and no one but
the service role writes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.models import Entity

Pg = psycopg.Connection[tuple[Any, ...]]
READABLE = ("stripe_customers", "entities", "sync_jobs", "sync_job_tasks", "sync_state")


def _token(stack: StackInfo, user_id: str, expires_in: float = 600) -> str:
    claims = {"role": "authenticated", "sub": user_id, "aud": "authenticated",
              "exp": int(time.time() + expires_in)}  # fmt: skip
    return jwt.encode(claims, stack.jwt_secret, algorithm="HS256")


def _rest(stack: StackInfo, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"apikey": stack.anon_key, "Authorization": f"Bearer {token}",
               "Accept-Profile": "supasaasy", "Content-Profile": "supasaasy"}  # fmt: skip
    return httpx.request(method, f"{stack.supabase_url}/rest/v1/{path}", headers=headers, **kwargs)


@pytest.fixture
def users(pg: Pg) -> Iterator[dict[str, str]]:
    """Two signed-in users of Supabase Auth: one listed as a reader, one not."""
    found = {"reader": str(uuid.uuid4()), "other": str(uuid.uuid4())}
    for user_id in found.values():
        pg.execute("insert into auth.users (id) values (%s)", (user_id,))
    pg.execute("insert into supasaasy.users (user_id) values (%s)", (found["reader"],))
    yield found
    pg.execute("delete from auth.users where id = any(%s::uuid[])", (list(found.values()),))


@pytest.fixture
def synced(db: Database, pg: Pg, app_key: str) -> str:
    db.upsert_entities([
        Entity(app_key=app_key, collection_key="stripe_customer", external_id=f"cus_{i}",
               raw_payload={"id": f"cus_{i}", "email": f"{i}@example.com", "created": 1})
        for i in range(3)
    ])  # fmt: skip
    db.create_sync_job(app_key, "full", ["customer"])
    pg.execute("insert into supasaasy.sync_state (app_key, collection_key, last_synced_at)"
               " values (%s, 'stripe_customer', now())", (app_key,))  # fmt: skip
    return app_key


def test_a_listed_reader_reads_the_views_and_jobs(
    stack: StackInfo, users: dict[str, str], synced: str
) -> None:
    token = _token(stack, users["reader"])
    customers = _rest(stack, token, "GET", f"stripe_customers?app_key=eq.{synced}&select=email")
    assert customers.status_code == 200, customers.text
    assert sorted(row["email"] for row in customers.json()) == [
        f"{i}@example.com" for i in range(3)
    ]
    for relation in READABLE:
        response = _rest(stack, token, "GET", f"{relation}?limit=1")
        assert response.status_code == 200 and len(response.json()) == 1, (relation, response.text)
    own = _rest(stack, token, "GET", "users")
    assert [row["user_id"] for row in own.json()] == [users["reader"]]


def test_other_signed_in_users_read_no_rows_and_anon_nothing(
    stack: StackInfo, users: dict[str, str], synced: str
) -> None:
    token = _token(stack, users["other"])
    for relation in (*READABLE, "users"):
        response = _rest(stack, token, "GET", relation)
        assert response.status_code == 200 and response.json() == [], (relation, response.text)
    for relation in READABLE:
        response = _rest(stack, stack.anon_key, "GET", relation)
        assert response.status_code in (401, 403), (relation, response.text)


def test_readers_write_nothing_and_cannot_list_themselves(
    stack: StackInfo, pg: Pg, users: dict[str, str], synced: str
) -> None:
    for who in ("reader", "other"):
        token = _token(stack, users[who])
        attempts = [
            _rest(stack, token, "POST", "entities", json={
                "app_key": synced, "collection_key": "c", "external_id": "x", "raw_payload": {}}),
            _rest(stack, token, "PATCH", f"sync_jobs?app_key=eq.{synced}",
                  json={"status": "cancelled"}),
            _rest(stack, token, "DELETE", f"entities?app_key=eq.{synced}"),
            _rest(stack, token, "POST", "users", json={"user_id": users["other"]}),
            _rest(stack, token, "POST", "rpc/create_sync_job", json={
                "p_app_key": synced, "p_mode": "full", "p_resource_types": ["customer"]}),
            _rest(stack, token, "GET", "entity_tombstones"),
        ]  # fmt: skip
        for response in attempts:
            assert response.status_code in (401, 403, 404), (who, response.request.url,
                                                              response.text)  # fmt: skip
    assert pg.execute("select count(*) from supasaasy.entities where app_key = %s",
                      (synced,)).fetchone() == (3,)  # fmt: skip
    assert pg.execute("select status from supasaasy.sync_jobs where app_key = %s",
                      (synced,)).fetchone() == ("pending",)  # fmt: skip
    assert pg.execute("select count(*) from supasaasy.users where user_id = %s",
                      (users["other"],)).fetchone() == (0,)  # fmt: skip


def test_access_ends_with_the_entry_the_user_or_the_token(
    stack: StackInfo, pg: Pg, users: dict[str, str], synced: str
) -> None:
    expired = _rest(stack, _token(stack, users["reader"], expires_in=-60), "GET", "entities")
    assert expired.status_code == 401
    token = _token(stack, users["reader"])
    pg.execute("delete from auth.users where id = %s", (users["reader"],))  # cascades
    assert _rest(stack, token, "GET", "stripe_customers").json() == []
