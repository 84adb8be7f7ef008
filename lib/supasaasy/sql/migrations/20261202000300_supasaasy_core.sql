-- SupaSaaSy core schema: synced entities, sync state, the job/task queue, batched
-- writes with checkpoints and leases, and the request-rate allowance shared by workers.
--
-- Everything that must be atomic (claiming a task, writing a batch with its
-- checkpoint, finishing a task together with its job's counters, requeueing stale
-- work, cleanup) is a SQL function here, called through PostgREST's /rpc. Each
-- PostgREST request is one transaction.

create schema if not exists supasaasy;

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

create table supasaasy.entities (
    id uuid primary key default gen_random_uuid(),
    external_id text not null,
    app_key text not null,
    collection_key text not null,
    api_version text,
    raw_payload jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    archived_at timestamptz,
    deleted_at timestamptz,
    -- When the stored payload was current upstream (the fetch time of a list page, or an
    -- event's time). A write older than what is stored never replaces it, so replaying
    -- older events after a resume cannot undo newer state. Not indexed.
    observed_at timestamptz,
    -- Also the only index lookups by app and collection need: every extra index is
    -- paid on every synced row, and an index on updated_at would defeat HOT updates.
    constraint entities_app_collection_external_key
        unique (app_key, collection_key, external_id)
);

create table supasaasy.sync_state (
    app_key text not null,
    collection_key text not null,
    last_synced_at timestamptz,
    last_sync_metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (app_key, collection_key)
);

create table supasaasy.sync_jobs (
    id uuid primary key default gen_random_uuid(),
    app_key text not null,
    mode text not null default 'incremental',
    resource_types text[] not null default '{}',
    status text not null default 'pending',
    total_tasks integer not null default 0,
    completed_tasks integer not null default 0,
    failed_tasks integer not null default 0,
    processed_entities bigint not null default 0,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    completed_at timestamptz,
    error_message text,
    -- A job run by the request that created it (POST /sync with immediate): only that
    -- request claims its tasks.
    immediate boolean not null default false,
    constraint sync_jobs_status_check
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    constraint sync_jobs_mode_check check (mode in ('full', 'incremental')),
    constraint sync_jobs_counters_check
        check (total_tasks >= 0 and completed_tasks >= 0 and failed_tasks >= 0
               and processed_entities >= 0)
);

create index sync_jobs_app_key_idx on supasaasy.sync_jobs (app_key);
create index sync_jobs_status_idx on supasaasy.sync_jobs (status);
create index sync_jobs_created_at_idx on supasaasy.sync_jobs (created_at);
-- At most one active job per app, enforced by the database.
create unique index sync_jobs_one_active_per_app
    on supasaasy.sync_jobs (app_key) where status in ('pending', 'processing');

create table supasaasy.sync_job_tasks (
    id uuid primary key default gen_random_uuid(),
    job_id uuid not null references supasaasy.sync_jobs (id) on delete cascade,
    resource_type text not null,
    -- Order within the job: tasks are claimed in the order their resource types were given.
    position integer not null default 0,
    status text not null default 'pending',
    entity_count integer not null default 0,
    cursor text,
    attempts integer not null default 0,
    last_heartbeat timestamptz,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    completed_at timestamptz,
    error_message text,
    -- Batches of one task may be written concurrently (a worker keeps two in flight). Each
    -- carries its number; the task's cursor only moves past batches that are all
    -- committed. Batches committed ahead of a gap wait in pending_checkpoints, which only
    -- holds entries of the current attempt.
    batch_seq integer not null default 0,
    pending_checkpoints jsonb,
    -- The attempt that last moved the task's checkpoint. Attempts since then made no
    -- progress; once p_max_attempts of them have ended, the task fails with its last error
    -- instead of going back to pending (however it went back: released, stale, shut down).
    checkpoint_attempt integer not null default 0,
    constraint sync_job_tasks_status_check
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    constraint sync_job_tasks_entity_count_check check (entity_count >= 0),
    -- Its index also serves every lookup by job_id.
    constraint sync_job_tasks_job_resource_key unique (job_id, resource_type)
);

create index sync_job_tasks_status_idx on supasaasy.sync_job_tasks (status, created_at, position);

-- The objects a full-sync task has seen, so that at its end one statement can delete
-- what upstream no longer has: one row per batch and collection, holding that batch's
-- ids (a row per object cost a fifth of the write time). Emptied when the task ends.
create table supasaasy.sync_task_seen (
    task_id uuid not null references supasaasy.sync_job_tasks (id) on delete cascade,
    collection_key text not null,
    external_ids text[] not null
);
create index sync_task_seen_task_idx on supasaasy.sync_task_seen (task_id);

-- Shared request allowance per key (e.g. per app), as a theoretical arrival time.
create table supasaasy.rate_limits (
    key text primary key,
    tat timestamptz not null
);

-- An object deleted upstream, and when: a write of an older state of it (an older
-- event replayed by a resumed or retried task) is not applied, just as an older state
-- never overwrites a newer row. Kept 30 days (see cleanup_old_jobs), longer than any
-- window in which a sync or a provider replays older changes.
create table supasaasy.entity_tombstones (
    app_key text not null,
    collection_key text not null,
    external_id text not null,
    observed_at timestamptz not null,
    primary key (app_key, collection_key, external_id)
);

-- ---------------------------------------------------------------------------
-- updated_at, kept by triggers
-- ---------------------------------------------------------------------------

create function supasaasy.touch_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create trigger entities_touch_updated_at
    before update on supasaasy.entities
    for each row execute function supasaasy.touch_updated_at();

create trigger sync_state_touch_updated_at
    before update on supasaasy.sync_state
    for each row execute function supasaasy.touch_updated_at();

-- ---------------------------------------------------------------------------
-- Jobs
-- ---------------------------------------------------------------------------

-- Raises SS002 with the active job's id as its detail.
create function supasaasy.raise_active_job(p_app_key text)
returns void
language plpgsql as $$
declare
    v_active uuid;
begin
    select id into v_active from supasaasy.sync_jobs
     where app_key = p_app_key and status in ('pending', 'processing')
     limit 1;
    raise exception using
        message = format('app %L already has an active sync job', p_app_key),
        errcode = 'SS002', detail = coalesce(v_active::text, ''),
        hint = 'wait for it to end, or cancel it';
end;
$$;

-- A job and one pending task per distinct resource type, in one transaction.
-- p_immediate marks a job run by its own request (see claim_task). Raises SS002, with
-- the active job's id as detail, while the app has an active job.
create function supasaasy.create_sync_job(
    p_app_key text,
    p_mode text,
    p_resource_types text[],
    p_immediate boolean default false
) returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_job supasaasy.sync_jobs;
    v_types text[];
begin
    if p_resource_types is null or cardinality(p_resource_types) = 0 then
        raise exception 'a sync job needs at least one resource type'
            using errcode = '22023';
    end if;
    select array_agg(r order by n) into v_types
      from (select r, min(n) as n from unnest(p_resource_types) with ordinality as u (r, n)
             group by r) as distinct_types;
    begin
        insert into supasaasy.sync_jobs (app_key, mode, resource_types, total_tasks, immediate)
        values (p_app_key, p_mode, v_types, cardinality(v_types), coalesce(p_immediate, false))
        returning * into v_job;
    exception when unique_violation then
        perform supasaasy.raise_active_job(p_app_key);
    end;
    insert into supasaasy.sync_job_tasks (job_id, resource_type, position)
    select v_job.id, r, n from unnest(v_types) with ordinality as u (r, n);
    return next v_job;
end;
$$;

-- Adds tasks to an active job (existing resource types are left alone) and keeps
-- total_tasks equal to the number of tasks. Returns the job's tasks.
create function supasaasy.add_job_tasks(p_job_id uuid, p_resource_types text[])
returns setof supasaasy.sync_job_tasks
language plpgsql as $$
begin
    perform 1 from supasaasy.sync_jobs
     where id = p_job_id and status in ('pending', 'processing')
       for update;
    if not found then
        raise exception 'job % does not exist or is no longer active', p_job_id
            using errcode = 'P0002';
    end if;
    insert into supasaasy.sync_job_tasks (job_id, resource_type, position)
    select p_job_id, r,
           n + (select coalesce(max(position), 0) from supasaasy.sync_job_tasks
                 where job_id = p_job_id)
      from unnest(p_resource_types) with ordinality as u (r, n)
    on conflict (job_id, resource_type) do nothing;
    update supasaasy.sync_jobs j
       set total_tasks = (select count(*) from supasaasy.sync_job_tasks where job_id = p_job_id),
           resource_types = (select array_agg(resource_type order by created_at, position)
                               from supasaasy.sync_job_tasks where job_id = p_job_id)
     where j.id = p_job_id;
    return query select * from supasaasy.sync_job_tasks where job_id = p_job_id
                  order by created_at, position;
end;
$$;

-- Sets a job's status with the matching timestamp: started_at when it starts
-- processing, completed_at when it ends. Returns the job, or no row if unknown.
create function supasaasy.set_job_status(
    p_job_id uuid,
    p_status text,
    p_error_message text default null
) returns setof supasaasy.sync_jobs
language sql as $$
    update supasaasy.sync_jobs
       set status = p_status,
           started_at = case when p_status <> 'pending' then coalesce(started_at, now()) end,
           completed_at = case when p_status in ('completed', 'failed', 'cancelled')
                               then coalesce(completed_at, now()) end,
           error_message = coalesce(p_error_message, error_message)
     where id = p_job_id
    returning *;
$$;

-- Cancels an active job: its pending and processing tasks become cancelled (a worker
-- running one is refused at its next page and stops). Returns the job, or no row when
-- it is unknown or no longer active.
create function supasaasy.cancel_job(p_job_id uuid)
returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_job supasaasy.sync_jobs;
begin
    update supasaasy.sync_jobs
       set status = 'cancelled', completed_at = now(),
           error_message = coalesce(error_message, 'cancelled')
     where id = p_job_id and status in ('pending', 'processing')
    returning * into v_job;
    if not found then
        return;
    end if;
    update supasaasy.sync_job_tasks
       set status = 'cancelled', completed_at = now()
     where job_id = p_job_id and status in ('pending', 'processing');
    return next v_job;
end;
$$;

-- Puts a failed or cancelled job's failed and cancelled tasks back to pending (each
-- resumes from its cursor, its count of attempts without progress started afresh) and
-- makes the job active again. Raises SS002, with that job's id, while the app has
-- another active job. Returns the job, or no row when it is unknown or has nothing to
-- retry.
create function supasaasy.retry_job(p_job_id uuid)
returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_job supasaasy.sync_jobs;
    v_failed integer;
    v_entities bigint;
