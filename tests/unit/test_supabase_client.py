"""`Database.connect` goes through the Supabase Python client: what it builds, and the
HTTP requests that client sends (captured with respx)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

import supabase
from supasaasy.db import Database
from supasaasy.errors import DatabaseUnavailableError

SUPABASE_URL = "http://project.test"
REST_URL = f"{SUPABASE_URL}/rest/v1"
SERVICE_KEY = "service-role-key"
TASK_ID = "c0ffee00-1234-4abc-8def-0123456789ab"


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every `supabase.create_client` call: its arguments and the client it returned."""
    calls: list[tuple[Any, ...]] = []
    real = supabase.create_client

    def spy(url: str, key: str, options: Any = None) -> supabase.Client:
        client = real(url, key, options=options)
        calls.append((url, key, options, client))
        return client

    monkeypatch.setattr(supabase, "create_client", spy)
    return calls


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """Every host: a request to anything a test did not declare fails it."""
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        yield router


def assert_service_request(request: httpx.Request) -> None:
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert request.headers["Accept-Profile"] == "supasaasy"
    assert request.headers["Content-Profile"] == "supasaasy"
    # The Supabase client's own header (postgrest-py's `schema()` appends it to its own).
    assert f"supabase-py/{supabase.__version__};" in request.headers["X-Client-Info"]


def test_connect_builds_a_supabase_client_for_the_supasaasy_schema(
    created: list[tuple[Any, ...]],
) -> None:
    db = Database.connect(SUPABASE_URL, SERVICE_KEY)

    [(url, key, options, client)] = created
    assert (url, key) == (SUPABASE_URL, SERVICE_KEY)
    assert options.schema == "supasaasy"
    assert isinstance(client, supabase.Client)
    assert db.rest is client.postgrest
    assert str(db.rest.base_url) == REST_URL
    assert db.rest.headers["X-Client-Info"].startswith(f"supabase-py/{supabase.__version__};")
    # Storage and functions are built on first use only, and never used.
    assert client._storage is None and client._functions is None


def test_connect_keeps_postgrest_defaults_without_deprecation_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = Database.connect(SUPABASE_URL, SERVICE_KEY)

    assert [str(w.message) for w in caught] == []
    assert db.rest.session.timeout == httpx.Timeout(120)
    assert db.rest.session.follow_redirects
    assert db.rest.retry_enabled


def test_connect_sends_nothing() -> None:
    with respx.mock(assert_all_called=False) as router:
        route = router.route().respond(500)
        Database.connect(SUPABASE_URL, SERVICE_KEY)

    assert route.call_count == 0


@pytest.mark.parametrize("url", [SUPABASE_URL, f"{SUPABASE_URL}/"])
def test_rpc_requests_carry_the_service_key_and_schema(api: respx.MockRouter, url: str) -> None:
    route = api.post(f"{REST_URL}/rpc/claim_task").respond(200, json=[])

    assert Database.connect(url, SERVICE_KEY).claim_task() is None

    request = route.calls.last.request
    assert_service_request(request)
    assert json.loads(request.content) == {"p_job_id": None}


def test_table_requests_carry_the_service_key_and_schema(api: respx.MockRouter) -> None:
    route = api.get(f"{REST_URL}/sync_state").respond(200, json=[])

    assert Database.connect(SUPABASE_URL, SERVICE_KEY).get_sync_state("stripe", "customer") is None

    assert_service_request(route.calls.last.request)


def test_batches_go_through_the_same_client(api: respx.MockRouter) -> None:
    counts = {"created": 1, "updated": 0, "unchanged": 0, "deleted": 0}
    route = api.post(f"{REST_URL}/rpc/write_batch").respond(200, json=counts)
    batch = {"task_id": TASK_ID, "attempt": 1, "seq": 1, "cursor": None, "entity_count": 1,
             "mode": "full", "rows": []}  # fmt: skip

    assert Database.connect(SUPABASE_URL, SERVICE_KEY).write_batch(batch).created == 1  # type: ignore[arg-type]

    request = route.calls.last.request
    assert_service_request(request)
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_batches_through_a_users_client_with_its_own_http_client(api: respx.MockRouter) -> None:
    """A bare httpx client has neither the REST URL nor the key: both come from PostgREST's."""
    route = api.post(f"{REST_URL}/rpc/finish_task").respond(200, json={"deleted": 2})
    own = supabase.create_client(
        SUPABASE_URL, SERVICE_KEY, options=supabase.ClientOptions(httpx_client=httpx.Client())
    )

    finished = Database.from_supabase(own).finish_task(
        {"task_id": TASK_ID, "attempt": 1, "entity_count": 3}
    )

    assert finished.deleted == 2
    request = route.calls.last.request
    assert_service_request(request)
    assert request.headers["Content-Type"] == "application/json"


def test_an_unreachable_project_is_unavailable(api: respx.MockRouter) -> None:
    api.post(f"{REST_URL}/rpc/claim_task").mock(side_effect=httpx.ConnectError("refused"))

    with pytest.raises(DatabaseUnavailableError):
        Database.connect(SUPABASE_URL, SERVICE_KEY).claim_task()


@pytest.mark.parametrize(("url", "key"), [("project.test", SERVICE_KEY), (SUPABASE_URL, "")])
def test_a_bad_url_or_key_is_a_value_error(url: str, key: str) -> None:
    with pytest.raises(ValueError, match="cannot build the Supabase client"):
        Database.connect(url, key)
