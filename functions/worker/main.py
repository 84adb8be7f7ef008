"""The `worker` function (functions-framework target `worker`)."""

import gc

from supasaasy.config import function_settings
from supasaasy.handlers import create_worker_handler

worker = create_worker_handler(function_settings(__file__))
gc.freeze()  # start-up objects live as long as the process: out of every later GC pass
