-- SupaSaaSy core schema: synced entities, sync state, and the job/task queue.
--
-- Everything that must be atomic (claiming a task, finishing it together with the
-- job's counters, requeueing stale work, cleanup) is a SQL function here, called
-- through PostgREST's /rpc. Each PostgREST request is one transaction.

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
    constraint sync_job_tasks_status_check
        check (status in ('pending', 'processing', 'completed', 'failed')),
    constraint sync_job_tasks_entity_count_check check (entity_count >= 0),
    -- Its index also serves every lookup by job_id.
    constraint sync_job_tasks_job_resource_key unique (job_id, resource_type)
);

create index sync_job_tasks_status_idx on supasaasy.sync_job_tasks (status, created_at, position);

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
-- Job operations
-- ---------------------------------------------------------------------------

-- A job and one pending task per distinct resource type, in one transaction. Raises
-- unique_violation (on sync_jobs_one_active_per_app) while the app has an active job.
create function supasaasy.create_sync_job(
    p_app_key text,
    p_mode text,
    p_resource_types text[]
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
    insert into supasaasy.sync_jobs (app_key, mode, resource_types, total_tasks)
    values (p_app_key, p_mode, v_types, cardinality(v_types))
    returning * into v_job;
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

-- Claims the oldest pending task (of one job, or of any active job) for this
-- caller alone: the task becomes processing with started_at, a heartbeat and one
-- more attempt, and its job moves from pending to processing. No row if none.
create function supasaasy.claim_task(p_job_id uuid default null)
returns setof supasaasy.sync_job_tasks
language plpgsql as $$
declare
    v_task supasaasy.sync_job_tasks;
begin
    select t.* into v_task
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.status = 'pending'
       and j.status in ('pending', 'processing')
       and (p_job_id is null or t.job_id = p_job_id)
     order by t.created_at, t.position
     limit 1
       for update of t skip locked;
    if not found then
        return;
    end if;

    update supasaasy.sync_job_tasks
       set status = 'processing',
           started_at = coalesce(started_at, now()),
           last_heartbeat = now(),
           attempts = attempts + 1
     where id = v_task.id
    returning * into v_task;

    update supasaasy.sync_jobs
       set status = 'processing', started_at = coalesce(started_at, now())
     where id = v_task.job_id and status = 'pending';

    return next v_task;
end;
$$;

-- Records that a processing task is alive, with its progress so far. Returns the
-- task, or no row when it is no longer processing (requeued or finished), which
-- tells its worker to stop.
create function supasaasy.heartbeat_task(
    p_task_id uuid,
    p_entity_count integer default null,
    p_cursor text default null
) returns setof supasaasy.sync_job_tasks
language sql as $$
    update supasaasy.sync_job_tasks
       set last_heartbeat = now(),
           entity_count = coalesce(p_entity_count, entity_count),
           cursor = coalesce(p_cursor, cursor)
     where id = p_task_id and status = 'processing'
    returning *;
$$;

-- Hands a processing task back to the queue with its cursor, for the next worker
-- to resume (a worker whose time budget ran out). No row if it was not processing.
create function supasaasy.release_task(
    p_task_id uuid,
    p_cursor text default null,
    p_entity_count integer default null
) returns setof supasaasy.sync_job_tasks
language sql as $$
    update supasaasy.sync_job_tasks
       set status = 'pending',
           cursor = coalesce(p_cursor, cursor),
           entity_count = coalesce(p_entity_count, entity_count),
           last_heartbeat = now()
     where id = p_task_id and status = 'processing'
    returning *;
$$;

-- Finishes a task (completed or failed) and, in the same transaction, adds it to
-- its job's counters; when none of the job's tasks is left pending or processing,
-- the job ends: completed, or failed with a summary of the failed tasks. Returns
-- the job. Finishing an already finished (or unknown) task changes nothing and
-- returns no row.
create function supasaasy.complete_task(
    p_task_id uuid,
    p_status text,
    p_entity_count integer default null,
    p_error_message text default null
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

-- Processing tasks whose heartbeat is older than p_stale_after go back to pending
-- with their cursor; those that have had p_max_attempts attempts fail through
-- complete_task instead. Returns how many tasks it moved.
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
        select id, attempts from supasaasy.sync_job_tasks
         where status = 'processing'
           and coalesce(last_heartbeat, started_at, created_at) < now() - p_stale_after
         order by created_at
           for update skip locked
    loop
        if v_task.attempts >= p_max_attempts then
            perform supasaasy.complete_task(
                v_task.id, 'failed', null,
                format('no heartbeat for %s after %s attempts', p_stale_after, v_task.attempts));
        else
            update supasaasy.sync_job_tasks set status = 'pending' where id = v_task.id;
        end if;
        v_moved := v_moved + 1;
    end loop;
    return v_moved;
end;
$$;

-- Deletes finished jobs (and by cascade their tasks) that ended more than
-- p_retention_days ago. Active jobs are never deleted. Returns how many.
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

create policy service_role_all on supasaasy.entities
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_state
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_jobs
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.sync_job_tasks
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
-- schema: a migration that adds a function revokes it explicitly, as above.)
alter default privileges in schema supasaasy grant all on tables to service_role;
alter default privileges in schema supasaasy grant execute on functions to service_role;
