"""Chaos (`make chaos`, marked `long`): rounds of upstream changes and syncs on one stack
while faults strike, each round followed by the invariants that must survive them.

A round picks an app, changes localstripe (customers, products, plans and subscriptions
created, updated and deleted), and runs a full or an incremental job with worker
processes while faults strike: workers SIGKILLed or SIGTERMed, PostgREST restarted,
Postgres crashed (immediate shutdown) and started again, the provider answering 5xx, 429,
slowly, with a page that says `has_more` and holds nothing, or with a cursor that loops,
and the job cancelled or retried. Then the faults stop and workers run until the job ends
(it is retried, or replaced by a full job, until one completes), and:

- rows: per collection, the app's rows equal upstream (the ids, and each payload's main
  fields): none lost, duplicated, resurrected (deleted upstream) or stale;
- counters: an ended job's counters match its tasks; a completed full job counts each
  resource's objects exactly;
- stuck: the job ends once faults stop, a task meeting a looping or empty listing ends
  while it lasts, and no job or task is left active;
- silent failures: a failed task or job says why; a task whose provider contradicted
  itself (`empty_more`, or `repeat` past the first page) does not complete;
- SIGTERM: a worker exits within 2 s (+1 s for this busy machine) and, when every worker
  of a job is stopped so, none of the tasks they were running is left processing.

A broken invariant is printed at once with its round, app, mode, faults and the seed; the
run goes on to the end (a round that fails in the harness or the stack counts as aborted),
prints the figure and writes it to bench/results/chaos.json, and then fails.
SUPASAASY_CHAOS_ROUNDS (default 100); SUPASAASY_CHAOS_SEED (default random, printed)
replays a run's choices (apps, modes, upstream changes, faults and when they strike), not
its timing. The worker logs of rounds that broke something are kept in .supasaasy/chaos/.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.keys import new_jwt_secret
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.processes import free_port
from supasaasy.devstack.seed import form_encode, seed_stripe
from supasaasy.models import SyncMode

ROUNDS = int(os.environ.get("SUPASAASY_CHAOS_ROUNDS") or 100)
SEED = int(os.environ.get("SUPASAASY_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
ADMIN = "chaos-admin-key-7d1e4b"
STRIPE_KEY = "sk_test_chaos_9b2f"
# app -> (page size, requests per second): a job of about 3,500 objects lasts seconds.
APPS = {"chaos_a": (20, 150), "chaos_b": (50, 50), "chaos_c": (100, 10)}
PATHS = {
    "customer": "/v1/customers",
    "product": "/v1/products",
    "price": "/v1/prices",
    "plan": "/v1/plans",
    "subscription": "/v1/subscriptions",
}
COLLECTIONS = {
    "customer": ("stripe_customer",),
    "product": ("stripe_product",),
    "price": ("stripe_price",),
    "plan": ("stripe_plan",),
    "subscription": ("stripe_subscription", "stripe_subscription_item"),
}
# What must match between a row's payload and upstream (events carry snapshots whose
# other fields, such as a customer's list of subscriptions, may lag by design).
MAIN_FIELDS = {
    "stripe_customer": ("email", "name", "description", "metadata"),
    "stripe_product": ("name", "active", "description", "metadata"),
    "stripe_price": ("active", "nickname", "unit_amount", "product", "metadata"),
    "stripe_plan": ("active", "nickname", "amount", "product", "metadata"),
    "stripe_subscription": ("customer", "status", "metadata"),
    "stripe_subscription_item": ("subscription", "quantity"),
}
STALE_SECONDS = 2
MAX_ATTEMPTS = 8
WINDOW = {"full": 3.0, "incremental": 1.5}  # seconds during which faults strike
SETTLE_SECONDS = 60.0  # once faults stop, a job ends within this
CONTRADICTION_SECONDS = 15.0  # a task meeting a looping or empty listing fails within this
SIGTERM_GRACE = 3.0  # a SIGTERMed worker exits within 2 s; 1 s more for a busy machine
FAULTS = (
    "sigkill",
    "sigterm",
    "postgrest_restart",
    "postgres_restart",
    "provider_5xx",
    "provider_429",
    "slow",
    "empty_more",
    "repeat",
    "cancel",
    "retry",
)
CHANCE = {
    "sigkill": 0.4,
    "sigterm": 0.25,
    "postgrest_restart": 0.12,
    "postgres_restart": 0.1,
    "provider_5xx": 0.3,
    "provider_429": 0.2,
    "slow": 0.15,
    "empty_more": 0.08,
    "repeat": 0.07,
    "cancel": 0.1,
    "retry": 0.1,
}
INVARIANTS = (
    "rows lost",
    "duplicated",
    "resurrected",
    "stale",
    "counters wrong",
    "jobs stuck",
    "tasks failed silently",
    "sigterm unclean",
    "rounds aborted",
)
ACTIVE = ("pending", "processing")
Snapshot = dict[str, dict[str, dict[str, Any]]]  # collection -> id -> payload


class Upstream:
    """localstripe as the rounds change it: what may be deleted or subscribed, and every
    id deleted so far (a row holding one is resurrected)."""

    def __init__(self, url: str) -> None:
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=30
        )
        self.deleted: set[str] = set()
        self.changes: Counter[str] = Counter()
        now = self.snapshot()
        subscribed = {s["customer"] for s in now["stripe_subscription"].values()}
        self.customers = list(now["stripe_customer"])
        self.free = [c for c in self.customers if c not in subscribed]  # deletable
        self.payers: list[str] = []  # with a card, not subscribed yet
        self.monthly = [
            p["id"] for p in now["stripe_plan"].values() if p["interval"] == "month" and p["active"]
        ]
        self.products = list(now["stripe_product"])
        self.priced = list(self.products)  # products with plans
        self.bare: list[str] = []  # products without plans (deletable)
        self.plans = list(now["stripe_plan"])
        self.spare: list[str] = []  # plans no subscription uses (deletable)
        self.live = [
            s["id"] for s in now["stripe_subscription"].values() if s["status"] != "canceled"
        ]

    def send(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.api.request(method, path, data=dict(form_encode(params or {})))
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        kind = path.split("/")[2]
        if method == "DELETE":
            self.changes[f"{kind} {'cancelled' if kind == 'subscriptions' else 'deleted'}"] += 1
        else:
            self.changes[f"{kind} {'updated' if path.count('/') > 2 else 'created'}"] += 1
        return response.json()

    def _take(self, rng: random.Random, pool: list[str], recent: bool = False) -> str:
        """Remove and return an id, half the time one of the 50 newest when `recent`."""
        low = max(0, len(pool) - 50) if recent and rng.random() < 0.5 else 0
        return pool.pop(rng.randrange(low, len(pool)))

    def change(self, rng: random.Random, tag: str) -> None:
        """One round's changes: about 100 customer events and a few of every other kind."""
        card = {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
        changed = {"description": f"changed in {tag}", "metadata": {"changed": tag}}
        for i in range(rng.randint(20, 40)):
            paying = rng.random() < 0.25
            params: dict[str, Any] = {
                "name": f"Chaos {tag}.{i}",
                "email": f"c{tag}.{i}@chaos.example",
            }
            cid = self.send("POST", "/v1/customers", params | (card if paying else {}))["id"]
            self.customers.append(cid)
            (self.payers if paying else self.free).append(cid)
        for cid in rng.sample(self.customers, rng.randint(20, 40)):
            self.send("POST", f"/v1/customers/{cid}", changed | {"name": f"Renamed in {tag}"})
        for _ in range(min(rng.randint(20, 40), len(self.free) - 100)):
            cid = self._take(rng, self.free, recent=True)
            self.customers.remove(cid)
            self.send("DELETE", f"/v1/customers/{cid}")
            self.deleted.add(cid)

        for i in range(rng.randint(1, 3)):
            pid = self.send("POST", "/v1/products", {"name": f"Bare {tag}.{i}"})["id"]
            self.products.append(pid)
            self.bare.append(pid)
        for pid in rng.sample(self.products, 3):
            self.send("POST", f"/v1/products/{pid}", changed)
        for _ in range(min(rng.randint(0, 2), len(self.bare) - 1)):
            pid = self._take(rng, self.bare, recent=True)
            self.products.remove(pid)
            self.send("DELETE", f"/v1/products/{pid}")
            self.deleted.add(pid)

        for i in range(rng.randint(1, 3)):
            plan = {
                "product": rng.choice(self.priced),
                "amount": 100 * rng.randint(1, 99),
                "currency": "usd",
                "interval": "month",
                "nickname": f"Spare {tag}.{i}",
            }
            plan_id = self.send("POST", "/v1/plans", plan)["id"]
            self.plans.append(plan_id)
            self.spare.append(plan_id)
        for plan_id in rng.sample(self.plans, 3):
            params = {"nickname": f"Renamed in {tag}", "metadata": {"changed": tag}}
            self.send("POST", f"/v1/plans/{plan_id}", params)
        for _ in range(min(rng.randint(0, 2), len(self.spare) - 1)):
            plan_id = self._take(rng, self.spare, recent=True)
            self.plans.remove(plan_id)
            self.send("DELETE", f"/v1/plans/{plan_id}")
            self.deleted.add(plan_id)

        for _ in range(min(rng.randint(2, 6), len(self.payers))):
            items = [
                {"plan": plan_id, "quantity": rng.choice((1, 2, 5))}
                for plan_id in rng.sample(self.monthly, rng.choice((1, 1, 2)))
            ]
            params = {"customer": self._take(rng, self.payers), "items": items}
            self.live.append(self.send("POST", "/v1/subscriptions", params)["id"])
        for sid in rng.sample(self.live, rng.randint(2, 6)):
            self.send("POST", f"/v1/subscriptions/{sid}", {"metadata": {"changed": tag}})
        for _ in range(rng.randint(1, 4)):
            self.send("DELETE", f"/v1/subscriptions/{self._take(rng, self.live)}")

    def _list(self, path: str, **params: str) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {"limit": 100, **params}
        while True:
            response = self.api.get(path, params=query)
            assert response.is_success, f"GET {path}: {response.status_code} {response.text}"
            body = response.json()
            yield from body["data"]
            if not body["has_more"]:
                return
            query["starting_after"] = body["data"][-1]["id"]

    def snapshot(self) -> Snapshot:
        """Everything a sync of every resource must store, by collection."""
        found: Snapshot = {c: {} for names in COLLECTIONS.values() for c in names}
        for resource in ("customer", "product", "price", "plan"):
            found[f"stripe_{resource}"] = {o["id"]: o for o in self._list(PATHS[resource])}
        for sub in self._list(PATHS["subscription"], status="all"):
            found["stripe_subscription"][sub["id"]] = sub
            assert sub["items"]["has_more"] is False
            for item in sub["items"]["data"]:
                found["stripe_subscription_item"][item["id"]] = item
        return found


class Crew:
    """The worker processes (`supasaasy worker --loop`) of one job: `size` of them,
    replaced as they exit unless paused, each with a time budget of 1.5 to 4 s (so that
    tasks are also released and resumed). SIGTERMed ones are timed until they exit."""

    def __init__(self, env: dict[str, str], job_id: str, size: int, log: Path, seed: str) -> None:
        self.env, self.job_id, self.size, self.log = env, job_id, size, log
        self.rng = random.Random(seed)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopping: list[tuple[subprocess.Popen[bytes], float, list[float]]] = []
        self.paused = False
        self.slow: list[str] = []  # SIGTERMed workers that did not exit in time
        self.crashed: list[int] = []  # exit codes of workers that stopped unasked
        self.unclean = 0.0  # when a worker last died holding what it held (a kill, a crash)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supasaasy.cli",
                    "worker",
                    "--loop",
                    "--interval",
                    "0.2",
                    "--budget",
                    f"{self.rng.uniform(1.5, 4):.1f}",
                    "--job-id",
                    self.job_id,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tick(self) -> None:
        """Time the stopping workers (killing late ones), replace the exited ones."""
        for entry in list(self.stopping):
            proc, sent, exited = entry
            took = (exited[0] if exited else time.monotonic()) - sent
            if took > SIGTERM_GRACE:
                state = "exited" if exited else "still running"
                self.slow.append(f"worker {proc.pid} {state} {took:.1f} s after SIGTERM")
                proc.kill()
                proc.wait()
                self.unclean = time.time()
            if exited or took > SIGTERM_GRACE:
                self.stopping.remove(entry)
        for proc in [w for w in self.workers if w.poll() is not None]:
            self.workers.remove(proc)
            self.crashed.append(proc.returncode)
            self.unclean = time.time()
        while not self.paused and len(self.workers) < self.size:
            self.workers.append(self._spawn())

    def signal(self, sig: signal.Signals, count: int, rng: random.Random) -> int:
        """Send `sig` to `count` running workers (all when count >= size); how many."""
        chosen = rng.sample(self.workers, min(count, len(self.workers)))
        for proc in chosen:
            self.workers.remove(proc)
            sent = time.monotonic()
            proc.send_signal(sig)
            if sig == signal.SIGTERM:
                exited: list[float] = []
                threading.Thread(
                    target=lambda p=proc, e=exited: (p.wait(), e.append(time.monotonic())),
                    daemon=True,
                ).start()
                self.stopping.append((proc, sent, exited))
            else:
                proc.wait()
                self.unclean = time.time()
        return len(chosen)

    def await_stops(self) -> None:
        while self.stopping:
            self.tick()
            time.sleep(0.02)

    def stop(self) -> None:
        self.paused = True
        for proc in self.workers + [entry[0] for entry in self.stopping]:
            proc.kill()
            proc.wait()
        self.workers, self.stopping = [], []


@dataclass
class Break:
    round: int
    invariant: str
    count: int
    detail: str


@dataclass
class Round:
    number: int
    app: str
    mode: SyncMode
    faults: Counter[str] = field(default_factory=Counter)
    breaks: list[Break] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcome: str = ""
    seconds: float = 0.0

    def struck(self) -> str:
        return ", ".join(f"{k}x{n}" for k, n in sorted(self.faults.items()) if n) or "no fault"

    def broke(self, invariant: str, count: int, detail: str) -> None:
        self.breaks.append(Break(self.number, invariant, count, detail))
        print(
            f"  BROKEN round {self.number} seed {SEED} ({self.app} {self.mode}; faults: "
            f"{self.struck()}): {invariant} ({count}): {detail}",
            flush=True,
        )


@dataclass
class Chaos:
    stack: LocalStack
    info: StackInfo
    stripe: str
    upstream: Upstream
    logs: Path
    config: Path
    totals: Counter[str] = field(default_factory=Counter)
    crews: list[Crew] = field(default_factory=list)

    def crew(self, job_id: str, size: int, log: Path) -> Crew:
        """Workers for a job (stopped at the end, whatever happens)."""
        crew = Crew(self.worker_env(), job_id, size, log, f"{SEED}:{log.name}:{len(self.crews)}")
        self.crews.append(crew)
        crew.tick()
        return crew

    def db(self) -> Database:
        return Database.connect(self.info.supabase_url, self.info.service_role_key)

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows read straight from Postgres (a fresh connection: Postgres restarts)."""
        with psycopg.connect(self.info.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def worker_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SUPABASE_URL": self.info.supabase_url,
            "SUPABASE_SERVICE_ROLE_KEY": self.info.service_role_key,
            "SUPASAASY_CONFIG": str(self.config),
            "CHAOS_STRIPE_KEY": STRIPE_KEY,
        }

    def recover(self) -> None:
        """After an aborted round: workers stopped, no fault, the stack up, no job active."""
        for crew in self.crews:
            crew.stop()
        self.faults()
        if self.stack.postgres is not None and self.stack.postgres.process is None:
            self.stack.postgres.start()
        if self.stack.postgrest is None:
            self.stack.start_postgrest()
        active = "select id from supasaasy.sync_jobs where status in ('pending', 'processing')"
        for (job_id,) in self.sql(active):
            self.call(partial(self.db().cancel_job, job_id), "cancel")

    def faults(self, *faults: dict[str, Any]) -> None:
        """Install provider faults in localstripe; none given: clear them."""
        with httpx.Client(base_url=self.stripe, timeout=10) as api:
            if not faults:
                api.delete("/_config/faults").raise_for_status()
            for fault in faults:
                api.post("/_config/faults", json=fault).raise_for_status()

    def call(self, action: Callable[[], Any], what: str, seconds: float = 15) -> Any:
        """`action`, tried again while the database or its API is coming back."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return action()
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what} kept failing: {exc}") from exc
                time.sleep(0.2)

    def job_http(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.info.supabase_url}/functions/v1/{path}",
            json=body or {},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        assert response.status_code in (200, 409), f"{path}: {response.status_code} {response.text}"
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def chaos(project_root: Path) -> Iterator[Chaos]:
    state = Path(tempfile.mkdtemp(prefix="supasaasy-chaos-"))
    logs = project_root / ".supasaasy" / "chaos"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    try:
        with running_localstripe() as stripe:
            seed_stripe(
                stripe,
                STRIPE_KEY,
                customers=2000,
                products=40,
                plans_per_product=2,
                subscriptions=300,
            )
            config = state / "supasaasy.toml"
            config.write_text(
                "".join(
                    f'[[apps]]\napp_key = "{app}"\nconnector = "stripe"\n'
                    f'config = {{ api_key_env = "CHAOS_STRIPE_KEY", api_base = "{stripe}",'
                    f" page_size = {size}, requests_per_second = {rate}, max_retries = 3 }}\n\n"
                    for app, (size, rate) in APPS.items()
                )
                + f"[worker]\ntime_budget_seconds = 4\nstale_after_seconds = {STALE_SECONDS}\n"
                f"max_attempts = {MAX_ATTEMPTS}\n"
            )
            settings = StackSettings(
                project_dir=project_root,
                state_dir=state,
                gateway_port=free_port(),
                db_port=free_port(),
                rest_port=free_port(),
                rest_admin_port=free_port(),
                # Durable: an immediate shutdown must not lose commits already answered.
                durable=True,
                jwt_secret=new_jwt_secret(),
                serve_functions=True,
                admin_key=ADMIN,
                function_env={
                    "SUPASAASY_CONFIG": str(config),
                    "CHAOS_STRIPE_KEY": STRIPE_KEY,
                    "SUPASAASY_WORKER_URL": "",
                    "SYNC_RATE_LIMIT_PER_MINUTE": "10000",
                },
            )
            stack = LocalStack(settings)
            with stack as info:
                ch = Chaos(stack, info, stripe, Upstream(stripe), logs, config)
                try:
                    yield ch
                finally:
                    for crew in ch.crews:
                        crew.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def start_job(ch: Chaos, rng: random.Random, app: str, mode: SyncMode) -> str:
    """A job of every resource, through POST /sync or straight through the database."""
    if rng.random() < 0.5:
        answer = ch.job_http("sync", {"app_key": app, "mode": mode})
        assert answer.get("success"), answer
        return str(answer["job_id"])
    return str(ch.db().create_sync_job(app, mode, list(PATHS)).id)


