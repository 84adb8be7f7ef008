-- Typed views of Stripe's billing objects (the resources added with them: invoices and
-- their lines, charges, payment intents, refunds, disputes, balance transactions,
-- coupons, promotion codes, credit notes, tax rates, setup intents, Checkout sessions,
-- subscription schedules), and two analysis views: stripe_mrr and
-- stripe_failed_payments. Amounts are integers in the currency's smallest unit, with
-- the currency beside them; Stripe's Unix times are timestamptz. Like the other typed
-- views they run with the caller's rights (security_invoker).

-- The id of an expandable field: the id itself, or the `id` of the expanded object.
create function supasaasy.stripe_ref(p jsonb) returns text
language sql immutable parallel safe as $$
    select case jsonb_typeof(p) when 'object' then p ->> 'id' when 'string' then p #>> '{}' end
$$;

create view supasaasy.stripe_invoices with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       supasaasy.stripe_ref(e.raw_payload -> 'subscription') as subscription_id,
       e.raw_payload ->> 'number' as number,
       e.raw_payload ->> 'status' as status,
       (e.raw_payload ->> 'paid')::boolean as paid,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'subtotal')::bigint as subtotal,
       (e.raw_payload ->> 'tax')::bigint as tax,
       (e.raw_payload ->> 'total')::bigint as total,
       (e.raw_payload ->> 'amount_due')::bigint as amount_due,
       (e.raw_payload ->> 'amount_paid')::bigint as amount_paid,
       (e.raw_payload ->> 'amount_remaining')::bigint as amount_remaining,
       (e.raw_payload ->> 'attempt_count')::int as attempt_count,
       e.raw_payload ->> 'billing_reason' as billing_reason,
       e.raw_payload ->> 'collection_method' as collection_method,
       e.raw_payload ->> 'customer_email' as customer_email,
       e.raw_payload ->> 'hosted_invoice_url' as hosted_invoice_url,
       to_timestamp((e.raw_payload ->> 'period_start')::bigint) as period_start,
       to_timestamp((e.raw_payload ->> 'period_end')::bigint) as period_end,
       to_timestamp((e.raw_payload ->> 'due_date')::bigint) as due_date,
       to_timestamp((e.raw_payload -> 'status_transitions' ->> 'finalized_at')::bigint)
           as finalized_at,
       to_timestamp((e.raw_payload -> 'status_transitions' ->> 'paid_at')::bigint) as paid_at,
       to_timestamp((e.raw_payload -> 'status_transitions' ->> 'voided_at')::bigint) as voided_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_invoice' and e.deleted_at is null;

create view supasaasy.stripe_invoice_line_items with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'invoice' as invoice_id,
       e.raw_payload ->> 'type' as line_type,
       e.raw_payload ->> 'description' as description,
       (e.raw_payload ->> 'amount')::bigint as amount,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'quantity')::int as quantity,
       coalesce(e.raw_payload -> 'price' ->> 'id', e.raw_payload -> 'plan' ->> 'id') as price_id,
       supasaasy.stripe_ref(e.raw_payload -> 'subscription') as subscription_id,
       supasaasy.stripe_ref(e.raw_payload -> 'subscription_item') as subscription_item_id,
       (e.raw_payload ->> 'proration')::boolean as proration,
       to_timestamp((e.raw_payload -> 'period' ->> 'start')::bigint) as period_start,
       to_timestamp((e.raw_payload -> 'period' ->> 'end')::bigint) as period_end,
       e.raw_payload -> 'metadata' as metadata,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_invoice_line_item' and e.deleted_at is null;

create view supasaasy.stripe_charges with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_intent') as payment_intent_id,
       supasaasy.stripe_ref(e.raw_payload -> 'invoice') as invoice_id,
       e.raw_payload ->> 'status' as status,
       (e.raw_payload ->> 'paid')::boolean as paid,
       (e.raw_payload ->> 'captured')::boolean as captured,
       (e.raw_payload ->> 'refunded')::boolean as refunded,
       (e.raw_payload ->> 'disputed')::boolean as disputed,
       (e.raw_payload ->> 'amount')::bigint as amount,
       (e.raw_payload ->> 'amount_captured')::bigint as amount_captured,
       (e.raw_payload ->> 'amount_refunded')::bigint as amount_refunded,
       e.raw_payload ->> 'currency' as currency,
       e.raw_payload ->> 'failure_code' as failure_code,
       e.raw_payload ->> 'failure_message' as failure_message,
       e.raw_payload -> 'outcome' ->> 'type' as outcome_type,
       e.raw_payload -> 'outcome' ->> 'reason' as outcome_reason,
       e.raw_payload -> 'outcome' ->> 'network_status' as outcome_network_status,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_method') as payment_method_id,
       supasaasy.stripe_ref(e.raw_payload -> 'balance_transaction') as balance_transaction_id,
       e.raw_payload ->> 'description' as description,
       e.raw_payload ->> 'receipt_email' as receipt_email,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_charge' and e.deleted_at is null;

