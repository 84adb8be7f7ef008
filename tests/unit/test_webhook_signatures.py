"""Webhook signatures as each provider documents them, checked on the raw bytes, and
each connector's events mapped to changes (providers stood in for by respx)."""

from __future__ import annotations

import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from supasaasy.config import AppConfig
from supasaasy.connectors import (
    Connector,
    SignatureError,
    WebhookEventError,
    create_connector,
)
from supasaasy.connectors.base import hmac_matches

SECRET = "whsec_unit_0123456789abcdef"


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STRIPE", "INTERCOM", "NOTION"):
        monkeypatch.setenv(f"{name}_KEY_UNIT", f"{name.lower()}_unit_api_key")


def make(connector: str, resources: list[str] | None = None, **config: Any) -> Connector:
    return create_connector(
        AppConfig(
            app_key=f"{connector}_unit",
            connector=connector,
            resources=resources,
            config={
                "api_key_env": f"{connector.upper()}_KEY_UNIT",
                "api_base": f"https://{connector}.test",
                "webhook_secret_env": "UNIT_SECRET",
                **config,
            },
        )
    )


def hexmac(key: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(key.encode(), message, digest).hexdigest()


def stripe_headers(body: bytes, at: int | None = None, secret: str = SECRET) -> dict[str, str]:
    t = int(time.time()) if at is None else at
    return {"stripe-signature": f"t={t},v1={hexmac(secret, f'{t}.'.encode() + body)}"}


BODY = json.dumps({"id": "evt_1", "type": "customer.updated"}).encode()


def test_the_shared_comparison_is_hmac_in_hex_any_case() -> None:
    digest = hexmac("k", b"body")
    assert hmac_matches("k", b"body", digest) and hmac_matches("k", b"body", digest.upper())
    assert not hmac_matches("k", b"body!", digest) and not hmac_matches("k", b"body", digest[:-1])
    assert hmac_matches("k", b"body", hexmac("k", b"body", "sha1"), "sha1")
    assert not hmac_matches("k", b"body", "\u00e9" * 64)


def test_stripe_accepts_its_signature_and_any_of_several_v1() -> None:
    stripe = make("stripe")
    stripe.verify_webhook(BODY, stripe_headers(BODY), SECRET)
    t = int(time.time())
    rolled = (
        f"t={t},v1={hexmac('whsec_old', f'{t}.'.encode() + BODY)},"
        f"v1={hexmac(SECRET, f'{t}.'.encode() + BODY)},v0=ignored"
    )
    stripe.verify_webhook(BODY, {"stripe-signature": rolled}, SECRET)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"stripe-signature": ""},
        {"stripe-signature": "t=abc,v1=00"},
        {"stripe-signature": f"v1={hexmac(SECRET, BODY)}"},
        {"stripe-signature": f"t={int(time.time())}"},
        {"stripe-signature": f"t=1,t=2,v1={hexmac(SECRET, BODY)}"},
    ],
)
def test_stripe_refuses_a_missing_or_malformed_signature(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError, match="malformed"):
        make("stripe").verify_webhook(BODY, headers, SECRET)


def test_stripe_refuses_forged_tampered_and_stale_requests() -> None:
    stripe = make("stripe")
    with pytest.raises(SignatureError, match="does not match"):
        stripe.verify_webhook(BODY, stripe_headers(BODY, secret="whsec_forged"), SECRET)
    with pytest.raises(SignatureError, match="does not match"):
        stripe.verify_webhook(BODY + b" ", stripe_headers(BODY), SECRET)
    with pytest.raises(SignatureError, match="too old"):
        stripe.verify_webhook(BODY, stripe_headers(BODY, int(time.time()) - 301), SECRET)
    make("stripe", webhook_tolerance_seconds=600).verify_webhook(
        BODY, stripe_headers(BODY, int(time.time()) - 400), SECRET
    )


