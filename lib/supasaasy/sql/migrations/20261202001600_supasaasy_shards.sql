-- Time-range shards: the full sync of a large resource, split across workers.
--
-- A shard is a row of sync_job_tasks beneath its task (parent_task_id), of the same
-- resource type, listing the objects created in [created_from, created_before) (no upper
-- bound when created_before is null). Shards are claimed, leased, heartbeated,
-- checkpointed, requeued and retried as tasks are: every function taking a task id takes
-- a shard's. Their task stays `processing` while it has shards pending or processing (it
-- is never stale then). Job counters, total_tasks and resource_types count tasks only.
--
-- A worker that claims a task to sync in full splits it with shard_task: one shard for
-- the whole range, claimed by that worker. A worker with nothing to claim takes part of
-- the busiest shard's range with split_shard; the shard learns its narrower range from
-- its next write_batch (`created_from`) or heartbeat, and stops there. When the last
-- shard of a task finishes (finish_task), the task finishes in the same transaction: one
-- deletion sweep over what the task's shards saw, the watermark at the task's start, the
-- job's counters.
-- A shard that fails fails its task, whose other shards are cancelled; retry_job resumes
-- them all from their checkpoints.
--
-- A shard's cursor is the worker's (JSON): `oldest` and `newest` are the creation times
-- (Unix seconds) of the oldest and newest objects it has committed, `done` that its range
-- is listed. split_shard reads them to estimate what a shard has left.

alter table supasaasy.sync_job_tasks
    add column parent_task_id uuid references supasaasy.sync_job_tasks (id) on delete cascade,
    add column created_from timestamptz,
    add column created_before timestamptz;

-- Still one task per resource type in a job; its shards share its resource type.
alter table supasaasy.sync_job_tasks drop constraint sync_job_tasks_job_resource_key;
create unique index sync_job_tasks_job_resource_key
    on supasaasy.sync_job_tasks (job_id, resource_type) where parent_task_id is null;
create index sync_job_tasks_job_idx on supasaasy.sync_job_tasks (job_id);
create index sync_job_tasks_parent_idx
    on supasaasy.sync_job_tasks (parent_task_id) where parent_task_id is not null;

-- ---------------------------------------------------------------------------
-- Jobs: tasks only
-- ---------------------------------------------------------------------------

-- As in the core migration; shards are not tasks of the job.
create or replace function supasaasy.add_job_tasks(p_job_id uuid, p_resource_types text[])
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
    on conflict (job_id, resource_type) where parent_task_id is null do nothing;
    update supasaasy.sync_jobs j
       set total_tasks = (select count(*) from supasaasy.sync_job_tasks
                           where job_id = p_job_id and parent_task_id is null),
           resource_types = (select array_agg(resource_type order by created_at, position)
                               from supasaasy.sync_job_tasks
                              where job_id = p_job_id and parent_task_id is null)
     where j.id = p_job_id;
    return query select * from supasaasy.sync_job_tasks
                  where job_id = p_job_id and parent_task_id is null
                  order by created_at, position;
end;
$$;

-- As in the core migration; shards go back to pending with their task, and only tasks
-- are taken off the job's counters.
create or replace function supasaasy.retry_job(p_job_id uuid)
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
    select count(*), coalesce(sum(entity_count), 0) into v_failed, v_entities
      from supasaasy.sync_job_tasks
     where job_id = p_job_id and status = 'failed' and parent_task_id is null;
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
    update supasaasy.sync_job_tasks
       set status = 'pending', error_message = null, completed_at = null,
           checkpoint_attempt = attempts
     where job_id = p_job_id and status in ('failed', 'cancelled');
    return next v_job;
end;
$$;

-- ---------------------------------------------------------------------------
-- Claims
-- ---------------------------------------------------------------------------

-- What a worker gets for a task or shard it now holds: the task's columns, its job's app
-- and mode, the app's sync watermarks ({collection_key: last_synced_at}), a shard's task
-- start, and whether the job is run by its own request.
create type supasaasy.task_claim as (
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
    watermarks jsonb,
    parent_task_id uuid,
    created_from timestamptz,
    created_before timestamptz,
    parent_started_at timestamptz,
    immediate boolean
);