def job_row(ch: Chaos, job_id: str) -> dict[str, Any]:
    rows = ch.sql(
        "select status, total_tasks, completed_tasks, failed_tasks, processed_entities,"
        " error_message, mode from supasaasy.sync_jobs where id = %s",
        job_id,
    )
    keys = ("status", "total", "completed", "failed", "entities", "error", "mode")
    return dict(zip(keys, rows[0], strict=True))


def task_rows(ch: Chaos, job_id: str) -> list[dict[str, Any]]:
    rows = ch.sql(
        "select resource_type, status, entity_count, attempts, error_message,"
        " coalesce(extract(epoch from last_heartbeat), 0)::float"
        " from supasaasy.sync_job_tasks where job_id = %s order by position",
        job_id,
    )
    keys = ("resource", "status", "entities", "attempts", "error", "heartbeat")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def describe_tasks(tasks: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{t['resource']} {t['status']} n={t['entities']} a={t['attempts']}"
        + (f" ({t['error'][:80]})" if t["error"] else "")
        for t in tasks
    )


def describe_fault(fault: dict[str, Any]) -> str:
    kind = fault.get("kind") or f"{fault['status']}"
    if kind == "slow":
        kind = f"slow {fault['seconds']:.1f} s"
    times = f" x{fault['count']}" if "count" in fault else ""
    return f"{kind}{times} on {fault['path_prefix']} after {fault.get('skip', 0)}"


