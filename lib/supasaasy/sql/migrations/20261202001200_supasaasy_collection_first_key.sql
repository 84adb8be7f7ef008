-- The typed views read one collection of entities across apps (`where collection_key =
-- ...`), and PostgreSQL 15 to 17 cannot use an index that leads with another column for
-- that: a view of 200 products read every row of every app. The unique key keeps its
-- name and columns, now with the collection first; it remains the only index lookups by
-- app and collection need, so writes pay for no extra index. Building it on a large
-- table takes a while and holds writes back meanwhile: apply this migration while no
-- sync runs.

create unique index entities_collection_app_external_key
    on supasaasy.entities (collection_key, app_key, external_id);
alter table supasaasy.entities drop constraint entities_app_collection_external_key;
alter index supasaasy.entities_collection_app_external_key
    rename to entities_app_collection_external_key;
alter table supasaasy.entities add constraint entities_app_collection_external_key
    unique using index entities_app_collection_external_key;
