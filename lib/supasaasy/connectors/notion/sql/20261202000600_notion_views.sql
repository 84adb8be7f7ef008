-- Typed views over the Notion collections of supasaasy.entities. They run with the
-- caller's rights (security_invoker), so row level security on entities applies.

create or replace view supasaasy.notion_data_sources with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       (select string_agg(t.item ->> 'plain_text', '' order by t.n)
          from jsonb_array_elements(case jsonb_typeof(e.raw_payload -> 'title')
                                    when 'array' then e.raw_payload -> 'title'
                                    else '[]' end) with ordinality as t (item, n)) as title,
       (select string_agg(t.item ->> 'plain_text', '' order by t.n)
          from jsonb_array_elements(case jsonb_typeof(e.raw_payload -> 'description')
                                    when 'array' then e.raw_payload -> 'description'
                                    else '[]' end) with ordinality as t (item, n)) as description,
       e.raw_payload -> 'parent' ->> 'database_id' as database_id,
       (e.raw_payload ->> 'archived')::boolean as archived,
       (e.raw_payload ->> 'in_trash')::boolean as in_trash,
       e.raw_payload ->> 'url' as url,
       e.raw_payload ->> 'public_url' as public_url,
       e.raw_payload -> 'icon' as icon,
       e.raw_payload -> 'cover' as cover,
       e.raw_payload -> 'created_by' ->> 'id' as created_by_id,
       e.raw_payload -> 'last_edited_by' ->> 'id' as last_edited_by_id,
       (e.raw_payload ->> 'created_time')::timestamptz as notion_created_at,
       (e.raw_payload ->> 'last_edited_time')::timestamptz as notion_last_edited_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'notion_data_source' and e.deleted_at is null;

create or replace view supasaasy.notion_data_source_properties with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'data_source_id' as data_source_id,
       e.raw_payload ->> 'property_id' as property_id,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'type' as type,
       e.raw_payload -> 'config' as config,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'notion_data_source_property' and e.deleted_at is null;

create or replace view supasaasy.notion_pages with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload -> 'parent' ->> 'data_source_id' as data_source_id,
       e.raw_payload -> 'parent' ->> 'database_id' as database_id,
       (select string_agg(t.item ->> 'plain_text', '' order by t.n)
          from jsonb_each(case jsonb_typeof(e.raw_payload -> 'properties')
                          when 'object' then e.raw_payload -> 'properties'
                          else '{}' end) as p (name, value),
               jsonb_array_elements(case jsonb_typeof(p.value -> 'title')
                                    when 'array' then p.value -> 'title'
                                    else '[]' end) with ordinality as t (item, n)
         where p.value ->> 'type' = 'title') as title,
       (e.raw_payload ->> 'archived')::boolean as archived,
       (e.raw_payload ->> 'in_trash')::boolean as in_trash,
       e.raw_payload ->> 'url' as url,
       e.raw_payload ->> 'public_url' as public_url,
       e.raw_payload -> 'icon' as icon,
       e.raw_payload -> 'cover' as cover,
       e.raw_payload -> 'properties' as properties,
       e.raw_payload -> 'created_by' ->> 'id' as created_by_id,
       e.raw_payload -> 'last_edited_by' ->> 'id' as last_edited_by_id,
       (e.raw_payload ->> 'created_time')::timestamptz as notion_created_at,
       (e.raw_payload ->> 'last_edited_time')::timestamptz as notion_last_edited_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'notion_page' and e.deleted_at is null;

create or replace view supasaasy.notion_users with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'avatar_url' as avatar_url,
       e.raw_payload ->> 'type' as type,
       e.raw_payload -> 'person' ->> 'email' as email,
       e.raw_payload -> 'bot' -> 'owner' ->> 'type' as bot_owner_type,
       e.raw_payload -> 'bot' ->> 'workspace_name' as bot_workspace_name,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'notion_user' and e.deleted_at is null;

revoke all on supasaasy.notion_data_sources, supasaasy.notion_data_source_properties,
    supasaasy.notion_pages, supasaasy.notion_users
    from public, anon, authenticated;
grant select on supasaasy.notion_data_sources, supasaasy.notion_data_source_properties,
    supasaasy.notion_pages, supasaasy.notion_users
    to service_role;