def pages(count: int, app: str) -> int:
    return max(1, math.ceil(count / APPS[app][0]))


@dataclass
class Plan:
    """A round's faults: provider faults (installed before the job), timed faults, the
    resources whose provider contradicts itself, and those of them that must fail."""

    provider: list[dict[str, Any]] = field(default_factory=list)
    timed: list[tuple[float, str]] = field(default_factory=list)
    contradicted: set[str] = field(default_factory=set)
    must_fail: set[str] = field(default_factory=set)


def plan_faults(rng: random.Random, r: Round, expected: Snapshot) -> Plan:
    # Slow pages stretch the short incremental tasks, so that they are also stopped and
    # resumed half-way.
    chance = CHANCE | ({"slow": 0.35} if r.mode == "incremental" else {})
    drawn = [kind for kind in FAULTS if rng.random() < chance[kind]]
    counts = {resource: sum(len(expected[c]) for c in COLLECTIONS[resource]) for resource in PATHS}
    counts["subscription"] = len(expected["stripe_subscription"])
    plan = Plan()
    taken: set[str] = set()  # paths of contradicting faults, which get no other fault
    for kind in ("empty_more", "repeat"):
        if kind not in drawn:
            continue
        if r.mode == "incremental":
            # Every task reads /v1/events; one page of events is no contradiction for
            # `repeat` (its only request has no cursor), so only `empty_more` must fail.
            plan.provider.append({"path_prefix": "/v1/events", "kind": kind})
            plan.contradicted |= set(PATHS)
            plan.must_fail |= set(PATHS) if kind == "empty_more" else set()
        else:
            # `skip` below the pages of one pass: the task cannot end on good pages alone.
            fits = [res for res in PATHS if kind == "empty_more" or pages(counts[res], r.app) > 1]
            fits = [res for res in fits if PATHS[res] not in taken]
            if not fits:
                continue
            resource = rng.choice(fits)
            last = pages(counts[resource], r.app) - (1 if kind == "repeat" else 0)
            plan.provider.append(
                {"path_prefix": PATHS[resource], "kind": kind, "skip": rng.randrange(last)}
            )
            plan.contradicted.add(resource)
            plan.must_fail.add(resource)
        taken.add(plan.provider[-1]["path_prefix"])
        r.faults[kind] += 1

    for kind in ("provider_5xx", "provider_429", "slow"):
        if kind not in drawn:
            continue
        if r.mode == "incremental":
            aim = None if "/v1/events" in taken else ("/v1/events", 3)
        else:
            pick = rng.choice([res for res in PATHS if PATHS[res] not in taken])
            aim = (PATHS[pick], pages(counts[pick], r.app))
        if aim is None:
            continue
        fault: dict[str, Any] = {"path_prefix": aim[0], "skip": rng.randrange(aim[1])}
        if kind == "provider_5xx":
            fault |= {"status": rng.choice((500, 502, 503)), "count": rng.randint(1, 5)}
        elif kind == "provider_429":
            fault |= {"status": 429, "count": rng.randint(1, 4), "retry_after": rng.choice((0, 1))}
        else:
            fault |= {"kind": "slow", "seconds": rng.uniform(0.3, 1.5), "count": rng.randint(1, 3)}
        plan.provider.append(fault)
        r.faults[kind] += 1

    timed = ("sigkill", "sigterm", "postgrest_restart", "postgres_restart", "cancel", "retry")
    plan.timed = [(rng.uniform(0.2, WINDOW[r.mode]), kind) for kind in drawn if kind in timed]
    if "sigkill" in drawn and rng.random() < 0.5:
        plan.timed.append((rng.uniform(0.2, WINDOW[r.mode]), "sigkill"))
    plan.timed.sort()
    return plan