create view supasaasy.stripe_payment_intents with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       supasaasy.stripe_ref(e.raw_payload -> 'invoice') as invoice_id,
       e.raw_payload ->> 'status' as status,
       (e.raw_payload ->> 'amount')::bigint as amount,
       (e.raw_payload ->> 'amount_received')::bigint as amount_received,
       (e.raw_payload ->> 'amount_capturable')::bigint as amount_capturable,
       e.raw_payload ->> 'currency' as currency,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_method') as payment_method_id,
       supasaasy.stripe_ref(e.raw_payload -> 'latest_charge') as latest_charge_id,
       e.raw_payload ->> 'cancellation_reason' as cancellation_reason,
       to_timestamp((e.raw_payload ->> 'canceled_at')::bigint) as canceled_at,
       e.raw_payload -> 'last_payment_error' ->> 'code' as last_payment_error_code,
       e.raw_payload -> 'last_payment_error' ->> 'message' as last_payment_error_message,
       e.raw_payload ->> 'description' as description,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_payment_intent' and e.deleted_at is null;

create view supasaasy.stripe_refunds with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'charge') as charge_id,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_intent') as payment_intent_id,
       e.raw_payload ->> 'status' as status,
       (e.raw_payload ->> 'amount')::bigint as amount,
       e.raw_payload ->> 'currency' as currency,
       e.raw_payload ->> 'reason' as reason,
       e.raw_payload ->> 'failure_reason' as failure_reason,
       supasaasy.stripe_ref(e.raw_payload -> 'balance_transaction') as balance_transaction_id,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_refund' and e.deleted_at is null;

create view supasaasy.stripe_disputes with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'charge') as charge_id,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_intent') as payment_intent_id,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'reason' as reason,
       (e.raw_payload ->> 'amount')::bigint as amount,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'is_charge_refundable')::boolean as is_charge_refundable,
       to_timestamp((e.raw_payload -> 'evidence_details' ->> 'due_by')::bigint) as evidence_due_by,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_dispute' and e.deleted_at is null;

create view supasaasy.stripe_balance_transactions with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'type' as transaction_type,
       e.raw_payload ->> 'reporting_category' as reporting_category,
       supasaasy.stripe_ref(e.raw_payload -> 'source') as source_id,
       e.raw_payload ->> 'status' as status,
       (e.raw_payload ->> 'amount')::bigint as amount,
       (e.raw_payload ->> 'fee')::bigint as fee,
       (e.raw_payload ->> 'net')::bigint as net,
       e.raw_payload ->> 'currency' as currency,
       (e.raw_payload ->> 'exchange_rate')::numeric as exchange_rate,
       to_timestamp((e.raw_payload ->> 'available_on')::bigint) as available_on,
       e.raw_payload ->> 'description' as description,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_balance_transaction' and e.deleted_at is null;

create view supasaasy.stripe_coupons with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'name' as name,
       (e.raw_payload ->> 'valid')::boolean as valid,
       (e.raw_payload ->> 'percent_off')::numeric as percent_off,
       (e.raw_payload ->> 'amount_off')::bigint as amount_off,
       e.raw_payload ->> 'currency' as currency,
       e.raw_payload ->> 'duration' as duration,
       (e.raw_payload ->> 'duration_in_months')::int as duration_in_months,
       (e.raw_payload ->> 'max_redemptions')::int as max_redemptions,
       (e.raw_payload ->> 'times_redeemed')::int as times_redeemed,
       to_timestamp((e.raw_payload ->> 'redeem_by')::bigint) as redeem_by,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_coupon' and e.deleted_at is null;

