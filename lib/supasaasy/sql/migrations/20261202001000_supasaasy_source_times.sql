-- Records carry when their object was created and last changed upstream, as the
-- connector reads them from the provider's fields: entities keep them in
-- source_created_at and source_updated_at, and the deletion sweep of an app with
-- `sync_from` reads the creation time there instead of parsing provider payloads.
-- Rows stored before this migration get both from the fields the built-in connectors
-- read (once, here, their updated_at left as it was); the next write of a row sets them
-- from its connector.

alter table supasaasy.entities
    add column source_created_at timestamptz,
    add column source_updated_at timestamptz;
comment on column supasaasy.entities.source_created_at is
    'When the object was created upstream, as its provider says (null where it does not).';
comment on column supasaasy.entities.source_updated_at is
    'When the object last changed upstream, as its provider says (null where it does not).';

-- A provider's timestamp: Unix seconds, or text with a zone; null for anything else.
create function pg_temp.source_time(p jsonb) returns timestamptz
language plpgsql immutable as $$
begin
    if jsonb_typeof(p) = 'number' then
        return to_timestamp((p #>> '{}')::double precision);
    elsif jsonb_typeof(p) = 'string' and p #>> '{}' ~ '(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' then
        return (p #>> '{}')::timestamptz;
    end if;
    return null;
exception when others then
    return null;
end;
$$;

-- Filling in what the payloads already held is not a write of the row: updated_at stays.
alter table supasaasy.entities disable trigger entities_touch_updated_at;
update supasaasy.entities
   set source_created_at = coalesce(pg_temp.source_time(raw_payload -> 'created'),
                                    pg_temp.source_time(raw_payload -> 'created_at'),
                                    pg_temp.source_time(raw_payload -> 'created_time')),
       source_updated_at = coalesce(pg_temp.source_time(raw_payload -> 'updated'),
                                    pg_temp.source_time(raw_payload -> 'updated_at'),
                                    pg_temp.source_time(raw_payload -> 'last_edited_time'))
 where raw_payload ?| array['created', 'created_at', 'created_time', 'updated', 'updated_at',
                            'last_edited_time'];
alter table supasaasy.entities enable trigger entities_touch_updated_at;

-- ---------------------------------------------------------------------------
-- Writing changes: each row's `source_created_at` and `source_updated_at` (ISO 8601)
-- ---------------------------------------------------------------------------

-- As in the webhooks migration, and a row whose source times changed is rewritten.
create or replace function supasaasy.write_changes(p_app text, p_body jsonb, p_full_task uuid)
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
               coalesce(r.observed_at, v_observed) as observed_at,
               r.source_created_at, r.source_updated_at
          from jsonb_to_recordset(coalesce(b -> 'rows', '[]')) as r (
               collection_key text, external_id text, raw_payload jsonb, archived boolean,
               api_version text, observed_at timestamptz, source_created_at timestamptz,
               source_updated_at timestamptz)
         order by r.collection_key, r.external_id
    ), written as (
        insert into supasaasy.entities as e
               (app_key, collection_key, external_id, api_version, raw_payload, archived_at,
                observed_at, source_created_at, source_updated_at)
        select p_app, i.collection_key, i.external_id, i.api_version, i.raw_payload,
               case when i.archived then now() end, i.observed_at, i.source_created_at,
               i.source_updated_at
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
               observed_at = excluded.observed_at,
               source_created_at = excluded.source_created_at,
               source_updated_at = excluded.source_updated_at
         where excluded.observed_at >= coalesce(e.observed_at, '-infinity')
           and (e.raw_payload is distinct from excluded.raw_payload
                or e.api_version is distinct from excluded.api_version
                or e.source_created_at is distinct from excluded.source_created_at
                or e.source_updated_at is distinct from excluded.source_updated_at
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

-- ---------------------------------------------------------------------------
-- The deletion sweep reads the stored creation time
-- ---------------------------------------------------------------------------

-- As in the webhooks migration, except that the `sync_from` window is read from
-- source_created_at (a row without one counts as inside the window, as before).
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

drop function supasaasy.payload_created_at(jsonb);
