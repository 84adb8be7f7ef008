"""Failure on purpose, on the real stack with localstripe: workers killed at several
points, PostgREST restarted mid-job, concurrent sync requests, malformed requests, and
secrets kept out of answers and logs. Rows must always end equal to upstream."""

from __future__ import annotations

import hmac
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from supasaasy.config import load_settings
from supasaasy.db import Database
from supasaasy.devstack import LocalStack, StackInfo, StackSettings
from supasaasy.devstack.keys import new_jwt_secret
from supasaasy.devstack.localstripe import running_localstripe
from supasaasy.devstack.processes import free_port
from supasaasy.devstack.seed import seed_stripe
from supasaasy.worker import Worker

ADMIN = "reliability-admin-key-5f2b9c"
STRIPE_KEY = "sk_test_reliability_3c8e1a"
WEBHOOK_SECRET = "whsec_reliability_7d4f0b"
CUSTOMERS = 3000
APPS = ("kill_before", "kill_midway", "kill_completing", "kill_repeatedly", "pgrst_restart",
        "concurrent", "sigterm_cli", "sigterm_function")  # fmt: skip
Pg = psycopg.Connection[tuple[object, ...]]


@dataclass
class Env:
    stack: LocalStack
    info: StackInfo
    stripe: str
    config: Path
    upstream: dict[str, dict[str, Any]]

    def db(self) -> Database:
        return Database.connect(self.info.supabase_url, self.info.service_role_key)

    def worker_env(self) -> dict[str, str]:
        return {**os.environ, "SUPABASE_URL": self.info.supabase_url,
                "SUPABASE_SERVICE_ROLE_KEY": self.info.service_role_key,
                "SUPASAASY_CONFIG": str(self.config), "REL_STRIPE_KEY": STRIPE_KEY}  # fmt: skip


@pytest.fixture(scope="module")
def env(project_root: Path) -> Iterator[Env]:
    state = Path(tempfile.mkdtemp(prefix="supasaasy-reliability-"))
    try:
        with running_localstripe() as stripe:
            seed_stripe(stripe, STRIPE_KEY, customers=CUSTOMERS, products=0,
                        plans_per_product=0, subscriptions=0)  # fmt: skip
            upstream = _list(stripe, "/v1/customers")
            config = state / "supasaasy.toml"
            # 100 per page at 10 pages a second: checkpoints (every 1,000 rows) about
            # every second, so that a worker can be stopped between them.
            config.write_text("".join(
                f'[[apps]]\napp_key = "{app}"\nconnector = "stripe"\n'
                f'config = {{ api_key_env = "REL_STRIPE_KEY", api_base = "{stripe}",'
                f" requests_per_second = 10 }}\n\n"
                for app in APPS
            ) + '[[apps]]\napp_key = "hooks"\nconnector = "stripe"\nconfig = {'
                ' api_key_env = "REL_STRIPE_KEY", webhook_secret_env = "REL_WEBHOOK_SECRET" }\n\n'
                "[worker]\nstale_after_seconds = 1\nmax_attempts = 20\n")  # fmt: skip
            settings = StackSettings(
                project_dir=project_root, state_dir=state, gateway_port=free_port(),
                db_port=free_port(), rest_port=free_port(), rest_admin_port=free_port(),
                durable=False, jwt_secret=new_jwt_secret(), serve_functions=True,
                admin_key=ADMIN,
                function_env={"SUPASAASY_CONFIG": str(config), "REL_STRIPE_KEY": STRIPE_KEY,
                              "REL_WEBHOOK_SECRET": WEBHOOK_SECRET,
                              "SUPASAASY_WORKER_URL": "", "SYNC_RATE_LIMIT_PER_MINUTE": "10000"},
            )  # fmt: skip
            stack = LocalStack(settings)
            os.environ["REL_STRIPE_KEY"] = STRIPE_KEY  # for the workers run in this process
            with stack as info:
                yield Env(stack, info, stripe, config, upstream)
    finally:
        os.environ.pop("REL_STRIPE_KEY", None)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def pg(env: Env) -> Iterator[Pg]:
    with psycopg.connect(env.info.database_url, autocommit=True) as conn:
        yield conn


def _list(api: str, path: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 100}
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as c:
        while True:
            body = c.get(path, params=params).json()
            found |= {obj["id"]: obj for obj in body["data"]}
            if not body["has_more"]:
                return found
            params["starting_after"] = body["data"][-1]["id"]


