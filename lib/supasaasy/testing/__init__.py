"""Test a connector against a fake of its provider.

A fake provider is a `FakeProvider` subclass: the provider's API over objects held in
memory, served by a real HTTP server on 127.0.0.1. It sets `connector` (the connector's
name) and `resources` (a `FakeResource` per resource type of the connector), and
implements:

- `routes()`: (method, path with `{placeholders}`, handler) per endpoint; a handler
  takes a `Request` and returns a JSON object (200) or a `Reply`, or raises `Refused`.
  List handlers page with `page_of(request, objects, after, size)`, which returns a
  `Slice` (objects, more, cursor) and serves the contradictions armed by `contradict`.
- `new_object(resource, number, when)`: a new object in the provider's shape (it may
  `add` children); `touch(resource, obj, when)`: edit it; `mark_archived(resource, obj)`.
- optionally `changed(...)` (to record a change feed), `delete` / `archive` (where the
  provider differs), `error_body`, `authorized`, `settings`, `invalid_settings`.

Tests drive it with `create`, `populate`, `update`, `delete`, `archive`, inject faults
with `fail_next(count, status, path=, retry_after=)` and `contradict(kind, path=,
times=)`, read `requests`, and configure the connector with `app_config()` and
`environ()`. `start()`/`stop()` or `with` run the server.

The conformance suite (`supasaasy.testing.conformance.ConnectorConformance`, which needs
pytest) runs every check over the fake providers a subclass lists:

    from supasaasy.testing.conformance import ConnectorConformance

    class TestAcmeConformance(ConnectorConformance):
        providers = (FakeAcme,)

`FakeStripe`, `FakeIntercom` and `FakeNotion` are the fakes of the built-in connectors.
"""

from .fake import (
    CONTRADICTIONS,
    Contradiction,
    FakeProvider,
    FakeResource,
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
    "Contradiction",
    "FakeIntercom",
    "FakeNotion",
    "FakeProvider",
    "FakeResource",
    "FakeStripe",
    "Refused",
    "Reply",
    "Request",
    "Slice",
]
