"""`python -m supasaasy.devstack`: run the local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from . import LocalStack, StackError, StackSettings, describe


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_settings(argv: list[str] | None = None) -> StackSettings:
    defaults = StackSettings()
    parser = argparse.ArgumentParser(
        prog="python -m supasaasy.devstack",
        description="Run Postgres, PostgREST and the gateway in the foreground.",
        epilog="SUPASAASY_DB_URL set: use that Postgres (as a superuser) instead of the "
        "embedded one.",
    )
    parser.add_argument("--gateway-port", type=int, default=defaults.gateway_port)
    parser.add_argument("--db-port", type=int, default=defaults.db_port)
    parser.add_argument("--rest-port", type=int, default=defaults.rest_port)
    parser.add_argument("--rest-admin-port", type=int, default=defaults.rest_admin_port)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where data, logs and stack.env go (default: .supasaasy)",
    )
    args = parser.parse_args(argv)
    return StackSettings(
        state_dir=args.state_dir,
        gateway_port=args.gateway_port,
        db_port=args.db_port,
        rest_port=args.rest_port,
        rest_admin_port=args.rest_admin_port,
        db_url=os.environ.get("SUPASAASY_DB_URL") or None,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    stack = LocalStack(settings)
    try:
        info = stack.start()
        print(describe(info), flush=True)
        print(f"\n(written to {settings.state / 'stack.env'}; Ctrl-C stops the stack)", flush=True)
        while (dead := stack.dead_process()) is None:
            time.sleep(0.5)
        print(
            f"{dead} exited unexpectedly; its log is in {stack.logs} or "
            f"{settings.state / 'postgres'}",
            file=sys.stderr,
        )
        return 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the local stack", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
