"""`python -m supasaasy.devstack` as a user runs it: start, refuse, stop, leave nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from supasaasy.db import Database
from supasaasy.devstack import LocalStack, StackError, StackSettings
from supasaasy.devstack.postgres import EmbeddedPostgres
from supasaasy.devstack.processes import free_port


def _ports() -> list[str]:
    return [
        "--gateway-port", str(free_port()), "--db-port", str(free_port()),
        "--rest-port", str(free_port()), "--rest-admin-port", str(free_port()),
        "--localstripe-port", str(free_port()),
    ]  # fmt: skip


def _start(project_root: Path, state: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "SUPASAASY_DB_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "supasaasy.devstack", "--state-dir", str(state), *args],
        cwd=project_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_env(process: subprocess.Popen[str], state: Path) -> dict[str, str]:
    deadline = time.monotonic() + 60
    env_file = state / "stack.env"
    while not env_file.exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "the stack did not start in 60 s"
        time.sleep(0.1)
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines())


@pytest.fixture
def running(
    project_root: Path, scratch: Path
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = _start(project_root, scratch / "state", *_ports())
    try:
        yield process, _wait_for_env(process, scratch / "state")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_the_stack_leaves_no_process_behind(
    running: tuple[subprocess.Popen[str], dict[str, str]], how: signal.Signals
) -> None:
    process, env = running
    children = psutil.Process(process.pid).children(recursive=True)
    names = {child.name() for child in children}
    assert {"postgres", "postgrest"} <= names, names
    commands = " ".join(" ".join(child.cmdline()) for child in children)
    for part in ("supasaasy.devstack.gateway", "supasaasy.devstack.localstripe",
                 "functions/sync/main.py", "functions/worker/main.py",
                 "functions/job-status/main.py"):  # fmt: skip
        assert part in commands
    response = httpx.get(
        f"{env['SUPABASE_URL']}/rest/v1/sync_jobs",
        headers={"apikey": env["SUPABASE_SERVICE_ROLE_KEY"], "Accept-Profile": "supasaasy"},
    )
    assert response.status_code == 200 and isinstance(response.json(), list)

    process.send_signal(how)
    code = process.wait(timeout=60)
    if how != signal.SIGKILL:  # Ctrl-C and SIGTERM stop in order and exit cleanly
        assert code == 0
        assert "stopping the local stack" in (process.stdout.read() if process.stdout else "")
    # Children die with their parent even when it is killed outright.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []


def test_a_taken_port_is_refused_by_name(project_root: Path, scratch: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _ports()
        args[args.index("--gateway-port") + 1] = str(port)
        process = _start(project_root, scratch / "state", *args)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"port already in use: {port} (gateway)" in output
    assert "Traceback" not in output


def test_a_missing_postgrest_binary_is_refused(
    project_root: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPASAASY_POSTGREST_BIN", str(scratch / "no-such-postgrest"))
    process = _start(project_root, scratch / "state", *_ports())
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "PostgREST binary not found" in output and "make setup" in output
    assert "Traceback" not in output


def test_an_existing_postgres_is_used_with_supasaasy_db_url(
    project_root: Path, scratch: Path
) -> None:
    own = EmbeddedPostgres(scratch / "own-postgres", free_port(), durable=False)
    own.start()
    try:
        settings = StackSettings(
            project_dir=project_root, state_dir=scratch / "state", db_url=own.url,
            gateway_port=free_port(), rest_port=free_port(), rest_admin_port=free_port(),
        )  # fmt: skip
        with LocalStack(settings) as info:
            assert info.database_url == own.url
            db = Database.connect(info.supabase_url, info.service_role_key)
            job = db.create_sync_job("external", "full", ["customers"])
            assert db.get_job_status(job.id).job.total_tasks == 1
        with pytest.raises(StackError, match="cannot connect"):
            LocalStack(StackSettings(
                project_dir=project_root, state_dir=scratch / "state2",
                db_url=f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/postgres",
                gateway_port=free_port(), rest_port=free_port(), rest_admin_port=free_port(),
            )).start()  # fmt: skip
    finally:
        own.stop()
