"""The `job-status` function (functions-framework target `job_status`)."""

from pathlib import Path

from supasaasy.config import load_settings
from supasaasy.handlers import create_job_status_handler

job_status = create_job_status_handler(
    load_settings(Path(__file__).parent.parent / "supasaasy.toml")
)