def task_state(pg: Pg, job_id: object) -> dict[str, Any]:
    """The state of the job's customers' listing: its task's, or once the task is split
    into shards, its shard's (one here: nothing else runs to take part of it)."""
    row = pg.execute(
        "select status, batch_seq, cursor, attempts, entity_count from supasaasy.sync_job_tasks"
        " where job_id = %s order by parent_task_id nulls last limit 1",
        (job_id,)).fetchone()  # fmt: skip
    assert row is not None
    return dict(zip(("status", "batch_seq", "cursor", "attempts", "entity_count"), row,
                    strict=True))  # fmt: skip


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def assert_exact(env: Env, pg: Pg, app: str, job_id: object) -> None:
    """Rows equal upstream, counters exact, the job completed."""
    rows = dict(pg.execute(
        "select external_id, raw_payload from supasaasy.entities where app_key = %s"
        " and collection_key = 'stripe_customer'", (app,)).fetchall())  # fmt: skip
    assert rows == env.upstream
    job = env.db().get_job_status(str(job_id))
    assert job.job.status == "completed", job.job.error_message
    assert (job.job.completed_tasks, job.job.failed_tasks) == (1, 0)
    assert job.job.processed_entities == job.tasks[0].entity_count == CUSTOMERS


def start_worker(env: Env, job_id: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "supasaasy.cli", "worker", "--job-id", str(job_id)],
        env=env.worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def resume(env: Env, job_id: object) -> None:
    """Another worker, after the stale timeout: requeues the task and finishes it."""
    time.sleep(1.2)
    result = Worker(env.db(), load_settings(env.config)).run(str(job_id))
    assert result.success, result


def test_a_worker_killed_before_its_first_page(env: Env, pg: Pg) -> None:
    job = env.db().create_sync_job("kill_before", "full", ["customer"])
    worker = start_worker(env, job.id)
    wait_for(lambda: task_state(pg, job.id)["status"] == "processing")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert task_state(pg, job.id)["batch_seq"] == 0
    resume(env, job.id)
    # The claim killed (the task's, or its shard's once split) was taken again, once.
    most = pg.execute("select max(attempts) from supasaasy.sync_job_tasks where job_id = %s",
                      (job.id,)).fetchone()  # fmt: skip
    assert most == (2,)
    assert_exact(env, pg, "kill_before", job.id)


def test_a_worker_killed_midway_resumes_from_its_cursor(env: Env, pg: Pg) -> None:
    job = env.db().create_sync_job("kill_midway", "full", ["customer"])
    worker = start_worker(env, job.id)
    wait_for(lambda: task_state(pg, job.id)["batch_seq"] >= 1)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = task_state(pg, job.id)
    assert killed["status"] == "processing" and killed["cursor"] is not None
    assert 0 < killed["entity_count"] < CUSTOMERS
    resume(env, job.id)
    assert_exact(env, pg, "kill_midway", job.id)


def test_a_worker_killed_while_completing(env: Env, pg: Pg) -> None:
    job = env.db().create_sync_job("kill_completing", "full", ["customer"])
    worker = start_worker(env, job.id)
    wait_for(lambda: task_state(pg, job.id)["batch_seq"] >= 2)
    # Hold the task's row: the last batch's checkpoint, and then finishing, must wait.
    with psycopg.connect(env.info.database_url) as blocker:
        blocker.execute("select 1 from supasaasy.sync_job_tasks where job_id = %s for update",
                        (job.id,))  # fmt: skip
        time.sleep(1.5)  # the last batch is written and waits for the row
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        blocker.rollback()
    resume(env, job.id)
    assert_exact(env, pg, "kill_completing", job.id)


def test_sigterm_releases_the_task_at_its_cursor_within_two_seconds(env: Env, pg: Pg) -> None:
    job = env.db().create_sync_job("sigterm_cli", "full", ["customer"])
    worker = start_worker(env, job.id)
    wait_for(lambda: task_state(pg, job.id)["batch_seq"] >= 1)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(5) == 0
    assert time.monotonic() - signalled < 2.0
    released = task_state(pg, job.id)
    assert released["status"] == "pending" and released["cursor"] is not None
    assert 0 < released["entity_count"] < CUSTOMERS
    # The next worker resumes at once, from there: no stale timeout to wait for.
    result = Worker(env.db(), load_settings(env.config)).run(str(job.id))
    assert result.success and task_state(pg, job.id)["attempts"] == 2
    assert_exact(env, pg, "sigterm_cli", job.id)


