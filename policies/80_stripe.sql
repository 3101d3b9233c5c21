-- Stripe: a user reads its checkout sessions, credit purchases, payment and invoice logs; the
-- event store is paycore's. The webhook's role calls apply_stripe_event and begins checkouts.

grant usage on schema paycore to paycore_webhook;

revoke all on table paycore.stripe_events from public;

alter table public.checkout_sessions enable row level security;
revoke all on table public.checkout_sessions from public, anon, authenticated, service_role;
grant select on table public.checkout_sessions to authenticated, service_role;
create policy checkout_sessions_select_own on public.checkout_sessions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.user_credit_purchases enable row level security;
revoke all on table public.user_credit_purchases from public, anon, authenticated, service_role;
grant select on table public.user_credit_purchases to authenticated, service_role;
create policy user_credit_purchases_select_own on public.user_credit_purchases
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.payment_logs enable row level security;
revoke all on table public.payment_logs from public, anon, authenticated, service_role;
grant select on table public.payment_logs to authenticated, service_role;
create policy payment_logs_select_own on public.payment_logs
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.invoice_logs enable row level security;
revoke all on table public.invoice_logs from public, anon, authenticated, service_role;
grant select on table public.invoice_logs to authenticated, service_role;
create policy invoice_logs_select_own on public.invoice_logs
for select to authenticated
using (user_id = (select auth.uid()));

revoke all on function paycore.stripe_time(jsonb) from public;
revoke all on function paycore.stripe_amount(jsonb) from public;
revoke all on function paycore.stripe_price_id(jsonb) from public;
revoke all on function paycore.stripe_known_line(jsonb) from public;
revoke all on function paycore.stripe_user(jsonb, text) from public;
revoke all on function paycore.platform_credits() from public;
revoke all on function paycore.stripe_checkout_session(jsonb) from public;
revoke all on function paycore.stripe_subscription(jsonb) from public;
revoke all on function paycore.stripe_invoice(jsonb) from public;
revoke all on function paycore.stripe_charge_refunded(jsonb) from public;
revoke all on function paycore.stripe_payment_log(jsonb, uuid, jsonb) from public;
revoke all on function paycore.stripe_dispatch(jsonb) from public;
revoke all on function paycore.stripe_apply_stored(text) from public;

revoke all on function paycore.apply_stripe_event(jsonb) from public;
grant execute on function paycore.apply_stripe_event(jsonb) to paycore_webhook;

revoke all on function public.begin_credit_checkout(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.begin_credit_checkout(uuid, text) to service_role, paycore_webhook;

revoke all on function public.get_platform_credit_status() from public, anon, authenticated, service_role;
grant execute on function public.get_platform_credit_status() to service_role;

revoke all on function public.retry_stripe_event(text) from public, anon, authenticated, service_role;
grant execute on function public.retry_stripe_event(text) to service_role;

revoke all on function public.begin_subscription_checkout(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.begin_subscription_checkout(uuid, text) to service_role, paycore_webhook;

revoke all on function public.attach_checkout_session(uuid, text, timestamptz)
from public, anon, authenticated, service_role;
grant execute on function public.attach_checkout_session(uuid, text, timestamptz) to service_role, paycore_webhook;

revoke all on function public.release_credit_checkout(uuid) from public, anon, authenticated, service_role;
grant execute on function public.release_credit_checkout(uuid) to service_role, paycore_webhook;