begin
    select * into v_job from supasaasy.sync_jobs
     where id = p_job_id and status in ('failed', 'cancelled')
       for update;
    if not found then
        return;
    end if;
    -- Failed tasks were counted when they failed; they are counted again when they end.
    select count(*), coalesce(sum(entity_count), 0) into v_failed, v_entities
      from supasaasy.sync_job_tasks where job_id = p_job_id and status = 'failed';
    begin
        update supasaasy.sync_jobs
           set status = case when started_at is null then 'pending' else 'processing' end,
               failed_tasks = failed_tasks - v_failed,
               processed_entities = processed_entities - v_entities,
               completed_at = null,
               error_message = null
         where id = p_job_id
        returning * into v_job;
    exception when unique_violation then
        perform supasaasy.raise_active_job(v_job.app_key);
    end;
    -- A retry starts each task's count of attempts without progress afresh.
    update supasaasy.sync_job_tasks
       set status = 'pending', error_message = null, completed_at = null,
           checkpoint_attempt = attempts
     where job_id = p_job_id and status in ('failed', 'cancelled');
    return next v_job;
end;
$$;

-- ---------------------------------------------------------------------------
-- Tasks: claims and leases
-- ---------------------------------------------------------------------------

-- The task's app when it is still processing under this claim (its attempt number is
-- the lease), or an error that tells a worker whose task was taken back to stop.
-- p_lock holds the task's row until the transaction ends.
create function supasaasy.task_lease(p_task_id uuid, p_attempt integer, p_lock boolean default true)
returns text
language plpgsql as $$
declare
    v_app text;