def test_sigterm_to_the_worker_function_answers_and_releases(
    env: Env, pg: Pg, project_root: Path
) -> None:
    """The worker function under functions-framework (gunicorn), as a host stops it."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="supasaasy-fn-home-"))
    function = subprocess.Popen(
        [sys.executable, "-m", "functions_framework", "--source",
         str(project_root / "functions" / "worker" / "main.py"), "--target", "worker",
         "--host", "127.0.0.1", "--port", str(port)],
        env={**env.worker_env(), "ADMIN_API_KEY": ADMIN, "SUPASAASY_WORKER_URL": "",
             "HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(url), timeout=30)
        job = env.db().create_sync_job("sigterm_function", "full", ["customer"])
        answers: list[httpx.Response] = []
        call = threading.Thread(target=lambda: answers.append(httpx.post(
            url, json={"job_id": str(job.id)}, headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60)))  # fmt: skip
        call.start()
        wait_for(lambda: task_state(pg, job.id)["batch_seq"] >= 1)
        signalled = time.monotonic()
        function.send_signal(signal.SIGTERM)
        call.join(10)
        function.wait(10)
        assert time.monotonic() - signalled < 2.5
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["shutdown_reason"] == "shutdown"
        released = task_state(pg, job.id)
        assert released["status"] == "pending" and released["cursor"] is not None
    finally:
        function.kill()
        function.wait()
        shutil.rmtree(home, ignore_errors=True)
    Worker(env.db(), load_settings(env.config)).run(str(job.id))
    assert_exact(env, pg, "sigterm_function", job.id)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_postgrest_restarted_mid_job(env: Env, pg: Pg) -> None:
    db = env.db()
    job = db.create_sync_job("pgrst_restart", "full", ["customer"])
    results: list[Any] = []
    worker = Worker(db, load_settings(env.config))
    running = threading.Thread(target=lambda: results.append(worker.run(str(job.id))))
    running.start()
    wait_for(lambda: task_state(pg, job.id)["batch_seq"] >= 1)
    env.stack.stop_postgrest()
    running.join(timeout=60)
    assert results and results[0].success is False
    assert results[0].shutdown_reason == "database_unavailable"
    half = task_state(pg, job.id)
    assert half["status"] == "processing"  # requeued once its heartbeat is stale
    committed = pg.execute("select count(*) from supasaasy.entities where app_key = %s",
                           ("pgrst_restart",)).fetchone()  # fmt: skip
    assert committed == (half["entity_count"],)  # only whole batches, with their checkpoint
    env.stack.start_postgrest()
    resume(env, job.id)
    assert_exact(env, pg, "pgrst_restart", job.id)


def test_twenty_concurrent_sync_requests_make_one_job(env: Env, pg: Pg) -> None:
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def post() -> None:
        start.wait()
        response = httpx.post(f"{env.info.supabase_url}/functions/v1/sync",
                              json={"app_key": "concurrent"},
                              headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)  # fmt: skip
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [409] * 19
    job_id = next(r.json()["job_id"] for r in answers if r.status_code == 200)
    assert {r.json()["job_id"] for r in answers if r.status_code == 409} == {job_id}
    jobs = pg.execute("select count(*) from supasaasy.sync_jobs where app_key = 'concurrent'")
    assert jobs.fetchone() == (1,)
    env.db().cancel_job(job_id)


JOB = "00000000-0000-4000-8000-000000000000"
EVENT = b'{"id": "evt_1", "type": "customer.created", "created": 1800000000,' \
        b' "data": {"object": {"id": "cus_1"}}}'  # fmt: skip


def stripe_signed(body: bytes, *, secret: str = WEBHOOK_SECRET,
                  age: int = 0) -> Callable[[], dict[str, str]]:  # fmt: skip
    """Stripe's `Stripe-Signature` for `body`, `age` seconds old when the request is sent
    (signed then: the cases are listed long before they run)."""

    def signed() -> dict[str, str]:
        t = int(time.time()) - age
        digest = hmac.new(secret.encode(), f"{t}.".encode() + body, "sha256").hexdigest()
        return {"Stripe-Signature": f"t={t},v1={digest}"}

    return signed


GOOD = {"Authorization": f"Bearer {ADMIN}"}
JSON = {**GOOD, "Content-Type": "application/json"}
Headers = dict[str, str] | Callable[[], dict[str, str]]
BAD_REQUESTS: list[tuple[str, str, str, Headers, Any, int]] = [
    # function, method, path, headers, body (bytes, or JSON), status
    ("sync", "POST", "", {}, {"app_key": "concurrent"}, 401),
    ("sync", "POST", "", {"Authorization": "Bearer wrong"}, {"app_key": "concurrent"}, 401),
    ("sync", "POST", "", {"Authorization": ADMIN}, {"app_key": "concurrent"}, 401),
    ("sync", "POST", "", {"Authorization": f"Basic {ADMIN}"}, {"app_key": "concurrent"}, 401),
    ("sync", "POST", "", {"Authorization": f"Bearer {ADMIN}x"}, {"app_key": "concurrent"}, 401),
    ("sync", "GET", "", GOOD, None, 405),
    ("sync", "PUT", "", GOOD, {"app_key": "concurrent"}, 405),
    ("sync", "DELETE", "", GOOD, None, 405),
    ("sync", "POST", "", JSON, b"", 400),
    ("sync", "POST", "", JSON, b"{", 400),
    ("sync", "POST", "", JSON, b"null", 400),
    ("sync", "POST", "", JSON, b"[]", 400),
    ("sync", "POST", "", JSON, b'"concurrent"', 400),
    ("sync", "POST", "", JSON, b"\xff\xfe", 400),
    ("sync", "POST", "", JSON, b"[" * 100_000, 400),
    ("sync", "POST", "", JSON, b'{"app_key": "' + b"x" * (1024 * 1024) + b'"}', 413),
    ("sync", "POST", "", JSON, {}, 400),
    ("sync", "POST", "", JSON, {"app_key": None}, 400),
    ("sync", "POST", "", JSON, {"app_key": 42}, 400),
    ("sync", "POST", "", JSON, {"app_key": ["concurrent"]}, 400),
    ("sync", "POST", "", JSON, {"app_key": ""}, 400),
    ("sync", "POST", "", JSON, {"app_key": "a" * 65}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent'; drop table supasaasy.sync_jobs;--"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "../../etc/passwd"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "çoncurrent"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent\u0000"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "nobody"}, 404),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "mode": "FULL"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "mode": 1}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "resource_types": "customer"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "resource_types": [1]}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "resource_types": ["customer'--"]}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "resource_types": ["x"] * 51}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "immediate": "true"}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "immediate": 1}, 400),
    ("sync", "POST", "", JSON, {"app_key": "concurrent", "force": True}, 400),
    ("worker", "POST", "", {}, {}, 401),
    ("worker", "GET", "", GOOD, None, 405),
    ("worker", "POST", "", JSON, b"{", 400),
    ("worker", "POST", "", JSON, b"[1]", 400),
    ("worker", "POST", "", JSON, {"job_id": "nope"}, 400),
    ("worker", "POST", "", JSON, {"job_id": f"{JOB}' or 1=1--"}, 400),
    ("worker", "POST", "", JSON, {"job_id": 7}, 400),
    ("worker", "POST", "", JSON, {"max_tasks": 0}, 400),
    ("worker", "POST", "", JSON, {"max_tasks": -3}, 400),
    ("worker", "POST", "", JSON, {"max_tasks": "2"}, 400),
    ("worker", "POST", "", JSON, {"max_tasks": 1e9}, 400),
    ("worker", "POST", "", JSON, {"tasks": 1}, 400),
    ("job-status", "GET", f"/{JOB}", {}, None, 401),
    ("job-status", "GET", f"/{JOB}", {"Authorization": "Bearer nope"}, None, 401),
    ("job-status", "GET", f"/{JOB}", GOOD, None, 404),
    ("job-status", "GET", "/not-a-uuid", GOOD, None, 400),
    ("job-status", "GET", "/%27%20or%201%3D1", GOOD, None, 400),
    ("job-status", "GET", "", GOOD, None, 400),
    ("job-status", "GET", f"?job_id={JOB[:-1]}", GOOD, None, 400),
    ("job-status", "PUT", f"/{JOB}", GOOD, None, 405),
    ("job-status", "POST", f"/{JOB}", GOOD, None, 405),
    ("job-status", "GET", f"/{JOB}/cancel", GOOD, None, 405),
    ("job-status", "POST", f"/{JOB}/cancel", GOOD, None, 404),
    ("job-status", "POST", f"/{JOB}/retry", GOOD, None, 404),
    ("job-status", "POST", "/nope/cancel", GOOD, None, 400),
    # Webhooks: signed by the provider, no admin key (a valid one does not help).
    ("webhook", "POST", "/hooks", GOOD, EVENT, 401),
    ("webhook", "POST", "/hooks", stripe_signed(EVENT, secret="whsec_forged"), EVENT, 401),
    ("webhook", "POST", "/hooks", stripe_signed(EVENT, age=400), EVENT, 401),
    ("webhook", "POST", "/hooks", stripe_signed(EVENT), EVENT.replace(b"cus_1", b"cus_2"), 401),
    ("webhook", "POST", "/hooks", {"Stripe-Signature": "t=1,v1="}, EVENT, 401),
    ("webhook", "POST", "/hooks", stripe_signed(b"{"), b"{", 400),
    ("webhook", "POST", "/hooks", stripe_signed(b"[]"), b"[]", 400),
    ("webhook", "POST", "/hooks", stripe_signed(b"{}"), b"{}", 400),
    ("webhook", "POST", "/hooks", {}, b'{"id": "' + b"x" * (1024 * 1024) + b'"}', 413),
    ("webhook", "POST", "/nobody", stripe_signed(EVENT), EVENT, 404),
    ("webhook", "POST", "/concurrent", stripe_signed(EVENT), EVENT, 404),
    ("webhook", "POST", "/bad.key", stripe_signed(EVENT), EVENT, 400),
    ("webhook", "POST", "/concurrent%27%3B--", stripe_signed(EVENT), EVENT, 400),
    ("webhook", "POST", "", stripe_signed(EVENT), EVENT, 400),
    ("webhook", "GET", "/hooks", {}, None, 405),
]


def send(env: Env, function: str, method: str, path: str, headers: Headers,
         body: Any) -> httpx.Response:  # fmt: skip
    url = f"{env.info.supabase_url}/functions/v1/{function}{path}"
    headers = headers() if callable(headers) else headers
    if isinstance(body, bytes):
        return httpx.request(method, url, headers=headers, content=body, timeout=30)
    return httpx.request(method, url, headers=headers, json=body, timeout=30)


def test_malformed_requests_get_their_4xx_and_write_nothing(env: Env, pg: Pg) -> None:
    assert len(BAD_REQUESTS) >= 40

    def written() -> tuple[object, ...]:
        row = pg.execute("select (select count(*) from supasaasy.sync_jobs),"
                         " (select count(*) from supasaasy.sync_job_tasks),"
                         " (select count(*) from supasaasy.entities),"
                         " (select count(*) from supasaasy.webhook_logs)").fetchone()  # fmt: skip
        assert row is not None
        return tuple(row)

    before = written()
    for function, method, path, headers, body, status in BAD_REQUESTS:
        response = send(env, function, method, path, headers, body)
        case = f"{method} {function}{path} {str(body)[:60]!r}"
        assert response.status_code == status, (case, response.text[:200])
        answer = response.json()
        assert answer["success"] is False and answer["error"], case
        assert "Traceback" not in response.text and ADMIN not in response.text, case
    assert written() == before


def test_secrets_stay_out_of_answers_and_logs(env: Env) -> None:
    db = env.db()
    # A failing task (the provider refuses the key) and refused requests.
    with httpx.Client(base_url=env.stripe) as stripe:
        stripe.post("/_config/faults", json={"path_prefix": "/v1/customers", "status": 401})
    try:
        job = db.create_sync_job("concurrent", "full", ["customer"])
        answer = httpx.post(f"{env.info.supabase_url}/functions/v1/worker",
                            json={"job_id": str(job.id)}, headers=GOOD, timeout=60)  # fmt: skip
        assert answer.status_code == 200
    finally:
        httpx.delete(f"{env.stripe}/_config/faults")
    status = db.get_job_status(job.id)
    assert status.job.status == "failed" and "401" in (status.job.error_message or "")
    for key in (ADMIN, STRIPE_KEY, env.info.service_role_key, env.info.jwt_secret):
        assert key not in (status.job.error_message or "")
        for log in env.stack.logs.glob("*.log"):
            assert key not in log.read_text(errors="replace"), log.name


def test_the_functions_match_their_openapi_document(env: Env, project_root: Path) -> None:
    """schemathesis against the running functions: no server error, and every answer's
    status, content type and body as the document says. One worker: on Python 3.11,
    hypothesis's `ast.parse` fails now and then when run from several threads."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         str(project_root / "functions" / "openapi.yaml"),
         "--url", f"{env.info.supabase_url}/functions/v1",
         "--header", f"Authorization: Bearer {ADMIN}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--max-examples", "30", "--seed", "1", "--workers", "1",
         "--phases", "examples,fuzzing"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.long
def test_a_worker_killed_again_and_again_at_random_points(env: Env, pg: Pg) -> None:
    """The longer variant (`pytest -m long`): ten kills at random moments of one sync."""
    import random

    rng = random.Random(7)
    job = env.db().create_sync_job("kill_repeatedly", "full", ["customer"])
    for _ in range(10):
        if env.db().get_job(job.id).status == "completed":
            break
        worker = start_worker(env, job.id)
        time.sleep(rng.uniform(0.2, 2.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        time.sleep(1.2)  # stale, so that the next worker requeues it
        env.db().requeue_stale_tasks(timedelta(seconds=1), max_attempts=20)
    resume(env, job.id)
    assert_exact(env, pg, "kill_repeatedly", job.id)
