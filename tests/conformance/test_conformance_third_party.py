"""The suite over a connector written outside the package, as its author would test it:
a small connector for an imaginary provider (Acme's widgets, paged by an `after` cursor)
and a fake of that provider on FakeProvider."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from supasaasy.config import AppConfig
from supasaasy.connectors import (
    Connector,
    ConnectorMetadata,
    Page,
    Record,
    Resource,
    register,
)
from supasaasy.connectors.base import connector_settings, secret_from_env, source_time
from supasaasy.connectors.http import ProviderClient
from supasaasy.connectors.paginators import BodyCursorPaginator, paginate
from supasaasy.testing import FakeProvider, FakeResource, Request
from supasaasy.testing.conformance import ConnectorConformance


class AcmeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key_env: str
    api_base: str = "https://api.acme.test"
    page_size: int = Field(default=50, ge=1, le=100)


@register
class AcmeConnector(Connector):
    metadata = ConnectorMetadata(
        name="acme",
        display_name="Acme",
        api_version="1",
        resources=(Resource("widget", "acme_widget", "Acme widgets", supports_incremental=False),),
    )

    def __init__(self, app: AppConfig, **limits: Any) -> None:
        super().__init__(app, **limits)
        self.settings = connector_settings(AcmeSettings, app, "acme")
        key = secret_from_env(app, "acme", self.settings.api_key_env)
        client = httpx.Client(base_url=self.settings.api_base,
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        self.http = ProviderClient("Acme", client, lambda: self.rate_limiter.acquire())

    def full_sync(self, resource_type: str, *, cursor: str | None = None) -> Iterator[Page]:
        pages = paginate(
            lambda query: self.http.get_json("/widgets", query),
            {"limit": self.settings.page_size},
            BodyCursorPaginator("Acme GET /widgets", cursor, param="after", next_path=["next"]),
            lambda body: body["widgets"],
        )
        for widgets, after in pages:
            records = [Record("acme_widget", w["id"], w, archived=w["archived"],
                              created_at=source_time(w["created"]),
                              updated_at=source_time(w["updated"])) for w in widgets]  # fmt: skip
            yield Page(records, cursor=after)

    def close(self) -> None:
        self.http.client.close()


class FakeAcme(FakeProvider):
    connector = "acme"
    resources: ClassVar[dict[str, FakeResource]] = {"widget": FakeResource(archivable=True)}

    def routes(self) -> Iterable[tuple[str, str, Any]]:
        return [("GET", "/widgets", self.list_widgets)]

    def new_object(self, resource: str, number: int, when: datetime) -> dict[str, Any]:
        return {"id": f"w{number}", "archived": False, "created": when.isoformat(),
                "updated": when.isoformat()}  # fmt: skip

    def touch(self, resource: str, obj: dict[str, Any], when: datetime) -> None:
        obj["updated"] = when.isoformat()

    def mark_archived(self, resource: str, obj: dict[str, Any]) -> None:
        obj["archived"] = True

    def list_widgets(self, request: Request) -> dict[str, Any]:
        limit = int(request.query["limit"])
        page = self.page_of(request, self.listed("widget"), request.query.get("after"), limit)
        return {"widgets": page.objects, "next": page.cursor}


class TestAcmeConformance(ConnectorConformance):
    providers = (FakeAcme,)
