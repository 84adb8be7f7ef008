"""The conformance suite over the built-in connectors and their fake providers."""

from __future__ import annotations

from supasaasy.testing import FakeIntercom, FakeNotion, FakeStripe
from supasaasy.testing.conformance import ConnectorConformance


class TestBuiltInConnectors(ConnectorConformance):
    providers = (FakeStripe, FakeIntercom, FakeNotion)
