-- Typed views over the Intercom collections of supasaasy.entities. They run with the
-- caller's rights (security_invoker), so row level security on entities applies.
-- Intercom ids are text (as external_id is), so that views join on them directly;
-- its timestamps are epoch seconds.

create or replace view supasaasy.intercom_companies with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'company_id' as company_id,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'website' as website,
       e.raw_payload ->> 'industry' as industry,
       (e.raw_payload ->> 'size')::bigint as size,
       (e.raw_payload ->> 'monthly_spend')::numeric as monthly_spend,
       (e.raw_payload ->> 'session_count')::bigint as session_count,
       (e.raw_payload ->> 'user_count')::bigint as user_count,
       e.raw_payload -> 'plan' ->> 'id' as plan_id,
       e.raw_payload -> 'plan' ->> 'name' as plan_name,
       e.raw_payload -> 'custom_attributes' as custom_attributes,
       to_timestamp((e.raw_payload ->> 'remote_created_at')::bigint) as remote_created_at,
       to_timestamp((e.raw_payload ->> 'last_request_at')::bigint) as last_request_at,
       to_timestamp((e.raw_payload ->> 'created_at')::bigint) as intercom_created_at,
       to_timestamp((e.raw_payload ->> 'updated_at')::bigint) as intercom_updated_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'intercom_company' and e.deleted_at is null;

create or replace view supasaasy.intercom_contacts with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'external_id' as contact_external_id,
       e.raw_payload ->> 'role' as role,
       e.raw_payload ->> 'email' as email,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'phone' as phone,
       case jsonb_typeof(e.raw_payload -> 'avatar')
            when 'object' then e.raw_payload -> 'avatar' ->> 'image_url'
            else e.raw_payload ->> 'avatar' end as avatar_url,
       e.raw_payload ->> 'owner_id' as owner_id,
       (e.raw_payload ->> 'has_hard_bounced')::boolean as has_hard_bounced,
       (e.raw_payload ->> 'marked_email_as_spam')::boolean as marked_email_as_spam,
       (e.raw_payload ->> 'unsubscribed_from_emails')::boolean as unsubscribed_from_emails,
       e.raw_payload ->> 'language_override' as language_override,
       e.raw_payload ->> 'browser' as browser,
       e.raw_payload ->> 'os' as os,
       e.raw_payload -> 'location' ->> 'country' as country,
       e.raw_payload -> 'location' ->> 'region' as region,
       e.raw_payload -> 'location' ->> 'city' as city,
       e.raw_payload -> 'custom_attributes' as custom_attributes,
       to_timestamp((e.raw_payload ->> 'signed_up_at')::bigint) as signed_up_at,
       to_timestamp((e.raw_payload ->> 'last_seen_at')::bigint) as last_seen_at,
       to_timestamp((e.raw_payload ->> 'last_replied_at')::bigint) as last_replied_at,
       to_timestamp((e.raw_payload ->> 'last_contacted_at')::bigint) as last_contacted_at,
       to_timestamp((e.raw_payload ->> 'created_at')::bigint) as intercom_created_at,
       to_timestamp((e.raw_payload ->> 'updated_at')::bigint) as intercom_updated_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'intercom_contact' and e.deleted_at is null;

create or replace view supasaasy.intercom_admins with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'email' as email,
       e.raw_payload ->> 'job_title' as job_title,
       (e.raw_payload ->> 'away_mode_enabled')::boolean as away_mode_enabled,
       (e.raw_payload ->> 'away_mode_reassign')::boolean as away_mode_reassign,
       (e.raw_payload ->> 'has_inbox_seat')::boolean as has_inbox_seat,
       e.raw_payload -> 'team_ids' as team_ids,
       case jsonb_typeof(e.raw_payload -> 'avatar')
            when 'object' then e.raw_payload -> 'avatar' ->> 'image_url'
            else e.raw_payload ->> 'avatar' end as avatar_url,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'intercom_admin' and e.deleted_at is null;

create or replace view supasaasy.intercom_conversations with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'title' as title,
       e.raw_payload ->> 'state' as state,
       (e.raw_payload ->> 'open')::boolean as open,
       (e.raw_payload ->> 'read')::boolean as read,
       e.raw_payload ->> 'priority' as priority,
       e.raw_payload ->> 'admin_assignee_id' as admin_assignee_id,
       e.raw_payload ->> 'team_assignee_id' as team_assignee_id,
       jsonb_path_query_array(e.raw_payload, '$.contacts.contacts[*].id') as contact_ids,
       e.raw_payload -> 'source' ->> 'type' as source_type,
       e.raw_payload -> 'source' ->> 'delivered_as' as source_delivered_as,
       e.raw_payload -> 'source' ->> 'subject' as source_subject,
       e.raw_payload -> 'source' -> 'author' ->> 'type' as source_author_type,
       e.raw_payload -> 'source' -> 'author' ->> 'id' as source_author_id,
       (e.raw_payload -> 'conversation_rating' ->> 'rating')::int as rating,
       e.raw_payload -> 'conversation_rating' ->> 'remark' as rating_remark,
       (e.raw_payload -> 'statistics' ->> 'count_conversation_parts')::int as parts_count,
       (e.raw_payload -> 'statistics' ->> 'count_reopens')::int as reopens_count,
       e.raw_payload -> 'custom_attributes' as custom_attributes,
       to_timestamp((e.raw_payload ->> 'waiting_since')::bigint) as waiting_since,
       to_timestamp((e.raw_payload ->> 'snoozed_until')::bigint) as snoozed_until,
       to_timestamp((e.raw_payload ->> 'created_at')::bigint) as intercom_created_at,
       to_timestamp((e.raw_payload ->> 'updated_at')::bigint) as intercom_updated_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'intercom_conversation' and e.deleted_at is null;

create or replace view supasaasy.intercom_conversation_parts with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'conversation_id' as conversation_id,
       e.raw_payload ->> 'part_type' as part_type,
       e.raw_payload ->> 'body' as body,
       e.raw_payload -> 'author' ->> 'type' as author_type,
       e.raw_payload -> 'author' ->> 'id' as author_id,
       e.raw_payload -> 'author' ->> 'name' as author_name,
       e.raw_payload -> 'author' ->> 'email' as author_email,
       e.raw_payload -> 'assigned_to' ->> 'type' as assigned_to_type,
       e.raw_payload -> 'assigned_to' ->> 'id' as assigned_to_id,
       (e.raw_payload ->> 'redacted')::boolean as redacted,
       e.raw_payload -> 'attachments' as attachments,
       to_timestamp((e.raw_payload ->> 'notified_at')::bigint) as notified_at,
       to_timestamp((e.raw_payload ->> 'created_at')::bigint) as intercom_created_at,
       to_timestamp((e.raw_payload ->> 'updated_at')::bigint) as intercom_updated_at,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'intercom_conversation_part' and e.deleted_at is null;

revoke all on supasaasy.intercom_companies, supasaasy.intercom_contacts,
    supasaasy.intercom_admins, supasaasy.intercom_conversations,
    supasaasy.intercom_conversation_parts
    from public, anon, authenticated;
grant select on supasaasy.intercom_companies, supasaasy.intercom_contacts,
    supasaasy.intercom_admins, supasaasy.intercom_conversations,
    supasaasy.intercom_conversation_parts
    to service_role;
