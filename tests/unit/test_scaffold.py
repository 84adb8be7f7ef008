"""`supasaasy init` and `migrate --out`: the files a project gets, never overwritten."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from supasaasy.cli import app
from supasaasy.config import ConfigFileError, function_settings, load_settings
from supasaasy.migrations import package_migrations
from supasaasy.scaffold import FUNCTIONS, function_main

ROOT = Path(__file__).resolve().parents[2]
# Every variable the functions read (handlers/common.py, config.py) and the CLI needs.
FUNCTION_VARIABLES = [
    "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "ADMIN_API_KEY", "SUPASAASY_WORKER_URL",
    "SUPASAASY_CONFIG", "SYNC_RATE_LIMIT_PER_MINUTE", "CORS_ALLOWED_ORIGINS", "DATABASE_URL",
    "SUPASAASY_FUNCTIONS_URL",
]  # fmt: skip


def _init(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["init", *args], terminal_width=300)
    return result.exit_code, result.output


def test_init_writes_a_project(tmp_path: Path) -> None:
    code, output = _init(str(tmp_path))
    assert code == 0, output
    for folder, (target, factory) in FUNCTIONS.items():
        main = (tmp_path / "functions" / folder / "main.py").read_text()
        assert len(main.splitlines()) <= 10
        assert f"{target} = {factory}(" in main
        requirements = (tmp_path / "functions" / folder / "requirements.txt").read_text()
        assert requirements == f"supasaasy=={metadata.version('supasaasy')}\n"
    written = sorted(p.name for p in (tmp_path / "supabase" / "migrations").iterdir())
    assert written == [m.file_name for m in package_migrations()]
    assert all(re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", name) for name in written)
    settings = load_settings(tmp_path / "supasaasy.toml")  # valid as written, no app yet
    assert settings.apps == [] and settings.worker.time_budget_seconds == 45
    env = (tmp_path / ".env.example").read_text()
    for variable in FUNCTION_VARIABLES:
        assert re.search(rf"^(# )?{variable}=", env, re.M), variable


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    assert _init(str(tmp_path))[0] == 0
    code, output = _init(str(tmp_path))
    assert code == 0 and "written" not in output and "unchanged" in output
    config = tmp_path / "supasaasy.toml"
    config.write_text("# mine\n")
    (tmp_path / "functions" / "sync" / "requirements.txt").unlink()
    code, output = _init(str(tmp_path))
    assert code == 1 and "supasaasy.toml" in output and "--force" in output
    assert config.read_text() == "# mine\n"  # kept
    assert not (tmp_path / "functions" / "sync" / "requirements.txt").exists()  # nothing written
    code, output = _init(str(tmp_path), "--force")
    assert code == 0 and "replaced" in output
    assert config.read_text() != "# mine\n"


def test_the_repository_functions_are_what_init_writes() -> None:
    for folder in FUNCTIONS:
        assert (ROOT / "functions" / folder / "main.py").read_text() == function_main(folder)


def test_migrate_out_writes_the_migration_files_once(tmp_path: Path) -> None:
    out = tmp_path / "supabase" / "migrations"
    first = CliRunner().invoke(app, ["migrate", "--out", str(out)], terminal_width=300)
    assert first.exit_code == 0, first.output
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        m.file_name: m.sql for m in package_migrations()
    }
    second = CliRunner().invoke(app, ["migrate", "--out", str(out)], terminal_width=300)
    assert second.exit_code == 0 and "written" not in second.output


def test_a_function_finds_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPASAASY_CONFIG", raising=False)
    main = tmp_path / "project" / "functions" / "sync" / "main.py"
    main.parent.mkdir(parents=True)
    with pytest.raises(ConfigFileError, match="SUPASAASY_CONFIG"):
        function_settings(main)
    places = [tmp_path / "project", tmp_path / "project" / "functions", main.parent]
    for days, place in enumerate(places, start=1):  # the nearest file wins
        (place / "supasaasy.toml").write_text(f"job_retention_days = {days}\n")
        assert function_settings(main).job_retention_days == days
    chosen = tmp_path / "elsewhere.toml"
    chosen.write_text("job_retention_days = 9\n")
    monkeypatch.setenv("SUPASAASY_CONFIG", str(chosen))
    assert function_settings(main).job_retention_days == 9


def _new_connector(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["new-connector", *args], terminal_width=300)
    return result.exit_code, result.output


def test_new_connector_writes_a_package_named_after_the_connector(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    code, output = _new_connector("acme_crm", "--out", str(out))
    assert code == 0, output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    views = [f for f in files if f.endswith("_acme_crm_views.sql")]
    assert files == sorted(["pyproject.toml", "README.md", "src/supasaasy_acme_crm/__init__.py",
                            "src/supasaasy_acme_crm/connector.py", "src/supasaasy_acme_crm/fake.py",
                            *views, "tests/test_conformance.py"])  # fmt: skip
    # Its view migrates after every migration of the package.
    assert views[0].split("/")[-1] > max(m.file_name for m in package_migrations())
    pyproject = (out / "pyproject.toml").read_text()
    assert 'acme_crm = "supasaasy_acme_crm.connector:AcmeCrmConnector"' in pyproject
    assert "class AcmeCrmConnector(HttpConnector)" in (
        out / "src/supasaasy_acme_crm/connector.py").read_text()  # fmt: skip
    compile((out / "src/supasaasy_acme_crm/fake.py").read_text(), "fake.py", "exec")
    assert _new_connector("acme_crm", "--out", str(out))[0] == 0  # the same: unchanged
    (out / "README.md").write_text("mine")
    code, output = _new_connector("acme_crm", "--out", str(out))
    assert code == 1 and "README.md" in output and (out / "README.md").read_text() == "mine"


@pytest.mark.parametrize(("name", "problem"), [
    ("Acme", "lower-case"), ("a", "lower-case"), ("acme-crm", "lower-case"),
    ("stripe", "taken by an installed connector"),
])  # fmt: skip
def test_new_connector_refuses_a_bad_or_taken_name(tmp_path: Path, name: str, problem: str) -> None:
    code, output = _new_connector(name, "--out", str(tmp_path / "pkg"))
    assert code == 1 and problem in output
    assert not (tmp_path / "pkg").exists()
