"""The user's path, run the way a user and a cloud build run it: the package built as a
wheel and installed alone in a fresh virtualenv (its dependencies from the package index),
`supasaasy init` and `supasaasy migrate` from that install, and each function folder that
`init` wrote deployed alone: a virtualenv with only its requirements.txt (the wheel found
through --find-links, as a private index would serve it), its own copy of supasaasy.toml,
and `functions-framework --source main.py --target ...` run from inside the folder with
nothing of this repository on the path.

The three function folders' requirements are identical (asserted), so they are installed
once into one virtualenv that the three servers share; each server still runs from its
own folder, with its own copy of the configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from catalog import describe, difference

from supasaasy.connectors.stripe import StripeConnector
from supasaasy.devstack import StackInfo
from supasaasy.devstack.localstripe import held as localstripe_holdings
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.processes import free_port, stop, wait_until
from supasaasy.devstack.seed import SeedSummary, seed_stripe
from supasaasy.migrations import package_migrations

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "deploy-admin-key-0123456789abcdef"
STRIPE_KEY = "sk_test_deployed"
# Function folder -> functions-framework target, as the README tells users to deploy them.
FUNCTIONS = {"sync": "sync", "worker": "worker", "job-status": "job_status"}
# What a build needs of the environment (the package index's settings); nothing of the
# repository, its virtualenv or the stack's variables.
DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "DATABASE_URL",
           "ADMIN_API_KEY")  # fmt: skip
INSTALL_TIMEOUT = 600.0


def outside_env(**extra: str) -> dict[str, str]:
    """This process's environment without the repository (PYTHONPATH, its virtualenv on
    PATH) and without SupaSaaSy's or Supabase's variables."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in DROPPED and not name.startswith(("SUPASAASY_", "SUPABASE_"))
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _in_repo(p)]
    env["PATH"] = os.pathsep.join(path or ["/usr/local/bin", "/usr/bin", "/bin"])
    return {**env, **extra}


def _in_repo(path: str) -> bool:
    return Path(path).resolve().is_relative_to(ROOT)


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str],
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command; its output (stdout then stderr) is in `.stdout`."""
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def ok(args: list[str | Path], *, cwd: Path, env: dict[str, str],
       timeout: float = 120.0) -> str:  # fmt: skip
    result = run(args, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}"
    return result.stdout


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"


def new_venv(path: Path, workdir: Path) -> Venv:
    # The base interpreter, not this repository's virtualenv (whose site-packages has the
    # package installed in development mode).
    base = getattr(sys, "_base_executable", sys.executable)
    ok([base, "-m", "venv", path], cwd=workdir, env=outside_env())
    return Venv(path)


def pip_install(venv: Venv, *args: str | Path, cwd: Path, report: Path) -> dict[str, str]:
    """`pip install ARGS` in `venv`; returns where each installed distribution came from
    (name -> URL), from pip's installation report."""
    ok([venv.python, "-m", "pip", "install", "--quiet", "--report", report, *args],
       cwd=cwd, env=outside_env(), timeout=INSTALL_TIMEOUT)  # fmt: skip
    installed = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"]: item["download_info"]["url"] for item in installed}


def imported_from(venv: Venv, cwd: Path) -> Path:
    """Where `import supasaasy` finds the package in `venv`, run from `cwd`."""
    out = ok([venv.python, "-c", "import supasaasy; print(supasaasy.__file__)"], cwd=cwd,
             env=outside_env())  # fmt: skip
    return Path(out.strip().splitlines()[-1])


