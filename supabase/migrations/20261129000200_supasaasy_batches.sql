-- Batched writes with checkpoints, task leases, the full-sync deletion sweep, and a
-- request-rate allowance shared by workers.

-- When the stored payload was current upstream (the fetch time of a list page, or an
-- event's time). A write older than what is stored never replaces it, so replaying
-- older events after a resume cannot undo newer state. Not indexed.
alter table supasaasy.entities add column observed_at timestamptz;

-- The objects a full-sync task has seen, so that at its end one statement can delete
-- what upstream no longer has: one row per batch and collection, holding that batch's
-- ids (a row per object cost a fifth of the write time). Emptied when the task ends.
create table supasaasy.sync_task_seen (
    task_id uuid not null references supasaasy.sync_job_tasks (id) on delete cascade,
    collection_key text not null,
    external_ids text[] not null
);
create index sync_task_seen_task_idx on supasaasy.sync_task_seen (task_id);

-- Batches of one task may be written concurrently (a worker keeps two in flight). Each
-- carries its number; the task's cursor only moves past batches that are all
-- committed. Batches committed ahead of a gap wait in pending_checkpoints, which only
-- holds entries of the current attempt.
alter table supasaasy.sync_job_tasks
    add column batch_seq integer not null default 0,
    add column pending_checkpoints jsonb;

-- Shared request allowance per key (e.g. per app), as a theoretical arrival time.
create table supasaasy.rate_limits (
    key text primary key,
    tat timestamptz not null
);

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
--   rows      [{collection_key, external_id, raw_payload, archived, api_version?, observed_at?}]
--   deletes   [{collection_key, external_id, observed_at?}]
--   children  [{collection_key, parent_field, parent_id}]: rows of that collection
--             whose parent_field is parent_id and that this batch does not carry are deleted
-- Rows whose payload did not change are not rewritten. Returns
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
    v_rows integer;
    v_created integer := 0;
    v_updated integer := 0;
    v_deleted integer := 0;
    v_children integer := 0;
begin
    -- Checked without the task's lock, so that batches run side by side; checked again
    -- under it when the checkpoint moves, last.
    v_app := supasaasy.task_lease(v_task_id, v_attempt, false);

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

    delete from supasaasy.entities e
     using jsonb_to_recordset(coalesce(b -> 'deletes', '[]'))
           as d (collection_key text, external_id text, observed_at timestamptz)
     where e.app_key = v_app and e.collection_key = d.collection_key
       and e.external_id = d.external_id
       and coalesce(d.observed_at, 'infinity') >= coalesce(e.observed_at, '-infinity');
    get diagnostics v_deleted = row_count;

    if jsonb_array_length(coalesce(b -> 'children', '[]')) > 0 then
        delete from supasaasy.entities e
         using jsonb_to_recordset(b -> 'children')
               as c (collection_key text, parent_field text, parent_id text)
         where e.app_key = v_app and e.collection_key = c.collection_key
           and e.raw_payload ->> c.parent_field = c.parent_id
           and not exists (
               select 1 from jsonb_array_elements(b -> 'rows') as r
                where r ->> 'collection_key' = c.collection_key
                  and r ->> 'external_id' = e.external_id);
        get diagnostics v_children = row_count;
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

-- Finishes a task that ran to its end, in one transaction: for a full sync, deletes
-- the rows of its collections that upstream no longer has (those this task did not
-- see; with sweep_created_from, only rows created upstream since then, or whose
-- creation time is unknown); records the
-- sync watermark of its collections; and completes the task through complete_task.
-- Body: task_id, attempt, entity_count, sweep_collections (array or null),
-- sweep_created_from, state_collections, synced_at, sync_metadata.
-- Returns {deleted, job}.
create function supasaasy.finish_task(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_app text;
    v_deleted integer := 0;
    v_job supasaasy.sync_jobs;
begin
    v_app := supasaasy.task_lease(v_task_id, (b ->> 'attempt')::integer);

    if jsonb_typeof(b -> 'sweep_collections') = 'array' then
        with seen as (
            select s.collection_key, unnest(s.external_ids) as external_id
              from supasaasy.sync_task_seen s
             where s.task_id = v_task_id
        )
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
                  and seen.external_id = e.external_id);
        get diagnostics v_deleted = row_count;
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

    select * into v_job from supasaasy.complete_task(
        v_task_id, 'completed', (b ->> 'entity_count')::integer, null);

    return jsonb_build_object('deleted', v_deleted, 'job', to_jsonb(v_job));
end;
$$;

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

alter table supasaasy.sync_task_seen enable row level security;
alter table supasaasy.rate_limits enable row level security;
create policy service_role_all on supasaasy.sync_task_seen
    for all to service_role using (true) with check (true);
create policy service_role_all on supasaasy.rate_limits
    for all to service_role using (true) with check (true);

revoke all on supasaasy.sync_task_seen, supasaasy.rate_limits from public, anon, authenticated;
grant all on supasaasy.sync_task_seen, supasaasy.rate_limits to service_role;
revoke execute on function
    supasaasy.payload_created_at(jsonb),
    supasaasy.task_lease(uuid, integer, boolean),
    supasaasy.advance_checkpoint(uuid, integer, integer, text, integer),
    supasaasy.write_batch(jsonb),
    supasaasy.finish_task(jsonb),
    supasaasy.take_rate_allowance(text, double precision, integer, integer)
    from public, anon, authenticated;
grant execute on function
    supasaasy.payload_created_at(jsonb),
    supasaasy.task_lease(uuid, integer, boolean),
    supasaasy.advance_checkpoint(uuid, integer, integer, text, integer),
    supasaasy.write_batch(jsonb),
    supasaasy.finish_task(jsonb),
    supasaasy.take_rate_allowance(text, double precision, integer, integer)
    to service_role;

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

revoke execute on function supasaasy.return_rate_allowance(text, double precision, integer)
    from public, anon, authenticated;
grant execute on function supasaasy.return_rate_allowance(text, double precision, integer)
    to service_role;
