"""Child processes of the local stack: port checks, spawning, readiness, stopping."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import StackError as StackError

PR_SET_PDEATHSIG = 1


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (so we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_ports(ports: Mapping[str, int]) -> None:
    """Refuse to start, naming each taken port and what it was meant for."""
    taken = [f"{port} ({what})" for what, port in ports.items() if not port_is_free(port)]
    if taken:
        raise StackError(
            "port already in use: "
            + ", ".join(taken)
            + ". Stop whatever listens there (another `make dev`?) and try again."
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(sig: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        # Runs in the child after it dropped privileges, which would clear it.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)

    return set_parent_death_signal


def spawn(
    args: Sequence[str | Path],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a child that logs to `log` and is signalled if this process dies."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file: IO[bytes] = log.open("ab")
    if user is not None:
        # The child writes its own log when it runs as another user.
        with contextlib.suppress(PermissionError):
            os.chown(log, *_uid_gid(user))
    try:
        return subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            **run_as(user),
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
            preexec_fn=_die_with_parent(death_signal),
        )
    finally:
        log_file.close()


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as `user` with that user's group only."""
    if user is None:
        return {}
    uid, gid = _uid_gid(user)
    return {"user": uid, "group": gid, "extra_groups": []}


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    process: subprocess.Popen[bytes] | None,
    log: Path | None,
    timeout: float = 30.0,
) -> None:
    """Poll `ready` until it is true; fail with the log's tail if the child exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}.{_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not ready after {timeout:.0f} s.{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log}:\n" + "\n".join(text)


def tcp_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(
    process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal a child and wait for it; kill it if it does not stop in time."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