def strike(ch: Chaos, rng: random.Random, r: Round, crew: Crew, job_id: str, kind: str) -> None:
    """One timed fault."""
    if kind == "sigkill":
        killed = crew.signal(signal.SIGKILL, rng.randint(1, crew.size), rng)
        r.faults[kind] += bool(killed)
        ch.totals["workers sigkilled"] += killed
    elif kind == "sigterm":
        everyone = rng.random() < 0.7
        crew.paused = everyone
        stopped = crew.signal(signal.SIGTERM, crew.size if everyone else 1, rng)
        r.faults[kind] += bool(stopped)
        ch.totals["workers sigtermed"] += stopped
        if everyone and stopped:
            # Every worker was stopped: the tasks that a live worker touched since the
            # last kill, crash or outage (plus 1 s for requests still in flight) are
            # released. Older ones may be orphans, left for the stale requeue.
            crew.await_stops()
            left = [
                t
                for t in task_rows(ch, job_id)
                if t["status"] == "processing" and t["heartbeat"] > crew.unclean + 1
            ]
            ch.totals["sigterm release checks"] += 1
            if left:
                r.broke(
                    "sigterm unclean",
                    len(left),
                    f"every worker was stopped with SIGTERM and tasks are left processing:"
                    f" {describe_tasks(left)}",
                )
        crew.paused = False
    elif kind in ("postgrest_restart", "postgres_restart"):
        crew.await_stops()
        down = rng.uniform(0.2, 1.5)
        if kind == "postgrest_restart":
            ch.stack.stop_postgrest()
            time.sleep(down)
            ch.stack.start_postgrest()
        else:
            ch.stack.restart_postgres(down)
        crew.unclean = time.time()
        r.faults[kind] += 1
    elif kind in ("cancel", "retry"):
        status = job_row(ch, job_id)["status"]
        if status in ACTIVE:
            via_http = rng.random() < 0.5
            ch.call(
                lambda: (
                    ch.job_http(f"job-status/{job_id}/cancel")
                    if via_http
                    else ch.db().cancel_job(job_id)
                ),
                "cancel",
            )
            r.faults["cancel"] += kind == "cancel"
        if kind == "retry" and status != "completed":
            time.sleep(rng.uniform(0.2, 1.0))
            r.faults["retry"] += ch.call(lambda: ch.db().retry_job(job_id), "retry") is not None


