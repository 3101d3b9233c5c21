-- core: public.events, paycore.log_event, public.track_event.
begin;
select plan(51);

select has_table('public', 'events', 'public.events exists');
select columns_are('public', 'events', array[
    'id', 'app_id', 'type', 'actor_id', 'subject_type', 'subject_id', 'meta', 'dedup_key', 'created_at',
    'source'
]);
select col_is_pk('public', 'events', 'id', 'events.id is the primary key');
select col_is_unique('public', 'events', 'dedup_key', 'events.dedup_key is unique');

select tests.create_user('core-a@example.test') as a \gset
select tests.create_user('core-b@example.test') as b \gset

-- log_event: dedup returns the first id.
select paycore.log_event('test.logged', :'a', 'thing', '1', 'app1', '{"n": 1}', 'core-dedup-1') as first_id \gset
select is(
    paycore.log_event('test.logged', :'a', 'thing', '1', 'app1', '{"n": 2}', 'core-dedup-1'),
    :'first_id'::uuid, 'log_event with a used dedup_key returns the first id'
);
select is((select count(*)::int from events where dedup_key = 'core-dedup-1'), 1, '... and writes nothing');
select isnt(
    paycore.log_event('test.logged', :'a'), paycore.log_event('test.logged', :'a'),
    'without a dedup_key every call is a new event'
);

-- track_event as a signed-in user.
select tests.authenticate_as(:'a');
select track_event('app1', 'page.viewed', '{"path": "/"}', 'view-1') as tracked \gset
select is(
    (select actor_id from events where id = :'tracked'), :'a'::uuid,
    'track_event records the caller as actor'
);
select is(track_event('app1', 'page.viewed', '{"path": "/other"}', 'view-1'), :'tracked'::uuid,
    'a repeated dedup_key returns the first id');
select is((select count(*)::int from events where type = 'page.viewed'), 1, '... and writes nothing');
select is((select meta from events where id = :'tracked'), '{"path": "/"}'::jsonb, '... the first meta stays');
select isnt(track_event('app1', 'page.viewed'), null, 'meta and dedup_key are optional');

-- Bad input: PT400, nothing written.
select tests.throws_hint($$select track_event('app1', '')$$, 'PT400', 'invalid_argument', 'blank type is refused');
select tests.throws_hint($$select track_event('app1', repeat('x', 101))$$, 'PT400', 'invalid_argument',
    'a type over 100 characters is refused');
select tests.throws_hint($$select track_event('app1', 't', '[1]')$$, 'PT400', 'invalid_argument',
    'meta that is not an object is refused');
select tests.throws_hint(
    format($$select track_event('app1', 't', %L)$$, jsonb_build_object('x', repeat('y', 9000))),
    'PT400', 'invalid_argument', 'meta over 8 kB is refused');
select tests.throws_hint($$select track_event('', 't')$$, 'PT400', 'invalid_argument', 'blank app_id is refused');
select tests.throws_hint($$select track_event('app1', 't', '{}', '')$$, 'PT400', 'invalid_argument',
    'an empty dedup_key is refused');
select is((select count(*)::int from events where actor_id = :'a' and type not in ('page.viewed', 'test.logged')), 0,
    'refused calls wrote nothing');

-- Clients cannot write the table directly.
select tests.throws_hint($$insert into events (type) values ('forged')$$, '42501', null,
    'authenticated cannot insert into events');

-- Dedup keys are per user: b's key does not collide with a's.
select tests.authenticate_as(:'b');
select isnt(track_event('app1', 'page.viewed', '{}', 'view-1'), :'tracked'::uuid,
    'the same dedup_key of another user is another event');
select is((select count(*)::int from events where actor_id <> :'b' or actor_id is null), 0,
    'RLS: a user reads only its own events');

select tests.clear_authentication();
select tests.throws_hint($$select track_event('app1', 't')$$, '42501', null, 'anon cannot track events');
select tests.throws_hint('select * from public.events', '42501', null, 'anon cannot read events');

select tests.authenticate_as_service_role();
select tests.throws_hint($$select track_event('app1', 't')$$, '42501', null,
    'service_role has no user to track as');
select cmp_ok((select count(*)::int from events), '>=', 6, 'service_role reads every event');

-- Who wrote an event: paycore's own functions, or a client through track_event.
select tests.reset_role();
select is((select source from events where dedup_key = 'core-dedup-1'), 'paycore',
    'log_event writes events of source paycore');
select is((select source from events where id = :'tracked'), 'client',
    'track_event writes events of source client');
select tests.throws_hint($$insert into events (type, source) values ('x', 'stripe')$$, '23514', null,
    'source is paycore or client');

