"""SIGTERM in a process without a handler of its own (e.g. a development server): the
process still exits, once its workers have released their tasks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

SCRIPT = """
import time
from supasaasy.worker import stop_on_sigterm
stop_on_sigterm()
print("ready", flush=True)
time.sleep(30)
"""


def test_sigterm_without_a_previous_handler_still_ends_the_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - signalled < 2.0
