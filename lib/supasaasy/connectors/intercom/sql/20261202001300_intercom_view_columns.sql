-- Two Intercom fields the typed views did not read: a contact's browser_language and a
-- conversation's statistics.count_assignments. The views' columns keep their names, types
-- and places; the new ones come last (create or replace view can only add at the end).
-- Privileges and security_invoker stay as 20261202000500 set them.

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
       e.archived_at, e.created_at, e.updated_at,
       e.raw_payload ->> 'browser_language' as browser_language
  from supasaasy.entities e
 where e.collection_key = 'intercom_contact' and e.deleted_at is null;

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
       e.archived_at, e.created_at, e.updated_at,
       (e.raw_payload -> 'statistics' ->> 'count_assignments')::int as assignments_count
  from supasaasy.entities e
 where e.collection_key = 'intercom_conversation' and e.deleted_at is null;
