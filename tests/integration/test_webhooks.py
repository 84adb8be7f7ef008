"""The webhook function on the real stack, served behind the gateway: localstripe's own
signed webhooks end to end; Intercom and Notion requests signed by hand as their
documents describe; ordering, duplicates, irrelevant events, refused requests, and the
database going away."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from supasaasy import cli
from supasaasy.cli import app
from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.keys import new_jwt_secret
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.processes import free_port
from supasaasy.devstack.seed import seed_stripe

STRIPE_KEY = "sk_test_webhooks_5e1f"
SECRETS = {
    "WH_STRIPE_SECRET": "whsec_webhooks_test_0123456789",
    "WH_INTERCOM_SECRET": "intercom-client-secret-abc",
    "WH_NOTION_SECRET": "secret_notion_verification_xyz",
}
KEYS = {
    "WH_STRIPE_KEY": STRIPE_KEY,
    "WH_INTERCOM_KEY": "intercom-token",
    "WH_NOTION_KEY": "ntn_token",
}
Pg = psycopg.Connection[tuple[object, ...]]

CONFIG = """
[[apps]]
app_key = "stripe_wh"
connector = "stripe"
[apps.config]
api_key_env = "WH_STRIPE_KEY"
api_base = "{stripe}"
webhook_secret_env = "WH_STRIPE_SECRET"

[[apps]]
app_key = "stripe_products"
connector = "stripe"
resources = ["product"]
[apps.config]
api_key_env = "WH_STRIPE_KEY"
api_base = "{stripe}"
webhook_secret_env = "WH_STRIPE_SECRET"

[[apps]]
app_key = "stripe_nohooks"
connector = "stripe"
config = {{ api_key_env = "WH_STRIPE_KEY", api_base = "{stripe}" }}

[[apps]]
app_key = "stripe_unset"
connector = "stripe"
[apps.config]
api_key_env = "WH_STRIPE_KEY"
api_base = "{stripe}"
webhook_secret_env = "WH_STRIPE_UNSET"

[[apps]]
app_key = "intercom_wh"
connector = "intercom"
[apps.config]
api_key_env = "WH_INTERCOM_KEY"
api_base = "http://127.0.0.1:9"
webhook_secret_env = "WH_INTERCOM_SECRET"

[[apps]]
app_key = "notion_wh"
connector = "notion"
[apps.config]
api_key_env = "WH_NOTION_KEY"
api_base = "{notion}"
webhook_secret_env = "WH_NOTION_SECRET"