begin
    if p_lock then
        -- NO KEY: concurrent batches hold KEY SHARE on the task (their seen rows
        -- reference it), which FOR UPDATE would wait on, each for the other.
        perform 1 from supasaasy.sync_job_tasks where id = p_task_id for no key update;
    end if;
    select j.app_key into v_app
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.id = p_task_id and t.status = 'processing'
       and (p_attempt is null or t.attempts = p_attempt);
    if not found then
        raise exception 'task % is no longer processing under attempt %', p_task_id, p_attempt
            using errcode = 'SS001', hint = 'the task was requeued or finished; stop working on it';
    end if;
    return v_app;
end;
$$;

-- Raises SS001 unless the task is processing under attempt p_attempt (null: no check).
-- The task's row stays locked until the transaction ends (see task_lease), so that the
-- lease cannot change between this check and the caller's update.
create function supasaasy.check_lease(p_task_id uuid, p_attempt integer)
returns void
language plpgsql as $$
begin
    if p_attempt is not null then
        perform supasaasy.task_lease(p_task_id, p_attempt);
    end if;
end;
$$;

-- Claims the oldest pending task (of one job, or of any active job that is not run
-- immediately by its own request) for this caller alone: the task becomes processing
-- with started_at, a heartbeat and one more attempt (its lease), and its job moves
-- from pending to processing. With p_stale_after, stale tasks are requeued first
-- (requeue_stale_tasks) in the same transaction. Returns the task's columns and what
-- its worker needs: the job's app and mode, and the app's sync watermarks
-- ({collection_key: last_synced_at}). No row if there is no pending task.
create function supasaasy.claim_task(
    p_job_id uuid default null,
    p_stale_after interval default null,
    p_max_attempts integer default 3
) returns table (
    id uuid,
    job_id uuid,
    resource_type text,
    "position" integer,
    status text,
    entity_count integer,
    cursor text,
    attempts integer,
    last_heartbeat timestamptz,
    created_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    error_message text,
    batch_seq integer,
    pending_checkpoints jsonb,
    checkpoint_attempt integer,
    app_key text,
    mode text,
    watermarks jsonb
)
language plpgsql as $$
#variable_conflict use_column
declare
    v_id uuid;
begin
    if p_stale_after is not null then
        perform supasaasy.requeue_stale_tasks(p_stale_after, p_max_attempts);
    end if;
    select t.id into v_id
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.status = 'pending'
       and j.status in ('pending', 'processing')
       and (t.job_id = p_job_id or (p_job_id is null and not j.immediate))
     order by t.created_at, t.position
     limit 1
       for update of t skip locked;
    if v_id is null then
        return;
    end if;

    update supasaasy.sync_job_tasks t
       set status = 'processing',
           started_at = coalesce(t.started_at, now()),
           last_heartbeat = now(),
           attempts = t.attempts + 1
     where t.id = v_id;

    update supasaasy.sync_jobs j
       set status = 'processing', started_at = coalesce(j.started_at, now())
      from supasaasy.sync_job_tasks t
     where t.id = v_id and j.id = t.job_id and j.status = 'pending';

    return query
    select t.id, t.job_id, t.resource_type, t.position, t.status, t.entity_count, t.cursor,
           t.attempts, t.last_heartbeat, t.created_at, t.started_at, t.completed_at,
           t.error_message, t.batch_seq, t.pending_checkpoints, t.checkpoint_attempt,
           j.app_key, j.mode,
           coalesce((select jsonb_object_agg(s.collection_key, s.last_synced_at)
                       from supasaasy.sync_state s
                      where s.app_key = j.app_key and s.last_synced_at is not null), '{}')
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.id = v_id;
end;
$$;

