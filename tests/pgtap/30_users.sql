-- users, subscriptions, tiers and usage limits: profiles, the catalog and its consistency,
-- the tier a user has in an app (every Stripe status), the monthly usage check, release,
-- get_usage, and who sees what.
begin;
select plan(164);

create function pg_temp.pick(p_value jsonb, p_keys text[])
returns jsonb
language sql immutable
as $$
    select coalesce(jsonb_object_agg(k.key, p_value -> k.key), '{}'::jsonb)
    from unnest(p_keys) as k (key)
$$;

select tests.travel_to('2026-06-15 12:00:00+00');
set local timezone = 'UTC';

-- Tables.
select has_table('public', 'profiles', 'public.profiles exists');
select fk_ok('public', 'profiles', 'id', 'auth', 'users', 'id');
select has_table('public', 'apps', 'public.apps exists');
select has_table('public', 'tiers', 'public.tiers exists');
select has_table('public', 'features', 'public.features exists');
select has_table('public', 'tier_limits', 'public.tier_limits exists');
select has_table('public', 'prices', 'public.prices exists');
select has_table('public', 'user_subscriptions', 'public.user_subscriptions exists');
select columns_are('public', 'user_subscriptions', array[
    'id', 'user_id', 'app_id', 'tier_id', 'package_id', 'stripe_session_id', 'stripe_customer_id',
    'stripe_subscription_id', 'stripe_price_id', 'status', 'payment_status', 'amount_total', 'currency',
    'metadata', 'activated_at', 'current_period_start', 'current_period_end', 'trial_end',
    'cancel_at_period_end', 'canceled_at', 'stripe_event_created_at', 'tier_rank', 'entitled_until',
    'created_at', 'updated_at'
]);
select col_is_unique('public', 'user_subscriptions', array['stripe_subscription_id']);
select col_is_unique('public', 'user_subscriptions', array['stripe_session_id']);
select has_table('public', 'payment_history', 'public.payment_history exists');
select columns_are('public', 'payment_history', array[
    'id', 'stripe_invoice_id', 'user_id', 'stripe_customer_id', 'stripe_subscription_id', 'amount',
    'currency', 'status', 'payment_intent', 'paid_at', 'failed_at', 'created_at', 'updated_at'
]);
select col_is_unique('public', 'payment_history', array['stripe_invoice_id']);
select has_table('public', 'user_usage_limits', 'public.user_usage_limits exists');
select col_is_pk('public', 'user_usage_limits', array['user_id', 'feature_id', 'period_start'],
    'one usage row per user, feature and month');

-- The default catalog.
select results_eq(
    'select app_id, id, rank from public.tiers order by app_id, rank',
    $$values ('cv', 'free', 0), ('cv', 'premium', 1), ('letters', 'free', 0), ('letters', 'premium', 1),
             ('rise', 'free', 0), ('rise', 'premium', 1)$$,
    'apps cv, letters and rise have free (rank 0) and premium'
);
select results_eq(
    $$select feature_id, tier_id, monthly_limit, is_soft from public.tier_limits
      where feature_id in ('cv_generations', 'cv_exports') order by feature_id, tier_id$$,
    $$values ('cv_exports', 'free', 5, true), ('cv_exports', 'premium', null, false),
             ('cv_generations', 'free', 3, false), ('cv_generations', 'premium', 100, false)$$,
    'example limits: cv_generations 3 / 100 hard, cv_exports 5 soft / unlimited'
);

-- The catalog's consistency is the schema's.
select throws_ok(
    $$insert into public.apps (id, name) values ('lonely', 'No free tier'); set constraints all immediate$$,
    '23503', null, 'an app without a free tier is refused (at commit; here forced with set constraints)');
select throws_ok($$insert into public.tiers (app_id, id, rank, name) values ('cv', 'gold', 0, 'Gold')$$,
    '23514', null, 'rank 0 is only the free tier');
select throws_ok($$update public.tiers set rank = 5 where app_id = 'cv' and id = 'free'$$,
    '23514', null, 'the free tier stays rank 0');
select throws_ok(
    $$delete from public.tier_limits where app_id = 'rise' and tier_id = 'free';
      delete from public.tiers where app_id = 'rise' and id = 'free';
      set constraints all immediate$$,
    '23503', null, 'an app''s free tier cannot be deleted (at commit)');
select throws_ok(
    $$insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit)
      values ('cv', 'free', 'letters_generations', 1)$$,
    '23503', null, 'a limit names a feature of its own app');
select throws_ok(
    $$insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit)
      values ('letters', 'gold', 'letters_generations', 1)$$,
    '23503', null, 'a limit names a tier of its own app');
select throws_ok(
    $$insert into public.prices (stripe_price_id, app_id, tier_id) values ('price_x', 'cv', 'gold')$$,
    '23503', null, 'a price names a tier of its app');
select lives_ok(
    $$insert into public.apps (id, name) values ('quiz', 'Quiz');
      insert into public.tiers (app_id, id, rank, name) values ('quiz', 'free', 0, 'Free');
      set constraints all immediate$$,
    'an app with its free tier is accepted'
);

