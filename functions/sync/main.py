"""The `sync` function (functions-framework target `sync`)."""

import gc
from pathlib import Path

from supasaasy.config import load_settings
from supasaasy.handlers import create_sync_handler

sync = create_sync_handler(load_settings(Path(__file__).parent.parent / "supasaasy.toml"))
# What start-up built lives as long as the process: keep it out of every later
# garbage collection, which would otherwise rescan it many times during a sync.
gc.freeze()
