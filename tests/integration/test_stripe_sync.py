"""Stripe synced into the real stack from localstripe, through the connector and
the batched writer: counts, upstream edits and deletions, resumption, incremental."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from supasaasy.config import AppConfig
from supasaasy.connectors import create_connector
from supasaasy.db import Database
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.seed import SeedSummary, seed_stripe
from supasaasy.models import SyncMode
from supasaasy.sync import ResourceSync, SharedRateLimiter, SyncOutcome

KEY = "sk_test_integration"
Pg = psycopg.Connection[tuple[object, ...]]
RESOURCES = ("customer", "product", "price", "plan", "subscription")


@pytest.fixture
def stripe_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty localstripe for this test."""
    monkeypatch.setenv("LOCALSTRIPE_TEST_KEY", KEY)
    with running_localstripe() as url:
        yield url


@pytest.fixture
def seeded(stripe_api: str) -> SeedSummary:
    return seed_stripe(stripe_api, KEY, customers=240, products=30, plans_per_product=2,
                       subscriptions=60)  # fmt: skip


def app(app_key: str, api: str, **config: Any) -> AppConfig:
    return AppConfig(
        app_key=app_key,
        connector="stripe",
        config={"api_key_env": "LOCALSTRIPE_TEST_KEY", "api_base": api, **config},
    )


def sync(
    db: Database, application: AppConfig, resource: str, mode: SyncMode = "full",
    stop_after_pages: int | None = None, batch_rows: int = 1000,
) -> SyncOutcome:  # fmt: skip
    """Run one task to its end (or stop it after some pages, releasing it)."""
    active = db.get_active_job(application.app_key)
    job = active or db.create_sync_job(application.app_key, mode, [resource])
    task = db.claim_task(job.id)
    assert task is not None
    limiter = SharedRateLimiter(db, application.app_key, per_second=500)
    connector = create_connector(application, rate_limiter=limiter)
    pages_seen = 0

    def should_stop() -> bool:
        nonlocal pages_seen
        pages_seen += 1
        return stop_after_pages is not None and pages_seen >= stop_after_pages

    try:
        outcome = ResourceSync(db, connector, batch_rows=batch_rows).run(task, mode, should_stop)
    finally:
        connector.close()
    if not outcome.finished:
        db.release_task(task.id, outcome.cursor, outcome.progress.entity_count)
    return outcome


def upstream(api: str, path: str) -> dict[str, dict[str, Any]]:
    """Every object of a list endpoint, by id."""
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 100}
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {KEY}"}) as client:
        while True:
            body = client.get(path, params=params).json()
            found.update({obj["id"]: obj for obj in body["data"]})
            if not body["has_more"]:
                return found
            params["starting_after"] = body["data"][-1]["id"]


def stored(pg: Pg, app_key: str, collection: str) -> dict[str, dict[str, Any]]:
    rows = pg.execute(
        "select external_id, raw_payload from supasaasy.entities"
        " where app_key = %s and collection_key = %s",
        (app_key, collection),
    )
    return {r[0]: r[1] for r in rows}  # type: ignore[misc]


def test_full_sync_stores_every_object(
    db: Database, pg: Pg, app_key: str, stripe_api: str, seeded: SeedSummary
) -> None:
    application = app(app_key, stripe_api, page_size=50)
    for resource in RESOURCES:
        outcome = sync(db, application, resource)
        assert outcome.finished
    for path, collection in (("/v1/customers", "stripe_customer"),
                             ("/v1/products", "stripe_product"),
                             ("/v1/prices", "stripe_price"), ("/v1/plans", "stripe_plan"),
                             ("/v1/subscriptions?status=all", "stripe_subscription")):  # fmt: skip
        assert stored(pg, app_key, collection) == upstream(stripe_api, path), collection
    items = stored(pg, app_key, "stripe_subscription_item")
    assert set(items) == set(seeded.subscription_items)
    assert len(stored(pg, app_key, "stripe_customer")) == 240
    archived = pg.execute(
        "select count(*) filter (where archived_at is not null),"
        " count(*) filter (where raw_payload->>'active' = 'false')"
        " from supasaasy.entities where app_key = %s and collection_key = 'stripe_product'",
        (app_key,),
    ).fetchone()
    assert archived is not None and archived[0] == archived[1] > 0
    job = db.get_active_job(app_key)
    assert job is None  # every task finished, so no job is left active


