"""The HTTP connector base: a connector that is a table of resources syncs with no paging
code of its own, gets its rate limiter when it first sends, and makes records by its
resources' rules."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
import respx

from supasaasy.config import AppConfig
from supasaasy.connectors import ConfigError, ConnectorMetadata, ProviderError, RateLimiter
from supasaasy.connectors.base import Listing, Resource
from supasaasy.connectors.http import HttpConnector, HttpSettings, tls_context
from supasaasy.connectors.paginators import NextUrlPaginator, StartingAfterPaginator

API = "https://api.example.test"


class ExampleSettings(HttpSettings):
    api_base: str = API


def _hidden(obj: dict[str, Any]) -> bool:
    return obj.get("hidden") is True


class Example(HttpConnector):
    metadata = ConnectorMetadata(
        name="example",
        display_name="Example",
        api_version="1",
        resources=(
            Resource("item", "example_item", "items",
                     listing=Listing("/items", paginator=StartingAfterPaginator,
                                     page_size_param="limit"),
                     archived=_hidden, created_field="created", updated_field="updated_at"),
            Resource("note", "example_note", "notes",
                     listing=Listing("/notes", "notes", partial(
                         NextUrlPaginator, url=f"{API}/notes", next_path=("next",)))),
        ),
    )  # fmt: skip
    settings_model = ExampleSettings
    default_requests_per_second = 7.0


class Counting(RateLimiter):
    def __init__(self, rate: float) -> None:
        self.rate, self.taken = rate, 0

    def acquire(self) -> None:
        self.taken += 1


def app(**config: Any) -> AppConfig:
    return AppConfig(app_key="ex", connector="example", config=config)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_API_KEY_EX", "sk_example_secret")


@respx.mock(base_url=API)
def test_a_listed_resource_pages_to_the_end_with_its_rules(respx_mock: respx.MockRouter) -> None:
    respx_mock.get("/items").mock(side_effect=[
        httpx.Response(200, json={"data": [
            {"id": "a", "created": 1_700_000_000, "updated_at": "2027-01-01T00:00:00Z"},
            {"id": "b", "created": 1_700_000_001, "hidden": True}], "has_more": True}),
        httpx.Response(200, json={"data": [{"id": 3}], "has_more": False}),
    ])  # fmt: skip
    limiters: list[Counting] = []
    connector = Example(app(page_size=2), rate_limits=lambda rate: limiters.append(
        Counting(rate)) or limiters[-1])  # fmt: skip
    assert limiters == []  # made when first needed
    pages = list(connector.full_sync("item"))
    assert [p.cursor for p in pages] == ["b", None]
    records = [r for p in pages for r in p.records]
    assert [(r.collection_key, r.external_id, r.archived) for r in records] == [
        ("example_item", "a", False),
        ("example_item", "b", True),
        ("example_item", "3", False),
    ]
    assert records[0].created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert records[0].updated_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert records[2].created_at is None and records[2].updated_at is None
    assert [(limiter.rate, limiter.taken) for limiter in limiters] == [(7.0, 2)]
    sent = [call.request for call in respx_mock.calls]
    assert [dict(r.url.params) for r in sent] == [
        {"limit": "2"},
        {"limit": "2", "starting_after": "b"},
    ]
    assert sent[0].headers["Authorization"] == "Bearer sk_example_secret"


@respx.mock(base_url=API)
def test_a_next_url_listing_requests_the_urls_the_pages_name(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/notes").mock(side_effect=[
        httpx.Response(200, json={"notes": [{"id": "n1"}], "next": "/notes?page=2&q=x"}),
        httpx.Response(200, json={"notes": [{"id": "n2"}], "next": None}),
    ])  # fmt: skip
    pages = list(Example(app()).full_sync("note"))
    assert [p.cursor for p in pages] == [f"{API}/notes?page=2&q=x", None]
    assert str(respx_mock.calls[1].request.url) == f"{API}/notes?page=2&q=x"
    assert [r.external_id for p in pages for r in p.records] == ["n1", "n2"]


def test_sync_from_leaves_out_objects_created_before_it() -> None:
    connector = Example(AppConfig(app_key="ex", connector="example", config={},
                                  sync_from=datetime(2024, 1, 1, tzinfo=UTC)))  # fmt: skip
    assert not connector.in_window("item", {"id": "a", "created": 1_700_000_000})
    assert connector.in_window("item", {"id": "b", "created": 1_800_000_000})
    assert connector.in_window("item", {"id": "c"})  # no creation time: inside


@respx.mock(base_url=API)
def test_a_page_without_its_list_or_an_object_without_an_id_fails(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get("/items").mock(side_effect=[
        httpx.Response(200, json={"items": [], "has_more": False}),
        httpx.Response(200, json={"data": [{"id": "a"}, {"name": "no id"}], "has_more": False}),
    ])  # fmt: skip
    with pytest.raises(ProviderError, match="Example GET /items returned a page without data"):
        list(Example(app()).full_sync("item"))
    with pytest.raises(ProviderError, match=r"malformed object \(no id\) at position 1"):
        list(Example(app()).full_sync("item"))


def test_settings_errors_name_the_field_and_never_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as err:
        Example(app(page_size=0, colour="blue"))
    assert "config.page_size" in str(err.value) and "config.colour" in str(err.value)
    assert "sk_example_secret" not in str(err.value)
    monkeypatch.delenv("EXAMPLE_API_KEY_EX")
    with pytest.raises(ConfigError, match="EXAMPLE_API_KEY_EX"):
        Example(app())


def test_connectors_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    tls_context.cache_clear()
    connectors = [Example(app()) for _ in range(3)]
    assert len(made) <= 1  # the CA bundle is loaded once, not per connector
    for connector in connectors:
        connector.close()