select tests.create_user('users-a@example.test') as a \gset
select tests.create_user('users-b@example.test') as b \gset

-- Profiles: created with the auth user, kept in step, deleted with it.
select results_eq(
    format('select email, full_name, avatar_url from public.profiles where id = %L', :'a'),
    $$values ('users-a@example.test', null::text, null::text)$$,
    'signing up creates the profile'
);
insert into auth.users (id, email, raw_user_meta_data)
values
('00000000-0000-4000-8000-0000000000c1', 'c1@example.test',
 '{"full_name": "Ada L", "avatar_url": "https://cdn.example.test/a.png"}'),
('00000000-0000-4000-8000-0000000000c2', 'c2@example.test',
 '{"name": "Grace H", "picture": "https://cdn.example.test/g.png"}'),
('00000000-0000-4000-8000-0000000000c3', 'c3@example.test',
 '{"full_name": "   ", "avatar_url": "javascript:alert(1)"}'),
('00000000-0000-4000-8000-0000000000c4', null, '"not an object"'),
('00000000-0000-4000-8000-0000000000c5', 'c5@example.test',
 '{"full_name": {"a": "b"}, "name": "Bell\u0007", "avatar_url": "https://x.test/a\"><script>",
   "picture": "https://x.test/ok.png"}'),
('00000000-0000-4000-8000-0000000000c6', 'c6@example.test', '{"full_name": " ", "name": "Hopper"}');
select results_eq(
    $$select email, full_name, avatar_url from public.profiles
      where id::text like '00000000-0000-4000-8000-0000000000c_' order by id$$,
    $$values ('c1@example.test', 'Ada L', 'https://cdn.example.test/a.png'),
             ('c2@example.test', 'Grace H', 'https://cdn.example.test/g.png'),
             ('c3@example.test', null, null), (null, null, null),
             ('c5@example.test', null, 'https://x.test/ok.png'), ('c6@example.test', 'Hopper', null)$$,
    'name and avatar come from the sign-up metadata (OAuth names too): the first valid string; '
    'blank, non-string, control characters and unsafe URLs are left out'
);
update auth.users set raw_user_meta_data = '{"full_name": "Mallory"}'
where id = '00000000-0000-4000-8000-0000000000c1';
select is((select full_name from public.profiles where id = '00000000-0000-4000-8000-0000000000c1'),
    'Ada L', 'a later change of the auth metadata does not touch the profile');
update auth.users set email = 'c1-new@example.test' where id = '00000000-0000-4000-8000-0000000000c1';
select is((select email from public.profiles where id = '00000000-0000-4000-8000-0000000000c1'),
    'c1-new@example.test', 'an email change reaches the profile');
delete from auth.users where id = '00000000-0000-4000-8000-0000000000c2';
select is_empty($$select 1 from public.profiles where id = '00000000-0000-4000-8000-0000000000c2'$$,
    'deleting the auth user deletes its profile');