def test_intercom_and_notion_sign_the_body_with_their_secret() -> None:
    intercom, notion = make("intercom"), make("notion")
    intercom.verify_webhook(
        BODY, {"x-hub-signature": f"sha1={hexmac(SECRET, BODY, 'sha1')}"}, SECRET
    )
    notion.verify_webhook(BODY, {"x-notion-signature": f"sha256={hexmac(SECRET, BODY)}"}, SECRET)
    for connector, header, prefix, digest in (
        (intercom, "x-hub-signature", "sha1=", "sha1"),
        (notion, "x-notion-signature", "sha256=", "sha256"),
    ):
        for value in ("", prefix, hexmac(SECRET, BODY, digest), f"md5={hexmac(SECRET, BODY)}"):
            with pytest.raises(SignatureError, match="malformed"):
                connector.verify_webhook(BODY, {header: value} if value else {}, SECRET)
        for value, body in (
            (hexmac("wrong", BODY, digest), BODY),
            (hexmac(SECRET, BODY, digest), BODY + b"x"),
        ):
            with pytest.raises(SignatureError, match="does not match"):
                connector.verify_webhook(body, {header: prefix + value}, SECRET)


def test_notions_verification_request_is_recognised_and_nothing_else() -> None:
    notion = make("notion")
    assert notion.webhook_verification(b'{"verification_token": "secret_abc"}', {}) == "secret_abc"
    for body, headers in (
        (b'{"verification_token": "secret_abc", "type": "page.created"}', {}),
        (b'{"verification_token": 5}', {}),
        (b"not json", {}),
        (b'{"verification_token": "secret_abc"}', {"x-notion-signature": "x"}),
        (b'{"verification_token": "' + b"x" * 2000 + b'"}', {}),
    ):
        assert notion.webhook_verification(body, headers) is None
    assert make("stripe").webhook_verification(b'{"verification_token": "x"}', {}) is None


# -- events to changes ---------------------------------------------------------------------


def stripe_event(kind: str, obj: dict[str, Any], created: int = 1_800_000_000) -> dict[str, Any]:
    return {
        "id": f"evt_{kind}",
        "object": "event",
        "type": kind,
        "created": created,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def test_stripe_events_map_as_the_change_feed_applies_them() -> None:
    stripe = make("stripe")
    at = datetime.fromtimestamp(1_800_000_000, UTC)
    found = stripe.webhook_event(stripe_event("customer.updated", {"id": "cus_1", "name": "A"}))
    assert (found.event_id, found.event_type, found.observed_at) == (
        "evt_customer.updated",
        "customer.updated",
        at,
    )
    assert found.page is not None
    [record] = found.page.records
    assert (record.collection_key, record.external_id, record.api_version) == (
        "stripe_customer",
        "cus_1",
        "2024-06-20",
    )

    gone = stripe.webhook_event(stripe_event("product.deleted", {"id": "prod_1"}))
    assert gone.page is not None and [
        (d.collection_key, d.external_id, d.observed_at) for d in gone.page.deletions
    ] == [("stripe_product", "prod_1", at)]

    subscription = {
        "id": "sub_1",
        "status": "canceled",
        "items": {"data": [{"id": "si_1", "subscription": "sub_1"}], "has_more": False},
    }
    ended = stripe.webhook_event(stripe_event("customer.subscription.deleted", subscription))
    assert ended.page is not None and not ended.page.deletions
    assert [(r.external_id, r.archived) for r in ended.page.records] == [
        ("sub_1", True),
        ("si_1", False),
    ]
    assert [c.parent_id for c in ended.page.child_sets] == ["sub_1"]


def test_stripe_events_of_resources_not_synced_change_nothing() -> None:
    assert make("stripe").webhook_event(stripe_event("payout.paid", {"id": "po_1"})).page is None
    products = make("stripe", resources=["product"])
    assert products.webhook_event(stripe_event("customer.created", {"id": "cus_1"})).page is None
    assert products.webhook_event(stripe_event("product.created", {"id": "prod_1"})).page


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"id": "evt_1"},
        {"id": "evt_1", "type": "customer.updated", "created": 1},
        {"id": "evt_1", "type": "customer.updated", "created": 1, "data": {"object": {}}},
        {
            "id": "evt_1",
            "type": "customer.updated",
            "created": "1",
            "data": {"object": {"id": "c"}},
        },
        {"id": 1, "type": "customer.updated", "created": 1, "data": {"object": {"id": "c"}}},
    ],
)
def test_a_body_that_is_not_a_stripe_event_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(WebhookEventError):
        make("stripe").webhook_event(event)


def notification(topic: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "notification_event",
        "id": f"notif_{topic}",
        "topic": topic,
        "app_id": "abc",
        "created_at": 1_800_000_100,
        "data": {"type": "notification_event_data", "item": item},
    }


