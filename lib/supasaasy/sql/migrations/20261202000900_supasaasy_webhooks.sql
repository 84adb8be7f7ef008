-- Webhooks: a provider's verified event applied in one transaction, a log of the
-- events received (which also keeps an event id from being applied twice), and full
-- syncs that never undo what a webhook wrote while they ran.
--
-- write_batch's writing of rows, deletions and child sets moves into write_changes,
-- which apply_webhook_event shares; finish_task's sweep spares rows written after the
-- task started; cleanup_old_jobs also empties the log.

-- One row per verified event received (rejected requests write nothing). An event id
-- applied (or found irrelevant) once per app: a second delivery of it changes nothing.
create table supasaasy.webhook_logs (
    id bigint generated always as identity primary key,
    app_key text not null,
    event_id text,
    event_type text,
    -- applied: its changes are committed with this row; ignored: nothing of it is synced;
    -- verification: Notion's set-up request (detail holds its token); failed: see error.
    outcome text not null,
    error text,
    detail jsonb,
    received_at timestamptz not null default now(),
    constraint webhook_logs_outcome_check
        check (outcome in ('applied', 'ignored', 'verification', 'failed'))
);
create unique index webhook_logs_event_once
    on supasaasy.webhook_logs (app_key, event_id) where outcome in ('applied', 'ignored');
create index webhook_logs_received_at_idx on supasaasy.webhook_logs (received_at);

-- ---------------------------------------------------------------------------
-- Writing changes: shared by write_batch and apply_webhook_event
-- ---------------------------------------------------------------------------

-- Writes rows, deletions and child sets (the body's `rows`, `deletes`, `children`, with
-- `api_version` and `observed_at` as defaults; see write_batch) for app p_app. With
-- p_full_task, a full sync's task: what is written is recorded as seen by it, for its
-- sweep. Without, a change feed: a row observed later than the stored one moves its
-- observed_at forward even when nothing else changed. Rows whose payload did not change
-- are not rewritten; a row older than what is stored, or than its tombstone, is not
-- written; a deletion older than the stored row deletes nothing. Returns
-- {created, updated, unchanged, deleted}.
create function supasaasy.write_changes(p_app text, p_body jsonb, p_full_task uuid)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := p_body;
    v_full constant boolean := p_full_task is not null;
    v_observed constant timestamptz := coalesce((b ->> 'observed_at')::timestamptz, now());
    v_tombstones boolean;
    v_rows integer;
    v_created integer := 0;
    v_updated integer := 0;
    v_deleted integer := 0;
    v_children integer := 0;
begin
    v_tombstones := exists (select 1 from supasaasy.entity_tombstones where app_key = p_app);

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
        select p_app, i.collection_key, i.external_id, i.api_version, i.raw_payload,
               case when i.archived then now() end, i.observed_at
          from input i
         where not v_tombstones or not exists (
               select 1 from supasaasy.entity_tombstones t
                where t.app_key = p_app and t.collection_key = i.collection_key
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
        select p_full_task, collection_key, array_agg(external_id)
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
            select p_app, collection_key, external_id, observed_at from input
            on conflict (app_key, collection_key, external_id) do update
               set observed_at = greatest(t.observed_at, excluded.observed_at)
        )
        delete from supasaasy.entities e
         using input d
         where e.app_key = p_app and e.collection_key = d.collection_key
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
            select p_full_task, c.collection_key, array_agg(e.external_id)
              from jsonb_to_recordset(b -> 'children')
                   as c (collection_key text, parent_field text, parent_id text,
                         complete boolean)
              join supasaasy.entities e
                on e.app_key = p_app and e.collection_key = c.collection_key
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
               and e.app_key = p_app and e.collection_key = c.collection_key
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
                   p_app, collection_key, external_id, observed_at
              from gone
             order by collection_key, external_id, observed_at desc
            on conflict (app_key, collection_key, external_id) do update
               set observed_at = greatest(t.observed_at, excluded.observed_at)
        )
        select count(*) into v_children from gone;
    end if;

    return jsonb_build_object(
        'created', v_created,
        'updated', v_updated,
        'unchanged', v_rows - v_created - v_updated,
        'deleted', v_deleted + v_children);
end;
$$;