def test_full_sync_after_upstream_edits_and_deletions(
    db: Database, pg: Pg, app_key: str, stripe_api: str, seeded: SeedSummary
) -> None:
    application = app(app_key, stripe_api)
    first = sync(db, application, "customer")
    assert (first.progress.created, first.progress.entity_count) == (240, 240)

    deleted, edited = seeded.customers[:3], seeded.customers[3:5]
    with httpx.Client(base_url=stripe_api, headers={"Authorization": f"Bearer {KEY}"}) as api:
        for customer_id in deleted:
            api.delete(f"/v1/customers/{customer_id}").raise_for_status()
        for customer_id in edited:
            api.post(f"/v1/customers/{customer_id}", data={"name": "Renamed"}).raise_for_status()

    second = sync(db, application, "customer")
    assert (second.progress.created, second.progress.updated) == (0, 2)
    assert second.progress.unchanged == 240 - 3 - 2
    assert second.progress.deleted == 3
    rows = stored(pg, app_key, "stripe_customer")
    assert len(rows) == 237 and not set(deleted) & set(rows)
    assert all(rows[c]["name"] == "Renamed" for c in edited)
    assert rows == upstream(stripe_api, "/v1/customers")


def test_a_resumed_sync_ends_with_the_rows_of_an_uninterrupted_one(
    db: Database, pg: Pg, app_key: str, stripe_api: str, seeded: SeedSummary
) -> None:
    interrupted = app(app_key, stripe_api, page_size=25)
    stopped = sync(db, interrupted, "subscription", stop_after_pages=2, batch_rows=25)
    assert not stopped.finished
    job = db.get_active_job(app_key)
    assert job is not None
    task = db.get_job_status(job.id).tasks[0]
    assert task.status == "pending" and task.cursor is not None
    assert task.entity_count == stopped.progress.entity_count > 0
    partial = stored(pg, app_key, "stripe_subscription")
    partial_items = stored(pg, app_key, "stripe_subscription_item")
    assert len(partial) == 50  # two pages of 25, committed with their cursor

    resumed = sync(db, interrupted, "subscription", batch_rows=25)
    assert resumed.finished
    assert len(stored(pg, app_key, "stripe_subscription")) == 60
    assert resumed.progress.created == 10 + len(seeded.subscription_items) - len(partial_items)

    whole = app(app_key + "_whole", stripe_api, page_size=25)
    assert sync(db, whole, "subscription").finished
    for collection in ("stripe_subscription", "stripe_subscription_item"):
        assert stored(pg, app_key, collection) == stored(pg, whole.app_key, collection)
    final = db.get_job_status(job.id)
    assert final.job.status == "completed"
    assert final.tasks[0].entity_count == len(stored(pg, app_key, "stripe_subscription")) + len(
        stored(pg, app_key, "stripe_subscription_item")
    )


def test_incremental_sync_applies_changes_since_the_watermark(
    db: Database, pg: Pg, app_key: str, stripe_api: str, seeded: SeedSummary
) -> None:
    application = app(app_key, stripe_api)
    # Stripe stamps events in whole seconds, and events from the watermark's second
    # are read again. localstripe changes customers without events while seeding
    # subscriptions, so let the seeding's events fall before the watermark.
    time.sleep(1.05 - time.time() % 1)
    # No sync state yet: an incremental request runs a full sync.
    first = sync(db, application, "customer", mode="incremental")
    assert first.progress.mode == "full" and first.progress.created == 240
    state = db.get_sync_state(app_key, "stripe_customer")
    started = pg.execute(
        "select t.started_at from supasaasy.sync_job_tasks t join supasaasy.sync_jobs j"
        " on j.id = t.job_id where j.app_key = %s", (app_key,)).fetchone()  # fmt: skip
    assert state is not None and started is not None
    assert state.last_synced_at == started[0]  # the watermark is when the task started

    changed, gone = seeded.customers[10:12], seeded.customers[12]
    with httpx.Client(base_url=stripe_api, headers={"Authorization": f"Bearer {KEY}"}) as api:
        for customer_id in changed:
            api.post(f"/v1/customers/{customer_id}", data={"name": "Changed"}).raise_for_status()
        api.delete(f"/v1/customers/{gone}").raise_for_status()
        api.post("/v1/customers", data={"name": "Brand New", "email": "new@example.com"})

    second = sync(db, application, "customer", mode="incremental")
    assert second.progress.mode == "incremental"
    assert (second.progress.created, second.progress.updated, second.progress.deleted) == (1, 2, 1)
    rows = stored(pg, app_key, "stripe_customer")
    assert rows == upstream(stripe_api, "/v1/customers")
    assert all(rows[c]["name"] == "Changed" for c in changed)


def test_a_watermark_older_than_the_events_retention_means_a_full_sync(
    db: Database, pg: Pg, app_key: str, stripe_api: str, seeded: SeedSummary
) -> None:
    application = app(app_key, stripe_api)
    assert sync(db, application, "product", mode="full").finished
    pg.execute("update supasaasy.sync_state set last_synced_at = now() - interval '31 days'"
               " where app_key = %s", (app_key,))  # fmt: skip
    again = sync(db, application, "product", mode="incremental")
    assert again.progress.mode == "full"
    assert again.progress.unchanged == len(seeded.products)
    pg.execute("update supasaasy.sync_state set last_synced_at = now() - interval '29 days'"
               " where app_key = %s", (app_key,))  # fmt: skip
    assert sync(db, application, "product", mode="incremental").progress.mode == "incremental"
