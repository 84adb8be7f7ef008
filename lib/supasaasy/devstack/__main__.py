"""`python -m supasaasy.devstack`: run the local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from . import LocalStack, StackError, StackSettings, describe


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    settings = StackSettings(db_url=os.environ.get("SUPASAASY_DB_URL") or None)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    stack = LocalStack(settings)
    try:
        info = stack.start()
        print(describe(info), flush=True)
        print(f"\n(written to {settings.state / 'stack.env'}; Ctrl-C stops the stack)", flush=True)
        while (dead := stack.dead_process()) is None:
            time.sleep(0.5)
        print(
            f"{dead} exited unexpectedly; see {stack.logs} and "
            f"{settings.state / 'postgres' / 'postgres.log'}",
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
