-- core: public.events, paycore.log_event, public.track_event.
begin;
select plan(26);

select has_table('public', 'events', 'public.events exists');
select columns_are('public', 'events', array[
    'id', 'app_id', 'type', 'actor_id', 'subject_type', 'subject_id', 'meta', 'dedup_key', 'created_at'
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

select * from finish();
rollback;
