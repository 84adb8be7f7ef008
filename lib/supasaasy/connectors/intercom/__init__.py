"""The Intercom connector."""

from .connector import API_VERSION, IntercomConnector, IntercomSettings

__all__ = ["API_VERSION", "IntercomConnector", "IntercomSettings"]
