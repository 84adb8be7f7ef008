"""Sharded full syncs against a slow, rate-limited provider.

A fake Stripe in its own process answers `GET /v1/customers` after a fixed latency and
under a token-bucket rate (429 above it). Measured side by side in one run:

1. One client alone: a plain sequential pager (`limit=100`, `starting_after`) through
   every customer.
2. N workers (warm processes, each looping `Worker.run(job_id)` until the job ends) on
   one full job of the customers, which they split into time-range shards: time from
   job creation to job completion, against (1); requests made against those needed,
   the provider's 429s, the shards the task was cut into.
3. A 1M-object backfill projected from what (2) measured (the model is in `project`),
   against the provider's rate-limit floor (1M / 100 per request / rate).
4. The same with the first worker count at a lower provider rate (`--binding-rate`), one
   that rate limit binds on a small machine, where the workers and the database share a
   few cores and cannot drive 100 requests a second.

Run alone: python bench/shards.py [--objects 30000] [--workers 8,12] [--latency-ms 100]
[--rate 100] [--binding-rate 40]; `make bench` runs it as one section.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from aiohttp import web

from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.processes import free_port, spawn, stop, tcp_accepts, wait_until

ROOT = Path(__file__).resolve().parent.parent
STRIPE_KEY = "sk_test_bench"
PAGE = 100
BACKFILL = 1_000_000
SPAN_SECONDS = 2 * 365 * 24 * 3600
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# -- the fake provider -------------------------------------------------------------


def customers(n: int, seed: int, now: int) -> list[dict[str, Any]]:
    """`n` customers created over the SPAN_SECONDS before `now`, ever more of them
    (density growing linearly with time), oldest first, with ids in that order."""
    rng = random.Random(seed)
    times = sorted(now - SPAN_SECONDS + int(SPAN_SECONDS * math.sqrt(rng.random()))
                   for _ in range(n))  # fmt: skip
    return [{
        "id": f"cus_{i:08d}", "object": "customer", "balance": 0,
        "address": {"city": "Springfield", "country": "US", "line1": f"{i} Main Street",
                    "line2": None, "postal_code": f"{10000 + i % 90000}", "state": "IL"},
        "created": created, "currency": "usd", "default_source": None, "delinquent": False,
        "description": f"Bench customer {i}", "discount": None,
        "email": f"customer{i}@example.com", "invoice_prefix": f"B{i:07X}",
        "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                             "footer": None, "rendering_options": None},
        "livemode": False, "metadata": {"plan": rng.choice(["free", "pro", "team"]),
                                        "ref": secrets.token_hex(6)},
        "name": f"Customer {i}", "phone": None, "preferred_locales": ["en"],
        "shipping": None, "tax_exempt": "none", "test_clock": None,
    } for i, created in enumerate(times, 1)]  # fmt: skip


def build_app(objects: list[dict[str, Any]], latency: float, rate: float) -> web.Application:
    """Newest first (Stripe's order); every answer after `latency` seconds; requests
    over a token bucket of `rate` per second (burst of a second's worth) answered 429."""
    newest = objects[::-1]
    bodies = [orjson.dumps(o) for o in newest]
    keys = [-o["created"] for o in newest]  # ascending
    index = {o["id"]: i for i, o in enumerate(newest)}
    bucket = {"rate": rate, "tokens": float(rate), "at": time.monotonic()}
    log: list[tuple[float, float, int, int]] = []  # arrival, answer, status, objects

    def error(status: int, message: str, **extra: str) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", **extra}}
        return web.json_response(body, status=status)

    def answer(query: Any) -> tuple[int, web.Response]:
        try:
            limit = int(query.get("limit", 10))
            gte = query.get("created[gte]")
            lt = query.get("created[lt]")
            start = 0 if lt is None else bisect.bisect_right(keys, -int(lt))
            end = len(keys) if gte is None else bisect.bisect_right(keys, -int(gte))
        except ValueError:
            return 0, error(400, "Invalid integer")
        if not 1 <= limit <= PAGE:
            return 0, error(400, "This value must be between 1 and 100.", param="limit")
        if (after := query.get("starting_after")) is not None:
            if after not in index:
                return 0, error(400, f"No such customer: '{after}'", param="starting_after")
            start = max(start, index[after] + 1)
        chunk = bodies[start : min(start + limit, end)]
        more = b"true" if start + limit < end else b"false"
        body = (b'{"object":"list","url":"/v1/customers","has_more":' + more
                + b',"data":[' + b",".join(chunk) + b"]}")  # fmt: skip
        return len(chunk), web.Response(body=body, content_type="application/json")

    async def customers_list(request: web.Request) -> web.Response:
        arrived, now = time.time(), time.monotonic()
        rate = bucket["rate"]
        bucket["tokens"] = min(rate, bucket["tokens"] + (now - bucket["at"]) * rate)
        bucket["at"] = now
        limited = bucket["tokens"] < 1
        if not limited:
            bucket["tokens"] -= 1
        await asyncio.sleep(latency)
        count = 0
        if limited:
            response = error(429, "Request rate limit exceeded.", code="rate_limit")
            response.headers["Retry-After"] = "1"
        else:
            count, response = answer(request.query)
        log.append((arrived, time.time(), response.status, count))
        return response

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": len(log), "log": log})

    async def reset(request: web.Request) -> web.Response:
        """Clears the counts; `?rate=R` sets the rate (and fills the bucket)."""
        log.clear()
        if "rate" in request.query:
            bucket.update(rate=float(request.query["rate"]), at=time.monotonic())
            bucket["tokens"] = bucket["rate"]
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/customers", customers_list)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_stats/reset", reset)
    return app


def serve(port: int, objects: int, latency_ms: float, rate: float, seed: int) -> None:
    listed = customers(objects, seed, int(time.time()))
    web.run_app(build_app(listed, latency_ms / 1000, rate), host="127.0.0.1", port=port,
                access_log=None, print=None)  # fmt: skip


# -- one client alone --------------------------------------------------------------


def page_alone(base: str) -> tuple[float, int]:
    """A plain sequential pager through every customer: (seconds, objects)."""
    seen: set[str] = set()
    params: dict[str, Any] = {"limit": PAGE}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                      timeout=30) as client:  # fmt: skip
        start = time.perf_counter()
        while True:
            response = client.get("/v1/customers", params=params)
            response.raise_for_status()
            body = response.json()
            seen.update(o["id"] for o in body["data"])
            if not body["has_more"]:
                break
            params["starting_after"] = body["data"][-1]["id"]
        return time.perf_counter() - start, len(seen)


