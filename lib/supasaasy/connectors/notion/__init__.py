"""The Notion connector."""

from .connector import API_VERSION, NotionConnector, NotionSettings

__all__ = ["API_VERSION", "NotionConnector", "NotionSettings"]