create function supasaasy.claimed_task(p_task_id uuid)
returns setof supasaasy.task_claim
language sql stable as $$
    select t.id, t.job_id, t.resource_type, t.position, t.status, t.entity_count, t.cursor,
           t.attempts, t.last_heartbeat, t.created_at, t.started_at, t.completed_at,
           t.error_message, t.batch_seq, t.pending_checkpoints, t.checkpoint_attempt,
           j.app_key, j.mode,
           coalesce((select jsonb_object_agg(s.collection_key, s.last_synced_at)
                       from supasaasy.sync_state s
                      where s.app_key = j.app_key and s.last_synced_at is not null), '{}'),
           t.parent_task_id, t.created_from, t.created_before,
           (select coalesce(p.started_at, p.created_at) from supasaasy.sync_job_tasks p
             where p.id = t.parent_task_id),
           j.immediate
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.id = p_task_id
$$;

-- As in the core migration, returning claimed_task's columns: a shard comes with its
-- range, its task's id and start.
drop function supasaasy.claim_task(uuid, interval, integer);

create function supasaasy.claim_task(
    p_job_id uuid default null,
    p_stale_after interval default null,
    p_max_attempts integer default 3
) returns setof supasaasy.task_claim
language plpgsql as $$
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

    return query select * from supasaasy.claimed_task(v_id);
end;
$$;

-- ---------------------------------------------------------------------------
-- Shards
-- ---------------------------------------------------------------------------

