"""The schema's own guarantees, checked on the real Postgres through PostgREST."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from postgrest import APIError

from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.errors import ActiveJobExistsError, InvalidInputError
from supasaasy.migrations import apply_migrations, package_migrations
from supasaasy.models import Entity

TABLES = ("entities", "sync_state", "sync_jobs", "sync_job_tasks", "sync_task_seen", "rate_limits",
          "entity_tombstones")  # fmt: skip
VIEWS = ("stripe_customers", "stripe_products", "stripe_prices", "stripe_plans",
         "stripe_subscriptions", "stripe_subscription_items")  # fmt: skip
FUNCTIONS = (
    "create_sync_job(text,text,text[],boolean)",
    "add_job_tasks(uuid,text[])",
    "set_job_status(uuid,text,text)",
    "claim_task(uuid,interval,integer)",
    "heartbeat_task(uuid,integer,text,integer)",
    "release_task(uuid,text,integer,integer,text,integer)",
    "complete_task(uuid,text,integer,text,integer)",
    "check_lease(uuid,integer)",
    "end_attempt(uuid,text,integer)",
    "raise_active_job(text)",
    "bound_lock_waits(jsonb)",
    "requeue_stale_tasks(interval,integer)",
    "cleanup_old_jobs(integer)",
    "task_lease(uuid,integer,boolean)",
    "advance_checkpoint(uuid,integer,integer,text,integer)",
    "write_batch(jsonb)",
    "write_batch(text)",
    "finish_task(jsonb)",
    "take_rate_allowance(text,double precision,integer,integer)",
    "return_rate_allowance(text,double precision,integer)",
    "claimed_task(uuid)",
    "shard_task(uuid,integer,timestamp with time zone,text)",
    "shard_backlog(supasaasy.sync_job_tasks)",
    "split_shard(uuid,integer,integer)",
    "shards_may_split(uuid,interval)",
)

Pg = psycopg.Connection[tuple[object, ...]]


def test_bad_job_status_is_refused_and_nothing_changes(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])
    with pytest.raises(InvalidInputError) as err:
        db.update_job_status(job.id, "running")  # type: ignore[arg-type]
    assert err.value.code == "23514"
    assert "sync_jobs_status_check" in err.value.message
    assert db.get_job_status(job.id).job.status == "pending"


def test_bad_task_status_is_refused(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers"])
    with pytest.raises(APIError) as err:
        db.rest.table("sync_job_tasks").insert(
            {"job_id": str(job.id), "resource_type": "prices", "status": "done"}
        ).execute()
    assert err.value.code == "23514"
    assert "sync_job_tasks_status_check" in str(err.value.message)
    tasks = db.get_job_status(job.id).tasks
    assert [t.resource_type for t in tasks] == ["customers"]


def test_duplicate_resource_type_in_a_job_is_refused(db: Database, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers", "products"])
    with pytest.raises(APIError) as err:
        db.rest.table("sync_job_tasks").insert(
            {"job_id": str(job.id), "resource_type": "customers"}
        ).execute()
    assert err.value.code == "23505"
    assert "sync_job_tasks_job_resource_key" in str(err.value.message)
    assert len(db.get_job_status(job.id).tasks) == 2


def test_duplicate_resource_types_in_a_request_make_one_task_each(
    db: Database, app_key: str
) -> None:
    job = db.create_sync_job(app_key, "full", ["products", "customers", "products"])
    assert job.resource_types == ["products", "customers"]
    assert job.total_tasks == 2
    assert sorted(t.resource_type for t in db.get_job_status(job.id).tasks) == [
        "customers",
        "products",
    ]


def test_deleting_a_job_deletes_its_tasks(db: Database, pg: Pg, app_key: str) -> None:
    job = db.create_sync_job(app_key, "full", ["customers", "products", "prices"])
    db.rest.table("sync_jobs").delete().eq("id", str(job.id)).execute()
    left = pg.execute(
        "select count(*) from supasaasy.sync_job_tasks where job_id = %s", (job.id,)
    ).fetchone()
    assert left == (0,)


def test_second_active_job_for_an_app_is_refused(db: Database, pg: Pg, app_key: str) -> None:
    first = db.create_sync_job(app_key, "full", ["customers"])
    with pytest.raises(ActiveJobExistsError) as err:
        db.create_sync_job(app_key, "incremental", ["customers", "products"])
    assert err.value.active_job_id == str(first.id)
    assert app_key in err.value.message and err.value.code == "SS002"
    counts = pg.execute(
        "select count(distinct j.id), count(t.id) from supasaasy.sync_jobs j"
        " join supasaasy.sync_job_tasks t on t.job_id = j.id where j.app_key = %s",
        (app_key,),
    ).fetchone()
    assert counts == (1, 1)

    # A processing job is active too; a finished one is not.
    task = db.claim_task(first.id)
    assert task is not None
    with pytest.raises(ActiveJobExistsError):
        db.create_sync_job(app_key, "full", ["customers"])
    db.complete_task(task.id, "completed", 0)
    second = db.create_sync_job(app_key, "full", ["customers"])
    assert second.id != first.id


def test_active_job_rule_holds_in_the_database_itself(pg: Pg, app_key: str) -> None:
    pg.execute("insert into supasaasy.sync_jobs (app_key) values (%s)", (app_key,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.execute(
            "insert into supasaasy.sync_jobs (app_key, status) values (%s, 'processing')",
            (app_key,),
        )


def test_cleanup_deletes_old_finished_jobs_only(db: Database, pg: Pg) -> None:
    def job_aged(status: str, days: int) -> uuid.UUID:
        app = f"cleanup_{uuid.uuid4().hex[:8]}"
        job = db.create_sync_job(app, "full", ["customers"])
        pg.execute(
            "update supasaasy.sync_jobs set status = %s,"
            " created_at = now() - make_interval(days => %s),"
            " completed_at = case when %s in ('completed', 'failed', 'cancelled')"
            " then now() - make_interval(days => %s) end where id = %s",
            (status, days, status, days, job.id),
        )
        return job.id

    old_done = [job_aged("completed", 8), job_aged("failed", 30), job_aged("cancelled", 9)]
    recent_done = job_aged("completed", 2)
    old_active = [job_aged("pending", 40), job_aged("processing", 40)]

    assert db.cleanup_old_jobs() == len(old_done)
    left = {row[0] for row in pg.execute("select id from supasaasy.sync_jobs")}
    assert not left & set(old_done)
    assert recent_done in left
    assert set(old_active) <= left
    tasks_left = pg.execute(
        "select count(*) from supasaasy.sync_job_tasks where job_id = any(%s)", (old_done,)
    ).fetchone()
    assert tasks_left == (0,)

    assert db.cleanup_old_jobs(1) == 1  # the 2-day-old one
    with pytest.raises(InvalidInputError):
        db.cleanup_old_jobs(-1)


def _rest(stack: StackInfo, key: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "Accept-Profile": "supasaasy",
        "Content-Profile": "supasaasy",
    }
    return httpx.request(method, f"{stack.supabase_url}/rest/v1/{path}", headers=headers, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def user_jwt(stack: StackInfo) -> str:
    claims = {"role": "authenticated", "sub": str(uuid.uuid4()), "aud": "authenticated"}
    return jwt.encode(claims, stack.jwt_secret, algorithm="HS256")


@pytest.mark.parametrize("who", ["anon", "authenticated"])
def test_anon_and_users_read_and_write_nothing(
    stack: StackInfo, db: Database, pg: Pg, app_key: str, user_jwt: str, who: str
) -> None:
    key = stack.anon_key if who == "anon" else user_jwt
    job = db.create_sync_job(app_key, "full", ["customers"])
    db.upsert_entities(
        [
            Entity(
                app_key=app_key,
                collection_key="c",
                external_id="1",
                raw_payload={"secret": "payload"},
            )
        ]
    )

    for table in TABLES + VIEWS:
        response = _rest(stack, key, "GET", table)
        # A signed-in user who is not a listed reader sees no rows.
        assert response.status_code in (401, 403) or response.json() == [], (table, response.text)
        assert "payload" not in response.text
    for function in ("claim_task", "cleanup_old_jobs", "create_sync_job", "write_batch"):
        response = _rest(stack, key, "POST", f"rpc/{function}", json={})
        assert response.status_code in (401, 403, 404), (function, response.text)
    response = _rest(
        stack,
        key,
        "POST",
        "entities",
        json={"app_key": app_key, "collection_key": "c", "external_id": "2", "raw_payload": {}},
    )
    assert response.status_code in (401, 403)
    response = _rest(stack, key, "PATCH", f"sync_jobs?id=eq.{job.id}", json={"status": "cancelled"})
    assert response.status_code in (401, 403)

    assert db.get_job_status(job.id).job.status == "pending"
    assert pg.execute(
        "select count(*) from supasaasy.entities where app_key = %s", (app_key,)
    ).fetchone() == (1,)


def test_privileges_and_row_level_security(pg: Pg) -> None:
    # Signed-in users may select (rows only for listed readers: see test_readers.py);
    # nobody but the service role writes, and anon has nothing.
    readable = {*VIEWS, "entities", "sync_state", "sync_jobs", "sync_job_tasks"}
    for relation in (*TABLES, *VIEWS):
        if relation in TABLES:
            rls = pg.execute(
                "select relrowsecurity from pg_class where oid = %s::regclass",
                (f"supasaasy.{relation}",),
            ).fetchone()
            assert rls == (True,), relation
        for role, privilege, expected in (
            ("anon", "select", False),
            ("anon", "insert, update, delete, truncate", False),
            ("authenticated", "select", relation in readable),
            ("authenticated", "insert, update, delete, truncate", False),
        ):
            granted = pg.execute(
                "select has_table_privilege(%s, %s, %s)",
                (role, f"supasaasy.{relation}", privilege),
            ).fetchone()
            assert granted == (expected,), (role, privilege, relation)
    for function in FUNCTIONS:
        for role, expected in (
            ("anon", False),
            ("authenticated", False),
            ("public", False),
            ("service_role", True),
        ):
            if role == "public":
                row = pg.execute(
                    "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a"
                    " where p.oid = %s::regprocedure and a.grantee = 0)",
                    (f"supasaasy.{function}",),
                ).fetchone()
                assert row == (False,), function
                continue
            row = pg.execute(
                "select has_function_privilege(%s, %s, 'execute')",
                (role, f"supasaasy.{function}"),
            ).fetchone()
            assert row == (expected,), (role, function)


def test_entities_updated_at_is_kept_by_the_database(db: Database, pg: Pg, app_key: str) -> None:
    entity = Entity(
        app_key=app_key, collection_key="customers", external_id="cus_1", raw_payload={"name": "A"}
    )
    db.upsert_entities([entity])
    before = pg.execute(
        "select created_at, updated_at from supasaasy.entities where app_key = %s", (app_key,)
    ).fetchone()
    db.upsert_entities([entity.model_copy(update={"raw_payload": {"name": "B"}})])
    after = pg.execute(
        "select created_at, updated_at, raw_payload from supasaasy.entities where app_key = %s",
        (app_key,),
    ).fetchone()
    assert before is not None and after is not None
    assert after[0] == before[0]
    assert after[1] > before[1]  # type: ignore[operator]
    assert after[2] == {"name": "B"}


def test_entity_indexes_are_only_the_keys(pg: Pg) -> None:
    indexes = {
        row[0]
        for row in pg.execute(
            "select indexname from pg_indexes where schemaname = 'supasaasy'"
            " and tablename = 'entities'"
        )
    }
    assert indexes == {"entities_pkey", "entities_app_collection_external_key"}


def test_migrations_are_recorded_and_applied_once(stack: StackInfo, pg: Pg) -> None:
    versions = [
        row[0]
        for row in pg.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        )
    ]
    assert versions == [m.version for m in package_migrations()]
    assert apply_migrations(stack.database_url) == []


def test_the_repositorys_supabase_folder_holds_the_package_migrations(project_root: Path) -> None:
    folder = project_root / "supabase" / "migrations"
    found = {p.name: p.read_text() for p in folder.glob("*.sql")}
    assert found == {m.file_name: m.sql for m in package_migrations()}


def test_stripe_views_read_entities(db: Database, pg: Pg, app_key: str) -> None:
    db.upsert_entities([
        Entity(app_key=app_key, collection_key="stripe_customer", external_id="cus_1",
               raw_payload={"id": "cus_1", "email": "a@example.com", "created": 1_700_000_000}),
        Entity(app_key=app_key, collection_key="stripe_price", external_id="price_1",
               raw_payload={"id": "price_1", "product": {"id": "prod_1"}, "unit_amount": 500,
                            "recurring": {"interval": "month", "interval_count": 1}}),
    ])  # fmt: skip
    customers = (
        db.rest.table("stripe_customers")
        .select("external_id,email,stripe_created_at")
        .eq("app_key", app_key)
        .execute()
        .data
    )
    assert customers == [
        {
            "external_id": "cus_1",
            "email": "a@example.com",
            "stripe_created_at": "2023-11-14T22:13:20+00:00",
        }
    ]
    price = pg.execute(
        "select product_id, unit_amount, recurring_interval from supasaasy.stripe_prices"
        " where app_key = %s",
        (app_key,),
    ).fetchone()
    assert price == ("prod_1", 500, "month")
