"""The `worker` function (functions-framework target `worker`)."""

from pathlib import Path

from supasaasy.config import load_settings
from supasaasy.handlers import create_worker_handler

worker = create_worker_handler(load_settings(Path(__file__).parent.parent / "supasaasy.toml"))
