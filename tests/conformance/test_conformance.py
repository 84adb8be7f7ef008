"""The conformance suite over the built-in connectors and their fake providers."""

from __future__ import annotations

from typing import ClassVar

from supasaasy.testing import FakeIntercom, FakeNotion, FakeStripe
from supasaasy.testing.conformance import ConnectorConformance


class TestBuiltInConnectors(ConnectorConformance):
    providers = (FakeStripe, FakeIntercom, FakeNotion)
    expected_failures: ClassVar[dict[str, str]] = {
        "test_conformance_contradicting_pages_fail[intercom-company-repeat_cursor]": (
            "ScrollPaginator never compares a page with the one before: a company scroll"
            " that serves the same page again and again loops until the time budget ends"
        ),
    }