def settle(ch: Chaos, r: Round, crew: Crew, job_id: str) -> str:
    """Run the workers until the job ends; its last status ("stuck" past the deadline)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    crew.size = max(crew.size, 1)
    while True:
        job = job_row(ch, job_id)
        if job["status"] not in ACTIVE:
            return str(job["status"])
        if time.monotonic() > deadline:
            r.broke(
                "jobs stuck",
                1,
                f"job {job_id} still {job['status']} {SETTLE_SECONDS:.0f} s"
                f" after faults stopped: {describe_tasks(task_rows(ch, job_id))}",
            )
            ch.call(lambda: ch.db().cancel_job(job_id), "cancel a stuck job")
            return "stuck"
        crew.tick()
        time.sleep(0.1)


def check_counters(ch: Chaos, r: Round, job_id: str, expected: Snapshot) -> None:
    """An ended job's counters match its tasks; a completed full job counts exactly."""
    job, tasks = job_row(ch, job_id), task_rows(ch, job_id)
    by_status = Counter(t["status"] for t in tasks)
    ended = sum(t["entities"] for t in tasks if t["status"] in ("completed", "failed"))
    wrong = []
    if (job["completed"], job["failed"]) != (by_status["completed"], by_status["failed"]):
        wrong.append(
            f"completed/failed {job['completed']}/{job['failed']} but tasks"
            f" {by_status['completed']}/{by_status['failed']}"
        )
    if (
        job["status"] in ("completed", "failed")
        and job["completed"] + job["failed"] != job["total"]
    ):
        wrong.append(f"completed+failed {job['completed'] + job['failed']} != total {job['total']}")
    if job["entities"] != ended:
        wrong.append(f"processed_entities {job['entities']} != tasks' {ended}")
    if job["status"] == "completed" and job["mode"] == "full":
        for t in tasks:
            want = sum(len(expected[c]) for c in COLLECTIONS[t["resource"]])
            if t["entities"] != want:
                wrong.append(f"{t['resource']} counted {t['entities']}, upstream has {want}")
    if wrong:
        r.broke("counters wrong", 1, f"job {job_id} ({job['status']}): " + "; ".join(wrong))
    silent = [t for t in tasks if t["status"] == "failed" and not (t["error"] or "").strip()]
    if job["status"] == "failed" and not (job["error"] or "").strip():
        r.broke("tasks failed silently", 1, f"job {job_id} failed without a message")
    if silent:
        r.broke(
            "tasks failed silently",
            len(silent),
            f"job {job_id}: failed without a message: {describe_tasks(silent)}",
        )


