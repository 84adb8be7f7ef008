"""Test a connector against a fake of its provider, and run the conformance suite.

A fake provider subclasses `FakeProvider`: the provider's API over objects in memory,
served by a real HTTP server on 127.0.0.1 (a random port) in a background thread.

    class FakeAcme(FakeProvider):
        connector = "acme"                          # the connector's registered name
        resources = {"widget": FakeResource(archivable=True)}   # one per resource type

        def routes(self):                           # (method, path, handler) per endpoint
            return [("GET", "/widgets", self.list_widgets)]

        def new_object(self, resource, number, when):   # in the provider's shape
            return {"id": f"w{number}", "archived": False, "updated": when.isoformat()}

        def touch(self, resource, obj, when):       # an edit at `when`
            obj["updated"] = when.isoformat()

        def mark_archived(self, resource, obj):     # for archivable resources
            obj["archived"] = True

        def list_widgets(self, request):            # Request -> JSON object (or Reply)
            page = self.page_of(request, self.listed("widget"),
                                request.query.get("after"), int(request.query["limit"]))
            return {"widgets": page.objects, "next": page.cursor}

What a subclass may also set or override: `page_size` (3), `invalid_settings`
(`{"page_size": 0}`, settings the connector must refuse), `settings()` (the app's
`config`: api_key_env, api_base, page_size), `error_body(status, message)`,
`authorized(request)` (a Bearer key), `changed(resource, change, obj, when)` (called
after every change: a change feed records it), `delete` and `archive` (where the
provider does otherwise, e.g. deleting moves to a trash). A handler raises
`Refused(status, message)` to answer the provider's error body.

`FakeResource` says, per resource type: `paged` (several pages' worth is made),
`archivable`, `feed` (the changes the incremental sync's change feed reports: created,
updated, deleted), `has_created_time` / `has_updated_time` (records must carry them),
`contradictions` (the self-contradictions its listing can express).

Driving a fake: `start()`/`stop()` or `with`; `app_config(**config)` and `environ()`
configure the connector (API key in `api_key_env`); `create(resource, count, at=)`,
`populate(resource)` (three pages' worth), `update`, `delete`, `archive`; `ids`,
`listed`, `children`, `parent_of`, `created_at` / `updated_at` (the times each object
was given). `fail_next(count, status, path=, retry_after=)` answers the next requests
with an error; `contradict(kind, path=, times=)` makes the next list pages contradict
themselves (`missing_id`, `empty_with_more`, `repeat_cursor`; `served` lists those
served). `requests` records every Request (`at` its arrival, `status` its answer).

The conformance suite, `supasaasy.testing.conformance.ConnectorConformance` (it needs
pytest), runs every check over the fakes a subclass lists:

    from supasaasy.testing.conformance import ConnectorConformance

    class TestAcmeConformance(ConnectorConformance):
        providers = (FakeAcme,)

`FakeStripe`, `FakeIntercom` and `FakeNotion` are the fakes of the built-in connectors.
"""

from .fake import (
    CONTRADICTIONS,
    Change,
    Contradiction,
    FakeProvider,
    FakeResource,
    Handler,
    Refused,
    Reply,
    Request,
    Slice,
)
from .intercom import FakeIntercom
from .notion import FakeNotion
from .stripe import FakeStripe

__all__ = [
    "CONTRADICTIONS",
    "Change",
    "Contradiction",
    "FakeIntercom",
    "FakeNotion",
    "FakeProvider",
    "FakeResource",
    "FakeStripe",
    "Handler",
    "Refused",
    "Reply",
    "Request",
    "Slice",
]