[[apps]]
app_key = "notion_setup"
connector = "notion"
[apps.config]
api_key_env = "WH_NOTION_KEY"
api_base = "{notion}"
webhook_secret_env = "WH_NOTION_SETUP"
"""

# What the stand-in Notion API answers: path -> object (absent: 404).
NOTION_OBJECTS: dict[str, dict[str, Any]] = {}


class FakeNotion(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = NOTION_OBJECTS.get(self.path)
        status = 200 if found is not None else 404
        body = json.dumps(
            found
            or {
                "object": "error",
                "status": 404,
                "code": "object_not_found",
                "message": "not found",
            }
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Env:
    stack: LocalStack
    info: StackInfo
    stripe: str
    config: Path

    def url(self, app_key: str) -> str:
        return f"{self.info.supabase_url}/functions/v1/webhook/{app_key}"


@pytest.fixture(scope="module")
def env(project_root: Path) -> Iterator[Env]:
    state = Path(tempfile.mkdtemp(prefix="supasaasy-webhooks-"))
    notion = ThreadingHTTPServer(("127.0.0.1", 0), FakeNotion)
    threading.Thread(target=notion.serve_forever, daemon=True).start()
    try:
        with running_localstripe() as stripe:
            config = state / "supasaasy.toml"
            config.write_text(
                CONFIG.format(stripe=stripe, notion=f"http://127.0.0.1:{notion.server_port}")
            )
            settings = StackSettings(
                project_dir=project_root,
                state_dir=state,
                gateway_port=free_port(),
                db_port=free_port(),
                rest_port=free_port(),
                rest_admin_port=free_port(),
                durable=False,
                jwt_secret=new_jwt_secret(),
                serve_functions=True,
                admin_key="webhooks-admin-key",
                function_env={
                    "SUPASAASY_CONFIG": str(config),
                    "SUPASAASY_WORKER_URL": "",
                    **SECRETS,
                    **KEYS,
                },
            )
            stack = LocalStack(settings)
            with stack as info:
                yield Env(stack, info, stripe, config)
    finally:
        notion.shutdown()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def pg(env: Env) -> Iterator[Pg]:
    with psycopg.connect(env.info.database_url, autocommit=True) as conn:
        yield conn


def sign(secret: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, getattr(hashlib, digest)).hexdigest()


def stripe_post(
    env: Env,
    event: dict[str, Any] | bytes,
    app_key: str = "stripe_wh",
    at: int | None = None,
    secret: str = SECRETS["WH_STRIPE_SECRET"],
) -> httpx.Response:
    """Signed as Stripe signs: `t=<time>,v1=<HMAC-SHA256 of "t." + body>`."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    t = int(time.time()) if at is None else at
    signature = f"t={t},v1={sign(secret, f'{t}.'.encode() + body)}"
    return httpx.post(
        env.url(app_key),
        content=body,
        timeout=30,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def stripe_event(
    kind: str, obj: dict[str, Any], created: int, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": kind,
        "created": created,
        "api_version": "2025-02-24.acacia",
        "livemode": False,
        "data": {"object": obj},
    }


def rows(pg: Pg, app_key: str, collection: str) -> dict[str, Any]:
    return dict(
        pg.execute(  # type: ignore[arg-type]
            "select external_id, raw_payload from supasaasy.entities"
            " where app_key = %s and collection_key = %s",
            (app_key, collection),
        ).fetchall()
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def next_second() -> None:
    """Until the clock enters a new second: Stripe's event times are whole seconds."""
    time.sleep(1.05 - time.time() % 1)


# -- localstripe's own webhooks ---------------------------------------------------------


def test_localstripe_events_reach_postgres_without_a_sync(env: Env, pg: Pg) -> None:
    api = httpx.Client(base_url=env.stripe, headers={"Authorization": f"Bearer {STRIPE_KEY}"})
    registered = api.post(
        "/_config/webhooks/stripe_wh",
        data={"url": env.url("stripe_wh"), "secret": SECRETS["WH_STRIPE_SECRET"]},
    )
    assert registered.status_code == 200, registered.text
    seeded = seed_stripe(
        env.stripe, STRIPE_KEY, customers=4, products=2, plans_per_product=1, subscriptions=2
    )
    upstream = {
        name: {o["id"] for o in api.get(path, params={"limit": 100}).json()["data"]}
        for name, path in (
            ("stripe_customer", "/v1/customers"),
            ("stripe_product", "/v1/products"),
            ("stripe_subscription", "/v1/subscriptions"),
        )
    }
    for collection, ids in upstream.items():
        wait_for(lambda c=collection, i=ids: set(rows(pg, "stripe_wh", c)) >= i)  # type: ignore[misc]
    items = rows(pg, "stripe_wh", "stripe_subscription_item")
    assert set(items) == set(seeded.subscription_items)

    customer = api.post("/v1/customers", data={"name": "before"}).json()["id"]
    wait_for(lambda: customer in rows(pg, "stripe_wh", "stripe_customer"))
    next_second()
    api.post(f"/v1/customers/{customer}", data={"name": "after"})
    wait_for(lambda: rows(pg, "stripe_wh", "stripe_customer")[customer]["name"] == "after")

    subscription = sorted(upstream["stripe_subscription"])[0]
    next_second()
    api.delete(f"/v1/subscriptions/{subscription}")
    wait_for(
        lambda: (
            pg.execute(
                "select archived_at is not null from supasaasy.entities where app_key = 'stripe_wh'"
                " and external_id = %s",
                (subscription,),
            ).fetchone()
            == (True,)
        )
    )

    next_second()
    api.delete(f"/v1/customers/{customer}")
    wait_for(lambda: customer not in rows(pg, "stripe_wh", "stripe_customer"))
    logged = pg.execute(
        "select count(*) filter (where outcome = 'applied'), count(*)"
        " filter (where outcome not in ('applied', 'ignored'))"
        " from supasaasy.webhook_logs where app_key = 'stripe_wh'"
    ).fetchone()
    assert logged is not None and int(logged[0]) >= 10 and logged[1] == 0  # type: ignore[call-overload]
    jobs = pg.execute("select count(*) from supasaasy.sync_jobs where app_key = 'stripe_wh'")
    assert jobs.fetchone() == (0,)


# -- Stripe events signed by hand -------------------------------------------------------


def test_an_older_event_never_overwrites_a_newer_one_nor_revives_a_deleted_one(
    env: Env, pg: Pg
) -> None:
    customer = f"cus_{uuid.uuid4().hex[:10]}"
    t = int(time.time()) - 100

    def send(kind: str, created: int, **fields: Any) -> dict[str, Any]:
        answer = stripe_post(
            env, stripe_event(kind, {"id": customer, "object": "customer", **fields}, created)
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    assert send("customer.created", t, name="A")["outcome"] == "applied"
    send("customer.updated", t + 10, name="C")
    late = send("customer.updated", t + 5, name="B")
    assert (late["outcome"], late["unchanged"]) == ("applied", 1)
    assert rows(pg, "stripe_wh", "stripe_customer")[customer]["name"] == "C"
    assert send("customer.deleted", t + 20)["deleted"] == 1
    send("customer.updated", t + 15, name="after the delete")
    assert customer not in rows(pg, "stripe_wh", "stripe_customer")


def test_a_duplicate_changes_nothing_even_when_sent_at_once(env: Env, pg: Pg) -> None:
    product = f"prod_{uuid.uuid4().hex[:10]}"
    event = stripe_event("product.created", {"id": product, "active": True}, int(time.time()))
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(stripe_post(env, event))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted(a.json()["outcome"] for a in answers)
    assert [a.status_code for a in answers] == [200] * 8
    assert outcomes == ["applied"] + ["duplicate"] * 7
    pg.execute(
        "update supasaasy.entities set raw_payload = '{}' where external_id = %s", (product,)
    )
    assert stripe_post(env, event).json()["outcome"] == "duplicate"
    assert rows(pg, "stripe_wh", "stripe_product")[product] == {}
    logged = pg.execute(
        "select count(*) from supasaasy.webhook_logs where event_id = %s", (event["id"],)
    ).fetchone()
    assert logged == (1,)


def test_events_of_what_the_app_does_not_sync_are_ignored(env: Env, pg: Pg) -> None:
    now = int(time.time())
    payout = stripe_post(env, stripe_event("payout.paid", {"id": "po_1"}, now))
    assert (payout.status_code, payout.json()["outcome"]) == (200, "ignored")
    customer = f"cus_{uuid.uuid4().hex[:10]}"
    other = stripe_post(
        env, stripe_event("customer.created", {"id": customer}, now), app_key="stripe_products"
    )
    assert (other.status_code, other.json()["outcome"]) == (200, "ignored")
    assert customer not in rows(pg, "stripe_products", "stripe_customer")
    product = f"prod_{uuid.uuid4().hex[:10]}"
    synced = stripe_post(
        env,
        stripe_event("product.updated", {"id": product, "active": False}, now),
        app_key="stripe_products",
    )
    assert synced.json()["outcome"] == "applied"
    archived = pg.execute(
        "select archived_at is not null from supasaasy.entities"
        " where app_key = 'stripe_products' and external_id = %s",
        (product,),
    ).fetchone()
    assert archived == (True,)


# -- Intercom and Notion, signed by hand -------------------------------------------------


def intercom_post(
    env: Env, topic: str, item: dict[str, Any], secret: str = SECRETS["WH_INTERCOM_SECRET"]
) -> httpx.Response:
    """A notification, signed as Intercom signs: `X-Hub-Signature: sha1=<HMAC-SHA1 of the
    body with the client secret>`."""
    body = json.dumps(
        {
            "type": "notification_event",
            "app_id": "abc123",
            "id": f"notif_{uuid.uuid4()}",
            "topic": topic,
            "created_at": int(time.time()),
            "delivery_attempts": 1,
            "data": {"type": "notification_event_data", "item": item},
        }
    ).encode()
    return httpx.post(
        env.url("intercom_wh"),
        content=body,
        timeout=30,
        headers={
            "X-Hub-Signature": f"sha1={sign(secret, body, 'sha1')}",
            "Content-Type": "application/json",
        },
    )


def test_intercom_notifications_signed_by_hand(env: Env, pg: Pg) -> None:
    contact = f"c_{uuid.uuid4().hex[:10]}"
    t = int(time.time()) - 50
    answers = [
        intercom_post(
            env,
            "contact.user.created",
            {"type": "contact", "id": contact, "name": "A", "updated_at": t},
        ),
        intercom_post(
            env,
            "contact.user.updated",
            {"type": "contact", "id": contact, "name": "C", "updated_at": t + 10},
        ),
        intercom_post(
            env,
            "contact.user.updated",
            {"type": "contact", "id": contact, "name": "B", "updated_at": t + 5},
        ),
        intercom_post(env, "ping", {"type": "ping", "message": "hello"}),
    ]
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.json()["outcome"] for a in answers] == ["applied"] * 3 + ["ignored"]
    assert rows(pg, "intercom_wh", "intercom_contact")[contact]["name"] == "C"

    conversation = f"{uuid.uuid4().int % 10**12}"
    closed = intercom_post(
        env,
        "conversation.admin.closed",
        {
            "type": "conversation",
            "id": conversation,
            "state": "closed",
            "updated_at": t,
            "conversation_parts": {
                "type": "conversation_part.list",
                "total_count": 1,
                "conversation_parts": [
                    {"type": "conversation_part", "id": f"{conversation}1", "part_type": "close"}
                ],
            },
        },
    )
    assert closed.json()["created"] == 2
    parts = rows(pg, "intercom_wh", "intercom_conversation_part")
    assert parts[f"{conversation}1"]["conversation_id"] == conversation

    gone = intercom_post(env, "contact.deleted", {"type": "contact", "id": contact})
    assert gone.json()["deleted"] == 1 and contact not in rows(
        pg, "intercom_wh", "intercom_contact"
    )
    forged = intercom_post(
        env,
        "contact.user.created",
        {"type": "contact", "id": contact, "updated_at": t + 100},
        secret="nope",
    )
    assert forged.status_code == 401 and contact not in rows(pg, "intercom_wh", "intercom_contact")


def notion_post(
    env: Env, kind: str, entity_type: str, entity_id: str, app_key: str = "notion_wh"
) -> httpx.Response:
    """An event, signed as Notion signs: `X-Notion-Signature: sha256=<HMAC-SHA256 of the
    body with the verification token>`."""
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "timestamp": "2030-01-01T00:00:00.000Z",
            "workspace_id": str(uuid.uuid4()),
            "subscription_id": str(uuid.uuid4()),
            "integration_id": str(uuid.uuid4()),
            "type": kind,
            "attempt_number": 1,
            "authors": [{"id": str(uuid.uuid4()), "type": "person"}],
            "entity": {"id": entity_id, "type": entity_type},
            "data": {},
        }
    ).encode()
    return httpx.post(
        env.url(app_key),
        content=body,
        timeout=30,
        headers={
            "X-Notion-Signature": f"sha256={sign(SECRETS['WH_NOTION_SECRET'], body)}",
            "Content-Type": "application/json",
        },
    )


