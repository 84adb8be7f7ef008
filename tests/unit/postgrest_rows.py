"""Rows as PostgREST returns them, for the unit tests' stand-in answers."""

from __future__ import annotations

from typing import Any

JOB_ID = "0b5f8a0e-3c1c-4c56-9d1a-5e2f3a4b6c7d"
TASK_ID = "c0ffee00-1234-4abc-8def-0123456789ab"
CREATED_AT = "2026-11-29T10:15:30.123456+00:00"


def job_row(**overrides: Any) -> dict[str, Any]:
    """A sync_jobs row: pending, two tasks, nothing done; `overrides` replace columns."""
    return {
        "id": JOB_ID,
        "app_key": "stripe",
        "mode": "incremental",
        "resource_types": ["customers", "invoices"],
        "status": "pending",
        "total_tasks": 2,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "processed_entities": 0,
        "created_at": CREATED_AT,
        "started_at": None,
        "completed_at": None,
        "error_message": None,
    } | overrides


def task_row(**overrides: Any) -> dict[str, Any]:
    """A sync_job_tasks row: pending, never claimed; `overrides` replace columns."""
    return {
        "id": TASK_ID,
        "job_id": JOB_ID,
        "resource_type": "customers",
        "position": 1,
        "status": "pending",
        "entity_count": 0,
        "cursor": None,
        "attempts": 0,
        "last_heartbeat": None,
        "created_at": CREATED_AT,
        "started_at": None,
        "completed_at": None,
        "error_message": None,
    } | overrides