# --- Build and install ---------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Everything of this module's: outside the repository, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="supasaasy-install-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _source_files() -> list[Path]:
    """The repository's files as a source distribution would take them: tracked and
    untracked, but not ignored (no virtualenv, no egg-info, no caches)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode()  # fmt: skip
        return [Path(name) for name in listed.split("\0") if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [Path("pyproject.toml"), Path("README.md")]
        return files + [p.relative_to(ROOT) for p in (ROOT / "lib").rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts
                        and not any(part.endswith(".egg-info") for part in p.parts)]  # fmt: skip


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """The package's wheel, built once from a copy of the checkout (a build in the
    checkout itself would leave build/ and egg-info there)."""
    source = workdir / "source"
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = workdir / "dist"
    ok([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source],
       cwd=workdir, env=outside_env(), timeout=INSTALL_TIMEOUT)  # fmt: skip
    built = sorted(dist.glob("supasaasy-*.whl"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def cli(workdir: Path, wheel: Path) -> Venv:
    """A fresh virtualenv with the wheel alone installed (`pip install supasaasy`)."""
    venv = new_venv(workdir / "cli-venv", workdir)
    sources = pip_install(venv, wheel, cwd=workdir, report=workdir / "cli-install.json")
    assert sources["supasaasy"] == wheel.as_uri()
    return venv


@dataclass(frozen=True)
class Project:
    path: Path
    init_output: str


@pytest.fixture(scope="module")
def project(workdir: Path, cli: Venv) -> Project:
    """`supasaasy init` in an empty folder, by the installed command."""
    path = workdir / "project"
    path.mkdir()
    output = ok([cli.bin / "supasaasy", "init"], cwd=path, env=outside_env())
    return Project(path, output)


def test_the_installed_package_is_the_wheel_not_the_checkout(cli: Venv, project: Project) -> None:
    found = imported_from(cli, project.path)
    assert found.is_relative_to(cli.path) and not _in_repo(str(found)), found


def test_init_writes_the_project(project: Project, wheel: Path) -> None:
    version = wheel.name.split("-")[1]
    root = project.path
    assert (root / "supasaasy.toml").is_file() and (root / ".env.example").is_file()
    for folder, target in FUNCTIONS.items():
        main = (root / "functions" / folder / "main.py").read_text()
        assert f"\n{target} = " in main
        requirements = (root / "functions" / folder / "requirements.txt").read_text()
        assert requirements == f"supasaasy=={version}\n"
    # Every migration the package ships, with the checkout's content: none left out of
    # the wheel's package data.
    written = {p.name: p.read_text() for p in (root / "supabase" / "migrations").iterdir()}
    assert written == {m.file_name: m.sql for m in package_migrations()}
    assert "next: edit supasaasy.toml" in project.init_output


def test_migrate_and_the_written_migrations_build_the_dev_stacks_schema(
    stack: StackInfo, cli: Venv, project: Project, new_database: Callable[[], str]
) -> None:
    applied, pushed = new_database(), new_database()
    command = [cli.bin / "supasaasy", "migrate", "--apply", "--db-url", applied, "--no-schedules"]
    first = ok(command, cwd=project.path, env=outside_env())
    for migration in package_migrations():
        assert f"applied {migration.file_name}" in first, first
    again = ok(command, cwd=project.path, env=outside_env())
    assert "migrations: up to date" in again and "applied" not in again, again

    # What `supabase db push` does with the files `init` wrote: each, in name order.
    files = sorted((project.path / "supabase" / "migrations").glob("*.sql"))
    with psycopg.connect(pushed, autocommit=True) as conn:
        for file in files:
            with conn.transaction():
                conn.execute(file.read_text().encode())

    expected = describe(stack.database_url)
    assert expected["relations"], "the dev stack has no supasaasy schema"
    assert difference(expected, describe(applied)) == ""
    assert difference(expected, describe(pushed)) == ""


def test_dev_without_the_local_extra_names_the_extra(cli: Venv, project: Project) -> None:
    result = run([cli.bin / "supasaasy", "dev"], cwd=project.path, env=outside_env())
    message = " ".join(result.stdout.split())
    assert result.returncode == 2, result.stdout
    assert "pip install 'supasaasy[local]'" in message, result.stdout


# --- Deploy each function folder alone -------------------------------------------------


@pytest.fixture(scope="module")
def stripe() -> Iterator[tuple[str, SeedSummary]]:
    with running_localstripe() as url:
        yield url, seed_stripe(url, STRIPE_KEY, customers=50, products=6, plans_per_product=2,
                               subscriptions=15)  # fmt: skip


@pytest.fixture(scope="module")
def app_key() -> str:
    return f"stripe_deployed_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def deployed_folders(workdir: Path, project: Project, stripe: tuple[str, SeedSummary],
                     app_key: str) -> dict[str, Path]:  # fmt: skip
    """Each function folder as it is uploaded: alone, with the project's supasaasy.toml
    (one Stripe app added, as the user edits it) copied into it."""
    config = project.path / "supasaasy.toml"
    config.write_text(config.read_text() + (
        f'\n[[apps]]\napp_key = "{app_key}"\nconnector = "stripe"\n'
        f'config = {{ api_key_env = "STRIPE_API_KEY_MAIN", api_base = "{stripe[0]}", '
        "page_size = 20 }\n"
    ))  # fmt: skip
    folders = {}
    for name in FUNCTIONS:
        folder = workdir / "deploy" / name
        shutil.copytree(project.path / "functions" / name, folder)
        shutil.copy2(config, folder / "supasaasy.toml")
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def functions_venv(workdir: Path, wheel: Path, deployed_folders: dict[str, Path]) -> Venv:
    """What the build installs: the folder's requirements.txt alone. The three are the
    same, so one install serves the three servers."""
    requirements = {name: (folder / "requirements.txt").read_text()
                    for name, folder in deployed_folders.items()}  # fmt: skip
    assert len(set(requirements.values())) == 1, requirements
    venv = new_venv(workdir / "functions-venv", workdir)
    report = workdir / "functions-install.json"
    sources = pip_install(venv, "--find-links", wheel.parent, "-r", "requirements.txt",
                          cwd=deployed_folders["sync"], report=report)  # fmt: skip
    assert sources["supasaasy"] == wheel.as_uri()
    assert "functions-framework" in sources
    found = imported_from(venv, deployed_folders["sync"])
    assert found.is_relative_to(venv.path), found
    return venv


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture(scope="module")
def servers(stack: StackInfo, workdir: Path, functions_venv: Venv,
            deployed_folders: dict[str, Path]) -> Iterator[dict[str, str]]:  # fmt: skip
    """`functions-framework --source main.py --target T` from inside each folder, with
    only the variables a deployment sets. Stopped at the end, whatever happened."""
    ports = {name: free_port() for name in FUNCTIONS}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, target in FUNCTIONS.items():
            # gunicorn keeps a control socket under $HOME: one home per server.
            home = workdir / "home" / name
            home.mkdir(parents=True)
            env = {
                "PATH": f"{functions_venv.bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
                "HOME": str(home),
                "LANG": "C.UTF-8",
                "SUPABASE_URL": stack.supabase_url,
                "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
                "ADMIN_API_KEY": ADMIN,
                "SUPASAASY_WORKER_URL": f"{urls['worker']}/worker",
                "STRIPE_API_KEY_MAIN": STRIPE_KEY,
            }
            log = workdir / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(functions_venv.bin / "functions-framework"), "--source", "main.py",
                     "--target", target, "--host", "127.0.0.1", "--port", str(ports[name])],
                    cwd=deployed_folders[name], env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            processes.append(process)
            wait_until(partial(_answers, urls[name]), what=f"the {name} function",
                       process=process, log=log, timeout=60)  # fmt: skip
        yield urls
    finally:
        for process in processes:
            stop(process)


def test_the_deployed_functions_run_a_full_sync(
    stack: StackInfo, servers: dict[str, str], stripe: tuple[str, SeedSummary], app_key: str
) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(headers=auth, timeout=120) as http:
        created = http.post(f"{servers['sync']}/sync", json={"app_key": app_key, "mode": "full"})
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        assert created.json()["total_tasks"] == len(StripeConnector.metadata.task_resources)

        status: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            worked = http.post(f"{servers['worker']}/worker", json={"job_id": job_id})
            assert worked.status_code == 200, worked.text
            answer = http.get(f"{servers['job-status']}/sync/jobs/{job_id}",
                              params={"include_tasks": "true"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            status = answer.json()
            if status["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.2)
    assert status.get("status") == "completed", status

    held = {c: ids for c, ids in localstripe_holdings(stripe[0], STRIPE_KEY).items() if ids}
    seeded = stripe[1]
    assert held["stripe_customer"] == set(seeded.customers)
    assert held["stripe_subscription"] == set(seeded.subscriptions)
    assert held["stripe_subscription_item"] == set(seeded.subscription_items)
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("select collection_key, external_id from supasaasy.entities"
                            " where app_key = %s and deleted_at is null",
                            (app_key,)).fetchall()  # fmt: skip
    stored: dict[str, set[str]] = {}
    for collection, external_id in rows:
        stored.setdefault(collection, set()).add(external_id)
    counts = {collection: len(ids) for collection, ids in held.items()}
    assert {collection: len(ids) for collection, ids in stored.items()} == counts
    assert stored == held
    assert status["processed_entities"] == sum(counts.values())


# --- A third-party connector ----------------------------------------------------------


def test_a_new_connector_package_installs_and_passes_the_conformance_suite(
    workdir: Path, wheel: Path, cli: Venv
) -> None:
    # `supasaasy new-connector` from the installed package, then what its README says:
    # `pip install -e 'DIR[test]'` (here in a virtualenv of its own, next to the wheel)
    # and `pytest` in DIR.
    package = workdir / "supasaasy-acme"
    ok([cli.bin / "supasaasy", "new-connector", "acme", "--out", package], cwd=workdir,
       env=outside_env())  # fmt: skip
    venv = new_venv(workdir / "connector-venv", workdir)
    sources = pip_install(venv, "--find-links", wheel.parent, "-e", f"{package}[test]",
                          cwd=workdir, report=workdir / "connector-install.json")  # fmt: skip
    assert sources["supasaasy"] == wheel.as_uri() and "pytest" in sources
    output = ok([venv.python, "-m", "pytest", "-p", "no:cacheprovider", "-k", "conformance",
                 "-q"], cwd=package, env=outside_env())  # fmt: skip
    passed = int(output.rsplit(" passed", 1)[0].rsplit(None, 1)[-1])
    assert passed >= 8 and " failed" not in output, output
    # SupaSaaSy finds it through its entry point, and migrates its typed view.
    found = ok([venv.python, "-c", "from supasaasy.connectors import connector_sources as s;"
                " print(s()['acme'])"], cwd=workdir, env=outside_env())  # fmt: skip
    assert found.strip().endswith("supasaasy-acme 0.1.0")
    script = ok([venv.bin / "supasaasy", "migrate", "--no-schedules"], cwd=workdir,
                env=outside_env())  # fmt: skip
    assert "create or replace view supasaasy.acme_items" in script