def test_notion_events_fetch_their_object(env: Env, pg: Pg) -> None:
    page, source = str(uuid.uuid4()), str(uuid.uuid4())
    row = {
        "object": "page",
        "id": page,
        "in_trash": False,
        "created_time": "2029-01-01T00:00:00Z",
        "parent": {"type": "data_source_id", "data_source_id": source},
        "properties": {
            "Name": {"id": "title", "type": "title", "title": [{"plain_text": "first"}]}
        },
    }
    NOTION_OBJECTS[f"/v1/pages/{page}"] = row
    assert notion_post(env, "page.created", "page", page).json()["outcome"] == "applied"
    stored = rows(pg, "notion_wh", "notion_page")[page]
    assert stored["properties"]["Name"]["title"][0]["plain_text"] == "first"

    NOTION_OBJECTS[f"/v1/pages/{page}"] = {**row, "in_trash": True}
    assert notion_post(env, "page.deleted", "page", page).status_code == 200
    trashed = pg.execute(
        "select archived_at is not null from supasaasy.entities where external_id = %s", (page,)
    ).fetchone()
    assert trashed == (True,)
    del NOTION_OBJECTS[f"/v1/pages/{page}"]
    assert notion_post(env, "page.deleted", "page", page).json()["deleted"] == 1

    NOTION_OBJECTS[f"/v1/data_sources/{source}"] = {
        "object": "data_source",
        "id": source,
        "in_trash": False,
        "created_time": "2029-01-01T00:00:00Z",
        "properties": {
            "Name": {"id": "title", "type": "title", "title": {}},
            "Status": {"id": "st", "type": "select", "select": {"options": []}},
        },
    }
    schema = notion_post(env, "data_source.schema_updated", "data_source", source)
    assert schema.json()["created"] == 3
    assert set(rows(pg, "notion_wh", "notion_data_source_property")) >= {
        f"{source}:title",
        f"{source}:st",
    }
    assert notion_post(env, "comment.created", "comment", page).json()["outcome"] == "ignored"


