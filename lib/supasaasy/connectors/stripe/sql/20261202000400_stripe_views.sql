-- Typed views over the Stripe collections of supasaasy.entities. They run with the
-- caller's rights (security_invoker), so row level security on entities applies.

create or replace view supasaasy.stripe_customers with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'email' as email,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'description' as description,
       e.raw_payload ->> 'phone' as phone,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'balance')::bigint as balance,
       (e.raw_payload ->> 'delinquent')::boolean as delinquent,
       e.raw_payload -> 'address' as address,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_customer' and e.deleted_at is null;

create or replace view supasaasy.stripe_products with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'name' as name,
       e.raw_payload ->> 'description' as description,
       (e.raw_payload ->> 'active')::boolean as active,
       e.raw_payload ->> 'type' as product_type,
       case jsonb_typeof(e.raw_payload -> 'default_price')
            when 'object' then e.raw_payload -> 'default_price' ->> 'id'
            else e.raw_payload ->> 'default_price' end as default_price_id,
       e.raw_payload -> 'images' as images,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       to_timestamp((e.raw_payload ->> 'updated')::bigint) as stripe_updated_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_product' and e.deleted_at is null;

create or replace view supasaasy.stripe_prices with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       case jsonb_typeof(e.raw_payload -> 'product')
            when 'object' then e.raw_payload -> 'product' ->> 'id'
            else e.raw_payload ->> 'product' end as product_id,
       (e.raw_payload ->> 'active')::boolean as active,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'unit_amount')::bigint as unit_amount,
       (e.raw_payload ->> 'unit_amount_decimal')::numeric as unit_amount_decimal,
       e.raw_payload ->> 'type' as price_type,
       e.raw_payload ->> 'billing_scheme' as billing_scheme,
       e.raw_payload ->> 'nickname' as nickname,
       e.raw_payload ->> 'lookup_key' as lookup_key,
       e.raw_payload -> 'recurring' ->> 'interval' as recurring_interval,
       (e.raw_payload -> 'recurring' ->> 'interval_count')::int as recurring_interval_count,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_price' and e.deleted_at is null;

create or replace view supasaasy.stripe_plans with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       case jsonb_typeof(e.raw_payload -> 'product')
            when 'object' then e.raw_payload -> 'product' ->> 'id'
            else e.raw_payload ->> 'product' end as product_id,
       (e.raw_payload ->> 'active')::boolean as active,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'amount')::bigint as amount,
       e.raw_payload ->> 'interval' as interval,
       (e.raw_payload ->> 'interval_count')::int as interval_count,
       e.raw_payload ->> 'nickname' as nickname,
       (e.raw_payload ->> 'trial_period_days')::int as trial_period_days,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_plan' and e.deleted_at is null;

create or replace view supasaasy.stripe_subscriptions with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       case jsonb_typeof(e.raw_payload -> 'customer')
            when 'object' then e.raw_payload -> 'customer' ->> 'id'
            else e.raw_payload ->> 'customer' end as customer_id,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'collection_method' as collection_method,
       (e.raw_payload ->> 'cancel_at_period_end')::boolean as cancel_at_period_end,
       to_timestamp((e.raw_payload ->> 'current_period_start')::bigint) as current_period_start,
       to_timestamp((e.raw_payload ->> 'current_period_end')::bigint) as current_period_end,
       to_timestamp((e.raw_payload ->> 'start_date')::bigint) as start_date,
       to_timestamp((e.raw_payload ->> 'trial_start')::bigint) as trial_start,
       to_timestamp((e.raw_payload ->> 'trial_end')::bigint) as trial_end,
       to_timestamp((e.raw_payload ->> 'canceled_at')::bigint) as canceled_at,
       to_timestamp((e.raw_payload ->> 'ended_at')::bigint) as ended_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_subscription' and e.deleted_at is null;

create or replace view supasaasy.stripe_subscription_items with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'subscription' as subscription_id,
       coalesce(e.raw_payload -> 'price' ->> 'id', e.raw_payload -> 'plan' ->> 'id') as price_id,
       (e.raw_payload ->> 'quantity')::int as quantity,
       e.raw_payload -> 'metadata' as metadata,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_subscription_item' and e.deleted_at is null;

revoke all on supasaasy.stripe_customers, supasaasy.stripe_products, supasaasy.stripe_prices,
    supasaasy.stripe_plans, supasaasy.stripe_subscriptions, supasaasy.stripe_subscription_items
    from public, anon, authenticated;
grant select on supasaasy.stripe_customers, supasaasy.stripe_products, supasaasy.stripe_prices,
    supasaasy.stripe_plans, supasaasy.stripe_subscriptions, supasaasy.stripe_subscription_items
    to service_role;
