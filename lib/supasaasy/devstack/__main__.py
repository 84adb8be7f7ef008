"""`python -m supasaasy.devstack`: run the local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from ..config import ConfigFileError, load_settings
from . import LocalStack, StackError, StackSettings, describe
from .localstripe import register_webhook, running_localstripe
from .scheduler import Scheduler


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = StackSettings()
    parser = argparse.ArgumentParser(
        prog="python -m supasaasy.devstack",
        description="Run the local stack in the foreground: Postgres, PostgREST, the gateway, "
        "the functions, localstripe (which sends its events to the webhook function) and a "
        "scheduler that calls the worker.",
        epilog="Environment: SUPASAASY_DB_URL (use that Postgres), LOCALSTRIPE_URL (use that "
        "Stripe; otherwise localstripe is started on 127.0.0.1:8420), ADMIN_API_KEY "
        "(generated and printed when unset), SUPASAASY_CONFIG (default functions/supasaasy.toml).",
    )
    parser.add_argument("--gateway-port", type=int, default=defaults.gateway_port)
    parser.add_argument("--db-port", type=int, default=defaults.db_port)
    parser.add_argument("--rest-port", type=int, default=defaults.rest_port)
    parser.add_argument("--rest-admin-port", type=int, default=defaults.rest_admin_port)
    parser.add_argument("--localstripe-port", type=int, default=8420)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where data, logs and stack.env go (default: .supasaasy)",
    )
    parser.add_argument(
        "--no-functions", action="store_true", help="only Postgres, PostgREST and the gateway"
    )
    parser.add_argument(
        "--worker-every",
        type=float,
        default=5.0,
        help="seconds between the scheduler's worker calls",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    functions = not args.no_functions
    admin_key = os.environ.get("ADMIN_API_KEY") or secrets.token_urlsafe(32)
    settings = StackSettings(
        state_dir=args.state_dir,
        gateway_port=args.gateway_port,
        db_port=args.db_port,
        rest_port=args.rest_port,
        rest_admin_port=args.rest_admin_port,
        db_url=os.environ.get("SUPASAASY_DB_URL") or None,
        serve_functions=functions,
        admin_key=admin_key,
    )
    stack = LocalStack(settings)
    scheduler: Scheduler | None = None
    with contextlib.ExitStack() as running:
        try:
            if functions:
                config = load_settings(settings.project_dir / "functions" / "supasaasy.toml")
                stripe_url = os.environ.get("LOCALSTRIPE_URL")
                if not stripe_url:
                    stripe_url = running.enter_context(
                        running_localstripe(
                            args.localstripe_port, log=settings.state / "logs" / "localstripe.log"
                        )
                    )
                settings.function_env = {
                    "LOCALSTRIPE_URL": stripe_url,
                    "STRIPE_LOCAL_API_KEY": os.environ.get("STRIPE_LOCAL_API_KEY", "sk_test_local"),
                    "STRIPE_LOCAL_WEBHOOK_SECRET": os.environ.get("STRIPE_LOCAL_WEBHOOK_SECRET")
                    or "whsec_" + secrets.token_hex(16),
                }
            info = stack.start()
            running.callback(stack.stop)
            print(describe(info), flush=True)
            if functions:
                print(f"LOCALSTRIPE_URL={settings.function_env['LOCALSTRIPE_URL']}")
                env = settings.function_env
                webhook = f"{info.supabase_url}/functions/v1/webhook/stripe_local"
                try:
                    register_webhook(
                        env["LOCALSTRIPE_URL"], webhook, env["STRIPE_LOCAL_WEBHOOK_SECRET"]
                    )
                    print(f"localstripe sends its events to {webhook}")
                except OSError as exc:
                    print(f"warning: localstripe's webhook not registered: {exc}", file=sys.stderr)
                if not os.environ.get("ADMIN_API_KEY"):
                    print("(ADMIN_API_KEY was not set: the one above was generated for this run)")
                scheduler = Scheduler(
                    f"{info.supabase_url}/functions/v1",
                    admin_key,
                    config.sync_schedules,
                    args.worker_every,
                )
                scheduler.start()
                running.callback(scheduler.stop)
            print(
                f"\n(written to {settings.state / 'stack.env'}; Ctrl-C stops the stack)", flush=True
            )
            while (dead := stack.dead_process()) is None:
                time.sleep(0.5)
            print(f"{dead} exited unexpectedly; its log is in {stack.logs}", file=sys.stderr)
            return 1
        except (StackError, ConfigFileError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping the local stack", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
