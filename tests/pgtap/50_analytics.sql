-- analytics: nudges at most once per user and key, the ecosystem statistics, and the
-- retention of the event log.
begin;
select plan(29);

select has_table('public', 'nudges_sent', 'public.nudges_sent exists');
select col_is_unique('public', 'nudges_sent', array['user_id', 'nudge_key'], 'a nudge key is sent to a user once');
select has_index('public', 'events', 'events_created_at_app_id_type_actor_id_idx',
    'the event log is indexed by time for the statistics and the retention');

select tests.create_user('an-a@example.test') as a \gset
select tests.create_user('an-b@example.test') as b \gset
select tests.create_user('an-c@example.test') as c \gset
select tests.travel_to('2026-06-15 12:00:00+00');
set local timezone = 'UTC';

-- Nudges.
select tests.authenticate_as_service_role();
select is(
    record_nudge(:'a', 'cv', 'cv.limit_reached.2026-06', 'email', '{"variant": "b"}')
    - 'id' - 'created_at' - 'user_id',
    '{"recorded": true, "app_id": "cv", "nudge_key": "cv.limit_reached.2026-06", "channel": "email",
      "meta": {"variant": "b"}, "sent_at": "2026-06-15T12:00:00+00:00"}'::jsonb,
    'the first nudge with a key is recorded'
);
select is(record_nudge(:'a', 'cv', 'cv.limit_reached.2026-06', 'push') ->> 'recorded', 'false',
    'the same key again is not: the caller does not send it twice');
select is(record_nudge(:'a', 'cv', 'cv.limit_reached.2026-06', 'push') ->> 'channel', 'email',
    '... and the first nudge stands');
select is(record_nudge(:'b', 'cv', 'cv.limit_reached.2026-06') ->> 'recorded', 'true',
    'another user gets the same nudge key once too');
select tests.reset_role();
select is((select count(*)::int from public.events where type = 'nudge.sent' and actor_id = :'a'), 1,
    'a recorded nudge logs nudge.sent once');
select tests.authenticate_as_service_role();
select tests.throws_hint(format($$select record_nudge(%L, 'cv', 'Not A Key')$$, :'a'), 'PT400',
    'invalid_argument', 'a nudge key that is not lowercase is PT400');
select tests.throws_hint(format($$select record_nudge(%L, 'cv', 'k', 'e-mail')$$, :'a'), 'PT400',
    'invalid_argument', 'a channel that is not a slug is PT400');
select tests.throws_hint(format($$select record_nudge(%L, 'nope', 'k')$$, :'a'), 'PT404', 'not_found',
    'an unknown app is PT404');
select tests.throws_hint(format($$select record_nudge(%L, 'cv', 'k')$$, gen_random_uuid()), 'PT404',
    'not_found', 'an unknown user is PT404');
select tests.authenticate_as(:'a');
select throws_ok(format($$select record_nudge(%L, 'cv', 'k')$$, :'a'), '42501', null,
    'a signed-in user may not record nudges');
select is((select count(*)::int from public.nudges_sent), 1, 'a user reads the nudges it was sent, only those');
select tests.reset_role();

-- Ecosystem statistics over a window of paycore.clock().
insert into public.events (app_id, type, actor_id, created_at)
values
('cv', 'cv.generated', :'a', '2026-06-14 10:00+00'),
('cv', 'cv.generated', :'a', '2026-06-14 11:00+00'),
('letters', 'letter.generated', :'a', '2026-06-13 10:00+00'),
('cv', 'cv.generated', :'b', '2026-06-12 10:00+00'),
('rise', 'session.started', :'b', '2026-06-12 11:00+00'),
('letters', 'letter.generated', :'b', '2026-06-12 12:00+00'),
('letters', 'letter.generated', :'c', '2026-06-11 12:00+00'),
('cv', 'cv.generated', :'c', '2026-05-01 10:00+00'),
('cv', 'cv.generated', :'c', '2026-06-15 12:00+00');
delete from public.events where created_at > '2026-06-15 12:00+00' or created_at < '2026-01-01';
select tests.authenticate_as_service_role();
select get_ecosystem_stats(7) as s \gset
select is(:'s'::jsonb -> 'events', '7', 'events in the window [now - 7 days, now)');
select is(:'s'::jsonb -> 'active_users', '3', 'active users: distinct actors');
select is(:'s'::jsonb -> 'cross_app_users', '2', 'cross-app users: actors in more than one app');
select is(:'s'::jsonb -> 'users_per_app', '{"cv": 2, "letters": 3, "rise": 1}', 'users per app');
select is(:'s'::jsonb -> 'app_pairs',
    '[{"apps": ["cv", "letters"], "users": 2}, {"apps": ["cv", "rise"], "users": 1},
      {"apps": ["letters", "rise"], "users": 1}]',
    'the flywheel: users per pair of apps, most shared first');
select is(
    (select e from jsonb_array_elements(:'s'::jsonb -> 'by_type') as e where e ->> 'type' = 'cv.generated'),
    '{"app_id": "cv", "type": "cv.generated", "events": 3}',
    'events per app and type');
select is(get_ecosystem_stats(60) -> 'events', '8', 'a longer window sees the older event');
select tests.throws_hint('select get_ecosystem_stats(0)', 'PT400', 'invalid_argument', 'p_days 0 is PT400');
select tests.throws_hint('select get_ecosystem_stats(367)', 'PT400', 'invalid_argument',
    'p_days beyond 366 is PT400');
select tests.authenticate_as(:'a');
select throws_ok('select get_ecosystem_stats(7)', '42501', null, 'a signed-in user may not read the statistics');
select tests.reset_role();

-- Retention.
select from adjust_credits(:'a', 10, 'gift');
select count(*) as old_events from public.events where created_at < '2026-05-16 12:00+00' \gset
select cmp_ok(:old_events::int, '>=', 1, 'there are events to purge');
select is(paycore.purge_events(interval '30 days', 1), :old_events::bigint,
    'purge_events deletes the events older than the interval, in batches, and returns the count');
select is_empty($$select 1 from public.events where created_at < '2026-05-16 12:00+00'$$, '... all of them');
select is((select count(*)::int from public.credit_transactions where user_id = :'a'), 1,
    'the ledger is never touched');
select tests.throws_hint($$select paycore.purge_events(interval '1 hour')$$, 'PT400', 'invalid_argument',
    'less than a day is PT400');

select * from finish();
rollback;
