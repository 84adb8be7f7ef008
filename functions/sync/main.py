"""The `sync` function (functions-framework target `sync`)."""

import gc

from supasaasy.config import function_settings
from supasaasy.handlers import create_sync_handler

sync = create_sync_handler(function_settings(__file__))
gc.freeze()  # start-up objects live as long as the process: out of every later GC pass