# -- workers -----------------------------------------------------------------------

# A warm worker: imports and connects, says so, then waits for the job id and runs the
# worker until the job ends (run() returns when it finds nothing to claim or split:
# it is run again after 0.3 s). Prints its run() calls: [start, end, tasks, reason].
WORKER = """
import json, logging, os, sys, time
from supasaasy.config import load_settings
from supasaasy.db import Database
from supasaasy.worker import Worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
db = Database.connect(os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"])
worker = Worker(db, load_settings())
print("ready", flush=True)
job_id = sys.stdin.readline().strip()
runs = []
while True:
    start = time.time()
    result = worker.run(job_id)
    runs.append([start, time.time(), result.tasks_processed, result.shutdown_reason])
    if db.get_job_status(job_id).job.status in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.3)
print(json.dumps(runs), flush=True)
"""


def run_workers(
    info: StackInfo, config: Path, app_key: str, base: str, workers: int, rate: float, log: Path
) -> dict[str, Any]:
    env = {**os.environ, **info.env(), "SUPASAASY_CONFIG": str(config),
           "BENCH_STRIPE_KEY": STRIPE_KEY, "SUPASAASY_WORKER_URL": ""}  # fmt: skip
    started = time.perf_counter()
    with log.open("ab") as err:
        processes = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
                     for _ in range(workers)]  # fmt: skip
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a worker did not start; see {log}")
        warm_s = time.perf_counter() - started
        httpx.post(f"{base}/_stats/reset", params={"rate": rate}).raise_for_status()
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            job_id = conn.execute(
                "select id from supasaasy.create_sync_job(%s, 'full', array['customer'])",
                (app_key,),
            ).fetchone()
            assert job_id is not None
            cpu = cpu_times()
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(f"{job_id[0]}\n")
                process.stdin.close()
            runs = [json.loads((p.stdout.read() if p.stdout else "").strip() or "null")
                    for p in processes]  # fmt: skip
            if None in runs:
                raise RuntimeError(f"a worker ended without its summary; see {log}")
            busy = [after - before for before, after in zip(cpu, cpu_times(), strict=True)]
            run = summarise(conn, job_id[0], app_key, workers, runs, base)
            # The whole machine's CPU (other users of it included), over the run.
            run["cpu_busy"] = busy[0] / busy[1] if busy[1] else None
            run["cpu_ms_per_request"] = busy[0] / CLK_TCK * 1000 / max(run["requests"], 1)
            return run | {"rate": rate, "warm_s": warm_s}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def cpu_times() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot (Linux; zeros elsewhere)."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