def test_notions_verification_request_shows_its_token(env: Env, pg: Pg) -> None:
    token = f"secret_{uuid.uuid4().hex}"
    body = json.dumps({"verification_token": token}).encode()
    answer = httpx.post(env.url("notion_setup"), content=body, timeout=30)
    assert answer.status_code == 200 and answer.json()["outcome"] == "verification"
    assert token not in answer.text
    logged = pg.execute(
        "select outcome, detail ->> 'verification_token' from"
        " supasaasy.webhook_logs where app_key = 'notion_setup'"
        " order by id desc limit 1"
    ).fetchone()
    assert logged == ("verification", token)
    # The function's log says so, the token itself redacted (it is the signing secret).
    log = (env.stack.logs / "function-webhook.log").read_text()
    assert "verification_token secret_[REDACTED]" in log and token not in log
    # Once the token is configured, an unsigned body is refused whatever it says.
    refused = httpx.post(env.url("notion_wh"), content=body, timeout=30)
    assert refused.status_code == 401


# -- refused requests, and the database away -------------------------------------------

EVENT = json.dumps(
    stripe_event("customer.created", {"id": "cus_refused"}, 1_800_000_000, "evt_refused")
).encode()
GOOD_SECRET = SECRETS["WH_STRIPE_SECRET"]


