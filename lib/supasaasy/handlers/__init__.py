"""Handler factories for the four HTTP functions (served by functions-framework)."""

from .common import Runtime
from .job_status import create_job_status_handler
from .sync import create_sync_handler
from .webhook import create_webhook_handler
from .worker import create_worker_handler

__all__ = [
    "Runtime",
    "create_job_status_handler",
    "create_sync_handler",
    "create_webhook_handler",
    "create_worker_handler",
]