def check_rows(ch: Chaos, r: Round, expected: Snapshot, quiet: bool = False) -> bool:
    """The app's rows equal upstream, per collection; True when they do."""
    stored: Snapshot = {c: {} for c in expected}
    rows = ch.sql(
        "select collection_key, external_id, raw_payload from supasaasy.entities"
        " where app_key = %s and deleted_at is null",
        r.app,
    )
    copies = Counter((c, e) for c, e, _ in rows)
    for collection, external_id, payload in rows:
        stored.setdefault(collection, {})[external_id] = payload
    good = True
    for collection, want in expected.items():
        have = stored.get(collection, {})
        lost = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        resurrected = [i for i in extra if i in ch.upstream.deleted]
        doubled = [i for i in extra if i not in ch.upstream.deleted]
        doubled += [i for (c, i), n in copies.items() if c == collection and n > 1]
        fields = MAIN_FIELDS[collection]
        stale = [
            i
            for i in sorted(set(want) & set(have))
            if any(want[i].get(f) != have[i].get(f) for f in fields)
        ]
        for invariant, ids in (
            ("rows lost", lost),
            ("resurrected", resurrected),
            ("duplicated", doubled),
            ("stale", stale),
        ):
            if ids:
                good = False
                example = ids[0]
                if invariant == "stale":
                    example += " " + ", ".join(
                        f"{f}: {have[ids[0]].get(f)!r} != {want[ids[0]].get(f)!r}"
                        for f in fields
                        if want[ids[0]].get(f) != have[ids[0]].get(f)
                    )
                if not quiet:
                    r.broke(
                        invariant,
                        len(ids),
                        f"{collection}: {len(ids)} of {len(want)}, e.g. {example}",
                    )
    return good


