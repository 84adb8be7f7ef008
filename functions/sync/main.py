"""The `sync` function (functions-framework target `sync`)."""

from pathlib import Path

from supasaasy.config import load_settings
from supasaasy.handlers import create_sync_handler

sync = create_sync_handler(load_settings(Path(__file__).parent.parent / "supasaasy.toml"))