-- update_profile.
select tests.authenticate_as(:'a');
select results_eq(
    $$select full_name, avatar_url, metadata from update_profile('Alice', 'https://cdn.example.test/al.png',
      '{"lang": "fr"}')$$,
    $$values ('Alice', 'https://cdn.example.test/al.png', '{"lang": "fr"}'::jsonb)$$,
    'update_profile sets the caller''s fields'
);
select results_eq(
    $$select full_name, avatar_url, metadata from update_profile(p_full_name => 'Alice B')$$,
    $$values ('Alice B', 'https://cdn.example.test/al.png', '{"lang": "fr"}'::jsonb)$$,
    'null keeps a field'
);
select results_eq(
    $$select full_name, avatar_url from update_profile(p_avatar_url => '')$$,
    $$values ('Alice B', null::text)$$,
    ''''' clears it'
);
select tests.throws_hint($$select update_profile('   ')$$, 'PT400', 'invalid_argument',
    'a blank name is PT400');
select tests.throws_hint(format('select update_profile(%L)', repeat('x', 201)), 'PT400', 'invalid_argument',
    'a name beyond 200 characters is PT400');
select tests.throws_hint($$select update_profile(p_avatar_url => 'javascript:alert(1)')$$, 'PT400',
    'invalid_argument', 'an avatar URL that is not http(s) is PT400');
select tests.throws_hint($$select update_profile(p_avatar_url => 'https://x.test/"><script>')$$, 'PT400',
    'invalid_argument', 'an avatar URL with quotes or angle brackets is PT400');
select tests.throws_hint($$select update_profile(e'Eve\u202e')$$, 'PT400', 'invalid_argument',
    'a name with a bidirectional override is PT400');
select tests.throws_hint($$select update_profile(p_metadata => '[1]')$$, 'PT400', 'invalid_argument',
    'metadata that is not an object is PT400');
select tests.throws_hint(
    format($$select update_profile(p_metadata => jsonb_build_object('x', %L))$$, repeat('x', 8200)),
    'PT400', 'invalid_argument', 'metadata beyond 8 kB is PT400');
select results_eq(
    format($$select meta from public.events where type = 'profile.updated' and actor_id = %L
             order by created_at, meta::text$$, :'a'),
    $$values ('{"fields": ["avatar_url"]}'::jsonb), ('{"fields": ["full_name", "avatar_url", "metadata"]}'),
             ('{"fields": ["full_name"]}')$$,
    'each change logs profile.updated with the fields it changed; a refused one logs nothing'
);
select is_empty(format($$select 1 from public.events where type = 'profile.updated' and actor_id = %L
    and subject_id is not null$$, :'a'), '... and the user''s id only in actor_id, which is nulled with the user');
select is_empty($$select 1 from public.profiles where id <> auth.uid()$$,
    'a user reads only its own profile');
-- The key service of the metadata is the service's.
select tests.throws_hint($$select update_profile(p_metadata => '{"service": {"plan": "pro"}}')$$, 'PT400',
    'invalid_argument', 'a user cannot write the metadata key service');
select tests.authenticate_as_service_role();
select is((set_profile_service_metadata(:'a', '{"plan": "pro"}')).metadata,
    '{"lang": "fr", "service": {"plan": "pro"}}', 'the service sets its part of the metadata');
select tests.throws_hint(format($$select set_profile_service_metadata(%L, '{}')$$, gen_random_uuid()), 'PT404',
    'not_found', 'an unknown user is PT404');
select tests.reset_role();
delete from public.profiles where id = :'b';
select tests.authenticate_as_service_role();
select is((set_profile_service_metadata(:'b', '{"plan": "pro"}')).metadata, '{"service": {"plan": "pro"}}',
    'a missing profile is recreated for the service''s metadata');
select tests.throws_hint(format($$select set_profile_service_metadata(%L, '[]')$$, :'a'), 'PT400',
    'invalid_argument', 'service metadata that is not an object is PT400');
select tests.authenticate_as(:'a');
select is((update_profile(p_metadata => '{"lang": "de"}')).metadata, '{"lang": "de", "service": {"plan": "pro"}}',
    'a user replacing its metadata keeps the service''s part');
select throws_ok(format($$select set_profile_service_metadata(%L, '{"plan": "free"}')$$, :'a'), '42501', null,
    'a user may not call set_profile_service_metadata');
select tests.authenticate_as_service_role();
select is((set_profile_service_metadata(:'a', null)).metadata, '{"lang": "de"}', 'null removes the service''s part');
select tests.authenticate_as(:'a');
select tests.authenticate_as_service_role();
select throws_ok($$select update_profile('X')$$, '42501', null, 'service_role may not call update_profile');
select tests.reset_role();
select tests.throws_hint($$select update_profile('X')$$, 'PT403', 'forbidden',
    'update_profile is for signed-in users only (even the owner has no profile to update)');
select tests.clear_authentication();
select throws_ok($$select update_profile('X')$$, '42501', null, 'anon may not call update_profile');
select throws_ok('select * from public.profiles', '42501', null, 'anon reads no profile');
select tests.reset_role();

-- get_user_app_tier: every Stripe status, before and after the period end, within and after
-- the grace period, with and without cancel_at_period_end. Now = 2026-06-15 12:00 UTC;
-- offsets are from now; grace = 3 days (the default).
create function pg_temp.tier_of(
    p_status text, p_cancel boolean, p_start interval, p_end interval
)
returns text
language plpgsql
as $$
declare
    v_user uuid := tests.create_user(null);
begin
    insert into public.user_subscriptions (
        user_id, app_id, tier_id, status, cancel_at_period_end, current_period_start, current_period_end
    )
    values (
        v_user, 'cv', 'premium', p_status, p_cancel,
        paycore.clock() + p_start, paycore.clock() + p_end
    );
    return public.get_user_app_tier(v_user, 'cv');
end;
$$;
select results_eq(
    $$select s.status, s.cancel, s.period_start, s.period_end,
             pg_temp.tier_of(s.status, s.cancel, s.period_start, s.period_end)
      from (values
        ('incomplete', false, '-10 days'::interval, '20 days'::interval),
        ('incomplete', true, '-10 days', '20 days'),
        ('incomplete', false, '-40 days', '-10 days'),
        ('incomplete_expired', false, '-10 days', '20 days'),
        ('incomplete_expired', true, '-10 days', '20 days'),
        ('incomplete_expired', false, '-40 days', '-10 days'),
        ('trialing', false, '-10 days', '4 days'),
        ('trialing', true, '-10 days', '4 days'),
        ('trialing', false, '-30 days', '-1 day'),
        ('trialing', false, '-30 days', '-4 days'),
        ('trialing', true, '-30 days', '-1 day'),
        ('active', false, '-10 days', '20 days'),
        ('active', true, '-10 days', '20 days'),
        ('active', false, '-30 days', '-1 day'),
        ('active', false, '-33 days', '-4 days'),
        ('active', true, '-30 days', '-1 second'),
        ('past_due', false, '-1 day', '29 days'),
        ('past_due', false, '-2 days 23 hours', '27 days'),
        ('past_due', false, '-3 days', '27 days'),
        ('past_due', false, '-10 days', '20 days'),
        ('past_due', true, '-1 day', '29 days'),
        ('past_due', true, '-40 days', '-10 days'),
        ('canceled', false, '-10 days', '20 days'),
        ('canceled', true, '-10 days', '20 days'),
        ('canceled', true, '-30 days', '-1 second'),
        ('canceled', false, '-30 days', '-1 day'),
        ('unpaid', false, '-10 days', '20 days'),
        ('unpaid', true, '-10 days', '20 days'),
        ('unpaid', false, '-1 day', '29 days'),
        ('paused', false, '-10 days', '20 days'),
        ('paused', true, '-10 days', '20 days'),
        ('paused', false, '-40 days', '-10 days')
      ) as s (status, cancel, period_start, period_end)$$,
    $$values
        ('incomplete', false, '-10 days'::interval, '20 days'::interval, 'free'),
        ('incomplete', true, '-10 days', '20 days', 'free'),
        ('incomplete', false, '-40 days', '-10 days', 'free'),
        ('incomplete_expired', false, '-10 days', '20 days', 'free'),
        ('incomplete_expired', true, '-10 days', '20 days', 'free'),
        ('incomplete_expired', false, '-40 days', '-10 days', 'free'),
        ('trialing', false, '-10 days', '4 days', 'premium'),
        ('trialing', true, '-10 days', '4 days', 'premium'),
        ('trialing', false, '-30 days', '-1 day', 'premium'),
        ('trialing', false, '-30 days', '-4 days', 'free'),
        ('trialing', true, '-30 days', '-1 day', 'free'),
        ('active', false, '-10 days', '20 days', 'premium'),
        ('active', true, '-10 days', '20 days', 'premium'),
        ('active', false, '-30 days', '-1 day', 'premium'),
        ('active', false, '-33 days', '-4 days', 'free'),
        ('active', true, '-30 days', '-1 second', 'free'),
        ('past_due', false, '-1 day', '29 days', 'premium'),
        ('past_due', false, '-2 days 23 hours', '27 days', 'premium'),
        ('past_due', false, '-3 days', '27 days', 'free'),
        ('past_due', false, '-10 days', '20 days', 'free'),
        ('past_due', true, '-1 day', '29 days', 'premium'),
        ('past_due', true, '-40 days', '-10 days', 'free'),
        ('canceled', false, '-10 days', '20 days', 'free'),
        ('canceled', true, '-10 days', '20 days', 'free'),
        ('canceled', true, '-30 days', '-1 second', 'free'),
        ('canceled', false, '-30 days', '-1 day', 'free'),
        ('unpaid', false, '-10 days', '20 days', 'free'),
        ('unpaid', true, '-10 days', '20 days', 'free'),
        ('unpaid', false, '-1 day', '29 days', 'free'),
        ('paused', false, '-10 days', '20 days', 'free'),
        ('paused', true, '-10 days', '20 days', 'free'),
        ('paused', false, '-40 days', '-10 days', 'free')$$,
    'every Stripe status x period x grace x cancel_at_period_end gives the documented tier'
);
update paycore.settings set value = '"1 day"' where key = 'subscription_grace_period';
select is(pg_temp.tier_of('past_due', false, '-2 days', '28 days'), 'free',
    'the grace period is configuration: at 1 day, past_due since 2 days is free');
select is(pg_temp.tier_of('past_due', false, '-23 hours', '29 days'), 'premium',
    '... and past_due since 23 hours still premium');
select tests.create_user('grace@example.test') as g \gset
insert into public.user_subscriptions (user_id, app_id, tier_id, status, current_period_start, current_period_end)
values (:'g', 'cv', 'premium', 'past_due', '2026-06-14 00:00:00+00', '2026-07-14 00:00:00+00');
select is(get_user_app_tier(:'g', 'cv'), 'free', 'a 1-day grace: past_due since 36 hours is free');
update paycore.settings set value = '"3 days"' where key = 'subscription_grace_period';
select is(get_user_app_tier(:'g', 'cv'), 'premium', 'changing the grace period applies to existing subscriptions');
select throws_ok(
    format($$insert into public.user_subscriptions (user_id, app_id, tier_id, status)
             values (%L, 'cv', 'gold', 'active')$$, :'g'),
    '23503', null, 'a subscription names a tier of its app');
select is(pg_temp.tier_of('active', false, null, null), 'free',
    'an active subscription without a known period entitles nothing (the Stripe module sets it)');
select is(pg_temp.tier_of('past_due', false, null, null), 'free', '... nor a past_due one');
-- The grace period counts in UTC, whatever the session's time zone (here across the US
-- daylight saving change of 2026-03-08, where 3 local days are 71 hours).
set local timezone = 'America/New_York';
select tests.travel_to('2026-03-10 11:30:00+00');
select is(pg_temp.tier_of('past_due', false, '-71 hours 30 minutes', '30 days'), 'premium',
    'the grace period is 72 hours across a daylight saving change');
set local timezone = 'UTC';
select tests.travel_to('2026-06-15 12:00:00+00');
-- The setting is checked: an interval from 0 to 90 days, as a JSON string.
select throws_ok($$update paycore.settings set value = '3' where key = 'subscription_grace_period'$$,
    '23514', null, 'a grace period that is a number is refused');
select throws_ok($$update paycore.settings set value = '"3 dayz"' where key = 'subscription_grace_period'$$,
    '23514', null, 'a grace period that is not an interval is refused');
select throws_ok($$update paycore.settings set value = '"-1 day"' where key = 'subscription_grace_period'$$,
    '23514', null, 'a negative grace period is refused');
select throws_ok($$update paycore.settings set value = '"91 days"' where key = 'subscription_grace_period'$$,
    '23514', null, 'a grace period beyond 90 days is refused');

-- Several subscriptions at once: the highest rank wins, other apps are ignored.
insert into public.tiers (app_id, id, rank, name, monthly_credits) values ('cv', 'pro', 2, 'Pro', 500);
insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit)
values ('cv', 'pro', 'cv_generations', 1000);
select tests.create_user('multi@example.test') as m \gset
insert into public.user_subscriptions (user_id, app_id, tier_id, status, stripe_subscription_id,
    current_period_start, current_period_end)
values
(:'m', 'cv', 'premium', 'active', 'sub_m1', '2026-06-01', '2026-07-01'),
(:'m', 'cv', 'pro', 'active', 'sub_m2', '2026-06-10', '2026-07-10'),
(:'m', 'letters', 'premium', 'active', 'sub_m3', '2026-06-01', '2026-07-01');
select is(get_user_app_tier(:'m', 'cv'), 'pro', 'two entitling subscriptions: the higher rank wins');
update public.tiers set rank = 5 where app_id = 'cv' and id = 'pro';
select is((select tier_rank from public.user_subscriptions where stripe_subscription_id = 'sub_m2'), 5,
    'a subscription follows a change of its tier''s rank');
update public.user_subscriptions set status = 'canceled' where stripe_subscription_id = 'sub_m2';
select is(get_user_app_tier(:'m', 'cv'), 'premium', '... and the other one when it ends');
select is(get_user_app_tier(:'m', 'rise'), 'free', 'subscriptions to other apps do not count');
update public.user_subscriptions set status = 'unpaid' where stripe_subscription_id = 'sub_m1';
select is(get_user_app_tier(:'m', 'cv'), 'free', 'nothing entitles: free');
select is(get_user_app_tier(:'m', 'letters'), 'premium', 'the letters subscription entitles in letters');
select tests.throws_hint(format($$select get_user_app_tier(%L, 'nope')$$, :'m'), 'PT404', 'not_found',
    'an unknown app is PT404');
select tests.throws_hint(format($$select get_user_app_tier(%L, 'cv')$$, gen_random_uuid()), 'PT404',
    'not_found', 'an unknown user is PT404');
select tests.throws_hint(format($$select get_user_app_tier(%L)$$, :'m'), 'PT400', 'invalid_argument',
    'no app is PT400');
select tests.authenticate_as(:'m');
select is(get_user_app_tier(null, 'letters'), 'premium', 'a signed-in user asks for itself with null');
select is(get_user_app_tier(p_app_id => 'letters'), 'premium', '... or without p_user_id (PostgREST: omitted)');
select tests.throws_hint(format($$select get_user_app_tier(%L, 'cv')$$, :'a'), 'PT403', 'forbidden',
    'a signed-in user cannot ask for another user');
select tests.clear_authentication();
select throws_ok(format($$select get_user_app_tier(%L, 'cv')$$, :'a'), '42501', null,
    'anon may not call get_user_app_tier');
select tests.reset_role();

-- check_usage_limit: hard limit (cv_generations free: 3).
select tests.authenticate_as(:'a');
select is(
    check_usage_limit(null, 'cv_generations'),
    jsonb_build_object(
        'allowed', true, 'used', 1, 'limit', 3, 'remaining', 2, 'overage', 0, 'is_soft', false,
        'tier', 'free', 'app_id', 'cv', 'feature', 'cv_generations',
        'period_start', '2026-06-01 00:00:00+00'::timestamptz, 'period_end', '2026-07-01 00:00:00+00'::timestamptz
    ),
    'the first use is recorded; the result says the month, the tier and what remains'
);
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations', 2), '{allowed,used,remaining}'),
    '{"allowed": true, "used": 3, "remaining": 0}', 'a use up to the limit is allowed');
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations'), '{allowed,used,remaining}'),
    '{"allowed": false, "used": 3, "remaining": 0}', 'beyond a hard limit: allowed false, no error');
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations', 0), '{allowed,used}'),
    '{"allowed": false, "used": 3}', 'p_amount 0 only looks: no use is left');
select tests.reset_role();
select is((select used from public.user_usage_limits where user_id = :'a' and feature_id = 'cv_generations'),
    3::bigint, 'a refused use records nothing');
select results_eq(
    format($$select type, meta from public.events where actor_id = %L and type like 'usage.%%'$$, :'a'),
    $$values ('usage.limit_reached',
              '{"limit": 3, "used": 3, "tier": "free", "period_start": "2026-06-01T00:00:00+00:00"}'::jsonb)$$,
    'the first refusal of the month logs usage.limit_reached'
);
select tests.authenticate_as(:'a');
select is(check_usage_limit(null, 'cv_generations') ->> 'allowed', 'false', 'another refusal');
select tests.reset_role();
select is((select count(*)::int from public.events where actor_id = :'a' and type = 'usage.limit_reached'),
    1, '... logs nothing more this month');

select tests.authenticate_as(:'b');
select is(pg_temp.pick(check_usage_limit(p_feature => 'cv_generations', p_amount => 0), '{allowed,used,remaining}'),
    '{"allowed": true, "used": 0, "remaining": 3}', 'looking at an unused feature (p_user_id omitted)');
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations', 4), '{allowed,used}'),
    '{"allowed": false, "used": 0}', 'a use larger than the whole limit is refused');
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations', 2), '{allowed,used}'),
    '{"allowed": true, "used": 2}', 'two at once');
select is(pg_temp.pick(check_usage_limit(null, 'cv_generations', 2), '{allowed,used}'),
    '{"allowed": false, "used": 2}', 'a use that does not fit whole is refused whole');
select tests.reset_role();
select is((select count(*)::int from public.user_usage_limits where user_id = :'b'), 1,
    'looking and refusing created no row');
select is_empty(format($$select 1 from public.events where actor_id = %L and type like 'usage.%%'$$, :'b'),
    'a use that does not fit, below the limit, is not usage.limit_reached');

-- Refusals.
select tests.authenticate_as(:'b');
select tests.throws_hint($$select check_usage_limit(null, 'cv_generations', -1)$$, 'PT400',
    'invalid_argument', 'a negative amount is PT400');
select tests.throws_hint($$select check_usage_limit(null, 'cv_generations', null)$$, 'PT400',
    'invalid_argument', 'a null amount is PT400');
select tests.throws_hint($$select check_usage_limit(null, 'nope')$$, 'PT404', 'not_found',
    'an unknown feature is PT404');
select tests.throws_hint($$select check_usage_limit(null, null)$$, 'PT400', 'invalid_argument',
    'a null feature is PT400');
select tests.throws_hint(format($$select check_usage_limit(%L, 'cv_generations')$$, :'a'), 'PT403',
    'forbidden', 'a signed-in user cannot use another user''s quota');
select tests.clear_authentication();
select throws_ok($$select check_usage_limit(null, 'cv_generations')$$, '42501', null,
    'anon may not call check_usage_limit');
select tests.authenticate_as_service_role();
select tests.throws_hint($$select check_usage_limit(null, 'cv_generations')$$, 'PT400', 'invalid_argument',
    'service_role must name the user');
select tests.throws_hint(format($$select check_usage_limit(%L, 'cv_generations')$$, gen_random_uuid()),
    'PT404', 'not_found', 'an unknown user is PT404');
select tests.throws_hint(format($$select check_usage_limit(%L, 'cv_generations', 1, 'paycore:x')$$, :'b'),
    'PT400', 'invalid_argument', 'a key in paycore''s namespace is PT400');
select tests.reset_role();
select is((select used from public.user_usage_limits where user_id = :'b'), 2::bigint,
    'the refused calls changed nothing');

-- Soft and unlimited limits, and a feature the tier does not include.
select tests.create_user('soft@example.test') as s \gset
select tests.authenticate_as(:'s');
select is(check_usage_limit(null, 'cv_exports', 5) ->> 'allowed', 'true', 'soft limit: up to it');
select is(pg_temp.pick(check_usage_limit(null, 'cv_exports', 2), '{allowed,used,limit,remaining,overage,is_soft}'),
    '{"allowed": true, "used": 7, "limit": 5, "remaining": 0, "overage": 2, "is_soft": true}',
    'beyond a soft limit: recorded and reported as overage');
select is(check_usage_limit(null, 'cv_exports', 0) ->> 'allowed', 'true', 'a soft limit always allows');
select is(check_usage_limit(null, 'cv_exports') ->> 'overage', '3', 'overage grows');
select tests.reset_role();
select results_eq(
    format($$select type, meta ->> 'used' from public.events where actor_id = %L and type like 'usage.%%'$$, :'s'),
    $$values ('usage.soft_limit_exceeded', '7')$$,
    'crossing a soft limit logs usage.soft_limit_exceeded once'
);
insert into public.features (id, app_id, description) values ('cv_beta', 'cv', 'Premium only');
insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit) values ('cv', 'premium', 'cv_beta', 10);
select is(pg_temp.pick(check_usage_limit(:'s', 'cv_beta'), '{allowed,used,limit}'),
    '{"allowed": false, "used": 0, "limit": 0}', 'a feature the tier does not include: limit 0');
insert into public.user_subscriptions (user_id, app_id, tier_id, status, current_period_start, current_period_end)
values (:'s', 'cv', 'premium', 'active', '2026-06-01', '2026-07-01');
select is(pg_temp.pick(check_usage_limit(:'s', 'cv_exports', 1000), '{allowed,used,limit,remaining,overage,tier}'),
    '{"allowed": true, "used": 1008, "limit": null, "remaining": null, "overage": 0, "tier": "premium"}',
    'an unlimited (null) limit: always allowed, remaining null');

-- The limit follows the tier at the moment of the call; this month's usage still counts.
select is(pg_temp.pick(check_usage_limit(:'a', 'cv_generations'), '{allowed,used,limit,tier}'),
    '{"allowed": false, "used": 3, "limit": 3, "tier": "free"}', 'free: at the limit');
insert into public.user_subscriptions (user_id, app_id, tier_id, status, stripe_subscription_id,
    current_period_start, current_period_end)
values (:'a', 'cv', 'premium', 'active', 'sub_a', '2026-06-15', '2026-07-15');
select is(pg_temp.pick(check_usage_limit(:'a', 'cv_generations'), '{allowed,used,limit,remaining,tier}'),
    '{"allowed": true, "used": 4, "limit": 100, "remaining": 96, "tier": "premium"}',
    'an upgrade mid-month raises the limit at once; the month''s usage still counts');
select is(check_usage_limit(:'a', 'cv_generations', 96) ->> 'used', '100', 'up to the premium limit');
select is(check_usage_limit(:'a', 'cv_generations') ->> 'allowed', 'false', 'refused at the premium limit');
select results_eq(
    format($$select meta ->> 'tier', meta ->> 'used' from public.events
             where actor_id = %L and type = 'usage.limit_reached' order by meta ->> 'used'$$, :'a'),
    $$values ('premium', '100'), ('free', '3')$$,
    'reaching the limit of the new tier logs usage.limit_reached again'
);
update public.user_subscriptions set status = 'canceled' where stripe_subscription_id = 'sub_a';
select is(pg_temp.pick(check_usage_limit(:'a', 'cv_generations'), '{allowed,used,limit,remaining,tier}'),
    '{"allowed": false, "used": 100, "limit": 3, "remaining": 0, "tier": "free"}',
    'back on free above its limit: refused, remaining 0');

-- Calendar months in UTC of paycore.clock(), whatever the session's time zone.
set local timezone = 'Pacific/Kiritimati';
select tests.create_user('months@example.test') as mo \gset
select tests.travel_to('2026-06-30 23:59:59.999+00');
select is(check_usage_limit(:'mo', 'cv_generations', 3) ->> 'allowed', 'true', 'the last instant of June');
select tests.travel_to('2026-07-01 00:00:00+00');
select is(pg_temp.pick(check_usage_limit(:'mo', 'cv_generations'), '{allowed,used}'),
    '{"allowed": true, "used": 1}', 'July starts from zero without any job');
select results_eq(
    format($$select period_start, period_end, used from public.user_usage_limits
             where user_id = %L order by period_start$$, :'mo'),
    $$values ('2026-06-01 00:00:00+00'::timestamptz, '2026-07-01 00:00:00+00'::timestamptz, 3::bigint),
             ('2026-07-01 00:00:00+00', '2026-08-01 00:00:00+00', 1)$$,
    'one row per calendar month (UTC), the previous month kept'
);
select tests.travel_to('2026-12-31 23:00:00+00');
select is((check_usage_limit(:'mo', 'cv_generations', 0) ->> 'period_end')::timestamptz,
    '2027-01-01 00:00:00+00'::timestamptz, 'December ends at the first instant of the next year (UTC)');
set local timezone = 'UTC';
select tests.travel_to('2026-06-15 12:00:00+00');

-- Idempotency keys.
select tests.create_user('keys@example.test') as k \gset
select is(check_usage_limit(:'k', 'cv_generations', 2, 'job-1') ->> 'used', '2', 'a use with a key');
select is(check_usage_limit(:'k', 'cv_generations', 2, 'job-1') ->> 'used', '2',
    'the same key and arguments return the first result');
select is((select used from public.user_usage_limits where user_id = :'k' and feature_id = 'cv_generations'),
    2::bigint, '... and record nothing');
select tests.throws_hint(format($$select check_usage_limit(%L, 'cv_generations', 1, 'job-1')$$, :'k'),
    'PT409', 'idempotency_conflict', 'the same key with other arguments is PT409');
select tests.throws_hint(format($$select release_usage(%L, 'cv_generations', 2, 'job-1')$$, :'k'),
    'PT409', 'idempotency_conflict', 'a use''s key cannot be reused by a release');

-- A signed-in user's keys live apart from the server's.
select tests.authenticate_as(:'k');
select is(check_usage_limit(null, 'cv_exports', 1, 'job-2') ->> 'used', '1', 'a user''s own key');
select tests.reset_role();
select is(check_usage_limit(:'k', 'cv_exports', 2, 'job-2') ->> 'used', '3',
    'the server''s call with the same key is its own (no PT409, no replay)');
select tests.authenticate_as(:'k');
select is(check_usage_limit(null, 'cv_exports', 1, 'job-2') ->> 'used', '1', 'the user''s retry replays its result');
select tests.reset_role();

-- release_usage.
select is(release_usage(:'k', 'cv_generations', 1) ->> 'used', '1', 'release gives back usage');
select is(pg_temp.pick(release_usage(:'k', 'cv_generations', 5), '{used,remaining,allowed}'),
    '{"used": 0, "remaining": 3, "allowed": true}', 'never below zero');
select is(release_usage(:'k', 'letters_generations', 1) ->> 'used', '0', 'releasing an unused feature is 0');
select is(check_usage_limit(:'k', 'cv_generations', 3) ->> 'used', '3', 'used again');
select is(release_usage(:'k', 'cv_generations', 2, 'rel-1') ->> 'used', '1', 'a release with a key');
select is(release_usage(:'k', 'cv_generations', 2, 'rel-1') ->> 'used', '1', '... retried: the first result');
select is((select used from public.user_usage_limits where user_id = :'k' and feature_id = 'cv_generations'), 1::bigint,
    '... given back once');
select tests.travel_to('2026-07-02 00:00:00+00');
select is(release_usage(:'k', 'cv_generations', 1) ->> 'used', '0', 'a release acts on the current month only');
select tests.travel_to('2026-06-15 12:00:00+00');
select is((select used from public.user_usage_limits where user_id = :'k' and feature_id = 'cv_generations'), 1::bigint,
    '... June is untouched');
select tests.throws_hint(format($$select release_usage(%L, 'cv_generations', 0)$$, :'k'), 'PT400',
    'invalid_argument', 'releasing 0 is PT400');
select tests.throws_hint(format($$select release_usage(%L, 'nope', 1)$$, :'k'), 'PT404', 'not_found',
    'an unknown feature is PT404');
select tests.throws_hint(format($$select release_usage(%L, 'cv_generations', 1)$$, gen_random_uuid()),
    'PT404', 'not_found', 'an unknown user is PT404');
select tests.throws_hint($$select release_usage(null, 'cv_generations', 1)$$, 'PT400', 'invalid_argument',
    'a null user is PT400');
select tests.authenticate_as(:'k');
select throws_ok(format($$select release_usage(%L, 'cv_generations', 1)$$, :'k'), '42501', null,
    'a signed-in user may not give itself quota back');
select tests.reset_role();

-- get_usage.
select tests.authenticate_as(:'b');
select is(
    get_usage('cv') - 'features',
    '{"app_id": "cv", "tier": "free", "period_start": "2026-06-01T00:00:00+00:00",
      "period_end": "2026-07-01T00:00:00+00:00"}'::jsonb,
    'get_usage: the app, the tier, the month'
);
select is(
    get_usage('cv') -> 'features',
    '{"cv_generations": {"used": 2, "limit": 3, "remaining": 1, "is_soft": false, "description": "CVs generated"},
      "cv_exports": {"used": 0, "limit": 5, "remaining": 5, "is_soft": true, "description": "CVs exported to PDF"},
      "cv_beta": {"used": 0, "limit": 0, "remaining": 0, "is_soft": false, "description": "Premium only"}}'::jsonb,
    '... and per feature of the app: used, limit, remaining'
);
select is(get_usage('letters') -> 'features' -> 'letters_generations' ->> 'used', '0',
    'another app''s features start unused');
select tests.throws_hint($$select get_usage('nope')$$, 'PT404', 'not_found', 'an unknown app is PT404');
select tests.throws_hint($$select get_usage(null)$$, 'PT400', 'invalid_argument', 'no app is PT400');
select tests.throws_hint(format($$select get_usage('cv', %L)$$, :'a'), 'PT403', 'forbidden',
    'a signed-in user cannot read another user''s usage');
select tests.authenticate_as_service_role();
select is(get_usage('cv', :'s') -> 'features' -> 'cv_exports' ->> 'limit', null,
    'service_role reads any user''s usage; an unlimited limit is null');
select tests.throws_hint(format($$select get_usage('cv', %L)$$, gen_random_uuid()), 'PT404', 'not_found',
    'an unknown user is PT404');
select tests.clear_authentication();
select throws_ok($$select get_usage('cv')$$, '42501', null, 'anon may not call get_usage');

-- Who sees what: anon the catalog only; a signed-in user its own rows only; no one writes.
select is((select count(*)::int from public.apps where id in ('cv', 'letters', 'rise')), 3, 'anon reads the apps');
select isnt_empty('select 1 from public.tier_limits', 'anon reads the limits');
select throws_ok('select 1 from public.user_subscriptions', '42501', null, 'anon reads no subscription');
select throws_ok('select 1 from public.user_usage_limits', '42501', null, 'anon reads no usage');
select throws_ok($$insert into public.apps (id, name) values ('x', 'X')$$, '42501', null,
    'anon cannot write the catalog');
select tests.authenticate_as(:'b');
select is_empty(format('select 1 from public.user_usage_limits where user_id <> %L', :'b'),
    'a signed-in user reads only its own usage');
select is_empty(format('select 1 from public.user_subscriptions where user_id <> %L', :'b'),
    'a signed-in user reads only its own subscriptions');
select throws_ok($$update public.tier_limits set monthly_limit = 1000000$$, '42501', null,
    'a signed-in user cannot change a limit');
select throws_ok(format($$update public.user_usage_limits set used = 0 where user_id = %L$$, :'b'), '42501',
    null, 'a signed-in user cannot reset its usage');
select throws_ok(
    format($$insert into public.user_subscriptions (user_id, app_id, tier_id, status)
             values (%L, 'cv', 'premium', 'active')$$, :'b'),
    '42501', null, 'a signed-in user cannot give itself a subscription');
select tests.reset_role();

select * from finish();
rollback;