def summarise(
    conn: psycopg.Connection[Any],
    job_id: Any,
    app_key: str,
    workers: int,
    runs: list[list[list[Any]]],
    base: str,
) -> dict[str, Any]:
    row = conn.execute(
        "select status, extract(epoch from created_at), extract(epoch from completed_at),"
        " error_message from supasaasy.sync_jobs where id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    status, created, completed, error = row[0], float(row[1]), float(row[2] or "nan"), row[3]
    shards = conn.execute(
        "select extract(epoch from s.started_at), extract(epoch from s.completed_at),"
        " s.entity_count, s.attempts from supasaasy.sync_job_tasks s"
        " join supasaasy.sync_job_tasks t on t.id = s.parent_task_id"
        " where t.job_id = %s order by s.created_from desc",
        (job_id,),
    ).fetchall()
    entities = conn.execute(
        "select count(*) from supasaasy.entities where app_key = %s", (app_key,)
    ).fetchone()
    log = httpx.get(f"{base}/_stats").json()["log"]
    seconds = completed - created
    # Workers busy: shards processing at once, from the shards' own start and end.
    edges = sorted([(float(s[0]), 1) for s in shards if s[0] is not None]
                   + [(float(s[1]), -1) for s in shards if s[1] is not None])  # fmt: skip
    busy, busy_seconds, all_busy, at = 0, 0.0, None, created
    for when, step in edges:
        busy_seconds += busy * (when - at)
        busy, at = busy + step, when
        if busy >= workers and all_busy is None:
            all_busy = when - created
    counts = [c for _, _, s, c in log if s == 200]
    return {
        "workers": workers, "status": status, "error": error, "seconds": seconds,
        "entities": entities[0] if entities else 0,
        "requests": len(log), "limited": sum(1 for _, _, s, _ in log if s == 429),
        "empty_pages": sum(1 for c in counts if c == 0),
        "partial_pages": sum(1 for c in counts if 0 < c < PAGE),
        "objects_served": sum(counts),  # over the objects: listed twice (overlap)
        "shards": len(shards), "empty_shards": sum(1 for s in shards if s[2] == 0),
        "largest_shard": max((s[2] for s in shards), default=0),
        "retried_shards": sum(1 for s in shards if s[3] > 1),
        "first_request_s": min(a for a, *_ in log) - created if log else None,
        "last_answer_to_done_s": completed - max(d for _, d, *_ in log) if log else None,
        "all_busy_s": all_busy, "utilisation": busy_seconds / (workers * seconds),
        # run() returned (nothing to claim or split) while the job went on: seconds after
        # the job's creation (the worker ran again 0.3 s later).
        "early_returns": sorted(round(r[1] - created, 2) for worker in runs for r in worker
                                if r[1] < completed),
        "requests_per_second": [sum(1 for a, *_ in log if int(a - created) == s)
                                for s in range(math.ceil(seconds) + 1)],
        "log": log,
    }  # fmt: skip


def project(run: dict[str, Any], objects: int) -> dict[str, Any]:
    """A 1M-object backfill from this run's rates. The steady rate is the middle 80% of
    the provider's requests over the time they spanned (ramp and tail left out), at most
    the provider's rate (above it is its burst); the fixed cost is what the run took
    beyond its requests at the rate measured (ramp, tail, the task's finish); the waste
    (requests made / needed) is taken to grow with the size:
    projected = fixed + (1M / 100) * made / needed / steady rate."""
    arrivals = sorted(a for a, *_ in run["log"])
    needed = math.ceil(objects / PAGE)
    low, high = len(arrivals) // 10, len(arrivals) * 9 // 10 - 1
    measured = (high - low) / max(arrivals[high] - arrivals[low], 1e-9)
    steady = min(measured, run["rate"])
    fixed = run["seconds"] - run["requests"] / measured
    waste = run["requests"] / needed
    projected = fixed + BACKFILL / PAGE * waste / steady
    return {"steady_rate": steady, "measured_rate": measured, "fixed_s": fixed,
            "waste": waste, "needed": needed, "projected_1m_s": projected}  # fmt: skip


# -- the section -------------------------------------------------------------------


def measure(
    info: StackInfo,
    state: Path,
    *,
    objects: int = 30_000,
    workers: tuple[int, ...] = (8, 12),
    latency_ms: float = 100,
    rate: float = 100,
    binding_rate: float | None = 40,
    seed: int = 1,
    say: Any = print,
) -> dict[str, Any]:
    plan = [(count, rate) for count in workers]
    if binding_rate:
        plan.append((workers[0], binding_rate))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake_log = state / "shards-provider.log"
    fake = spawn([sys.executable, str(Path(__file__).resolve()), "--serve", str(port),
                  "--objects", str(objects), "--latency-ms", str(latency_ms), "--rate", str(rate),
                  "--seed", str(seed)], log=fake_log)  # fmt: skip
    try:
        wait_until(lambda: tcp_accepts(port), what="slow provider", process=fake, log=fake_log)
        keys = [f"shards_{w}_{secrets.token_hex(3)}" for w, _ in plan]
        config = state / "shards.toml"
        config.write_text("".join(
            f'[[apps]]\napp_key = "{key}"\nconnector = "stripe"\nresources = ["customer"]\n'
            f'config = {{ api_key_env = "BENCH_STRIPE_KEY", api_base = "{base}", '
            f"requests_per_second = {r:g}, page_size = {PAGE} }}\n\n"
            for key, (_, r) in zip(keys, plan, strict=True)
        ) + "[worker]\ntime_budget_seconds = 600\n")  # fmt: skip
        alone_s, listed = page_alone(base)
        assert listed == objects, (listed, objects)
        say(f"shards: one client alone paged {listed} objects in {alone_s:.2f}s")
        runs = []
        for key, (count, r) in zip(keys, plan, strict=True):
            log = state / f"shards-{count}-{r:g}.log"
            run = run_workers(info, config, key, base, count, r, log)
            run |= project(run, objects)
            run["over_alone"] = run["seconds"] / alone_s
            run["floor_1m_s"] = BACKFILL / PAGE / r
            run["projected_over_floor"] = run["projected_1m_s"] / run["floor_1m_s"]
            del run["log"]
            runs.append(run)
            say(describe(run, objects))
            if run["status"] != "completed" or run["entities"] != objects:
                raise RuntimeError(f"shards, {count} workers: {run['status']} {run['error']}, "
                                   f"{run['entities']} entities of {objects}")  # fmt: skip
    finally:
        stop(fake)
    return {"objects": objects, "latency_ms": latency_ms, "rate": rate, "alone_s": alone_s,
            "runs": runs}  # fmt: skip


def describe(run: dict[str, Any], objects: int) -> str:
    early = run["early_returns"]
    return (
        f"shards: {run['workers']} workers at {run['rate']:g}/s, {objects} objects: "
        f"{run['seconds']:.2f}s ({run['over_alone']:.3f}x one client alone); requests "
        f"{run['requests']} / {run['needed']} needed ({run['empty_pages']} empty, "
        f"{run['partial_pages']} partial, {run['objects_served'] - objects} objects listed "
        f"twice), 429s {run['limited']}; {run['shards']} shards ({run['empty_shards']} empty, "
        f"largest {run['largest_shard']}); first request after {run['first_request_s']:.2f}s, "
        f"last answer {run['last_answer_to_done_s']:.2f}s before the job completed, all "
        f"workers busy after {run['all_busy_s'] or math.nan:.2f}s, utilisation "
        f"{run['utilisation']:.0%}, {len(early)} early returns (first after "
        f"{min(early, default=math.nan):.2f}s); CPU {run['cpu_busy'] or 0:.0%} busy "
        f"({run['cpu_ms_per_request']:.0f} ms per request); 1M projected "
        f"{run['projected_1m_s']:.0f}s = {run['fixed_s']:.1f}s fixed + 10,000 requests x "
        f"{run['waste']:.3f} waste at a steady {run['steady_rate']:.1f}/s (middle 80% of "
        f"requests: {run['measured_rate']:.1f}/s) = {run['projected_over_floor']:.2f}x the "
        f"{run['floor_1m_s']:.0f}s rate-limit floor"
    )


def rows(results: dict[str, Any]) -> list[tuple[str, float | str, str, str, bool | None]]:
    """The report table's rows: (measure, value, format, target, met)."""
    alone = f"shards: one client alone, {results['objects']:,} objects (s)"
    out: list[tuple[str, float | str, str, str, bool | None]] = [
        (alone, results["alone_s"], ".1f", "", None)
    ]
    for run in results["runs"]:
        tag = f"shards, {run['workers']} workers at {run['rate']:g}/s"
        eight = run["workers"] == 8 and run["rate"] == results["rate"]
        out += [
            (f"{tag}: time / one client alone", run["over_alone"], ".3f",
             "<= 0.25" if eight else "", run["over_alone"] <= 0.25 if eight else None),
            (f"{tag}: requests made / needed", run["waste"], ".3f", "", None),
            (f"{tag}: 429s", run["limited"], "d", "0", run["limited"] == 0),
            (f"{tag}: shards (empty)", f"{run['shards']} ({run['empty_shards']})", "", "", None),
            (f"{tag}: 1M projected / floor", run["projected_over_floor"], ".2f", "<= 1.3",
             run["projected_over_floor"] <= 1.3),
        ]  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=30_000)
    parser.add_argument("--workers", default="8,12", help="worker counts, one run each")
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--rate", type=float, default=100, help="provider requests per second")
    parser.add_argument(
        "--binding-rate",
        type=float,
        default=40,
        help="one more run at this rate, with the first worker count (0: none)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", type=int, metavar="PORT", help="only run the fake provider")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the state and logs")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.objects, args.latency_ms, args.rate, args.seed)
        return 0
    state = Path(tempfile.mkdtemp(prefix="supasaasy-shards-"))
    try:
        stack = LocalStack(StackSettings(
            project_dir=ROOT, state_dir=state, gateway_port=free_port(), db_port=free_port(),
            rest_port=free_port(), rest_admin_port=free_port(),
        ))  # fmt: skip
        with stack as info:
            results = measure(info, state, objects=args.objects, latency_ms=args.latency_ms,
                              rate=args.rate, binding_rate=args.binding_rate, seed=args.seed,
                              workers=tuple(int(w) for w in args.workers.split(",")))  # fmt: skip
    finally:
        if args.keep:
            print(f"state and logs kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    results["measured_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