def test_intercom_notifications_store_their_item_as_of_its_update() -> None:
    intercom = make("intercom")
    contact = {"type": "contact", "id": "c1", "role": "user", "updated_at": 1_800_000_050}
    found = intercom.webhook_event(notification("contact.user.updated", contact))
    assert found.observed_at == datetime.fromtimestamp(1_800_000_050, UTC)
    assert found.page is not None and [r.external_id for r in found.page.records] == ["c1"]

    deleted = intercom.webhook_event(
        notification("contact.deleted", {"type": "contact", "id": "c1"})
    )
    assert deleted.page is not None and [d.external_id for d in deleted.page.deletions] == ["c1"]
    assert deleted.observed_at == datetime.fromtimestamp(1_800_000_100, UTC)

    conversation = {
        "type": "conversation",
        "id": "9",
        "state": "closed",
        "updated_at": 1_800_000_060,
        "conversation_parts": {
            "conversation_parts": [{"id": "p1", "body": "hi"}],
            "total_count": 1,
        },
    }
    talk = intercom.webhook_event(notification("conversation.admin.closed", conversation))
    assert talk.page is not None and not talk.page.child_sets  # a notification removes no part
    assert [(r.collection_key, r.external_id, r.archived) for r in talk.page.records] == [
        ("intercom_conversation", "9", True),
        ("intercom_conversation_part", "p1", False),
    ]
    assert talk.page.records[1].raw_payload["conversation_id"] == "9"

    for ignored in (
        notification("ping", {"type": "ping", "message": "hi"}),
        notification("user.tag.created", {"type": "user_tag", "id": "t"}),
    ):
        assert intercom.webhook_event(ignored).page is None
    assert (
        make("intercom", resources=["company"])
        .webhook_event(notification("contact.user.created", contact))
        .page
        is None
    )
    with pytest.raises(WebhookEventError):
        intercom.webhook_event({"topic": "contact.user.created"})


NOTION = "https://notion.test"
PAGE_ID = "59833787-2cf9-4fdf-8782-e53db20768a5"


def notion_event(kind: str, entity_type: str, entity_id: str = PAGE_ID) -> dict[str, Any]:
    return {
        "id": f"ev-{kind}",
        "timestamp": "2030-01-01T00:00:00.000Z",
        "type": kind,
        "workspace_id": "w",
        "subscription_id": "s",
        "integration_id": "i",
        "entity": {"id": entity_id, "type": entity_type},
        "data": {},
    }


def test_notion_events_fetch_their_page(respx_mock: respx.MockRouter) -> None:
    notion = make("notion")
    row = {
        "object": "page",
        "id": PAGE_ID,
        "in_trash": False,
        "parent": {"type": "data_source_id", "data_source_id": "ds"},
        "created_time": "2029-01-01T00:00:00.000Z",
    }
    route = respx_mock.get(f"{NOTION}/v1/pages/{PAGE_ID}")
    route.return_value = httpx.Response(200, json=row)
    before = datetime.now(UTC)
    found = notion.webhook_event(notion_event("page.properties_updated", "page"))
    assert before <= found.observed_at <= datetime.now(UTC)
    assert found.page is not None and [(r.external_id, r.archived) for r in found.page.records] == [
        (PAGE_ID, False)
    ]

    route.return_value = httpx.Response(200, json={**row, "in_trash": True})
    trashed = notion.webhook_event(notion_event("page.deleted", "page"))
    assert trashed.page is not None and trashed.page.records[0].archived

    route.return_value = httpx.Response(404, json={"object": "error", "code": "object_not_found"})
    gone = notion.webhook_event(notion_event("page.deleted", "page"))
    assert gone.page is not None and [d.external_id for d in gone.page.deletions] == [PAGE_ID]

    route.return_value = httpx.Response(200, json={**row, "parent": {"type": "workspace"}})
    assert notion.webhook_event(notion_event("page.created", "page")).page is None
    assert notion.webhook_event(notion_event("comment.created", "comment")).page is None
    assert (
        make("notion", resources=["user"]).webhook_event(notion_event("page.created", "page")).page
        is None
    )
    assert route.call_count == 4
    with pytest.raises(WebhookEventError):
        notion.webhook_event({"id": "ev", "type": "page.created"})