-- Records that a processing task is alive, with its progress so far. Returns the
-- task, or no row when it is no longer processing (requeued or finished), which
-- tells its worker to stop. With p_attempt, a holder whose lease is gone gets SS001.
create function supasaasy.heartbeat_task(
    p_task_id uuid,
    p_entity_count integer default null,
    p_cursor text default null,
    p_attempt integer default null
) returns setof supasaasy.sync_job_tasks
language plpgsql as $$
begin
    perform supasaasy.check_lease(p_task_id, p_attempt);
    return query
    update supasaasy.sync_job_tasks
       set last_heartbeat = now(),
           entity_count = coalesce(p_entity_count, entity_count),
           cursor = coalesce(p_cursor, cursor)
     where id = p_task_id and status = 'processing'
    returning *;
end;
$$;

-- Ends an attempt without finishing the task: back to pending with its checkpoint,
-- unless p_max_attempts attempts in a row have now ended without moving it, in which
-- case the task fails with p_error (or a message saying so). Returns the job when the
-- task failed, else nothing. Used by release_task and requeue_stale_tasks.
create function supasaasy.end_attempt(
    p_task_id uuid,
    p_error text,
    p_max_attempts integer
) returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_task supasaasy.sync_job_tasks;
    v_immediate boolean;
begin
    select t.* into v_task from supasaasy.sync_job_tasks t where t.id = p_task_id for update;
    select j.immediate into v_immediate from supasaasy.sync_jobs j where j.id = v_task.job_id;
    if v_immediate then
        -- The request that ran it is gone, and no other worker may take its tasks: the
        -- job ends, so that its app can sync again.
        return query select * from supasaasy.complete_task(
            p_task_id, 'failed', null,
            'immediate run interrupted: ' || coalesce(p_error, 'stopped before its end'));
        update supasaasy.sync_jobs set error_message = 'immediate run interrupted'
         where id = v_task.job_id and status in ('pending', 'processing');
        perform supasaasy.cancel_job(v_task.job_id);
    elsif p_max_attempts is not null
          and v_task.attempts - v_task.checkpoint_attempt >= p_max_attempts then
        return query select * from supasaasy.complete_task(
            p_task_id, 'failed', null,
            format('%s (%s attempts in a row without progress)',
                   coalesce(p_error, 'stopped before its end'),
                   v_task.attempts - v_task.checkpoint_attempt));
    else
        update supasaasy.sync_job_tasks
           set status = 'pending',
               error_message = coalesce(p_error, error_message),
               last_heartbeat = now()
         where id = p_task_id;
    end if;
end;
$$;

-- Hands a processing task back to the queue with its cursor, for the next worker to
-- resume (a worker whose time budget ran out, that is shutting down, or that met a
-- transient failure: p_error). With p_max_attempts, an attempt without progress counts
-- (see end_attempt) and the task may fail instead. Returns the task as it is after;
-- no row if it was not processing; SS001 if p_attempt is not the current lease.
create function supasaasy.release_task(
    p_task_id uuid,
    p_cursor text default null,
    p_entity_count integer default null,
    p_attempt integer default null,
    p_error text default null,
    p_max_attempts integer default null
) returns setof supasaasy.sync_job_tasks
language plpgsql as $$
begin
    perform supasaasy.check_lease(p_task_id, p_attempt);
    update supasaasy.sync_job_tasks
       set cursor = coalesce(p_cursor, cursor),
           entity_count = coalesce(p_entity_count, entity_count)
     where id = p_task_id and status = 'processing';
    if not found then
        return;
    end if;
    perform supasaasy.end_attempt(p_task_id, p_error, p_max_attempts);
    return query select * from supasaasy.sync_job_tasks where id = p_task_id;
end;
$$;

-- Finishes a task (completed or failed) and, in the same transaction, adds it to
-- its job's counters; when none of the job's tasks is left pending or processing,
-- the job ends: completed, or failed with a summary of the failed tasks. Returns
-- the job. Finishing an already finished (or unknown) task changes nothing and
-- returns no row; with p_attempt, a holder whose lease is gone gets SS001.
create function supasaasy.complete_task(
    p_task_id uuid,
    p_status text,
    p_entity_count integer default null,
    p_error_message text default null,
    p_attempt integer default null
) returns setof supasaasy.sync_jobs
language plpgsql as $$
declare
    v_task supasaasy.sync_job_tasks;
    v_job supasaasy.sync_jobs;
begin
    if p_status is null or p_status not in ('completed', 'failed') then
        raise exception 'a task can only be completed or failed, not %', coalesce(p_status, 'null')
            using errcode = '22023';
    end if;
    perform supasaasy.check_lease(p_task_id, p_attempt);

    update supasaasy.sync_job_tasks
       set status = p_status,
           entity_count = coalesce(p_entity_count, entity_count),
           error_message = case when p_status = 'failed'
                                then coalesce(p_error_message, 'failed without a message') end,
           completed_at = now(),
           last_heartbeat = now()
     where id = p_task_id and status in ('pending', 'processing')
    returning * into v_task;
    if not found then
        return;
    end if;

    -- The job row lock taken here serialises the completion check below between
    -- workers finishing the job's last tasks at the same time.
    update supasaasy.sync_jobs
       set completed_tasks = completed_tasks + (p_status = 'completed')::int,
           failed_tasks = failed_tasks + (p_status = 'failed')::int,
           processed_entities = processed_entities + v_task.entity_count
     where id = v_task.job_id
    returning * into v_job;

    if v_job.status in ('pending', 'processing') and not exists (
        select 1 from supasaasy.sync_job_tasks
         where job_id = v_job.id and status in ('pending', 'processing')
    ) then
        update supasaasy.sync_jobs j
           set status = case when j.failed_tasks > 0 then 'failed' else 'completed' end,
               started_at = coalesce(j.started_at, now()),
               completed_at = now(),
               error_message = (
                   select string_agg(t.resource_type || ': ' || t.error_message, '; '
                                     order by t.resource_type)
                     from supasaasy.sync_job_tasks t
                    where t.job_id = j.id and t.status = 'failed')
         where j.id = v_job.id
        returning * into v_job;
    end if;

    return next v_job;