create view supasaasy.stripe_promotion_codes with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'code' as code,
       supasaasy.stripe_ref(e.raw_payload -> 'coupon') as coupon_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       (e.raw_payload ->> 'active')::boolean as active,
       (e.raw_payload ->> 'max_redemptions')::int as max_redemptions,
       (e.raw_payload ->> 'times_redeemed')::int as times_redeemed,
       to_timestamp((e.raw_payload ->> 'expires_at')::bigint) as expires_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_promotion_code' and e.deleted_at is null;

create view supasaasy.stripe_credit_notes with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'invoice') as invoice_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       e.raw_payload ->> 'number' as number,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'type' as credit_note_type,
       e.raw_payload ->> 'reason' as reason,
       (e.raw_payload ->> 'amount')::bigint as amount,
       (e.raw_payload ->> 'subtotal')::bigint as subtotal,
       (e.raw_payload ->> 'total')::bigint as total,
       e.raw_payload ->> 'currency' as currency,
       supasaasy.stripe_ref(e.raw_payload -> 'refund') as refund_id,
       e.raw_payload ->> 'memo' as memo,
       to_timestamp((e.raw_payload ->> 'voided_at')::bigint) as voided_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_credit_note' and e.deleted_at is null;

create view supasaasy.stripe_tax_rates with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       e.raw_payload ->> 'display_name' as display_name,
       e.raw_payload ->> 'description' as description,
       e.raw_payload ->> 'jurisdiction' as jurisdiction,
       e.raw_payload ->> 'country' as country,
       e.raw_payload ->> 'state' as state,
       (e.raw_payload ->> 'percentage')::numeric as percentage,
       (e.raw_payload ->> 'inclusive')::boolean as inclusive,
       (e.raw_payload ->> 'active')::boolean as active,
       e.raw_payload ->> 'tax_type' as tax_type,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_tax_rate' and e.deleted_at is null;

create view supasaasy.stripe_setup_intents with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_method') as payment_method_id,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'usage' as usage,
       e.raw_payload ->> 'cancellation_reason' as cancellation_reason,
       e.raw_payload -> 'last_setup_error' ->> 'code' as last_setup_error_code,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_setup_intent' and e.deleted_at is null;

create view supasaasy.stripe_checkout_sessions with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       coalesce(e.raw_payload -> 'customer_details' ->> 'email',
                e.raw_payload ->> 'customer_email') as customer_email,
       e.raw_payload ->> 'mode' as mode,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'payment_status' as payment_status,
       supasaasy.stripe_ref(e.raw_payload -> 'payment_intent') as payment_intent_id,
       supasaasy.stripe_ref(e.raw_payload -> 'subscription') as subscription_id,
       supasaasy.stripe_ref(e.raw_payload -> 'invoice') as invoice_id,
       (e.raw_payload ->> 'amount_subtotal')::bigint as amount_subtotal,
       (e.raw_payload ->> 'amount_total')::bigint as amount_total,
       e.raw_payload ->> 'currency' as currency,
       to_timestamp((e.raw_payload ->> 'expires_at')::bigint) as expires_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_checkout_session' and e.deleted_at is null;

create view supasaasy.stripe_subscription_schedules with (security_invoker = true) as
select e.id, e.app_key, e.external_id,
       supasaasy.stripe_ref(e.raw_payload -> 'customer') as customer_id,
       supasaasy.stripe_ref(e.raw_payload -> 'subscription') as subscription_id,
       e.raw_payload ->> 'status' as status,
       e.raw_payload ->> 'end_behavior' as end_behavior,
       to_timestamp((e.raw_payload -> 'current_phase' ->> 'start_date')::bigint)
           as current_phase_start,
       to_timestamp((e.raw_payload -> 'current_phase' ->> 'end_date')::bigint) as current_phase_end,
       to_timestamp((e.raw_payload ->> 'canceled_at')::bigint) as canceled_at,
       to_timestamp((e.raw_payload ->> 'completed_at')::bigint) as completed_at,
       to_timestamp((e.raw_payload ->> 'released_at')::bigint) as released_at,
       e.raw_payload -> 'metadata' as metadata,
       (e.raw_payload ->> 'livemode')::boolean as livemode,
       to_timestamp((e.raw_payload ->> 'created')::bigint) as stripe_created_at,
       e.archived_at, e.created_at, e.updated_at
  from supasaasy.entities e
 where e.collection_key = 'stripe_subscription_schedule' and e.deleted_at is null;


