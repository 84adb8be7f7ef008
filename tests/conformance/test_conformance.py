"""The conformance suite over the built-in connectors and their fake providers."""

from __future__ import annotations

from typing import ClassVar

from supasaasy.testing import FakeIntercom, FakeNotion, FakeStripe
from supasaasy.testing.conformance import ConnectorConformance

CONTRADICTIONS = "test_conformance_contradicting_pages_fail"
SCROLL_LOOPS = (
    "ScrollPaginator never compares a page with the ones before: a company scroll that"
    " serves the same page again and again loops until the time budget ends"
)
QUIET_END = (
    "Intercom's cursor lists take a pages.next without starting_after for the end: the"
    " listing ends quietly although the page says more follow"
)


class TestBuiltInConnectors(ConnectorConformance):
    providers = (FakeStripe, FakeIntercom, FakeNotion)
    expected_failures: ClassVar[dict[str, str]] = {
        f"{CONTRADICTIONS}[intercom-company-repeat_cursor]": SCROLL_LOOPS,
        f"{CONTRADICTIONS}[intercom-contact-more_without_cursor]": QUIET_END,
        f"{CONTRADICTIONS}[intercom-conversation-more_without_cursor]": QUIET_END,
    }