-- The body and result are those of the core migration's write_batch; the writing itself
-- is write_changes.
create or replace function supasaasy.write_batch(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_attempt constant integer := (b ->> 'attempt')::integer;
    v_app text;
    v_counts jsonb;
begin
    perform supasaasy.bound_lock_waits(b);
    -- Checked without the task's lock, so that batches run side by side; checked again
    -- under it when the checkpoint moves, last.
    v_app := supasaasy.task_lease(v_task_id, v_attempt, false);
    v_counts := supasaasy.write_changes(
        v_app, b, case when coalesce(b ->> 'mode', 'full') = 'full' then v_task_id end);
    perform supasaasy.advance_checkpoint(v_task_id, v_attempt, (b ->> 'seq')::integer,
                                         b ->> 'cursor', (b ->> 'entity_count')::integer);
    return v_counts;
end;
$$;

-- ---------------------------------------------------------------------------
-- Webhook events
-- ---------------------------------------------------------------------------

-- Records a verified event in the log and, when its outcome is `applied`, writes its
-- changes (`rows`, `deletes`, `children`, `api_version`, `observed_at`, as write_changes
-- takes them), in one transaction. Body: app_key, event_id, event_type, outcome
-- (applied, the default; ignored; verification; failed), error, detail, and the changes.
-- An event id already applied or ignored for the app changes nothing: the result is
-- {duplicate: true}. Otherwise {duplicate: false, created, updated, unchanged, deleted}.
create function supasaasy.apply_webhook_event(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_app constant text := b ->> 'app_key';
    v_outcome constant text := coalesce(b ->> 'outcome', 'applied');
    v_log bigint;
    v_counts jsonb := '{}';
begin
    if v_app is null then
        raise exception 'a webhook event needs its app_key' using errcode = '22023';
    end if;
    -- A delivery of the same event running at the same time waits here for this one's
    -- transaction, then finds the id taken.
    insert into supasaasy.webhook_logs (app_key, event_id, event_type, outcome, error, detail)
    values (v_app, b ->> 'event_id', b ->> 'event_type', v_outcome, b ->> 'error', b -> 'detail')
    on conflict (app_key, event_id) where outcome in ('applied', 'ignored') do nothing
    returning id into v_log;
    if v_log is null then
        return jsonb_build_object('duplicate', true);
    end if;
    if v_outcome = 'applied' then
        v_counts := supasaasy.write_changes(v_app, b, null);
        update supasaasy.webhook_logs set detail = coalesce(detail, '{}') || v_counts
         where id = v_log;
    end if;
    return v_counts || jsonb_build_object('duplicate', false);
end;
$$;

-- ---------------------------------------------------------------------------
-- The deletion sweep spares what was written while the task ran
-- ---------------------------------------------------------------------------

-- As in the core migration, except that the sweep deletes only rows last written
-- before the task first started (its started_at, kept across resumed attempts and
-- retries): a row a webhook wrote during the sync (an object created after the listing
-- passed it, say) is not taken for gone. Both times are the database's clock.
create or replace function supasaasy.finish_task(jsonb)
returns jsonb
language plpgsql as $$
declare
    b constant jsonb := $1;
    v_task_id constant uuid := (b ->> 'task_id')::uuid;
    v_app text;
    v_started timestamptz;
    v_deleted integer := 0;
    v_count integer := (b ->> 'entity_count')::integer;
    v_job supasaasy.sync_jobs;
begin
    perform supasaasy.bound_lock_waits(b);
    v_app := supasaasy.task_lease(v_task_id, (b ->> 'attempt')::integer);

    if jsonb_typeof(b -> 'sweep_collections') = 'array' then
        select coalesce(started_at, created_at) into v_started
          from supasaasy.sync_job_tasks where id = v_task_id;
        with seen as materialized (
            select distinct s.collection_key, unnest(s.external_ids) as external_id
              from supasaasy.sync_task_seen s
             where s.task_id = v_task_id
        ), swept as (
            delete from supasaasy.entities e
             where e.app_key = v_app
               and e.collection_key in (select jsonb_array_elements_text(b -> 'sweep_collections'))
               and e.updated_at < v_started
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
-- Retention
-- ---------------------------------------------------------------------------

-- As in the core migration, and the webhook log goes with the job retention, but no
-- sooner than 3 days: Stripe retries a delivery for up to 3 days, and the log is what
-- recognises a retried event.
create or replace function supasaasy.cleanup_old_jobs(p_retention_days integer default 7)
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
    delete from supasaasy.webhook_logs
     where received_at < now() - make_interval(days => greatest(p_retention_days, 3));
    return v_deleted;
end;
$$;

-- ---------------------------------------------------------------------------
-- Access: service_role only
-- ---------------------------------------------------------------------------

alter table supasaasy.webhook_logs enable row level security;
create policy service_role_all on supasaasy.webhook_logs
    for all to service_role using (true) with check (true);
revoke all on supasaasy.webhook_logs from public, anon, authenticated;
grant all on supasaasy.webhook_logs to service_role;

revoke execute on function supasaasy.write_changes(text, jsonb, uuid),
    supasaasy.apply_webhook_event(jsonb) from public, anon, authenticated;
grant execute on function supasaasy.write_changes(text, jsonb, uuid),
    supasaasy.apply_webhook_event(jsonb) to service_role;
