-- Readers: signed-in users allowed to read the synced data, an allow-list by Supabase
-- Auth user id. A listed user reads, with their own JWT through PostgREST, the typed
-- views, `entities` and the sync jobs, tasks and state; other signed-in users read no
-- rows, and `anon` cannot use the schema at all. Writes, the internal tables and every
-- SQL function stay the service role's.
--
--   insert into supasaasy.users (user_id) values ('<auth.users id>');   -- grant
--   delete from supasaasy.users where user_id = '<auth.users id>';      -- revoke
--
-- Deleting the Auth user removes their entry.

create table supasaasy.users (
    user_id uuid primary key references auth.users (id) on delete cascade,
    created_at timestamptz not null default now()
);

-- Whether the caller is a listed reader. Runs with its owner's rights, so that readers
-- need no access to the list; policies call it once per statement.
create function supasaasy.is_reader() returns boolean
language sql stable security definer set search_path = '' as $$
    select exists (select 1 from supasaasy.users u where u.user_id = auth.uid())
$$;

alter table supasaasy.users enable row level security;
create policy service_role_all on supasaasy.users
    for all to service_role using (true) with check (true);
-- A user sees whether they are listed, and no one else.
create policy own_entry on supasaasy.users
    for select to authenticated using (user_id = (select auth.uid()));

create policy readers_select on supasaasy.entities
    for select to authenticated using ((select supasaasy.is_reader()));
create policy readers_select on supasaasy.sync_state
    for select to authenticated using ((select supasaasy.is_reader()));
create policy readers_select on supasaasy.sync_jobs
    for select to authenticated using ((select supasaasy.is_reader()));
create policy readers_select on supasaasy.sync_job_tasks
    for select to authenticated using ((select supasaasy.is_reader()));

revoke all on supasaasy.users from public, anon, authenticated;
grant all on supasaasy.users to service_role;
revoke execute on function supasaasy.is_reader() from public, anon;
grant execute on function supasaasy.is_reader() to authenticated, service_role;

grant usage on schema supasaasy to authenticated;
grant select on supasaasy.entities, supasaasy.sync_state, supasaasy.sync_jobs,
    supasaasy.sync_job_tasks, supasaasy.users to authenticated;
-- Every typed view (they read entities with the caller's rights, so the policy above
-- applies). A migration adding a view grants it the same way.
do $$
declare
    v_view text;
begin
    for v_view in select viewname from pg_views where schemaname = 'supasaasy' loop
        execute format('grant select on supasaasy.%I to authenticated', v_view);
    end loop;
end
$$;
