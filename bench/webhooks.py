"""Webhook deliveries through the function (not a test): signed Stripe events sent by
concurrent senders to the local stack's gateway, each answered once its transaction
commits. Prints deliveries per second and latency percentiles, and writes
bench/results/webhooks.json.

    .venv/bin/python bench/webhooks.py [--events 3000] [--senders 8]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg

from supasaasy.devstack import LocalStack, StackSettings
from supasaasy.devstack.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = "bench_webhooks"
SECRET = "whsec_" + secrets.token_hex(16)
CONFIG = f"""
[[apps]]
app_key = "{APP}"
connector = "stripe"
config = {{ api_key_env = "BENCH_STRIPE_KEY", webhook_secret_env = "BENCH_WEBHOOK_SECRET" }}
"""


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    t = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={digest}", "Content-Type": "application/json"}


def events(count: int, start: int) -> list[tuple[bytes, dict[str, str]]]:
    """customer.created/updated events of count // 3 customers, a realistic payload each."""
    made = []
    for n in range(count):
        customer = {
            "id": f"cus_bench_{n % max(1, count // 3):06d}",
            "object": "customer",
            "email": f"c{n}@example.com",
            "name": f"Customer {n}",
            "balance": 0,
            "created": start,
            "currency": "eur",
            "livemode": False,
            "metadata": {"n": str(n)},
            "address": {"city": "Paris", "country": "FR"},
            "description": "x" * 200,
        }
        kind = "customer.created" if n < count // 3 else "customer.updated"
        made.append(
            signed(
                {
                    "id": f"evt_bench_{n:07d}",
                    "object": "event",
                    "type": kind,
                    "created": start + n // 100,
                    "api_version": "2025-02-24.acacia",
                    "data": {"object": customer},
                }
            )
        )
    return made


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time so far of each part of the stack (a process and its children), and of
    this process (the senders)."""
    parts = {
        "function": stack.functions["webhook"].pid,
        "gateway": stack.gateway,
        "postgrest": stack.postgrest,
        "postgres": stack.postgres and stack.postgres.process,
        "senders": os.getpid(),
    }
    used = {}
    for name, found in parts.items():
        pid = found if isinstance(found, int) else getattr(found, "pid", None)
        if pid is None:
            continue
        process = psutil.Process(pid)
        total = 0.0
        # The senders are this process alone: the stack's processes are its children.
        children = [] if name == "senders" else process.children(recursive=True)
        for each in [process, *children]:
            try:
                times = each.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        used[name] = total
    return used


def deliver(url: str, batch: list[tuple[bytes, dict[str, str]]], senders: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    shares = [batch[i::senders] for i in range(senders)]

    target = urlsplit(url)

    def send(share: list[tuple[bytes, dict[str, str]]]) -> None:
        # http.client, kept alive: a sender costs a fifth of the CPU httpx would, and on a
        # small machine the senders share the cores with the stack they measure.
        connection = http.client.HTTPConnection(target.netloc, timeout=30)
        for body, headers in share:
            started = time.perf_counter()
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                if response.status != 200:
                    failures.append(response.status)
        connection.close()

    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "deliveries": len(batch),
        "seconds": round(seconds, 3),
        "per_second": round(len(batch) / seconds, 1),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "failures": len(failures),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the function's processes (gunicorn's WORKERS, with 8 THREADS in all)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="send to the function itself rather than through the gateway",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhooks.json")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="supasaasy-bench-webhooks-"))
    try:
        config = state / "supasaasy.toml"
        config.write_text(CONFIG)
        stack = LocalStack(
            StackSettings(
                project_dir=ROOT,
                state_dir=state,
                gateway_port=free_port(),
                db_port=free_port(),
                rest_port=free_port(),
                rest_admin_port=free_port(),
                durable=False,
                serve_functions=True,
                admin_key=secrets.token_urlsafe(16),
                function_env={
                    "SUPASAASY_CONFIG": str(config),
                    "BENCH_STRIPE_KEY": "sk_test_bench",
                    "BENCH_WEBHOOK_SECRET": SECRET,
                    "SUPASAASY_WORKER_URL": "",
                    "WORKERS": str(args.workers),
                    "THREADS": str(max(1, 8 // args.workers)),
                },
            )
        )
        with stack as info:
            url = f"{info.supabase_url}/functions/v1/webhook/{APP}"
            if args.direct:
                served = list(stack.functions["webhook"].args)  # type: ignore[arg-type]
                url = f"http://127.0.0.1:{served[served.index('--port') + 1]}/webhook/{APP}"
            deliver(url, events(200, 1_700_000_000)[:200], args.senders)  # warm up
            rounds = []
            for r in range(args.rounds):
                batch = events(args.events, 1_800_000_000 + r * 100_000)
                batch = [(b.replace(b"evt_bench_", f"evt_r{r}_".encode()), h) for b, h in batch]
                batch = [signed(json.loads(b)) for b, _ in batch]
                before = cpu_seconds(stack)
                rounds.append(deliver(url, batch, args.senders))
                after = cpu_seconds(stack)
                rounds[-1]["cpu_ms_per_delivery"] = {
                    name: round((after[name] - before[name]) * 1000 / len(batch), 2)
                    for name in after
                }
                print(f"round {r + 1}: {rounds[-1]}", flush=True)
            with psycopg.connect(info.database_url) as conn:
                logged = conn.execute("select count(*) from supasaasy.webhook_logs").fetchone()
            best = sorted(rounds, key=lambda x: x["per_second"])[len(rounds) // 2]
            results = {
                "senders": args.senders,
                "through": "the function directly" if args.direct else "the gateway",
                "function_processes": args.workers,
                "rounds": rounds,
                "median_round": best,
                "logged": logged[0] if logged else None,
                "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            }
        print(
            f"median round: {best['per_second']} deliveries/s with {args.senders} senders, "
            f"p50 {best['p50_ms']} ms, p99 {best['p99_ms']} ms, failures {best['failures']}"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
