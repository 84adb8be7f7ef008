-- Upgrading from the TypeScript original (leftbrainit/supasaasy), step 1 of 2: its
-- `supasaasy` schema is set aside as `supasaasy_original`, so that the migrations after
-- this one build SupaSaaSy's schema as on a new project. Step 2
-- (20261202000800_supasaasy_import_original) copies its rows back in.
--
-- Changes nothing unless the database has the original's schema: on a new project
-- (no supasaasy.entities) and on SupaSaaSy's own schema (it has supasaasy.claim_task)
-- this is a no-op.
--
-- What moves: `alter schema ... rename` takes every object of the schema along (tables
-- and rows, views, functions, triggers, policies, grants, default privileges, comments).
-- Objects refer to each other by oid, so they keep pointing at each other under the new
-- name. So would objects OUTSIDE the schema that depend on it (a view of your own over
-- supasaasy.entities, a foreign key to it, a policy reading supasaasy.users, a table in a
-- publication): they would quietly read the set-aside copy from then on. This migration
-- refuses while there are any, naming them; drop them (or take the table out of the
-- publication), run it again, and create them again afterwards. (Function bodies and
-- pg_cron commands name objects as text: they will find the new schema's.)
--
-- The original's worker trigger (spawn_worker_on_job_change, whose function calls
-- pg_net with an admin key) is dropped, not set aside. The set-aside schema is for the
-- database owner only: the API roles lose their access to it.

do $$
declare
    v_ns oid := to_regnamespace('supasaasy');
    v_dependents text;
begin
    if v_ns is null or to_regclass('supasaasy.entities') is null then
        return;  -- a new project
    end if;
    if exists (select 1 from pg_proc where pronamespace = v_ns and proname = 'claim_task') then
        return;  -- SupaSaaSy's own schema (every version of it has claim_task)
    end if;
    -- Every version of the original has this trigger function.
    if to_regprocedure('supasaasy.update_updated_at_column()') is null then
        raise exception 'schema supasaasy has an entities table but is neither SupaSaaSy''s schema nor the TypeScript original''s'
            using hint = 'move or drop it yourself, then migrate again';
    end if;
    if to_regnamespace('supasaasy_original') is not null then
        raise exception 'cannot set the original''s schema aside: schema supasaasy_original already exists'
            using hint = 'drop or rename it (an earlier upgrade''s leftovers?), then migrate again';
    end if;

    select string_agg(distinct dependent, ', ' order by dependent) into v_dependents
      from (
        select (select i.type || ' ' || i.identity
                  from pg_identify_object(
                       case d.classid when 'pg_rewrite'::regclass then 'pg_class'::regclass
                                      else d.classid end,
                       case d.classid when 'pg_rewrite'::regclass
                            then (select r.ev_class from pg_rewrite r where r.oid = d.objid)
                            else d.objid end,
                       0) as i) as dependent,
               -- the schema of the dependent object (for rules, triggers, policies and
               -- defaults: of their table); null for objects outside any schema
               case d.classid
                   when 'pg_class'::regclass then
                       (select relnamespace from pg_class where oid = d.objid)
                   when 'pg_proc'::regclass then
                       (select pronamespace from pg_proc where oid = d.objid)
                   when 'pg_type'::regclass then
                       (select typnamespace from pg_type where oid = d.objid)
                   when 'pg_constraint'::regclass then
                       (select connamespace from pg_constraint where oid = d.objid)
                   when 'pg_rewrite'::regclass then
                       (select c.relnamespace from pg_rewrite r join pg_class c on c.oid = r.ev_class
                         where r.oid = d.objid)
                   when 'pg_trigger'::regclass then
                       (select c.relnamespace from pg_trigger t join pg_class c on c.oid = t.tgrelid
                         where t.oid = d.objid)
                   when 'pg_policy'::regclass then
                       (select c.relnamespace from pg_policy p join pg_class c on c.oid = p.polrelid
                         where p.oid = d.objid)
                   when 'pg_attrdef'::regclass then
                       (select c.relnamespace from pg_attrdef a join pg_class c on c.oid = a.adrelid
                         where a.oid = d.objid)
               end as dependent_ns
          from pg_depend d
         where d.deptype in ('n', 'a')
           and case d.refclassid
                   when 'pg_class'::regclass then
                       (select relnamespace from pg_class where oid = d.refobjid)
                   when 'pg_proc'::regclass then
                       (select pronamespace from pg_proc where oid = d.refobjid)
                   when 'pg_type'::regclass then
                       (select typnamespace from pg_type where oid = d.refobjid)
               end = v_ns
      ) as dependents
     where dependent_ns is distinct from v_ns;
    if v_dependents is not null then
        raise exception 'objects outside schema supasaasy depend on the TypeScript original''s schema: %', v_dependents
            using hint = 'drop them (or take the tables out of the publication), migrate again, then create them again on the new schema';
    end if;

    drop trigger if exists spawn_worker_on_job_change on supasaasy.sync_jobs;
    drop function if exists supasaasy.spawn_worker();

    alter schema supasaasy rename to supasaasy_original;
    revoke all on schema supasaasy_original from public, anon, authenticated, service_role;
    comment on schema supasaasy_original is
        'The TypeScript original''s supasaasy schema, set aside by SupaSaaSy''s migration 20261202000200.';
end
$$;
