"""The `job-status` function (functions-framework target `job_status`)."""

import gc

from supasaasy.config import function_settings
from supasaasy.handlers import create_job_status_handler

job_status = create_job_status_handler(function_settings(__file__))
gc.freeze()  # start-up objects live as long as the process: out of every later GC pass
