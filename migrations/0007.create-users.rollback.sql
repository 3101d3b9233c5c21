-- Undoes 0007.create-users.
drop function public.get_usage(text, uuid);
drop function public.release_usage(uuid, text, integer, text);
drop function public.check_usage_limit(uuid, text, integer, text);
drop function paycore.usage_result(text, text, text, boolean, bigint, integer, boolean, timestamptz, timestamptz);
drop function paycore.usage_replay(uuid, text, text, integer, text);
drop function paycore.feature_limit(uuid, text);
drop function paycore.tier_limit(text, text, text);
drop function public.get_user_app_tier(uuid, text);
drop function paycore.effective_tier(uuid, text);
alter table paycore.settings drop constraint subscription_grace_period_is_an_interval;
drop function paycore.is_grace_period(jsonb);
drop trigger settings_recompute_entitlements on paycore.settings;
drop function public.update_profile(text, text, jsonb);
-- The trigger on auth.users goes with its function: on Supabase, auth.users belongs to
-- supabase_auth_admin and DROP TRIGGER needs the table's owner (or supautils'
-- drop_trigger_grants), while a cascade from the function paycore owns needs neither.
drop function paycore.tg_auth_users__sync_profile() cascade;
drop function paycore.profile_text(jsonb, text[], integer, boolean);
drop function paycore.is_profile_text(text, integer, boolean);
drop table paycore.usage_operations;
drop table public.user_usage_limits;
drop table public.payment_history;
drop table public.user_subscriptions;
drop function paycore.tg_settings__recompute_entitlements();
drop function paycore.tg_user_subscriptions__derive();
drop function paycore.grace_period();
drop function paycore.subscription_entitled_until(text, boolean, timestamptz, timestamptz, interval);
drop table public.prices;
drop table public.tier_limits;
drop table public.features;
drop table public.tiers, public.apps;
drop table public.profiles;
delete from paycore.reserved_event_namespaces
where namespace in ('profile', 'usage', 'subscription', 'payment');
delete from paycore.settings
where key = 'subscription_grace_period';
