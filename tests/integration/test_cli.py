"""The `supasaasy` commands that talk to the database or read the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from supasaasy.cli import app
from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.migrations import package_migrations

CONFIG = """
[[apps]]
app_key = "cli_app"
connector = "stripe"
config = { api_key_env = "CLI_STRIPE_KEY" }

[[sync_schedules]]
app_key = "cli_app"
cron = "*/10 * * * *"
"""


@pytest.fixture
def env(stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "supasaasy.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("SUPABASE_URL", stack.supabase_url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", stack.service_role_key)
    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    monkeypatch.setenv("SUPASAASY_CONFIG", str(config))
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    return config


def test_config_check_names_a_missing_key(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.delenv("CLI_STRIPE_KEY", raising=False)
    missing = runner.invoke(app, ["config", "check"], terminal_width=200)
    assert missing.exit_code == 1
    assert "CLI_STRIPE_KEY" in missing.output and "is not set" in missing.output
    monkeypatch.setenv("CLI_STRIPE_KEY", "sk_test_secret_value")
    ok = runner.invoke(app, ["config", "check"], terminal_width=200)
    assert ok.exit_code == 0 and "ok" in ok.output and "sk_test_secret_value" not in ok.output
    assert "*/10 * * * *" in ok.output


def test_config_check_refuses_an_invalid_file(env: Path) -> None:
    env.write_text('[[apps]]\napp_key = "bad key"\nconnector = "stripe"\n')
    result = CliRunner().invoke(app, ["config", "check"], terminal_width=200)
    assert result.exit_code == 2 and "apps.0.app_key" in result.output


def test_migrate_prints_migrations_and_schedules(env: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "--functions-url", "https://x.test/functions/v1"])
    assert result.exit_code == 0
    for migration in package_migrations():
        assert f"-- {migration.file_name}" in result.output
    assert "cron.schedule('supasaasy-worker', '* * * * *'" in result.output
    assert "supasaasy-sync-cli_app-0" in result.output and "*/10 * * * *" in result.output
    assert "vault.decrypted_secrets" in result.output
    assert "https://x.test/functions/v1/worker" in result.output


def test_migrate_apply_is_idempotent_and_skips_schedules_without_pg_cron(env: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "--apply"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "migrations: up to date" in result.output
    assert "schedules: skipped" in result.output


def test_worker_and_cleanup_run_in_process(env: Path, db: Database, app_key: str) -> None:
    runner = CliRunner()
    worked = runner.invoke(app, ["worker", "--job-id", "00000000-0000-4000-8000-000000000000"])
    assert worked.exit_code == 0 and "no_tasks" in worked.output
    cleaned = runner.invoke(app, ["cleanup", "--days", "3650"])
    assert cleaned.exit_code == 0 and "deleted 0 job(s)" in cleaned.output