-- Clients cannot write into paycore's own namespaces.
select tests.create_user('core-c@example.test') as c \gset
select tests.authenticate_as(:'c');
select tests.throws_hint($$select track_event('app1', 'generation.completed')$$, 'PT400', 'invalid_argument',
    'a client cannot forge generation.completed');
select tests.throws_hint($$select track_event('app1', 'Generation.Failed')$$, 'PT400', 'invalid_argument',
    '... in any letter case');
select tests.throws_hint($$select track_event('app1', '  credits:granted')$$, 'PT400', 'invalid_argument',
    '... behind white space or another separator');
select tests.throws_hint($$select track_event('app1', 'paycore')$$, 'PT400', 'invalid_argument',
    '... nor the bare namespace');
select tests.throws_hint(format('select track_event(%L, %L)', 'app1', e'\t-generation.completed'), 'PT400',
    'invalid_argument', '... nor behind leading tabs or punctuation');
select tests.throws_hint(format('select track_event(%L, %L)', 'app1', e'credit\u00a0granted'), 'PT400',
    'invalid_argument', '... nor followed by a Unicode space');
select tests.throws_hint(
    format('select track_event(%L, %L)', 'app1', e'\uff47\uff45\uff4e\uff45\uff52\uff41\uff54\uff49\uff4f\uff4e.x'),
    'PT400', 'invalid_argument', '... nor in fullwidth look-alike letters (types are ASCII)');
select tests.throws_hint(format('select track_event(%L, %L)', 'app1', e'generation\u200b.completed'), 'PT400',
    'invalid_argument', '... nor with a zero-width space inside');
select tests.throws_hint($$select track_event('app1', 'generation-completed')$$, 'PT400', 'invalid_argument',
    '... nor with a hyphen as separator');
select tests.throws_hint(format('select track_event(%L, %L)', e'\u0085\u200d', 'x'), 'PT400', 'invalid_argument',
    'an app_id of next-line and zero-width characters is blank');
select isnt(track_event('app1', 'generator.opened'), null, 'a namespace of its own is fine');
select tests.throws_hint(format('select track_event(%L, %L)', 'app1', e'\t\n '), 'PT400', 'invalid_argument',
    'a type of tabs and newlines is blank');
select tests.throws_hint(format('select track_event(%L, %L)', 'app1', e'\u00a0\u3000'), 'PT400',
    'invalid_argument', 'a type of Unicode spaces is blank');
select tests.throws_hint(format('select track_event(%L, %L)', e'\u2003', 'x'), 'PT400', 'invalid_argument',
    'an app_id of Unicode spaces is blank');

-- At most track_event_hourly_limit client events per user and clock hour: PT429.
select tests.reset_role();
update paycore.settings set value = '3' where key = 'track_event_hourly_limit';
select tests.travel_to('2031-03-01 10:05:00+00');
select tests.authenticate_as(:'c');
select track_event('app1', 'clicked', '{}', 'rate-1') as rate_first \gset
select from track_event('app1', 'clicked');
select from track_event('app1', 'clicked');
select tests.throws_hint($$select track_event('app1', 'clicked')$$, 'PT429', 'rate_limited',
    'beyond the hourly limit a client event is PT429 rate_limited');
select is(track_event('app1', 'clicked', '{}', 'rate-1'), :'rate_first'::uuid,
    '... while a retry of a recorded dedup key still returns its event');
select is((select count(*)::int from events where actor_id = :'c' and type = 'clicked'), 3,
    '... and the refused call wrote nothing');
select tests.authenticate_as(:'b');
select isnt(track_event('app1', 'clicked'), null, 'the limit is per user');
select tests.travel_to('2031-03-01 10:59:59+00');
select tests.authenticate_as(:'c');
select tests.throws_hint($$select track_event('app1', 'clicked')$$, 'PT429', 'rate_limited',
    'the limit holds until the clock hour ends');
select tests.travel_to('2031-03-01 11:00:00+00');
select isnt(track_event('app1', 'clicked'), null, 'a new clock hour starts from zero');
select tests.travel_to(null);

-- A JWT outlives its user: acting as a deleted (or soft-deleted) user is PT403.
select tests.reset_role();
update auth.users set deleted_at = now() where id = :'c';
select tests.authenticate_as(:'c');
select tests.throws_hint($$select track_event('app1', 'x')$$, 'PT403', 'forbidden',
    'a soft-deleted user''s JWT is refused');
select tests.reset_role();
delete from auth.users where id = :'c';
select tests.authenticate_as(:'c');
select tests.throws_hint($$select track_event('app1', 'x')$$, 'PT403', 'forbidden',
    'a deleted user''s JWT is refused with PT403, not a foreign key error');

select * from finish();
rollback;
