-- users, subscriptions, tiers and usage limits: a user reads its own profile,
-- subscriptions, invoices and usage; everyone reads the catalog; every write is a function
-- (or, for the catalog, the owner's SQL).

alter table public.profiles enable row level security;
revoke all on table public.profiles from public, anon, authenticated, service_role;
grant select on table public.profiles to authenticated, service_role;
create policy profiles_select_own on public.profiles
for select to authenticated
using (id = (select auth.uid()));

alter table public.user_subscriptions enable row level security;
revoke all on table public.user_subscriptions from public, anon, authenticated, service_role;
grant select on table public.user_subscriptions to authenticated, service_role;
create policy user_subscriptions_select_own on public.user_subscriptions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.payment_history enable row level security;
revoke all on table public.payment_history from public, anon, authenticated, service_role;
grant select on table public.payment_history to authenticated, service_role;
create policy payment_history_select_own on public.payment_history
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.user_usage_limits enable row level security;
revoke all on table public.user_usage_limits from public, anon, authenticated, service_role;
grant select on table public.user_usage_limits to authenticated, service_role;
create policy user_usage_limits_select_own on public.user_usage_limits
for select to authenticated
using (user_id = (select auth.uid()));

-- The catalog: public, read by anyone.
alter table public.apps enable row level security;
revoke all on table public.apps from public, anon, authenticated, service_role;
grant select on table public.apps to anon, authenticated, service_role;
create policy apps_select_all on public.apps
for select to anon, authenticated
using (true);

alter table public.tiers enable row level security;
revoke all on table public.tiers from public, anon, authenticated, service_role;
grant select on table public.tiers to anon, authenticated, service_role;
create policy tiers_select_all on public.tiers
for select to anon, authenticated
using (true);

alter table public.features enable row level security;
revoke all on table public.features from public, anon, authenticated, service_role;
grant select on table public.features to anon, authenticated, service_role;
create policy features_select_all on public.features
for select to anon, authenticated
using (true);

alter table public.tier_limits enable row level security;
revoke all on table public.tier_limits from public, anon, authenticated, service_role;
grant select on table public.tier_limits to anon, authenticated, service_role;
create policy tier_limits_select_all on public.tier_limits
for select to anon, authenticated
using (true);

alter table public.prices enable row level security;
revoke all on table public.prices from public, anon, authenticated, service_role;
grant select on table public.prices to anon, authenticated, service_role;
create policy prices_select_all on public.prices
for select to anon, authenticated
using (true);

revoke all on table paycore.usage_operations from public;

revoke all on function paycore.is_profile_text(text, integer, boolean) from public;
revoke all on function paycore.profile_text(jsonb, text[], integer, boolean) from public;
revoke all on function paycore.tg_auth_users__sync_profile() from public;
revoke all on function paycore.subscription_entitled_until(
    text, boolean, timestamptz, timestamptz, interval
) from public;
revoke all on function paycore.grace_period() from public;
revoke all on function paycore.tg_user_subscriptions__derive() from public;
revoke all on function paycore.tg_settings__recompute_entitlements() from public;
revoke all on function paycore.is_grace_period(jsonb) from public;
revoke all on function paycore.effective_tier(uuid, text) from public;
revoke all on function paycore.tier_limit(text, text, text) from public;
revoke all on function paycore.feature_limit(uuid, text) from public;
revoke all on function paycore.usage_replay(uuid, text, text, integer, text) from public;
revoke all on function paycore.usage_result(
    text, text, text, boolean, bigint, integer, boolean, timestamptz, timestamptz
) from public;

revoke all on function public.update_profile(text, text, jsonb) from public, anon, authenticated, service_role;
grant execute on function public.update_profile(text, text, jsonb) to authenticated;

revoke all on function public.set_profile_service_metadata(uuid, jsonb)
from public, anon, authenticated, service_role;
grant execute on function public.set_profile_service_metadata(uuid, jsonb) to service_role;

revoke all on function public.get_user_app_tier(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.get_user_app_tier(uuid, text) to authenticated, service_role;

revoke all on function public.check_usage_limit(uuid, text, integer, text)
from public, anon, authenticated, service_role;
grant execute on function public.check_usage_limit(uuid, text, integer, text) to authenticated, service_role;

revoke all on function public.release_usage(uuid, text, integer, text)
from public, anon, authenticated, service_role;
grant execute on function public.release_usage(uuid, text, integer, text) to service_role;

revoke all on function public.get_usage(text, uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_usage(text, uuid) to authenticated, service_role;