def stripe_signature(body: bytes, *, at: int | None = None, secret: str = GOOD_SECRET) -> str:
    t = int(time.time()) if at is None else at
    return f"t={t},v1={sign(secret, f'{t}.'.encode() + body)}"


def refused_requests() -> list[tuple[str, str, str, dict[str, str], bytes, int]]:
    """(case, method, app path, headers, body, status)."""
    good = {"Stripe-Signature": stripe_signature(EVENT)}

    def signed(body: bytes, **how: Any) -> dict[str, str]:
        return {"Stripe-Signature": stripe_signature(body, **how)}

    stale = int(time.time()) - 400
    tampered = EVENT.replace(b"cus_refused", b"cus_tampered")
    not_json, not_an_event = b"{not json", b'{"hello": "world"}'
    huge = b'{"id": "' + b"x" * (1024 * 1024) + b'"}'
    return [
        ("forged", "POST", "stripe_wh", signed(EVENT, secret="whsec_forged"), EVENT, 401),
        ("unsigned", "POST", "stripe_wh", {}, EVENT, 401),
        ("malformed", "POST", "stripe_wh", {"Stripe-Signature": "t=now,v1=abc"}, EVENT, 401),
        ("stale", "POST", "stripe_wh", signed(EVENT, at=stale), EVENT, 401),
        ("tampered", "POST", "stripe_wh", good, tampered, 401),
        ("huge", "POST", "stripe_wh", signed(huge), huge, 413),
        ("not JSON", "POST", "stripe_wh", signed(not_json), not_json, 400),
        ("not an event", "POST", "stripe_wh", signed(not_an_event), not_an_event, 400),
        ("unknown app", "POST", "nobody", good, EVENT, 404),
        ("app without webhooks", "POST", "stripe_nohooks", good, EVENT, 404),
        ("secret not set", "POST", "stripe_unset", good, EVENT, 404),
        ("bad app key", "POST", "bad.key", good, EVENT, 400),
        ("long app key", "POST", "a" * 65, good, EVENT, 400),
        ("no app key", "POST", "", good, EVENT, 400),
        ("two segments", "POST", "stripe_wh/extra", good, EVENT, 400),
        ("GET", "GET", "stripe_wh", {}, b"", 405),
        ("PUT", "PUT", "stripe_wh", good, EVENT, 405),
        ("intercom unsigned", "POST", "intercom_wh", {}, EVENT, 401),
        ("notion unsigned", "POST", "notion_wh", {}, EVENT, 401),
    ]