def finish(
    ch: Chaos, rng: random.Random, r: Round, crew: Crew, job_id: str, expected: Snapshot
) -> list[str]:
    """With faults off: the job ends, is retried while it failed or was cancelled, and
    is replaced by a full job if it still does not complete. The jobs run."""
    jobs = [job_id]
    status = settle(ch, r, crew, job_id)
    for _ in range(3):
        if status not in ("failed", "cancelled"):
            break
        r.notes.append(f"{status}: {describe_tasks(task_rows(ch, job_id))}")
        check_counters(ch, r, job_id, expected)
        ch.call(lambda: ch.db().retry_job(job_id), "retry")
        status = settle(ch, r, crew, job_id)
    crew.stop()
    if status != "completed":
        r.notes.append(f"{status} after retries: a new full job")
        fresh = start_job(ch, rng, r.app, "full")
        jobs.append(fresh)
        crew = ch.crew(fresh, 1, crew.log)
        status = settle(ch, r, crew, fresh)
        crew.stop()
        if status != "completed":
            r.broke(
                "jobs stuck",
                1,
                f"a full job with no fault ended {status}: {describe_tasks(task_rows(ch, fresh))}",
            )
    r.outcome = status
    return jobs


def await_contradicted(ch: Chaos, r: Round, crew: Crew, job_id: str, plan: Plan) -> None:
    """The provider still contradicting itself (and no other fault), the tasks that meet
    it end within CONTRADICTION_SECONDS, and those that must fail do not complete."""
    deadline = time.monotonic() + CONTRADICTION_SECONDS
    while True:
        tasks = [t for t in task_rows(ch, job_id) if t["resource"] in plan.contradicted]
        active = [t for t in tasks if t["status"] in ACTIVE]
        if not active or time.monotonic() > deadline:
            break
        crew.tick()
        time.sleep(0.1)
    ch.totals["contradiction checks"] += len(tasks)
    r.notes.append(f"provider contradicting itself: {describe_tasks(tasks)}")
    if active:
        r.broke(
            "jobs stuck",
            len(active),
            f"{CONTRADICTION_SECONDS:.0f} s into a provider contradicting itself, tasks"
            f" still active: {describe_tasks(active)}",
        )
    done = [t for t in tasks if t["resource"] in plan.must_fail and t["status"] == "completed"]
    if done:
        r.broke(
            "tasks failed silently",
            len(done),
            f"completed while the provider contradicted itself: {describe_tasks(done)}",
        )


