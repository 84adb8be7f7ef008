-- Upgrading from the TypeScript original (leftbrainit/supasaasy), step 2 of 2: the
-- rows worth keeping are copied from the schema 20261202000200 set aside
-- (supasaasy_original) into SupaSaaSy's schema, in this migration's transaction. A no-op
-- where nothing was set aside (a new project, SupaSaaSy's own schema).
--
-- entities      every row, with its id, external_id, app_key, collection_key,
--               api_version, raw_payload, created_at, updated_at, archived_at and
--               deleted_at. observed_at stays null: it means "older than anything", so
--               the next sync's write of an object replaces the imported row. A row the
--               original marked deleted_at keeps it: the views hide it as the original's
--               did, a later write of the object clears it, a full sync removes it if
--               upstream no longer has the object.
-- users         the readers allow-list (user_id, created_at), but for entries whose
--               Supabase Auth user no longer exists (they could read nothing anyway).
-- sync_state    each watermark, so that incremental syncs go on from it. SupaSaaSy's
--               watermark is when the last completed sync BEGAN; the original's worker
--               recorded when its task ENDED, so where that task is still in the
--               original's sync_job_tasks, its start is taken instead (nothing changed
--               upstream during it is skipped). last_sync_metadata is not carried: the
--               original kept its own page cursor there, which means nothing to
--               SupaSaaSy's connectors; it records the import and the original value.
--
-- Not imported, left in supasaasy_original: sync_jobs and sync_job_tasks (the
-- original's queue: its cursors are its connectors' and its jobs were for its worker;
-- a pending one would never run here) and webhook_logs (the original's log of HTTP
-- requests, for reading only).
-- The schema stays for the database owner to look through; its comment says what was
-- copied. Drop it once checked: drop schema supasaasy_original cascade;

-- The copy takes as long as writing the original's rows once: no statement timeout of
-- the role or the database cuts it short.
set local statement_timeout = 0;

do $$
declare
    v_entities bigint;
    v_readers bigint := 0;
    v_readers_left bigint := 0;
    v_watermarks bigint;
    v_kept text := '';
    v_table text;
    v_count bigint;
begin
    if to_regclass('supasaasy_original.entities') is null
       or to_regprocedure('supasaasy_original.update_updated_at_column()') is null then
        return;  -- nothing was set aside
    end if;

    insert into supasaasy.entities
           (id, external_id, app_key, collection_key, api_version, raw_payload, created_at,
            updated_at, archived_at, deleted_at)
    select id, external_id, app_key, collection_key, api_version, raw_payload, created_at,
           updated_at, archived_at, deleted_at
      from supasaasy_original.entities;
    get diagnostics v_entities = row_count;

    -- The allow-list exists where the original ran with auth enabled (its default).
    if to_regclass('supasaasy_original.users') is not null then
        insert into supasaasy.users (user_id, created_at)
        select o.user_id, o.created_at
          from supasaasy_original.users o
         where exists (select 1 from auth.users a where a.id = o.user_id);
        get diagnostics v_readers = row_count;
        select count(*) - v_readers into v_readers_left from supasaasy_original.users;
    end if;

    -- The original's collection keys are '<connector>_<resource type>', as SupaSaaSy's.
    -- Its immediate syncs recorded their start (metadata with a mode): kept as they are.
    if to_regclass('supasaasy_original.sync_job_tasks') is not null then
        insert into supasaasy.sync_state
               (app_key, collection_key, last_synced_at, last_sync_metadata, created_at, updated_at)
        select s.app_key, s.collection_key, least(s.last_synced_at, t.started_at),
               jsonb_build_object('imported_from', 'supasaasy_original',
                                  'original_last_synced_at', s.last_synced_at),
               s.created_at, s.updated_at
          from supasaasy_original.sync_state s
          left join lateral (
                select t.started_at
                  from supasaasy_original.sync_job_tasks t
                  join supasaasy_original.sync_jobs j on j.id = t.job_id
                 where j.app_key = s.app_key
                   and t.resource_type = substr(s.collection_key, strpos(s.collection_key, '_') + 1)
                   and t.status = 'completed'
                   and t.completed_at <= s.last_synced_at
                 order by t.completed_at desc
                 limit 1
               ) as t on not (s.last_sync_metadata ? 'mode');
    else
        insert into supasaasy.sync_state
               (app_key, collection_key, last_synced_at, last_sync_metadata, created_at, updated_at)
        select s.app_key, s.collection_key, s.last_synced_at,
               jsonb_build_object('imported_from', 'supasaasy_original',
                                  'original_last_synced_at', s.last_synced_at),
               s.created_at, s.updated_at
          from supasaasy_original.sync_state s;
    end if;
    get diagnostics v_watermarks = row_count;

    foreach v_table in array array['sync_jobs', 'sync_job_tasks', 'webhook_logs'] loop
        if to_regclass('supasaasy_original.' || v_table) is not null then
            execute format('select count(*) from supasaasy_original.%I', v_table) into v_count;
            v_kept := v_kept || format(', %s %s', v_count, v_table);
        end if;
    end loop;

    execute format(
        'comment on schema supasaasy_original is %L',
        format('The TypeScript original''s supasaasy schema, set aside by SupaSaaSy''s migration '
               '20261202000200. Copied into supasaasy by 20261202000800 at %s: %s entities, '
               '%s readers (%s left out: no such Supabase Auth user), %s sync watermarks. '
               'Not copied%s. Drop it once checked: drop schema supasaasy_original cascade;',
               now(), v_entities, v_readers, v_readers_left, v_watermarks,
               case when v_kept = '' then ': nothing else' else ':' || substr(v_kept, 2) end));
end
$$;