end;
$$;

-- Processing tasks whose heartbeat is older than p_stale_after end their attempt (see
-- end_attempt): back to pending with their cursor, or failed once p_max_attempts
-- attempts in a row made no progress. Returns how many tasks it moved.
create function supasaasy.requeue_stale_tasks(
    p_stale_after interval default '5 minutes',
    p_max_attempts integer default 3
) returns integer
language plpgsql as $$
declare
    v_task record;
    v_moved integer := 0;
begin
    for v_task in
        select id from supasaasy.sync_job_tasks
         where status = 'processing'
           and coalesce(last_heartbeat, started_at, created_at) < now() - p_stale_after
         order by created_at
           for update skip locked
    loop
        perform supasaasy.end_attempt(
            v_task.id, format('no heartbeat for %s', p_stale_after), p_max_attempts);
        v_moved := v_moved + 1;
    end loop;
    return v_moved;
end;
$$;

-- ---------------------------------------------------------------------------
-- Batches: writes with checkpoints, the deletion sweep
-- ---------------------------------------------------------------------------

-- The time an object was created upstream, from the fields providers use for it.
create function supasaasy.payload_created_at(p jsonb) returns timestamptz
language sql stable as $$
    select case
        when jsonb_typeof(p -> 'created') = 'number' then to_timestamp((p ->> 'created')::double precision)
        when jsonb_typeof(p -> 'created_at') = 'number' then to_timestamp((p ->> 'created_at')::double precision)
        when jsonb_typeof(p -> 'created_at') = 'string' then (p ->> 'created_at')::timestamptz
        when jsonb_typeof(p -> 'created_time') = 'string' then (p ->> 'created_time')::timestamptz
    end
$$;

-- With the body's `lock_timeout_ms`, each lock wait of the calling transaction ends after
-- that long (55P03): a worker near the end of its time budget hands its task back
-- instead of overrunning.
create function supasaasy.bound_lock_waits(p_body jsonb)
returns void
language plpgsql as $$
begin
    if p_body ->> 'lock_timeout_ms' is not null then
        perform set_config('lock_timeout',
                           greatest((p_body ->> 'lock_timeout_ms')::integer, 1)::text, true);
    end if;
end;
$$;

-- Records that batch p_seq of a task is committed with this transaction, and moves the
-- task's checkpoint (cursor, entity count) over every batch now committed without a
-- gap. Takes the task's row lock, so call it last. Without p_seq the batch is the next.
create function supasaasy.advance_checkpoint(
    p_task_id uuid,
    p_attempt integer,
    p_seq integer,
    p_cursor text,
    p_entity_count integer
) returns void
language plpgsql as $$
declare
    v_done integer;
    v_pending jsonb;
    v_next jsonb;
    v_moved boolean := false;
    v_cursor text;
    v_count integer;
begin
    perform supasaasy.task_lease(p_task_id, p_attempt);
    select batch_seq, pending_checkpoints into v_done, v_pending
      from supasaasy.sync_job_tasks where id = p_task_id;
    if v_pending is null or (v_pending ->> 'attempt') is distinct from p_attempt::text then
        v_pending := jsonb_build_object('attempt', p_attempt, 'batches', '{}'::jsonb);
    end if;
    v_pending := jsonb_set(v_pending, array['batches', coalesce(p_seq, v_done + 1)::text],
                           jsonb_build_object('cursor', p_cursor, 'entity_count', p_entity_count));
    loop
        v_next := v_pending -> 'batches' -> (v_done + 1)::text;
        exit when v_next is null;
        v_done := v_done + 1;
        v_cursor := v_next ->> 'cursor';
        v_count := (v_next ->> 'entity_count')::integer;
        v_pending := v_pending #- array['batches', v_done::text];
        v_moved := true;
    end loop;
    update supasaasy.sync_job_tasks
       set batch_seq = v_done,
           pending_checkpoints = v_pending,
           cursor = case when v_moved then v_cursor else cursor end,
           entity_count = case when v_moved then coalesce(v_count, entity_count) else entity_count end,
           checkpoint_attempt = case when v_moved then attempts else checkpoint_attempt end,
           last_heartbeat = now()
     where id = p_task_id;
end;
$$;