def run_round(ch: Chaos, number: int) -> Round:
    """One round; one that fails in the harness or the stack is noted as aborted, and
    the stack is set right for the next."""
    rng = random.Random(SEED * 1_000_003 + number)
    mode: SyncMode = "full" if rng.random() < 0.5 else "incremental"
    r = Round(number, rng.choice(sorted(APPS)), mode)
    try:
        play(ch, rng, r)
    except Exception as exc:
        r.broke("rounds aborted", 1, f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            ch.recover()
        except Exception as again:
            r.broke("rounds aborted", 0, f"and the stack could not be set right: {again}")
            r.outcome = "fatal"
    return r


def play(ch: Chaos, rng: random.Random, r: Round) -> None:
    number = r.number
    ch.upstream.change(rng, str(number))
    expected = ch.upstream.snapshot()
    plan = plan_faults(rng, r, expected)
    r.notes += [describe_fault(f) for f in plan.provider]
    if r.mode == "incremental":  # only the tasks that run incrementally read /v1/events
        query = "select collection_key from supasaasy.sync_state where app_key = %s"
        synced = {c for (c,) in ch.sql(query, r.app)}
        plan.contradicted = {res for res in plan.contradicted if COLLECTIONS[res][0] in synced}
        plan.must_fail &= plan.contradicted
    log = ch.logs / f"round-{number:03d}.log"
    ch.faults(*plan.provider)
    job_id = start_job(ch, rng, r.app, r.mode)
    crew = ch.crew(job_id, rng.randint(1, 3), log)
    start = time.monotonic()
    for at, kind in plan.timed:
        while time.monotonic() - start < at:
            crew.tick()
            time.sleep(0.02)
        if job_row(ch, job_id)["status"] == "completed":
            break  # what is left would strike an idle stack
        strike(ch, rng, r, crew, job_id, kind)
    while time.monotonic() - start < WINDOW[r.mode]:
        crew.tick()
        time.sleep(0.02)
    crew.await_stops()
    if crew.slow:
        r.broke("sigterm unclean", len(crew.slow), "; ".join(crew.slow))
    if plan.contradicted:
        await_contradicted(ch, r, crew, job_id, plan)
    ch.faults()  # faults stop (PostgREST and Postgres are up again: restarts wait for them)
    for job in finish(ch, rng, r, crew, job_id, expected):
        check_counters(ch, r, job, expected)
    resumed = [t for t in task_rows(ch, job_id) if t["attempts"] > 1]
    ch.totals[f"{r.mode} tasks run in more than one attempt"] += len(resumed)
    if crew.crashed:
        r.notes.append(f"workers exited unasked, with codes {crew.crashed}")
        ch.totals["workers exited unasked"] += len(crew.crashed)
    jobs, tasks = ch.sql(
        "select (select count(*) from supasaasy.sync_jobs where status in"
        " ('pending', 'processing')), (select count(*) from supasaasy.sync_job_tasks"
        " where status = 'processing')"
    )[0]
    if jobs or tasks:
        r.broke(
            "jobs stuck",
            max(jobs, 1),
            f"once every job ended: {jobs} job(s) still active and {tasks} task(s) processing",
        )
        ch.recover()
    if not check_rows(ch, r, expected):
        repair(ch, rng, r, expected)
    if not r.breaks:
        log.unlink(missing_ok=True)


def repair(ch: Chaos, rng: random.Random, r: Round, expected: Snapshot) -> None:
    """A full job with no fault, so that the next rounds of this app start even."""
    job_id = start_job(ch, rng, r.app, "full")
    crew = ch.crew(job_id, 1, ch.logs / f"round-{r.number:03d}.log")
    status = settle(ch, r, crew, job_id)
    crew.stop()
    if status != "completed" or not check_rows(ch, r, expected, quiet=True):
        r.notes.append(f"repair: a full job with no fault ended {status}, rows still differ")


def figure(rounds: list[Round], ch: Chaos) -> dict[str, Any]:
    faults: Counter[str] = sum((r.faults for r in rounds), Counter())
    broken: Counter[str] = Counter()
    for r in rounds:
        for b in r.breaks:
            broken[b.invariant] += b.count
    return {
        "rounds": len(rounds),
        "seed": SEED,
        "faults": {kind: faults[kind] for kind in FAULTS},
        "invariants": {name: broken[name] for name in INVARIANTS},
        "rounds_broken": sum(1 for r in rounds if r.breaks),
        "totals": dict(ch.totals),
        "breaks": [
            vars(b) | {"app": r.app, "mode": r.mode, "faults": dict(r.faults)}
            for r in rounds
            for b in r.breaks
        ],
        "per_round": [
            {
                "round": r.number,
                "app": r.app,
                "mode": r.mode,
                "faults": r.struck(),
                "outcome": r.outcome,
                "broken": len(r.breaks),
                "seconds": round(r.seconds, 1),
            }
            for r in rounds
        ],
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def line(fig: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {n}" for k, n in fig["faults"].items())
    inv = fig["invariants"]
    return (
        f"chaos: {fig['rounds']} rounds, faults: {faults}; rows lost {inv['rows lost']},"
        f" duplicated {inv['duplicated']}, resurrected {inv['resurrected']},"
        f" stale {inv['stale']}; counters wrong {inv['counters wrong']};"
        f" jobs stuck {inv['jobs stuck']}; tasks failed silently"
        f" {inv['tasks failed silently']}; sigterm unclean {inv['sigterm unclean']};"
        f" rounds aborted {inv['rounds aborted']}"
    )


@pytest.mark.long
def test_chaos(chaos: Chaos, project_root: Path) -> None:
    print(f"\nchaos: {ROUNDS} rounds, seed {SEED} (SUPASAASY_CHAOS_SEED={SEED} to replay)")
    started = time.monotonic()
    for app in APPS:  # every app synced once, so that incremental rounds have a watermark
        warm = Round(0, app, "full")
        job_id = start_job(chaos, random.Random(0), app, "full")
        crew = chaos.crew(job_id, 2, chaos.logs / "warm-up.log")
        assert settle(chaos, warm, crew, job_id) == "completed", warm.breaks
        crew.stop()
    rounds = []
    for number in range(1, ROUNDS + 1):
        began = time.monotonic()
        r = run_round(chaos, number)
        r.seconds = time.monotonic() - began
        rounds.append(r)
        notes = f" [{' | '.join(r.notes)}]" if r.notes else ""
        print(
            f"round {number}/{ROUNDS} {r.app} {r.mode}: {r.struck()} -> {r.outcome},"
            f" {len(r.breaks)} broken, {r.seconds:.1f} s{notes}",
            flush=True,
        )
        if r.outcome == "fatal":
            break
    chaos.totals.update(chaos.upstream.changes)
    fig = figure(rounds, chaos)
    fig["seconds"] = round(time.monotonic() - started)
    out = project_root / "bench" / "results" / "chaos.json"
    out.write_text(json.dumps(fig, indent=2) + "\n")
    print(line(fig))
    print(f"(seed {SEED}; {fig['rounds_broken']} round(s) broke something; {out})")
    assert not fig["breaks"], f"{len(fig['breaks'])} invariant break(s); seed {SEED}"
