"""A small client for the three functions, used by the command line and the demo."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from .errors import FunctionError as FunctionError
from .errors import SupasaasyError

FINISHED = ("completed", "failed", "cancelled")


class FunctionsClient:
    def __init__(self, functions_url: str, admin_key: str, timeout: float = 120.0) -> None:
        self.http = httpx.Client(
            base_url=functions_url.rstrip("/"),
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=timeout,
        )

    def __enter__(self) -> FunctionsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _call(self, method: str, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise SupasaasyError(
                f"cannot reach {self.http.base_url}{path}: {exc.__class__.__name__}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if not isinstance(body, dict):
            body = {"error": str(body)[:200]}
        if response.is_error:
            raise FunctionError(response.status_code, str(body.get("error", "")), body)
        return body

    def sync(
        self,
        app_key: str,
        mode: str = "incremental",
        resource_types: list[str] | None = None,
        immediate: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"app_key": app_key, "mode": mode}
        if resource_types:
            body["resource_types"] = resource_types
        if immediate:
            body["immediate"] = True
        return self._call("POST", "/sync", body)

    def worker(self, job_id: str | None = None, max_tasks: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if job_id:
            body["job_id"] = job_id
        if max_tasks:
            body["max_tasks"] = max_tasks
        return self._call("POST", "/worker", body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/job-status/{job_id}?include_tasks=true")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/job-status/{job_id}/cancel")

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/job-status/{job_id}/retry")

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[dict[str, Any]], None] = lambda status: None,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it ends; `on_progress` sees every status read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            on_progress(status)
            if status["status"] in FINISHED:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise SupasaasyError(f"job {job_id} did not finish within {timeout:.0f} s")
            time.sleep(interval)
