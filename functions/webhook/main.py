"""The `webhook` function (functions-framework target `webhook`)."""

import gc

from supasaasy.config import function_settings
from supasaasy.handlers import create_webhook_handler

webhook = create_webhook_handler(function_settings(__file__))
gc.freeze()  # start-up objects live as long as the process: out of every later GC pass
