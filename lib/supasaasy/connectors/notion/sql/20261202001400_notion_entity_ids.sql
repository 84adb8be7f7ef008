-- Notion data sources, pages and users are keyed by Notion's own ids: their row's
-- entities.id is the object's Notion UUID (the value external_id holds as Notion writes
-- it, with dashes), so that they join on id with each other and with data written by
-- the TypeScript original, whose rows (imported by 20261202000800) are keyed so. Data
-- source properties keep generated ids: their external_id is
-- `<data source id>:<property id>`, not a UUID.
--
-- entities.id is unique across apps: where two apps store the same Notion object (two
-- integrations that share a page), the row written first has the Notion id and the
-- others a generated one. The rare two apps inserting the same object at the same moment
-- fail one write on the primary key; the sync or the provider retries it, and it then
-- takes a generated id. An external_id that is not a UUID keeps a generated id.
--
-- Rows stored before this migration are given their Notion id here (once per Notion
-- object: the oldest row of it, unless another row has that id already). Everything else
-- refers to entities by (app_key, collection_key, external_id), which does not change. A
-- foreign key of your own to entities.id would forbid the change: then nothing is
-- rewritten (a notice says so) and only rows inserted from now on are keyed so.

create function supasaasy.notion_entity_id() returns trigger
language plpgsql set search_path = '' as $$
declare
    v_id uuid;
begin
    if new.external_id ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' then
        v_id := new.external_id::uuid;
        if not exists (select 1 from supasaasy.entities e where e.id = v_id) then
            new.id := v_id;
        end if;
    end if;
    return new;
end;
$$;

revoke execute on function supasaasy.notion_entity_id() from public, anon, authenticated;

-- Only on insert: an update never changes a row's id.
create trigger entities_notion_id
    before insert on supasaasy.entities
    for each row
    when (new.collection_key in ('notion_data_source', 'notion_page', 'notion_user'))
    execute function supasaasy.notion_entity_id();

do $$
declare
    v_rewritten bigint;
begin
    if exists (select 1 from pg_constraint
                where confrelid = 'supasaasy.entities'::regclass and contype = 'f') then
        raise notice 'Notion rows keep their ids: a foreign key refers to supasaasy.entities';
        return;
    end if;
    -- Re-keying is not a write of the row: updated_at stays.
    alter table supasaasy.entities disable trigger entities_touch_updated_at;
    update supasaasy.entities e
       set id = k.notion_id
      from (select distinct on (notion_id) s.id, s.notion_id
              from (select x.id, x.created_at,
                           case when x.external_id ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
                                then x.external_id::uuid end as notion_id
                      from supasaasy.entities x
                     where x.collection_key in ('notion_data_source', 'notion_page', 'notion_user')
                   ) s
             where s.notion_id is not null
             order by s.notion_id, s.created_at, s.id) k
     where e.id = k.id
       and e.id <> k.notion_id
       and not exists (select 1 from supasaasy.entities o where o.id = k.notion_id);
    get diagnostics v_rewritten = row_count;
    alter table supasaasy.entities enable trigger entities_touch_updated_at;
    if v_rewritten > 0 then
        raise notice 'Notion rows keyed by their Notion ids: %', v_rewritten;
    end if;
end
$$;