-- Writes one batch of provider pages and the task's checkpoint in one transaction,
-- so a saved cursor always names rows that are committed. Takes the whole request
-- body as its one argument:
--   task_id, attempt       the claim this worker holds
--   seq                    the batch's number within the task (see advance_checkpoint)
--   cursor, entity_count   the checkpoint: where to resume, entities so far
--   api_version, mode      the payloads' API version; 'full' marks rows as seen
--   observed_at            when the rows were fetched (rows may carry their own)
--   lock_timeout_ms        optional: each lock wait ends after that long (55P03), so a
--                          worker near the end of its time budget hands its task back
--   rows      [{collection_key, external_id, raw_payload, archived, api_version?, observed_at?}]
--   deletes   [{collection_key, external_id, observed_at?}]: deleted, leaving tombstones
--   children  [{collection_key, parent_field, parent_id, observed_at?, complete?}]: rows
--             of that collection whose parent_field is parent_id, stored from an older
--             state and not carried by this batch, are deleted (leaving tombstones);
--             `complete: false` (the provider truncated the set) deletes none and, in a
--             full sync, keeps them from the sweep
-- Rows whose payload did not change are not rewritten; a row older than what is stored,
-- or than its tombstone, is not written. Returns
-- {created, updated, unchanged, deleted}.
create function supasaasy.write_batch(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_attempt constant integer := (b ->> 'attempt')::integer;
    v_full constant boolean := coalesce(b ->> 'mode', 'full') = 'full';
    v_observed constant timestamptz := coalesce((b ->> 'observed_at')::timestamptz, now());
    v_app text;
    v_tombstones boolean;
    v_rows integer;
    v_created integer := 0;
    v_updated integer := 0;
    v_deleted integer := 0;
    v_children integer := 0;
begin
    perform supasaasy.bound_lock_waits(b);
    -- Checked without the task's lock, so that batches run side by side; checked again
    -- under it when the checkpoint moves, last.
    v_app := supasaasy.task_lease(v_task_id, v_attempt, false);
    v_tombstones := exists (select 1 from supasaasy.entity_tombstones where app_key = v_app);

    with input as (
        select distinct on (r.collection_key, r.external_id)
               r.collection_key, r.external_id, r.raw_payload,
               coalesce(r.archived, false) as archived,
               coalesce(r.api_version, b ->> 'api_version') as api_version,
               coalesce(r.observed_at, v_observed) as observed_at
          from jsonb_to_recordset(coalesce(b -> 'rows', '[]')) as r (
               collection_key text, external_id text, raw_payload jsonb, archived boolean,
               api_version text, observed_at timestamptz)
         order by r.collection_key, r.external_id
    ), written as (
        insert into supasaasy.entities as e
               (app_key, collection_key, external_id, api_version, raw_payload, archived_at,
                observed_at)
        select v_app, i.collection_key, i.external_id, i.api_version, i.raw_payload,
               case when i.archived then now() end, i.observed_at
          from input i
         where not v_tombstones or not exists (
               select 1 from supasaasy.entity_tombstones t
                where t.app_key = v_app and t.collection_key = i.collection_key
                  and t.external_id = i.external_id and t.observed_at >= i.observed_at)
        on conflict (app_key, collection_key, external_id) do update
           set raw_payload = excluded.raw_payload,
               api_version = excluded.api_version,
               archived_at = case when excluded.archived_at is not null
                                  then coalesce(e.archived_at, excluded.archived_at) end,
               deleted_at = null,
               observed_at = excluded.observed_at
         where excluded.observed_at >= coalesce(e.observed_at, '-infinity')
           and (e.raw_payload is distinct from excluded.raw_payload
                or e.api_version is distinct from excluded.api_version
                or (e.archived_at is null) <> (excluded.archived_at is null)
                or e.deleted_at is not null
                -- an event newer than the stored state moves the guard forward
                or (not v_full and excluded.observed_at > e.observed_at))
        returning (xmax = 0) as inserted
    ), seen as (
        insert into supasaasy.sync_task_seen (task_id, collection_key, external_ids)
        select v_task_id, collection_key, array_agg(external_id)
          from input where v_full
         group by collection_key
    )
    select count(*) filter (where inserted), count(*) filter (where not inserted),
           (select count(*) from input)
      into v_created, v_updated, v_rows
      from written;

    if jsonb_array_length(coalesce(b -> 'deletes', '[]')) > 0 then
        with input as (
            select distinct on (d.collection_key, d.external_id)
                   d.collection_key, d.external_id, coalesce(d.observed_at, v_observed) as observed_at,
                   d.observed_at is null as unconditional
              from jsonb_to_recordset(b -> 'deletes')
                   as d (collection_key text, external_id text, observed_at timestamptz)
             order by d.collection_key, d.external_id, d.observed_at desc nulls first
        ), tombstones as (
            insert into supasaasy.entity_tombstones as t
                   (app_key, collection_key, external_id, observed_at)
            select v_app, collection_key, external_id, observed_at from input
            on conflict (app_key, collection_key, external_id) do update
               set observed_at = greatest(t.observed_at, excluded.observed_at)
        )
        delete from supasaasy.entities e
         using input d
         where e.app_key = v_app and e.collection_key = d.collection_key
           and e.external_id = d.external_id
           and (d.unconditional or d.observed_at >= coalesce(e.observed_at, '-infinity'));
        get diagnostics v_deleted = row_count;
    end if;

    if jsonb_array_length(coalesce(b -> 'children', '[]')) > 0 then
        -- A child set the provider truncated (complete: false) removes nothing, and in a
        -- full sync its stored children count as seen: no sweep removes what was merely
        -- not listed.
        if v_full then
            insert into supasaasy.sync_task_seen (task_id, collection_key, external_ids)
            select v_task_id, c.collection_key, array_agg(e.external_id)
              from jsonb_to_recordset(b -> 'children')
                   as c (collection_key text, parent_field text, parent_id text,
                         complete boolean)
              join supasaasy.entities e
                on e.app_key = v_app and e.collection_key = c.collection_key
               and e.raw_payload ->> c.parent_field = c.parent_id
             where c.complete is false
             group by c.collection_key;
        end if;
        -- Children stored from a later state than the child set's stay; those removed
        -- leave tombstones, as deletions do.
        with gone as (
            delete from supasaasy.entities e
             using jsonb_to_recordset(b -> 'children')
                   as c (collection_key text, parent_field text, parent_id text,
                         observed_at timestamptz, complete boolean)
             where coalesce(c.complete, true)
               and e.app_key = v_app and e.collection_key = c.collection_key
               and e.raw_payload ->> c.parent_field = c.parent_id
               and coalesce(c.observed_at, v_observed) >= coalesce(e.observed_at, '-infinity')
               and not exists (
                   select 1 from jsonb_array_elements(b -> 'rows') as r
                    where r ->> 'collection_key' = c.collection_key
                      and r ->> 'external_id' = e.external_id)
            returning e.collection_key, e.external_id,
                      coalesce(c.observed_at, v_observed) as observed_at
        ), tombstones as (
            insert into supasaasy.entity_tombstones as t
                   (app_key, collection_key, external_id, observed_at)
            select distinct on (collection_key, external_id)
                   v_app, collection_key, external_id, observed_at
              from gone
             order by collection_key, external_id, observed_at desc
            on conflict (app_key, collection_key, external_id) do update
               set observed_at = greatest(t.observed_at, excluded.observed_at)
        )
        select count(*) into v_children from gone;
    end if;

    perform supasaasy.advance_checkpoint(v_task_id, v_attempt, (b ->> 'seq')::integer,
                                         b ->> 'cursor', (b ->> 'entity_count')::integer);

    return jsonb_build_object(
        'created', v_created,
        'updated', v_updated,
        'unchanged', v_rows - v_created - v_updated,
        'deleted', v_deleted + v_children);
end;
$$;

-- write_batch with its body as text. PostgREST passes a text/plain body to a function's
-- single unnamed text parameter as it is, while a JSON body is first parsed by PostgREST
-- itself: for 1,000-row batches that parse cost about as much CPU as the database's
-- write. The body and the result are those of write_batch(jsonb).
create function supasaasy.write_batch(text)
returns jsonb
language sql as $$
    select supasaasy.write_batch($1::jsonb)
$$;

-- Finishes a task that ran to its end, in one transaction: for a full sync, deletes
-- the rows of its collections that upstream no longer has (those this task did not
-- see; with sweep_created_from, only rows created upstream since then, or whose
-- creation time is unknown); records the sync watermark of its collections; and
-- completes the task through complete_task. A full sync's entity_count is the number of
-- distinct objects it saw (pages that overlap count an object once).
-- Body: task_id, attempt, entity_count, sweep_collections (array or null),
-- sweep_created_from, state_collections, synced_at, sync_metadata, lock_timeout_ms.
-- Returns {deleted, entity_count, job}.
create function supasaasy.finish_task(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_app text;
    v_deleted integer := 0;
    v_count integer := (b ->> 'entity_count')::integer;
    v_job supasaasy.sync_jobs;
begin
    perform supasaasy.bound_lock_waits(b);
    v_app := supasaasy.task_lease(v_task_id, (b ->> 'attempt')::integer);

    if jsonb_typeof(b -> 'sweep_collections') = 'array' then
        with seen as materialized (
            select distinct s.collection_key, unnest(s.external_ids) as external_id
              from supasaasy.sync_task_seen s
             where s.task_id = v_task_id
        ), swept as (
            delete from supasaasy.entities e
             where e.app_key = v_app
               and e.collection_key in (select jsonb_array_elements_text(b -> 'sweep_collections'))
               -- Objects with no creation time upstream count as inside the window.
               and (b ->> 'sweep_created_from' is null
                    or coalesce(supasaasy.payload_created_at(e.raw_payload), 'infinity')
                       >= (b ->> 'sweep_created_from')::timestamptz)
               and not exists (
                   select 1 from seen
                    where seen.collection_key = e.collection_key
                      and seen.external_id = e.external_id)
            returning 1
        )
        select (select count(*) from seen), (select count(*) from swept)
          into v_count, v_deleted;
    end if;
    delete from supasaasy.sync_task_seen where task_id = v_task_id;

    if b ->> 'synced_at' is not null then
        insert into supasaasy.sync_state as s
               (app_key, collection_key, last_synced_at, last_sync_metadata)
        select v_app, c, (b ->> 'synced_at')::timestamptz, coalesce(b -> 'sync_metadata', '{}')
          from jsonb_array_elements_text(coalesce(b -> 'state_collections', '[]')) as c
        on conflict (app_key, collection_key) do update
           set last_synced_at = excluded.last_synced_at,
               last_sync_metadata = excluded.last_sync_metadata;
    end if;

    select * into v_job from supasaasy.complete_task(v_task_id, 'completed', v_count, null);

    return jsonb_build_object('deleted', v_deleted, 'entity_count', v_count, 'job', to_jsonb(v_job));
end;
$$;

-- ---------------------------------------------------------------------------
-- Request rates
-- ---------------------------------------------------------------------------

-- Reserves p_requests requests against a shared allowance of p_per_second per key
-- (bursts of up to p_burst, default one second's worth). Returns how many seconds
-- the caller waits before making them. Workers reserve in chunks, so this is one
-- round trip per several provider requests.
create function supasaasy.take_rate_allowance(
    p_key text,
    p_per_second double precision,
    p_requests integer,
    p_burst integer default null
) returns double precision
language plpgsql as $$
declare
    v_now constant timestamptz := clock_timestamp();
    v_cost interval;
    v_burst interval;
    v_tat timestamptz;
begin
    if p_per_second is null or p_per_second <= 0 or p_requests is null or p_requests < 1 then
        raise exception 'rate must be positive and at least one request reserved'
            using errcode = '22023';
    end if;
    v_cost := make_interval(secs => p_requests / p_per_second);
    v_burst := make_interval(secs => greatest(coalesce(p_burst, ceil(p_per_second)), p_requests)
                                     / p_per_second);
    insert into supasaasy.rate_limits as r (key, tat) values (p_key, v_now + v_cost)
    on conflict (key) do update set tat = greatest(r.tat, v_now) + v_cost
    returning tat into v_tat;
    return greatest(0, extract(epoch from (v_tat - v_now - v_burst)));
end;
$$;

-- Gives back requests reserved with take_rate_allowance but not made (a task that
-- ended early), so that other workers need not wait for them.
create function supasaasy.return_rate_allowance(
    p_key text,
    p_per_second double precision,
    p_requests integer
) returns void
language sql as $$
    update supasaasy.rate_limits
       set tat = greatest(clock_timestamp(), tat - make_interval(secs => p_requests / p_per_second))
     where key = p_key and p_per_second > 0 and p_requests > 0;
$$;

-- Admits one request under a limit of p_per_minute per key (a shared sliding
-- allowance, same state as take_rate_allowance). Returns 0 when admitted, otherwise
-- the seconds after which a retry will be; a refused request uses no allowance.
create function supasaasy.admit_request(p_key text, p_per_minute integer)
returns double precision
language plpgsql as $$
declare
    v_now constant timestamptz := clock_timestamp();
    v_cost interval;
    v_tat timestamptz;
    v_burst interval := interval '1 minute';
begin
    if p_per_minute is null or p_per_minute < 1 then
        raise exception 'the limit must be at least one request a minute' using errcode = '22023';
    end if;
    v_cost := make_interval(secs => 60.0 / p_per_minute);
    insert into supasaasy.rate_limits as r (key, tat) values (p_key, v_now)
    on conflict (key) do nothing;
    select tat into v_tat from supasaasy.rate_limits where key = p_key for update;
    v_tat := greatest(v_tat, v_now) + v_cost;
    if v_tat - v_now > v_burst then
        return extract(epoch from (v_tat - v_now - v_burst));
    end if;
    update supasaasy.rate_limits set tat = v_tat where key = p_key;
    return 0;
end;
$$;

-- ---------------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------------

-- Deletes finished jobs (and by cascade their tasks) that ended more than
-- p_retention_days ago, and tombstones older than 30 days. Active jobs are never
-- deleted. Returns how many jobs.
create function supasaasy.cleanup_old_jobs(p_retention_days integer default 7)
returns integer
language plpgsql as $$
declare
    v_deleted integer;
begin
    if p_retention_days is null or p_retention_days < 0 then
        raise exception 'retention must be zero or more days, not %', coalesce(p_retention_days::text, 'null')
            using errcode = '22023';
    end if;
    delete from supasaasy.sync_jobs
     where status in ('completed', 'failed', 'cancelled')
       and coalesce(completed_at, created_at) < now() - make_interval(days => p_retention_days);
    get diagnostics v_deleted = row_count;
    delete from supasaasy.entity_tombstones where observed_at < now() - interval '30 days';
    return v_deleted;
end;
$$;

-- ---------------------------------------------------------------------------
-- Access: service_role only
-- ---------------------------------------------------------------------------

alter table supasaasy.entities enable row level security;
alter table supasaasy.sync_state enable row level security;
alter table supasaasy.sync_jobs enable row level security;
alter table supasaasy.sync_job_tasks enable row level security;
alter table supasaasy.sync_task_seen enable row level security;
alter table supasaasy.rate_limits enable row level security;
alter table supasaasy.entity_tombstones enable row level security;

create policy service_role_all on supasaasy.entities
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_state
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_jobs
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_job_tasks
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_task_seen
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.rate_limits
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.entity_tombstones
    for all to service_role using (true) with check (true);

revoke all on schema supasaasy from public, anon, authenticated;
revoke all on all tables in schema supasaasy from public, anon, authenticated;
revoke all on all sequences in schema supasaasy from public, anon, authenticated;
revoke execute on all functions in schema supasaasy from public, anon, authenticated;

grant usage on schema supasaasy to service_role;
grant all on all tables in schema supasaasy to service_role;
grant all on all sequences in schema supasaasy to service_role;
grant execute on all functions in schema supasaasy to service_role;

-- Objects created later in this schema (connector views, new functions) are the
-- service role's too.
-- (PUBLIC's default EXECUTE on new functions is global and cannot be revoked per
-- schema: a migration that adds a function revokes it explicitly.)
alter default privileges in schema supasaasy grant all on tables to service_role;
alter default privileges in schema supasaasy grant execute on functions to service_role;