def written(pg: Pg) -> tuple[object, ...]:
    row = pg.execute(
        "select (select count(*) from supasaasy.webhook_logs),"
        " (select count(*) from supasaasy.entities)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_refused_requests_get_their_answer_and_write_nothing(env: Env, pg: Pg) -> None:
    before = written(pg)
    for case, method, app_path, headers, body, status in refused_requests():
        url = f"{env.info.supabase_url}/functions/v1/webhook/{app_path}".rstrip("/")
        answer = httpx.request(method, url, headers=headers, content=body, timeout=30)
        assert answer.status_code == status, (case, answer.text[:200])
        assert answer.json()["success"] is False and answer.json()["error"], case
        assert "Traceback" not in answer.text and GOOD_SECRET not in answer.text, case
    assert written(pg) == before
    assert stripe_post(env, EVENT).status_code == 200  # the same event, signed, is taken


def test_the_database_away_is_a_503_and_the_retry_applies(env: Env, pg: Pg) -> None:
    customer = f"cus_{uuid.uuid4().hex[:10]}"
    event = stripe_event("customer.created", {"id": customer}, int(time.time()))
    env.stack.stop_postgrest()
    try:
        answer = stripe_post(env, event)
        assert answer.status_code == 503, answer.text
        assert answer.json()["success"] is False and answer.headers["Retry-After"]
    finally:
        env.stack.start_postgrest()
    assert customer not in rows(pg, "stripe_wh", "stripe_customer")
    assert stripe_post(env, event).json()["outcome"] == "applied"
    assert customer in rows(pg, "stripe_wh", "stripe_customer")


# -- the command line ----------------------------------------------------------------------


def test_the_cli_shows_the_log_the_url_and_the_secret_variables(
    env: Env, pg: Pg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPASAASY_CONFIG", str(env.config))
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WH_STRIPE_SECRET", SECRETS["WH_STRIPE_SECRET"])
    monkeypatch.setattr(cli.console, "width", 250)  # rows on one line each
    runner = CliRunner()
    product = f"prod_{uuid.uuid4().hex[:10]}"
    stripe_post(env, stripe_event("product.created", {"id": product}, int(time.time())))
    log = runner.invoke(
        app,
        [
            "webhooks",
            "log",
            "--app",
            "stripe_wh",
            "--limit",
            "5",
            "--supabase-url",
            env.info.supabase_url,
            "--service-key",
            env.info.service_role_key,
        ],
        terminal_width=250,
    )
    assert log.exit_code == 0, log.output
    assert "product.created" in log.output and "applied" in log.output
    assert "notion_setup" not in log.output

    url = runner.invoke(
        app,
        ["webhooks", "url", "stripe_wh", "--functions-url", "https://fn.example.com"],
        terminal_width=250,
    )
    assert url.exit_code == 0
    assert url.stdout.splitlines()[0] == "https://fn.example.com/webhook/stripe_wh"
    assert "WH_STRIPE_SECRET" in url.output and "whsec_" in url.output
    assert runner.invoke(app, ["webhooks", "url", "nobody", "--functions-url", "x"]).exit_code == 2

    check = runner.invoke(app, ["config", "check"], terminal_width=250)
    lines = {line.split()[1]: line for line in check.output.splitlines() if "│ " in line}
    assert "WH_STRIPE_SECRET (set)" in lines["stripe_wh"]
    assert "WH_STRIPE_UNSET (not set)" in lines["stripe_unset"]
    assert SECRETS["WH_STRIPE_SECRET"] not in check.output


# -- make dev ------------------------------------------------------------------------------


def test_make_dev_has_localstripe_send_its_events_to_the_webhook(
    project_root: Path, scratch: Path
) -> None:
    ports = {name: free_port() for name in ("gateway", "db", "rest", "rest-admin", "localstripe")}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {k: v for k, v in os.environ.items() if k != "SUPASAASY_DB_URL"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supasaasy.devstack",
            "--state-dir",
            str(scratch / "state"),
            "--worker-every",
            "3600",
            *args,
        ],
        cwd=project_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("localstripe sends its events to" in line for line in output), 90)
        stack_env = dict(
            line.split("=", 1)
            for line in (scratch / "state" / "stack.env").read_text().splitlines()
        )
        stripe = f"http://127.0.0.1:{ports['localstripe']}"
        created = httpx.post(
            f"{stripe}/v1/customers",
            data={"name": "from make dev"},
            headers={"Authorization": "Bearer sk_test_local"},
        )
        customer = created.json()["id"]
        with psycopg.connect(stack_env["DATABASE_URL"], autocommit=True) as pg:

            def delivered() -> bool:
                # The row may also come with a sync: the event's log row says it came by
                # the webhook.
                through = pg.execute(
                    "select count(*) from supasaasy.webhook_logs where app_key = 'stripe_local'"
                    " and event_type = 'customer.created' and outcome = 'applied'"
                ).fetchone()
                return through == (1,)

            wait_for(delivered, 20)
            assert customer in rows(pg, "stripe_local", "stripe_customer")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