-- Splits the full sync of a task the caller holds into shards: the task keeps p_cursor
-- (the worker's mark that it is sharded) and stays processing, driven by its shards;
-- one shard, listing the objects created from p_created_from on, is claimed for the
-- caller and returned as claim_task returns a task. SS001 if the lease is gone.
create function supasaasy.shard_task(
    p_task_id uuid,
    p_attempt integer,
    p_created_from timestamptz,
    p_cursor text
) returns setof supasaasy.task_claim
language plpgsql as $$
declare
    v_shard uuid;
begin
    if p_created_from is null then
        raise exception 'a shard needs the earliest creation time it lists' using errcode = '22023';
    end if;
    perform supasaasy.task_lease(p_task_id, p_attempt);
    -- Splitting is progress: the task's attempts without any start afresh.
    update supasaasy.sync_job_tasks t
       set cursor = p_cursor, checkpoint_attempt = t.attempts, last_heartbeat = now()
     where t.id = p_task_id;
    insert into supasaasy.sync_job_tasks as s
           (job_id, resource_type, position, parent_task_id, created_from, status, attempts,
            started_at, last_heartbeat)
    select t.job_id, t.resource_type, t.position, t.id, p_created_from, 'processing', 1,
           now(), now()
      from supasaasy.sync_job_tasks t where t.id = p_task_id
    returning s.id into v_shard;
    return query select * from supasaasy.claimed_task(v_shard);
end;
$$;

-- About how many objects a shard has left to list: its pace so far (objects committed
-- over the creation times they span) times the span still ahead of it. 0 for a task, a
-- shard that has committed nothing or that has listed its range.
create function supasaasy.shard_backlog(t supasaasy.sync_job_tasks)
returns double precision
language sql immutable as $$
    select case
        when t.parent_task_id is null or t.cursor is null or t.created_from is null then 0
        else coalesce((
            select case when (c ->> 'done')::boolean is not true and c ? 'oldest' then
                   t.entity_count
                   / greatest((c ->> 'newest')::double precision
                              - (c ->> 'oldest')::double precision, 1)
                   * greatest((c ->> 'oldest')::double precision
                              - extract(epoch from t.created_from), 0)
                   end
              from (select t.cursor::jsonb as c) as parsed), 0)
    end
$$;

-- Takes part of the busiest shard's range for the caller, who has nothing to claim: the
-- processing shard (of one job, or of any active job not run immediately) with the most
-- objects left (shard_backlog), if at least p_piece_objects, is cut at whole seconds into
-- up to p_max_pieces pieces of about p_piece_objects each, at its pace so far: the shard
-- keeps the newest piece, the next one is claimed for the caller (returned as claim_task
-- returns a task), the others are pending, and the last one reaches down to where the
-- shard's range began. No row when no shard is worth cutting.
create function supasaasy.split_shard(
    p_job_id uuid default null,
    p_piece_objects integer default 2000,
    p_max_pieces integer default 8
) returns setof supasaasy.task_claim
language plpgsql as $$
declare
    v_id uuid;
    v_shard supasaasy.sync_job_tasks;
    v_oldest bigint;
    v_from bigint;
    v_pace double precision;
    v_piece bigint;
    v_pieces integer;
    v_first uuid;
begin
    if p_piece_objects is null or p_piece_objects < 1 or p_max_pieces is null
       or p_max_pieces < 2 then
        raise exception 'pieces of at least one object, and at least two of them'
            using errcode = '22023';
    end if;
    select t.id into v_id
      from supasaasy.sync_job_tasks t
      join supasaasy.sync_jobs j on j.id = t.job_id
     where t.parent_task_id is not null
       and t.status = 'processing'
       and j.status in ('pending', 'processing')
       and (t.job_id = p_job_id or (p_job_id is null and not j.immediate))
       and supasaasy.shard_backlog(t) >= p_piece_objects
     order by supasaasy.shard_backlog(t) desc
     limit 1;
    if v_id is null then
        return;
    end if;
    -- Read again under the shard's lock: its checkpoint may have moved, or another
    -- caller cut it first.
    select * into v_shard from supasaasy.sync_job_tasks t
     where t.id = v_id and t.status = 'processing'
       for no key update;
    if not found or supasaasy.shard_backlog(v_shard) < p_piece_objects then
        return;
    end if;
    v_oldest := (v_shard.cursor::jsonb ->> 'oldest')::bigint;
    v_from := ceil(extract(epoch from v_shard.created_from))::bigint;
    v_pace := v_shard.entity_count
              / greatest((v_shard.cursor::jsonb ->> 'newest')::double precision - v_oldest, 1);
    v_piece := greatest(ceil(p_piece_objects / v_pace), 1)::bigint;
    v_pieces := least(p_max_pieces, ceil((v_oldest - v_from)::double precision / v_piece))::integer;
    if v_pieces < 2 then
        return;
    end if;
    -- Piece i covers [oldest - (i + 1) * piece, oldest - i * piece); the shard keeps piece
    -- 0 and the last piece reaches down to the shard's start. Every cut lies strictly
    -- inside (from, oldest], since (pieces - 1) * piece < oldest - from.
    update supasaasy.sync_job_tasks t
       set created_from = to_timestamp(v_oldest - v_piece)
     where t.id = v_id;
    insert into supasaasy.sync_job_tasks as s
           (job_id, resource_type, position, parent_task_id, created_from, created_before,
            status, attempts, started_at, last_heartbeat)
    select v_shard.job_id, v_shard.resource_type, v_shard.position, v_shard.parent_task_id,
           case when i = v_pieces - 1 then v_shard.created_from
                else to_timestamp(v_oldest - (i + 1) * v_piece) end,
           to_timestamp(v_oldest - i * v_piece),
           'pending', 0, null, null
      from generate_series(1, v_pieces - 1) as i;
    -- The caller's piece: the one next to the shard's, where objects are most likely.
    select s.id into v_first from supasaasy.sync_job_tasks s
     where s.parent_task_id = v_shard.parent_task_id and s.status = 'pending'
       and s.created_before = to_timestamp(v_oldest - v_piece)
     limit 1
       for update;
    update supasaasy.sync_job_tasks s
       set status = 'processing', attempts = 1, started_at = now(), last_heartbeat = now()
     where s.id = v_first;
    return query select * from supasaasy.claimed_task(v_first);
end;
$$;

-- Whether a worker with nothing to claim or split should look again shortly: in the
-- scope (one job, or any active job not run immediately), a processing shard has not
-- committed yet (its pace is not known), or a task first claimed in the last p_recent
-- has not either (it may be about to be split into shards).
create function supasaasy.shards_may_split(
    p_job_id uuid default null,
    p_recent interval default '3 seconds'
) returns boolean
language sql stable as $$
    select exists (
        select 1 from supasaasy.sync_job_tasks t
          join supasaasy.sync_jobs j on j.id = t.job_id
         where t.status = 'processing'
           and j.status in ('pending', 'processing')
           and (t.job_id = p_job_id or (p_job_id is null and not j.immediate))
           and t.cursor is null
           and (t.parent_task_id is not null or t.started_at > now() - p_recent)
    )
$$;

-- ---------------------------------------------------------------------------
-- Ends of tasks and shards
-- ---------------------------------------------------------------------------

-- As in the core migration; a shard finishes without counting for the job (its task
-- does, when it finishes), and a failed shard fails its task and cancels its task's
-- other shards.
create or replace function supasaasy.complete_task(
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

    if v_task.parent_task_id is not null then
        if p_status = 'failed' then
            update supasaasy.sync_job_tasks
               set status = 'cancelled', completed_at = now()
             where parent_task_id = v_task.parent_task_id
               and status in ('pending', 'processing');
            return query select * from supasaasy.complete_task(
                v_task.parent_task_id, 'failed', null,
                format('objects created from %s%s: %s', v_task.created_from,
                       coalesce(' before ' || v_task.created_before, ''),
                       v_task.error_message));
        end if;
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
                    where t.job_id = j.id and t.status = 'failed'
                      and t.parent_task_id is null)
         where j.id = v_job.id
        returning * into v_job;
    end if;

    return next v_job;
end;
$$;

-- As in the core migration, except that a task with shards pending or processing is
-- never stale: its shards carry its work, each with its own heartbeat.
create or replace function supasaasy.requeue_stale_tasks(
    p_stale_after interval default '5 minutes',
    p_max_attempts integer default 3
) returns integer
language plpgsql as $$
declare
    v_task record;
    v_moved integer := 0;
begin
    for v_task in
        select t.id from supasaasy.sync_job_tasks t
         where t.status = 'processing'
           and coalesce(t.last_heartbeat, t.started_at, t.created_at) < now() - p_stale_after
           and not exists (
               select 1 from supasaasy.sync_job_tasks s
                where s.parent_task_id = t.id and s.status in ('pending', 'processing'))
         order by t.created_at
           for update of t skip locked
    loop
        perform supasaasy.end_attempt(
            v_task.id, format('no heartbeat for %s', p_stale_after), p_max_attempts);
        v_moved := v_moved + 1;
    end loop;
    return v_moved;
end;
$$;

-- As in the webhooks migration; a shard's result also has its range's start
-- (`created_from`), which split_shard may have moved up: the shard stops there.
create or replace function supasaasy.write_batch(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_attempt constant integer := (b ->> 'attempt')::integer;
    v_app text;
    v_counts jsonb;
    v_from timestamptz;
begin
    perform supasaasy.bound_lock_waits(b);
    v_app := supasaasy.task_lease(v_task_id, v_attempt, false);
    v_counts := supasaasy.write_changes(
        v_app, b, case when coalesce(b ->> 'mode', 'full') = 'full' then v_task_id end);
    perform supasaasy.advance_checkpoint(v_task_id, v_attempt, (b ->> 'seq')::integer,
                                         b ->> 'cursor', (b ->> 'entity_count')::integer);
    select created_from into v_from from supasaasy.sync_job_tasks
     where id = v_task_id and parent_task_id is not null;
    if v_from is not null then
        v_counts := v_counts || jsonb_build_object('created_from', v_from);
    end if;
    return v_counts;
end;
$$;

-- As in the source-times migration, for tasks and shards. A shard's finish completes
-- the shard; when it is the last of its task's shards to end, and the task is
-- processing, the task finishes with it. A task with shards still pending or processing
-- does not finish: the result is {waiting: true}. The task's finish sweeps over what it
-- and all its shards saw. With the body's synced_at it records the watermark: that time
-- when the task finishes itself, and the task's start when its last shard finishes it
-- (a shard's body carries the shard's view, not the task's).
create or replace function supasaasy.finish_task(jsonb)
returns jsonb
language plpgsql
set enable_nestloop = off
as $$
declare
    b constant jsonb := $1;
    v_id constant uuid := (b ->> 'task_id')::uuid;
    v_task_id uuid := v_id;
    v_parent uuid;
    v_app text;
    v_started timestamptz;
    v_deleted integer := 0;
    v_count integer := (b ->> 'entity_count')::integer;
    v_job supasaasy.sync_jobs;
begin
    perform supasaasy.bound_lock_waits(b);
    v_app := supasaasy.task_lease(v_id, (b ->> 'attempt')::integer);

    select parent_task_id into v_parent from supasaasy.sync_job_tasks where id = v_id;
    if v_parent is not null then
        update supasaasy.sync_job_tasks
           set status = 'completed', completed_at = now(), last_heartbeat = now(),
               entity_count = coalesce(v_count, entity_count)
         where id = v_id;
        -- The task's lock serialises this check between its shards ending at once.
        perform 1 from supasaasy.sync_job_tasks
         where id = v_parent and status = 'processing'
           for no key update;
        if not found then
            return jsonb_build_object('deleted', 0, 'entity_count', v_count, 'waiting', true);
        end if;
        v_task_id := v_parent;
        v_count := null;
    end if;
    if exists (select 1 from supasaasy.sync_job_tasks
                where parent_task_id = v_task_id and status in ('pending', 'processing')) then
        return jsonb_build_object('deleted', 0, 'entity_count', v_count, 'waiting', true);
    end if;

    select coalesce(started_at, created_at) into v_started
      from supasaasy.sync_job_tasks where id = v_task_id;
    if jsonb_typeof(b -> 'sweep_collections') = 'array' then
        with seen as materialized (
            select distinct s.collection_key, unnest(s.external_ids) as external_id
              from supasaasy.sync_task_seen s
             where s.task_id = v_task_id
                or s.task_id in (select id from supasaasy.sync_job_tasks
                                  where parent_task_id = v_task_id)
        ), swept as (
            delete from supasaasy.entities e
             where e.app_key = v_app
               and e.collection_key in (select jsonb_array_elements_text(b -> 'sweep_collections'))
               and e.updated_at < v_started
               -- Objects with no creation time upstream count as inside the window.
               and (b ->> 'sweep_created_from' is null
                    or coalesce(e.source_created_at, 'infinity')
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
    delete from supasaasy.sync_task_seen s
     where s.task_id = v_task_id
        or s.task_id in (select id from supasaasy.sync_job_tasks where parent_task_id = v_task_id);

    if b ->> 'synced_at' is not null then
        insert into supasaasy.sync_state as s
               (app_key, collection_key, last_synced_at, last_sync_metadata)
        select v_app, c,
               case when v_task_id = v_id then (b ->> 'synced_at')::timestamptz
                    else v_started end,
               coalesce(b -> 'sync_metadata', '{}')
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
-- Privileges: the service role only, as for every function of the schema
-- ---------------------------------------------------------------------------

revoke execute on function supasaasy.claimed_task(uuid),
                           supasaasy.claim_task(uuid, interval, integer),
                           supasaasy.shard_task(uuid, integer, timestamptz, text),
                           supasaasy.shard_backlog(supasaasy.sync_job_tasks),
                           supasaasy.split_shard(uuid, integer, integer),
                           supasaasy.shards_may_split(uuid, interval)
    from public, anon, authenticated;
grant execute on function supasaasy.claimed_task(uuid),
                          supasaasy.claim_task(uuid, interval, integer),
                          supasaasy.shard_task(uuid, integer, timestamptz, text),
                          supasaasy.shard_backlog(supasaasy.sync_job_tasks),
                          supasaasy.split_shard(uuid, integer, integer),
                          supasaasy.shards_may_split(uuid, interval)
    to service_role;
