"""The local stack: Postgres, PostgREST and a gateway, shaped like a Supabase project."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..migrations import apply_migrations
from ..scaffold import FUNCTIONS
from .keys import new_jwt_secret, sign_role_key
from .migrations import bootstrap
from .postgres import EmbeddedPostgres, can_connect
from .processes import (
    StackError,
    free_port,
    require_free_ports,
    spawn,
    stop,
    tcp_accepts,
    wait_until,
)

POSTGREST_BIN_ENV = "SUPASAASY_POSTGREST_BIN"


@dataclass
class StackSettings:
    """Where the stack keeps its state and which ports it uses.

    `db_url` set means an existing Postgres (reached as a superuser) instead of the
    embedded one. `durable=False` suits throwaway clusters (no fsync).
    """

    project_dir: Path = field(default_factory=Path.cwd)
    state_dir: Path | None = None
    gateway_port: int = 54321
    db_port: int = 54322
    rest_port: int = 54331
    rest_admin_port: int = 54332
    db_url: str | None = None
    durable: bool = True
    jwt_secret: str | None = None
    # Extra gateway routes: /functions/v1/<name> -> URL.
    functions: dict[str, str] = field(default_factory=dict)
    # Serve the project's functions (functions/<name>/main.py) behind the gateway,
    # with this admin key and these extra environment variables.
    serve_functions: bool = False
    admin_key: str | None = None
    function_env: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.state_dir or self.project_dir / ".supasaasy"

    @property
    def postgrest_bin(self) -> Path:
        configured = os.environ.get(POSTGREST_BIN_ENV)
        if configured:
            return Path(configured)
        return self.project_dir / ".supasaasy" / "bin" / "postgrest"


@dataclass(frozen=True)
class StackInfo:
    """How to reach a running stack; also written to `<state>/stack.env`."""

    supabase_url: str
    anon_key: str
    service_role_key: str
    database_url: str
    jwt_secret: str
    admin_key: str | None = None

    def env(self) -> dict[str, str]:
        env = {
            "SUPABASE_URL": self.supabase_url,
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
            "DATABASE_URL": self.database_url,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
        }
        if self.admin_key:
            env["ADMIN_API_KEY"] = self.admin_key
        return env


class LocalStack:
    """Starts the stack's processes in order and stops them in reverse order."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.postgrest: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.functions: dict[str, subprocess.Popen[bytes]] = {}
        self.info: StackInfo | None = None
        self._postgrest_env: dict[str, str] = {}

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def logs(self) -> Path:
        return self.settings.state / "logs"

    def start(self) -> StackInfo:
        s = self.settings
        if not s.postgrest_bin.exists():
            raise StackError(
                f"PostgREST binary not found at {s.postgrest_bin}: run `make setup` "
                f"(or point {POSTGREST_BIN_ENV} at a PostgREST 12 binary)"
            )
        ports = {
            "gateway": s.gateway_port,
            "PostgREST": s.rest_port,
            "PostgREST admin": s.rest_admin_port,
        }
        if s.db_url is None:
            ports["Postgres"] = s.db_port
        require_free_ports(ports)
        s.state.mkdir(parents=True, exist_ok=True)
        try:
            return self._start(s)
        except BaseException:
            self.stop()
            raise

    def _start(self, s: StackSettings) -> StackInfo:
        secret = s.jwt_secret or self._stored_jwt_secret()
        rest_password = secrets.token_urlsafe(24)
        if s.db_url is None:
            self.postgres = EmbeddedPostgres(s.state / "postgres", s.db_port, durable=s.durable)
            self.postgres.start()
            db_url = self.postgres.url
            rest_db_url = (
                f"postgresql://authenticator:{rest_password}@127.0.0.1:{s.db_port}/postgres"
            )
            bootstrap(db_url, authenticator_password=rest_password)
        else:
            db_url = rest_db_url = s.db_url
            if not can_connect(db_url):
                raise StackError("cannot connect to SUPASAASY_DB_URL; is that Postgres running?")
            bootstrap(db_url, authenticator_password=None)
        apply_migrations(db_url)

        self._postgrest_env = {
            "PGRST_DB_URI": rest_db_url,
            "PGRST_DB_SCHEMAS": "public,supasaasy",
            "PGRST_DB_EXTRA_SEARCH_PATH": "public,extensions",
            "PGRST_DB_ANON_ROLE": "anon",
            "PGRST_DB_MAX_ROWS": "1000",
            "PGRST_DB_POOL": "20",
            "PGRST_JWT_SECRET": secret,
            "PGRST_SERVER_HOST": "127.0.0.1",
            "PGRST_SERVER_PORT": str(s.rest_port),
            "PGRST_ADMIN_SERVER_PORT": str(s.rest_admin_port),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        self.start_postgrest()

        gateway_args = [
            sys.executable,
            "-m",
            "supasaasy.devstack.gateway",
            "--port",
            str(s.gateway_port),
            "--rest",
            f"http://127.0.0.1:{s.rest_port}",
        ]
        routes = dict(s.functions)
        if s.serve_functions:
            routes |= self._start_functions(s, secret)
        for name, url in routes.items():
            gateway_args += ["--function", f"{name}={url}"]
        self.gateway = spawn(gateway_args, log=self.logs / "gateway.log")
        wait_until(
            lambda: tcp_accepts(s.gateway_port),
            what="gateway",
            process=self.gateway,
            log=self.logs / "gateway.log",
        )

        for name, process in self.functions.items():
            port = int(routes[name].rsplit(":", 1)[1])
            wait_until(partial(tcp_accepts, port), what=f"function {name}", process=process,
                       log=self.logs / f"function-{name}.log")  # fmt: skip
        self.info = StackInfo(
            supabase_url=f"http://127.0.0.1:{s.gateway_port}",
            anon_key=sign_role_key(secret, "anon"),
            service_role_key=sign_role_key(secret, "service_role"),
            database_url=db_url,
            jwt_secret=secret,
            admin_key=s.admin_key if s.serve_functions else None,
        )
        env_file = s.state / "stack.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.info.env().items()))
        env_file.chmod(0o600)
        return self.info

    def start_postgrest(self) -> None:
        """Start PostgREST (again, after stop_postgrest) and wait until it is ready."""
        s = self.settings
        self.postgrest = spawn([s.postgrest_bin], log=self.logs / "postgrest.log",
                               env=self._postgrest_env)  # fmt: skip
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{s.rest_admin_port}/ready"),
            what="PostgREST",
            process=self.postgrest,
            log=self.logs / "postgrest.log",
        )

    def stop_postgrest(self) -> None:
        """Stop PostgREST alone (an outage, for reliability tests)."""
        stop(self.postgrest)
        self.postgrest = None

    def restart_postgres(self, down_seconds: float = 0.0) -> None:
        """Crash the embedded Postgres (immediate shutdown), keep it down `down_seconds`,
        then start it again on its port and data. PostgREST reconnects on its own."""
        if self.postgres is None:
            raise StackError("restart_postgres needs the embedded Postgres")
        self.postgres.crash()
        time.sleep(down_seconds)
        self.postgres.start()

    def _start_functions(self, s: StackSettings, secret: str) -> dict[str, str]:
        """Start functions/<name>/main.py with functions-framework; their gateway routes."""
        gateway = f"http://127.0.0.1:{s.gateway_port}"
        env = {
            **os.environ,
            "SUPABASE_URL": gateway,
            "SUPABASE_SERVICE_ROLE_KEY": sign_role_key(secret, "service_role"),
            "ADMIN_API_KEY": s.admin_key or "",
            "SUPASAASY_WORKER_URL": f"{gateway}/functions/v1/worker",
            **s.function_env,
        }
        routes = {}
        for name, (target, _factory) in FUNCTIONS.items():
            source = s.project_dir / "functions" / name / "main.py"
            if not source.exists():
                raise StackError(f"function source not found: {source}")
            port = free_port()
            # gunicorn keeps a control socket under $HOME: one home per function.
            home = s.state / "functions" / name
            home.mkdir(parents=True, exist_ok=True)
            self.functions[name] = spawn(
                [sys.executable, "-m", "functions_framework", "--source", str(source),
                 "--target", target, "--host", "127.0.0.1", "--port", str(port)],
                log=self.logs / f"function-{name}.log", env={**env, "HOME": str(home)},
            )  # fmt: skip
            routes[name] = f"http://127.0.0.1:{port}"
        return routes

    def _stored_jwt_secret(self) -> str:
        """The dev stack keeps one secret, so keys in another terminal stay valid."""
        path = self.settings.state / "jwt_secret"
        if not path.exists():
            path.write_text(new_jwt_secret())
            path.chmod(0o600)
        return path.read_text().strip()

    def dead_process(self) -> str | None:
        """The name of a stack process that exited on its own, if any."""
        for name, proc in (
            *((f"function {n}", p) for n, p in self.functions.items()),
            ("gateway", self.gateway),
            ("PostgREST", self.postgrest),
            ("Postgres", self.postgres.process if self.postgres else None),
        ):
            if proc is not None and proc.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        stop(self.gateway)
        self.gateway = None
        for process in self.functions.values():
            stop(process)
        self.functions = {}
        stop(self.postgrest)
        self.postgrest = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def describe(info: StackInfo) -> str:
    """What `make dev` prints: the stack's variables and a first request to try."""
    lines = [f"{k}={v}" for k, v in info.env().items()]
    lines.append("")
    lines.append(
        'Try:  curl -H "apikey: $SUPABASE_SERVICE_ROLE_KEY" '
        "-H 'Accept-Profile: supasaasy' $SUPABASE_URL/rest/v1/sync_jobs"
    )
    return "\n".join(lines)


__all__ = ["LocalStack", "StackError", "StackInfo", "StackSettings", "describe"]
