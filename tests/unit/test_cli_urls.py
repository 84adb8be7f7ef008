"""Where the command line sends requests: the functions URL comes from the flag or
$SUPASAASY_FUNCTIONS_URL; the local gateway only when `make dev`'s stack.env names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import respx
from httpx import Response
from typer.testing import CliRunner

from supasaasy.cli import app

JOB = "00000000-0000-4000-8000-000000000001"


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("SUPASAASY_FUNCTIONS_URL", "SUPABASE_URL", "ADMIN_API_KEY", "SUPASAASY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADMIN_API_KEY", "k")
    return tmp_path


def _show() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["jobs", "show", JOB], terminal_width=300)
    return result.exit_code, result.output


def _answer(route: respx.Route) -> None:
    route.mock(return_value=Response(200, json={
        "job_id": JOB, "app_key": "a", "mode": "full", "status": "completed", "tasks": [],
        "progress_percentage": 100, "total_tasks": 0, "processed_entities": 0}))  # fmt: skip


def test_a_supabase_url_alone_is_not_where_the_functions_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    code, output = _show()
    assert code == 2 and "SUPASAASY_FUNCTIONS_URL" in output


@respx.mock
def test_the_environment_names_the_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPASAASY_FUNCTIONS_URL", "https://fn.example")
    _answer(respx.get(f"https://fn.example/job-status/{JOB}"))
    assert _show()[0] == 0


@respx.mock
def test_the_local_stack_is_the_default_only_from_its_stack_env(project: Path) -> None:
    (project / ".supasaasy").mkdir()
    (project / ".supasaasy" / "stack.env").write_text("SUPABASE_URL=http://127.0.0.1:54321\n")
    _answer(respx.get(f"http://127.0.0.1:54321/functions/v1/job-status/{JOB}"))
    assert _show()[0] == 0


def test_migrate_apply_without_a_functions_url_skips_the_schedules(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    applied: list[tuple[str, object, object]] = []
    monkeypatch.setattr("supasaasy.schedules.apply_all",
                        lambda url, settings, functions: applied.append((url, settings, functions))
                        or ["migrations: up to date"])  # fmt: skip
    (project / "supasaasy.toml").write_text("")
    result = CliRunner().invoke(app, ["migrate", "--apply", "--db-url", "postgresql://x/y"],
                                terminal_width=300)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert applied[0][0] == "postgresql://x/y" and applied[0][2] is None
    assert "schedules: skipped (no functions URL" in result.output


def test_migrate_needs_no_configuration_for_the_schema_alone(project: Path) -> None:
    printed = CliRunner().invoke(app, ["migrate"], terminal_width=300)
    assert printed.exit_code == 0, printed.output
    assert "create table supasaasy.entities" in printed.output
    assert "schedules: skipped (no configuration" in printed.output
