"""The local stack's scheduler: what cron does in production. It calls the worker
every few seconds and starts each configured sync schedule when its cron matches."""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, datetime

import httpx
from croniter import croniter

from ..config import SyncSchedule

log = logging.getLogger("supasaasy.scheduler")


class Scheduler(threading.Thread):
    def __init__(
        self,
        functions_url: str,
        admin_key: str,
        schedules: list[SyncSchedule],
        worker_every: float = 5.0,
    ) -> None:
        super().__init__(name="supasaasy-scheduler", daemon=True)
        self.functions_url = functions_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.schedules = schedules
        self.worker_every = worker_every
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        last_minute = None
        with httpx.Client(headers=self.headers, timeout=120) as client:
            while not self.stopping.is_set():
                minute = datetime.now(UTC).replace(second=0, microsecond=0)
                if minute != last_minute:
                    last_minute = minute
                    for schedule in self.schedules:
                        if croniter.match(schedule.cron, minute):
                            self._post(client, "sync", {
                                "app_key": schedule.app_key, "mode": schedule.mode,
                                **({"resource_types": schedule.resource_types}
                                   if schedule.resource_types else {}),
                            })  # fmt: skip
                self._post(client, "worker", {})
                self.stopping.wait(self.worker_every)

    def _post(self, client: httpx.Client, function: str, body: dict[str, object]) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the stack may be stopping
            response = client.post(f"{self.functions_url}/{function}", json=body)
            log.info("scheduler: %s -> %s %s", function, response.status_code,
                     response.text[:200])  # fmt: skip
