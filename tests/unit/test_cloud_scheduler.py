"""The Cloud Scheduler commands printed for hosts without pg_cron: one job per call."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from supasaasy.cli import app
from supasaasy.config import parse_settings
from supasaasy.schedules import cloud_scheduler_commands

SETTINGS = parse_settings({
    "apps": [{"app_key": "stripe_main", "connector": "stripe"}],
    "sync_schedules": [
        {"app_key": "stripe_main", "cron": "*/15 * * * *"},
        {"app_key": "stripe_main", "cron": "30 3 * * *", "mode": "full",
         "resource_types": ["customer"]},
    ],
    "job_retention_days": 14,
})  # fmt: skip


def _jobs() -> dict[str, dict[str, str]]:
    found = {}
    for line in cloud_scheduler_commands(
        SETTINGS, "https://fn.example/", "europe-west1"
    ).splitlines():
        words = shlex.split(line)
        assert words[:5] == ["gcloud", "scheduler", "jobs", "create", "http"]
        found[words[5]] = dict(word[2:].split("=", 1) for word in words[6:])
    return found


def test_each_schedule_is_one_job_with_the_admin_key() -> None:
    jobs = _jobs()
    assert list(jobs) == ["supasaasy-worker", "supasaasy-sync-stripe_main-0",
                          "supasaasy-sync-stripe_main-1", "supasaasy-cleanup"]  # fmt: skip
    worker = jobs["supasaasy-worker"]
    assert (worker["schedule"], worker["uri"], worker["http-method"]) == (
        "* * * * *", "https://fn.example/worker", "POST")  # fmt: skip
    assert worker["headers"] == "Content-Type=application/json,Authorization=Bearer $ADMIN_API_KEY"
    assert worker["location"] == "europe-west1" and json.loads(worker["message-body"]) == {}
    full = jobs["supasaasy-sync-stripe_main-1"]
    assert full["schedule"] == "30 3 * * *" and full["uri"] == "https://fn.example/sync"
    assert json.loads(full["message-body"]) == {
        "app_key": "stripe_main", "mode": "full", "resource_types": ["customer"]}  # fmt: skip
    cleanup = jobs["supasaasy-cleanup"]
    assert cleanup["uri"] == "$SUPABASE_URL/rest/v1/rpc/cleanup_old_jobs"
    assert "Content-Profile=supasaasy" in cleanup["headers"]
    assert json.loads(cleanup["message-body"]) == {"p_retention_days": 14}


def test_the_command_prints_them_for_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPASAASY_CONFIG", raising=False)
    config = tmp_path / "supasaasy.toml"
    config.write_text('[[apps]]\napp_key = "s"\nconnector = "stripe"\n\n'
                      '[[sync_schedules]]\napp_key = "s"\ncron = "*/5 * * * *"\n')  # fmt: skip
    arguments = ["cloud-scheduler", "--location", "us-east1", "--config", str(config),
                 "--functions-url", "https://fn.example"]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [shlex.split(line)[5] for line in lines] == [
        "supasaasy-worker", "supasaasy-sync-s-0", "supasaasy-cleanup"]  # fmt: skip
    assert "--schedule='*/5 * * * *'" in lines[1] and "--location=us-east1" in lines[1]