-- Monthly recurring revenue per customer and currency, from the items of its active
-- (and past-due) subscriptions: each licensed item's price times its quantity,
-- normalised to a month (a year is 12 months, a week 52/12 of a month, a day 365/12
-- of one). Metered and tiered prices (no unit amount) and discounts are not counted.
create view supasaasy.stripe_mrr with (security_invoker = true) as
select s.app_key, s.customer_id, i.raw_payload -> 'price' ->> 'currency' as currency,
       round(sum(
           (i.raw_payload -> 'price' ->> 'unit_amount')::numeric
           * coalesce((i.raw_payload ->> 'quantity')::numeric, 1)
           * case i.raw_payload -> 'price' -> 'recurring' ->> 'interval'
                 when 'month' then 1 when 'year' then 1 / 12.0
                 when 'week' then 52 / 12.0 when 'day' then 365 / 12.0 end
           / coalesce((i.raw_payload -> 'price' -> 'recurring' ->> 'interval_count')::numeric, 1)
       ))::bigint as mrr,
       count(distinct s.external_id) as subscriptions
  from supasaasy.stripe_subscriptions s
  join supasaasy.entities i
    on i.app_key = s.app_key and i.collection_key = 'stripe_subscription_item'
   and i.raw_payload ->> 'subscription' = s.external_id and i.deleted_at is null
 where s.status in ('active', 'past_due')
   and i.raw_payload -> 'price' ->> 'unit_amount' is not null
   and coalesce(i.raw_payload -> 'price' -> 'recurring' ->> 'usage_type', 'licensed') = 'licensed'
 group by s.app_key, s.customer_id, i.raw_payload -> 'price' ->> 'currency';

-- Charges that failed, with why: the card network's and Stripe's reasons.
create view supasaasy.stripe_failed_payments with (security_invoker = true) as
select c.app_key, c.external_id as charge_id, c.customer_id, c.invoice_id,
       c.payment_intent_id, c.amount, c.currency, c.failure_code, c.failure_message,
       c.outcome_type, c.outcome_reason, c.outcome_network_status, c.stripe_created_at
  from supasaasy.stripe_charges c
 where c.status = 'failed';

revoke all on function supasaasy.stripe_ref(jsonb) from public, anon;
grant execute on function supasaasy.stripe_ref(jsonb) to authenticated, service_role;
revoke all on supasaasy.stripe_invoices, supasaasy.stripe_invoice_line_items, supasaasy.stripe_charges,
    supasaasy.stripe_payment_intents, supasaasy.stripe_refunds, supasaasy.stripe_disputes,
    supasaasy.stripe_balance_transactions, supasaasy.stripe_coupons, supasaasy.stripe_promotion_codes,
    supasaasy.stripe_credit_notes, supasaasy.stripe_tax_rates, supasaasy.stripe_setup_intents,
    supasaasy.stripe_checkout_sessions, supasaasy.stripe_subscription_schedules, supasaasy.stripe_mrr,
    supasaasy.stripe_failed_payments
    from public, anon, authenticated;
grant select on supasaasy.stripe_invoices, supasaasy.stripe_invoice_line_items, supasaasy.stripe_charges,
    supasaasy.stripe_payment_intents, supasaasy.stripe_refunds, supasaasy.stripe_disputes,
    supasaasy.stripe_balance_transactions, supasaasy.stripe_coupons, supasaasy.stripe_promotion_codes,
    supasaasy.stripe_credit_notes, supasaasy.stripe_tax_rates, supasaasy.stripe_setup_intents,
    supasaasy.stripe_checkout_sessions, supasaasy.stripe_subscription_schedules, supasaasy.stripe_mrr,
    supasaasy.stripe_failed_payments
    to service_role;
-- Readers (supasaasy.users) read them as they read the other typed views.
grant select on supasaasy.stripe_invoices, supasaasy.stripe_invoice_line_items, supasaasy.stripe_charges,
    supasaasy.stripe_payment_intents, supasaasy.stripe_refunds, supasaasy.stripe_disputes,
    supasaasy.stripe_balance_transactions, supasaasy.stripe_coupons, supasaasy.stripe_promotion_codes,
    supasaasy.stripe_credit_notes, supasaasy.stripe_tax_rates, supasaasy.stripe_setup_intents,
    supasaasy.stripe_checkout_sessions, supasaasy.stripe_subscription_schedules, supasaasy.stripe_mrr,
    supasaasy.stripe_failed_payments
    to authenticated;
