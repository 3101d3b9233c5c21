-- marketplace operations: presence heartbeats, matches and pair rooms; contracts and their
-- links; properties and the mortgage flow (apply, offer, accept) with its fee; telbank
-- transfers with their fee and settlement; fees of every scope settled together; who sees
-- what; the dashboards.
begin;
select plan(218);

-- Owner-only helpers (called after tests.reset_role()).
-- Everything a call of this module may write: a refused call leaves it as it was.
create function pg_temp.state()
returns jsonb
language sql stable
as $$
    select tests.digest(array[
        'public.thinkers',
        'public.rooms',
        'public.presence_sessions',
        'public.contracts',
        'public.contract_links',
        'public.properties',
        'public.mortgage_applications',
        'public.mortgage_offers',
        'public.mortgage_contracts',
        'public.transfers',
        'public.fee_events',
        'public.events'
    ]::regclass[])
$$;

-- The fee events of one subject, as 'rule:amount' in order.
create function pg_temp.fees_of(p_subject_id text)
returns text
language sql stable
as $$
    select coalesce(string_agg(e.fee_id || ':' || e.amount_cents, ' ' order by e.fee_id, e.amount_cents), '')
    from public.fee_events as e
    where e.subject_id = p_subject_id
$$;

-- The events of one type and subject.
create function pg_temp.events_of(p_type text, p_subject_id text)
returns bigint
language sql stable
as $$
    select count(*) from public.events as e where e.type = p_type and e.subject_id = p_subject_id
$$;

set local timezone = 'UTC';

select tests.create_user('ops-a@example.test') as a \gset
select tests.create_user('ops-b@example.test') as b \gset
select tests.create_user('ops-c@example.test') as c \gset
select tests.create_user('ops-d@example.test') as d \gset
select tests.create_user('ops-e@example.test') as e \gset
select tests.create_user('ops-s@example.test') as s \gset

-- Who may call what: every function is authenticated only, settle_transfer service_role only.
select results_eq(
    $$select p.proname::text collate "default", has_function_privilege('anon', p.oid, 'execute'),
             has_function_privilege('authenticated', p.oid, 'execute'),
             has_function_privilege('service_role', p.oid, 'execute')
      from pg_proc as p
      where p.pronamespace = 'public'::regnamespace and p.proname::text in (
          'presence_heartbeat', 'presence_leave', 'presence_match', 'register_contract', 'link_contract',
          'register_property', 'list_open_mortgage_applications', 'apply_for_mortgage', 'make_mortgage_offer',
          'accept_mortgage_offer', 'log_transfer', 'settle_transfer'
      )
      order by p.proname::text$$,
    $$values ('accept_mortgage_offer', false, true, false), ('apply_for_mortgage', false, true, false),
             ('link_contract', false, true, false), ('list_open_mortgage_applications', false, true, false),
             ('log_transfer', false, true, false), ('make_mortgage_offer', false, true, false),
             ('presence_heartbeat', false, true, false), ('presence_leave', false, true, false),
             ('presence_match', false, true, false), ('register_contract', false, true, false),
             ('register_property', false, true, false), ('settle_transfer', false, false, true)$$,
    'every function is granted to authenticated only, settle_transfer to service_role only'
);
select tests.throws_hint($$select presence_heartbeat('projekt_alpha')$$, 'PT403', 'forbidden',
    'the owner (not a signed-in user) calling presence_heartbeat is PT403');
select tests.throws_hint($$select * from list_open_mortgage_applications()$$, 'PT403', 'forbidden',
    '... and list_open_mortgage_applications PT403');
select tests.authenticate_as_service_role();
select throws_ok($$select presence_heartbeat('projekt_alpha')$$, '42501', null,
    'service_role may not call presence_heartbeat');
select tests.clear_authentication();
select throws_ok($$select log_transfer('in', 'w', 'n', 1, 'ETH', 1, 'eur')$$, '42501', null,
    'anon may not call log_transfer');
select tests.reset_role();

-- presence_heartbeat: one session per thinker and pair code.
select tests.travel_to('2032-05-10 09:00:00+00');
select tests.authenticate_as(:'a');
select x.id as sa from presence_heartbeat('Projekt_Alpha ') as x \gset
select tests.reset_role();
select results_eq(
    format($$select thinker_id, pair_code, status, room_id, last_seen_at, online_since, beats
             from public.presence_sessions where id = %L$$, :'sa'),
    format($$values (%L::uuid, 'projekt_alpha', 'online', null::text, '2032-05-10 09:00:00+00'::timestamptz,
             '2032-05-10 09:00:00+00'::timestamptz, 1)$$, :'a'),
    'the first heartbeat creates the session: code trimmed and lowercased, online, last seen at the clock, 1 beat'
);
select results_eq(
    format($$select actor_id, subject_type, meta from public.events
             where type = 'presence.online' and subject_id = %L$$, :'sa'),
    format($$values (%L::uuid, 'presence_session', '{"pair_code": "projekt_alpha"}'::jsonb)$$, :'a'),
    '... and logs presence.online'
);
select tests.travel_to('2032-05-10 09:00:20+00');
select tests.authenticate_as(:'a');
select results_eq(
    $$select id, status, beats, last_seen_at, online_since from presence_heartbeat('PROJEKT_ALPHA')$$,
    format($$values (%L::uuid, 'online', 2, '2032-05-10 09:00:20+00'::timestamptz,
             '2032-05-10 09:00:00+00'::timestamptz)$$, :'sa'),
    'a heartbeat 20 s later refreshes the same session: beats 2, last_seen_at moves, online_since stays'
);
select tests.travel_to('2032-05-10 09:01:20+00');
select results_eq(
    $$select id, beats, last_seen_at, online_since from presence_heartbeat('projekt_alpha')$$,
    format($$values (%L::uuid, 3, '2032-05-10 09:01:20+00'::timestamptz, '2032-05-10 09:00:00+00'::timestamptz)$$,
        :'sa'),
    'a heartbeat exactly a minute after the last one continues the stretch: beats 3'
);
select tests.reset_role();
select is(pg_temp.events_of('presence.online', :'sa'), 1::bigint, 'heartbeats within the minute log nothing');
select tests.travel_to('2032-05-10 09:02:21+00');
select tests.authenticate_as(:'a');
select results_eq(
    $$select id, status, beats, last_seen_at, online_since from presence_heartbeat('projekt_alpha')$$,
    format($$values (%L::uuid, 'online', 1, '2032-05-10 09:02:21+00'::timestamptz,
             '2032-05-10 09:02:21+00'::timestamptz)$$, :'sa'),
    'a heartbeat after 61 s of silence restarts the stretch: beats 1, online_since moves'
);
select tests.reset_role();
select is(pg_temp.events_of('presence.online', :'sa'), 2::bigint, '... and logs presence.online again');
select tests.authenticate_as(:'a');
select x.id as sa2 from presence_heartbeat('familie') as x \gset
select tests.reset_role();
select results_eq(
    format('select pair_code from public.presence_sessions where thinker_id = %L order by pair_code', :'a'),
    $$values ('familie'), ('projekt_alpha')$$,
    'one session per thinker and pair code: another code is another session'
);

-- presence_leave.
select tests.travel_to('2032-05-10 09:02:30+00');
select tests.authenticate_as(:'a');
select results_eq(
    $$select id, status, last_seen_at from presence_leave('Projekt_Alpha')$$,
    format($$values (%L::uuid, 'offline', '2032-05-10 09:02:21+00'::timestamptz)$$, :'sa'),
    'presence_leave declares the session offline and returns it'
);
select tests.travel_to('2032-05-10 09:02:40+00');
select results_eq(
    $$select id, status, beats, online_since from presence_heartbeat('projekt_alpha')$$,
    format($$values (%L::uuid, 'online', 1, '2032-05-10 09:02:40+00'::timestamptz)$$, :'sa'),
    'a heartbeat 10 s after leaving is online again: a new stretch, beats 1'
);
select tests.reset_role();
select is(pg_temp.events_of('presence.online', :'sa'), 3::bigint, '... logged as presence.online');

-- Refused presence calls write nothing, not even a first-time caller's thinker row.
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint($$select presence_heartbeat('')$$, 'PT400', 'invalid_argument', 'an empty code is PT400');
select tests.throws_hint(format('select presence_heartbeat(%L)', repeat('x', 65)), 'PT400', 'invalid_argument',
    'a code of 65 characters is PT400');
select tests.throws_hint($$select presence_heartbeat('projekt alpha')$$, 'PT400', 'invalid_argument',
    'a code with a space inside is PT400');
select tests.throws_hint($$select presence_heartbeat('_alpha')$$, 'PT400', 'invalid_argument',
    'a code starting with _ is PT400');
select tests.throws_hint($$select presence_leave('never_used')$$, 'PT404', 'not_found',
    'presence_leave without a session under the code is PT404');
select tests.throws_hint($$select presence_match('')$$, 'PT400', 'invalid_argument',
    'presence_match with an empty code is PT400');
select tests.authenticate_as(:'s');
select tests.throws_hint($$select presence_heartbeat(null)$$, 'PT400', 'invalid_argument',
    'a first-time caller without a code is PT400');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb,
    'the refused presence calls wrote nothing: no session, no events row, no thinker row');
select tests.authenticate_as(:'a');
select lives_ok(format('select presence_heartbeat(%L)', repeat('x', 64)), 'a code of 64 characters is accepted');
select tests.reset_role();

-- presence_match. At 10:00, a asks; b was seen 61 s before, c 59 s before, d left, e is under
-- another code.
select tests.travel_to('2032-05-10 09:58:59+00');
select tests.authenticate_as(:'b');
select x.id as sb from presence_heartbeat('Match_Code') as x \gset
select tests.travel_to('2032-05-10 09:59:01+00');
select tests.authenticate_as(:'c');
select x.id as sc from presence_heartbeat('match_code') as x \gset
select tests.travel_to('2032-05-10 09:59:30+00');
select tests.authenticate_as(:'d');
select x.id as sd from presence_heartbeat('match_code') as x \gset
select x.status as sd_status from presence_leave('match_code') as x \gset
select tests.travel_to('2032-05-10 09:59:50+00');
select tests.authenticate_as(:'e');
select x.id as se from presence_heartbeat('other_code') as x \gset
select tests.reset_role();
select
    'presence:match_code:' || least(x.public_id, y.public_id) || '+' || greatest(x.public_id, y.public_id) as room_ac
from public.thinkers as x, public.thinkers as y where x.id = :'a' and y.id = :'c' \gset
select
    'presence:match_code:' || least(x.public_id, y.public_id) || '+' || greatest(x.public_id, y.public_id) as room_ab
from public.thinkers as x, public.thinkers as y where x.id = :'a' and y.id = :'b' \gset
select
    'presence:match_code:' || least(x.public_id, y.public_id) || '+' || greatest(x.public_id, y.public_id) as room_bc
from public.thinkers as x, public.thinkers as y where x.id = :'b' and y.id = :'c' \gset
select tests.travel_to('2032-05-10 10:00:00+00');
select tests.authenticate_as(:'a');
select string_agg(x.thinker_id || ' ' || x.room_id, ',') as m1 from presence_match('match_code') as x \gset
select tests.reset_role();
select is(:'m1', :'c' || ' ' || :'room_ac',
    'presence_match returns the other thinker online under the code (seen 59 s before), with the pair''s room');
select ok(strpos(:'m1', :'b') = 0, '... not the one seen 61 s before');
select ok(strpos(:'m1', :'d') = 0, '... not the one who left');
select ok(strpos(:'m1', :'e') = 0 and strpos(:'m1', :'a') = 0, '... neither one under another code nor the caller');
select matches(:'room_ac'::text, '^presence:match_code:t-[0-9a-f]{20}\+t-[0-9a-f]{20}$',
    'the room id is presence:<code>:<public id>+<public id>');
select results_eq(
    format('select type, owner_id, partner_id, meta from public.rooms where id = %L', :'room_ac'),
    format($$values ('mixed', least(%1$L::uuid, %2$L::uuid), greatest(%1$L::uuid, %2$L::uuid),
             '{"source": "presence", "pair_code": "match_code"}'::jsonb)$$, :'a', :'c'),
    'the pair''s room exists with both parties, the smaller uuid its owner'
);
select results_eq(
    format($$select actor_id, meta from public.events where type = 'presence.matched' and subject_id = %L$$,
        :'room_ac'),
    format($$values (%L::uuid, '{"pair_code": "match_code"}'::jsonb)$$, :'a'),
    'a new room logs presence.matched'
);
select results_eq(
    format($$select status, beats, last_seen_at from public.presence_sessions
             where thinker_id = %L and pair_code = 'match_code'$$, :'a'),
    $$values ('online', 1, '2032-05-10 10:00:00+00'::timestamptz)$$,
    'the match is a heartbeat of the caller: its session under the code is online at the clock'
);
select tests.authenticate_as(:'a');
select results_eq($$select room_id from presence_match('match_code')$$, format('values (%L)', :'room_ac'),
    'matching again returns the same room');
select tests.reset_role();
select results_eq(
    format($$select (select count(*) from public.rooms where id like 'presence:match_code:%%' and %L in
             (owner_id, partner_id)), (select count(*) from public.events where type = 'presence.matched'
             and meta ->> 'pair_code' = 'match_code')$$, :'a'),
    $$values (1::bigint, 1::bigint)$$,
    '... reused: no second room, no second presence.matched'
);
select tests.authenticate_as(:'b');
select x.beats as sb_beats from presence_heartbeat('match_code') as x \gset
select tests.authenticate_as(:'a');
select results_eq(
    $$select thinker_id, room_id from presence_match('match_code')$$,
    format('values (%L::uuid, %L), (%L::uuid, %L)', :'b', :'room_ab', :'c', :'room_ac'),
    'the most recent first: b, back online, with a new room of a and b, then c'
);
select tests.authenticate_as(:'c');
select results_eq(
    format($$select room_id from presence_match('match_code') where thinker_id = %L$$, :'a'),
    format('values (%L)', :'room_ac'),
    'c matching finds the room a made: one room per pair and code, whoever asks first'
);
select tests.reset_role();
select is((select count(*) from public.rooms where id like 'presence:match\_code:%'), 3::bigint,
    'three pairs, three rooms');
select tests.authenticate_as(:'a');
select results_eq('select id from public.rooms order by id',
    format('select x from unnest(array[%L, %L]) as x order by x', :'room_ab', :'room_ac'),
    'a party sees its rooms (with b and with c), not the room of b and c');
select tests.authenticate_as(:'c');
select results_eq('select id from public.rooms order by id',
    format('select x from unnest(array[%L, %L]) as x order by x', :'room_ac', :'room_bc'),
    'the other party sees the room too');
select tests.authenticate_as(:'d');
select is_empty('select 1 from public.rooms', 'a third user sees none of the rooms');
select tests.authenticate_as(:'a');
select results_eq('select count(*), count(*) filter (where thinker_id <> auth.uid()) from public.presence_sessions',
    $$values (4::bigint, 0::bigint)$$, 'a thinker sees its own sessions only');

-- p_room_id: a room the caller is a party to.
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select presence_heartbeat('match_code', %L)$$, :'room_bc'), 'PT404', 'not_found',
    'a heartbeat in a room the caller is not a party to is PT404');
select tests.throws_hint($$select presence_heartbeat('match_code', 'presence:no-such-room')$$, 'PT404',
    'not_found', 'a heartbeat in an unknown room is PT404');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and writes nothing');
select tests.authenticate_as(:'a');
select is((presence_heartbeat('match_code', :'room_ac')).room_id, :'room_ac',
    'a heartbeat in its own room records the room');
select is((presence_heartbeat('match_code')).room_id, :'room_ac', '... a later heartbeat without a room keeps it');
select tests.reset_role();

-- register_contract.
select tests.travel_to('2032-05-10 12:00:00+00');
select repeat('ab', 32) as hash1 \gset
select tests.authenticate_as(:'a');
select x.id as c1 from register_contract(
    'Mortgage contract #123', 'Application/PDF', 2048, 's3://paycore/contracts/c1.pdf', upper(:'hash1')
) as x \gset
select tests.reset_role();
select is(
    (select to_jsonb(k) - array['id', 'created_at'] from public.contracts as k where k.id = :'c1'),
    jsonb_build_object(
        'name', 'Mortgage contract #123', 'mime_type', 'application/pdf', 'byte_size', 2048,
        'storage_url', 's3://paycore/contracts/c1.pdf', 'hash_sha256', :'hash1', 'created_by', :'a'
    ),
    'register_contract stores the caller''s contract: media type and hash lowercased'
);
select results_eq(
    format($$select actor_id, subject_type, meta from public.events
             where type = 'contract.registered' and subject_id = %L$$, :'c1'),
    format($$values (%L::uuid, 'contract', '{"mime_type": "application/pdf", "byte_size": 2048}'::jsonb)$$, :'a'),
    '... and logs contract.registered'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select results_eq(
    format($$select id, name from register_contract('Another name', 'text/plain', 5, 's3://x', %L)$$, :'hash1'),
    format($$values (%L::uuid, 'Mortgage contract #123')$$, :'c1'),
    'the same hash again returns the first registration unchanged'
);
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and writes nothing: no second row, no second event');
select tests.authenticate_as(:'b');
select x.id as cb from register_contract('B''s copy', 'application/pdf', 2048, 's3://b/c.pdf', :'hash1') as x \gset
select tests.reset_role();
select results_eq(
    format('select created_by from public.contracts where hash_sha256 = %L order by created_by', :'hash1'),
    format('select x from unnest(array[%L::uuid, %L::uuid]) as x order by x', :'a', :'b'),
    'another creator registers the same hash: its own row');

select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select register_contract('  ', 'application/pdf', 1, 's3://x', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'a blank name is PT400');
select tests.throws_hint(
    format($$select register_contract(%L, 'application/pdf', 1, 's3://x', %L)$$, repeat('x', 201), :'hash1'),
    'PT400', 'invalid_argument', 'a name of 201 characters is PT400');
select tests.throws_hint(format($$select register_contract('x', 'application/zip', 1, 's3://x', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'a media type outside the setting contract_mime_types is PT400');
select tests.throws_hint(format($$select register_contract('x', null, 1, 's3://x', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'no media type is PT400');
select tests.throws_hint(format($$select register_contract('x', 'application/pdf', 0, 's3://x', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'a size of 0 is PT400');
select tests.throws_hint(format($$select register_contract('x', 'application/pdf', -1, 's3://x', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'a negative size is PT400');
select tests.throws_hint(format($$select register_contract('x', 'application/pdf', 1, '  ', %L)$$, :'hash1'),
    'PT400', 'invalid_argument', 'a blank storage_url is PT400');
select tests.throws_hint(
    format($$select register_contract('x', 'application/pdf', 1, 's3://x', %L)$$, repeat('a', 63)),
    'PT400', 'invalid_argument', 'a hash of 63 hex digits is PT400');
select tests.throws_hint(
    format($$select register_contract('x', 'application/pdf', 1, 's3://x', %L)$$, repeat('g', 64)),
    'PT400', 'invalid_argument', 'a hash that is not hex is PT400');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused registrations wrote nothing');
update paycore.settings set value = value || '["application/zip"]' where key = 'contract_mime_types';
select tests.authenticate_as(:'a');
select is((register_contract('Archive', 'application/zip', 10, 's3://x.zip', repeat('cd', 32))).mime_type,
    'application/zip', 'a media type added to the setting is accepted');

-- link_contract. a issues v1, b books it (its holder); d issues vd.
select x.id as v1 from issue_voucher(
    'consulting.session', 'Mortgage advice', 60, '2032-05-11 00:00+00', '2032-05-20 00:00+00', 1025, 'eur'
) as x \gset
select tests.authenticate_as(:'b');
select x.id as bk1 from book_voucher(:'v1', '2032-05-12 10:00+00') as x \gset
select tests.authenticate_as(:'d');
select x.id as vd from issue_voucher(
    'consulting.session', 'Other advice', 60, '2032-05-11 00:00+00', '2032-05-20 00:00+00'
) as x \gset
select tests.authenticate_as(:'b');
select is_empty(format('select 1 from public.contracts where id = %L', :'c1'),
    'before any link, the voucher''s holder does not see the contract');
select tests.authenticate_as(:'c');
select is_empty(format('select 1 from public.contracts where id = %L', :'c1'), '... nor the room''s other party');

select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select link_contract(%L, 'signature', %L)$$, :'c1', :'v1'), 'PT400',
    'invalid_argument', 'an unknown role is PT400');
select tests.throws_hint(format($$select link_contract(%L, 'primary')$$, :'c1'), 'PT400', 'invalid_argument',
    'no target is PT400');
select tests.throws_hint(format($$select link_contract(%L, 'primary', %L, %L)$$, :'c1', :'v1', :'room_ac'), 'PT400',
    'invalid_argument', 'both a voucher and a room are PT400');
select tests.throws_hint(format($$select link_contract(%L, 'primary', %L)$$, :'cb', :'v1'), 'PT404', 'not_found',
    'a contract of someone else is PT404');
select tests.throws_hint(format($$select link_contract(%L, 'primary', %L)$$, :'c1', :'vd'), 'PT404', 'not_found',
    'a voucher the caller is not a party to is PT404');
select tests.throws_hint(format($$select link_contract(%L, 'primary', p_room_id => %L)$$, :'c1', :'room_bc'),
    'PT404', 'not_found', 'a room the caller is not a party to is PT404');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused links wrote nothing');

select tests.authenticate_as(:'a');
select x.id as l1 from link_contract(:'c1', 'primary', :'v1') as x \gset
select x.id as l2 from link_contract(:'c1', 'annex', p_room_id => :'room_ac') as x \gset
select tests.reset_role();
select results_eq(
    format($$select id, contract_id, voucher_id, room_id, role, created_by from public.contract_links
             where contract_id = %L order by role desc$$, :'c1'),
    format($$values (%L::uuid, %L::uuid, %L, null::text, 'primary', %L::uuid),
                    (%L::uuid, %L::uuid, null::text, %L, 'annex', %L::uuid)$$,
        :'l1', :'c1', :'v1', :'a', :'l2', :'c1', :'room_ac', :'a'),
    'the creator links its contract to its own voucher (issuer) and to a room it is a party to'
);
select results_eq(
    format($$select actor_id, meta from public.events where type = 'contract.linked' and subject_id = %L
             order by meta ->> 'role' desc$$, :'c1'),
    format($$values (%L::uuid, jsonb_build_object('role', 'primary', 'voucher_id', %L, 'room_id', null)),
                    (%L::uuid, jsonb_build_object('role', 'annex', 'voucher_id', null, 'room_id', %L))$$,
        :'a', :'v1', :'a', :'room_ac'),
    'each link logs contract.linked'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select is((link_contract(:'c1', 'primary', :'v1')).id, :'l1'::uuid,
    'linking again with the same role returns the link');
select tests.throws_hint(format($$select link_contract(%L, 'offer', p_room_id => %L)$$, :'c1', :'room_ac'), 'PT409',
    'invalid_state', 'linking again with another role is PT409');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... neither writes anything');

select tests.authenticate_as(:'b');
select results_eq(format('select id from public.contracts where id = %L', :'c1'), format('values (%L::uuid)', :'c1'),
    'after the link, the voucher''s holder sees the contract');
select results_eq(format('select id from public.contract_links where contract_id = %L', :'c1'),
    format('values (%L::uuid)', :'l1'), '... and the link to the voucher, not the one to the room');
select tests.authenticate_as(:'c');
select results_eq(format('select id from public.contracts where id = %L', :'c1'), format('values (%L::uuid)', :'c1'),
    'the room''s other party sees the contract');
select results_eq(format('select id from public.contract_links where contract_id = %L', :'c1'),
    format('values (%L::uuid)', :'l2'), '... and the link to the room only');
select tests.authenticate_as(:'d');
select is_empty(format('select 1 from public.contracts where id = %L', :'c1'), 'a stranger never sees the contract');
select is_empty(format('select 1 from public.contract_links where contract_id = %L', :'c1'), '... nor its links');
select tests.authenticate_as(:'b');
select lives_ok(format($$select link_contract(%L, 'annex', %L)$$, :'cb', :'v1'),
    'the holder links its own contract to the voucher it holds');
select tests.authenticate_as(:'a');
select results_eq(format('select created_by from public.contracts where id = %L', :'cb'),
    format('values (%L::uuid)', :'b'), '... which the issuer then sees');

-- register_property.
select tests.authenticate_as(:'a');
select x.id as h1 from register_property('Hauptstrasse 1, 10115 Berlin', '{"rooms": 4, "area_m2": 120}') as x \gset
select tests.reset_role();
select matches(:'h1'::text, '^house-[1-9][0-9]*$', 'a property id is house-<n>');
select results_eq(
    format($$select owner_id, address, meta from public.properties where id = %L$$, :'h1'),
    format($$values (%L::uuid, 'Hauptstrasse 1, 10115 Berlin', '{"rooms": 4, "area_m2": 120}'::jsonb)$$, :'a'),
    'register_property stores the caller''s property with its meta'
);
select is(pg_temp.events_of('property.registered', :'h1'), 1::bigint, '... and logs property.registered');
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select results_eq(
    $$select id, meta from register_property('Hauptstrasse 1, 10115 Berlin', '{"rooms": 5}')$$,
    format($$values (%L, '{"rooms": 4, "area_m2": 120}'::jsonb)$$, :'h1'),
    'the same address again returns the first registration unchanged'
);
select tests.throws_hint($$select register_property('   ')$$, 'PT400', 'invalid_argument',
    'a blank address is PT400');
select tests.throws_hint(format('select register_property(%L)', repeat('x', 501)), 'PT400', 'invalid_argument',
    'an address of 501 characters is PT400');
select tests.throws_hint($$select register_property(null)$$, 'PT400', 'invalid_argument', 'no address is PT400');
select tests.throws_hint($$select register_property('Elsewhere 2', '[4]')$$, 'PT400', 'invalid_argument',
    'meta that is not an object is PT400');
select tests.throws_hint(
    format($$select register_property('Elsewhere 2', jsonb_build_object('x', %L))$$, repeat('x', 8200)),
    'PT400', 'invalid_argument', 'meta beyond 8 kB is PT400');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... none of them writes anything');
select tests.authenticate_as(:'a');
select x.id as h2 from register_property('Elsewhere 2', null) as x \gset
select tests.authenticate_as(:'b');
select x.id as hb from register_property('Hauptstrasse 1, 10115 Berlin') as x \gset
select isnt(:'hb'::text, :'h1'::text, 'another owner registers the same address: its own property');
select tests.authenticate_as(:'a');
select results_eq('select id, meta from public.properties order by id',
    format($$select x.id, x.meta from (values (%L, '{"rooms": 4, "area_m2": 120}'::jsonb), (%L, '{}'::jsonb))
             as x (id, meta) order by x.id$$, :'h1', :'h2'),
    'the owner sees its properties (null meta stored as {}), not the other owner''s');
select tests.authenticate_as(:'c');
select is_empty('select 1 from public.properties', 'others see no property');

-- apply_for_mortgage.
select tests.authenticate_as(:'a');
select x.id as ma1 from apply_for_mortgage(:'h1', 30000100, 'EUR', 25, 'fixed', 0.0375) as x \gset
select tests.reset_role();
select is(
    (select to_jsonb(x) - array['id', 'created_at', 'updated_at'] from public.mortgage_applications as x
     where x.id = :'ma1'),
    jsonb_build_object(
        'property_id', :'h1', 'borrower_id', :'a', 'desired_loan', 30000100, 'currency', 'eur',
        'duration_years', 25, 'rate_type', 'fixed', 'max_interest', 0.0375, 'status', 'open', 'meta', '{}'::jsonb
    ),
    'apply_for_mortgage stores an open application of the caller, currency EUR stored eur'
);
select matches(:'ma1'::text, '^ma-[0-9]{13}-[0-9a-f]{12}$', 'an application id is ma-<13 digits>-<12 hex digits>');
select results_eq(
    format($$select actor_id, meta from public.events where type = 'mortgage.applied' and subject_id = %L$$, :'ma1'),
    format($$values (%L::uuid, jsonb_build_object('property_id', %L))$$, :'a', :'h1'),
    '... and logs mortgage.applied'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select is((apply_for_mortgage(:'h1', 30000100, 'eur', 25, 'fixed', 0.03750)).id, :'ma1',
    'applying again with the same terms returns the pending application');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 30000000, 'eur', 25, 'fixed', 0.0375)$$, :'h1'),
    'PT409', 'invalid_state', 'applying again with other terms is PT409');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 0, 'eur', 25, 'fixed', 0.0375)$$, :'h2'),
    'PT400', 'invalid_argument', 'a loan of 0 is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eu', 25, 'fixed', 0.0375)$$, :'h2'),
    'PT400', 'invalid_argument', 'a currency of 2 letters is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 0, 'fixed', 0.0375)$$, :'h2'),
    'PT400', 'invalid_argument', 'a duration of 0 years is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 51, 'fixed', 0.0375)$$, :'h2'),
    'PT400', 'invalid_argument', 'a duration of 51 years is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 25, 'floating', 0.0375)$$, :'h2'),
    'PT400', 'invalid_argument', 'a rate type other than fixed or variable is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 25, 'fixed', 0)$$, :'h2'),
    'PT400', 'invalid_argument', 'a max_interest of 0 is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 25, 'fixed', 1.5)$$, :'h2'),
    'PT400', 'invalid_argument', 'a max_interest above 1 is PT400');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 25, 'fixed', 0.03755)$$, :'h2'),
    'PT400', 'invalid_argument', 'a max_interest with 5 decimals is PT400');
select tests.throws_hint($$select apply_for_mortgage('house-999999999', 100, 'eur', 25, 'fixed', 0.0375)$$,
    'PT404', 'not_found', 'an unknown property is PT404');
select tests.throws_hint(format($$select apply_for_mortgage(%L, 100, 'eur', 25, 'fixed', 0.0375)$$, :'hb'),
    'PT404', 'not_found', 'another owner''s property is PT404 (its address reaches no lender)');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the retry and the refused applications wrote nothing');
select tests.authenticate_as(:'b');
select x.id as mb from apply_for_mortgage(:'hb', 30000300, 'usd', 50, 'variable', 1) as x \gset
select tests.reset_role();
select results_eq(format('select duration_years, rate_type, max_interest from public.mortgage_applications
    where id = %L', :'mb'), $$values (50, 'variable', 1.0000::numeric(6, 4))$$,
    '50 years, variable and a max_interest of 1 are accepted');

-- list_open_mortgage_applications.
select tests.authenticate_as(:'c');
select is(
    (select x - 'created_at' from list_open_mortgage_applications() as x where x ->> 'id' = :'ma1'),
    jsonb_build_object(
        'id', :'ma1', 'property_id', :'h1', 'address', 'Hauptstrasse 1, 10115 Berlin',
        'property', '{"rooms": 4, "area_m2": 120}'::jsonb, 'desired_loan', 30000100, 'currency', 'eur',
        'duration_years', 25, 'rate_type', 'fixed', 'max_interest', 0.0375, 'status', 'open', 'offered_by_me', false
    ),
    'a lender lists another''s open application with its property'
);
select results_eq(
    format($$select array_agg(k order by k) from list_open_mortgage_applications() as x, jsonb_object_keys(x) as k
             where x ->> 'id' = %L$$, :'ma1'),
    $$values (array['address', 'created_at', 'currency', 'desired_loan', 'duration_years', 'id', 'max_interest',
                    'offered_by_me', 'property', 'property_id', 'rate_type', 'status'])$$,
    '... with exactly the documented keys'
);
select is_empty(
    format($$select 1 from list_open_mortgage_applications() as x, jsonb_each_text(x) as kv
             where kv.key = 'borrower_id' or kv.value = %L or x::text like '%%' || %L || '%%'$$, :'a', :'a'),
    '... never the borrower: no borrower_id key, no value that is the borrower''s uuid'
);
select tests.authenticate_as(:'a');
select results_eq(
    format($$select x ->> 'id' from list_open_mortgage_applications() as x where x ->> 'id' in (%L, %L)$$,
        :'ma1', :'mb'),
    format('values (%L)', :'mb'), 'a borrower does not list its own application, only the others''');

-- make_mortgage_offer.
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.03, 100000)', :'ma1'), 'PT403', 'forbidden',
    'the borrower cannot offer on its own application');
select tests.authenticate_as(:'c');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.0376, 100000)', :'ma1'), 'PT400',
    'invalid_argument', 'a rate above the application''s max_interest is PT400');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.03501, 100000)', :'ma1'), 'PT400',
    'invalid_argument', 'a rate with 5 decimals is PT400');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.035, 0)', :'ma1'), 'PT400', 'invalid_argument',
    'a monthly payment of 0 is PT400');
select tests.throws_hint($$select make_mortgage_offer('ma-0000000000000-000000000000', 0.03, 100000)$$, 'PT404',
    'not_found', 'an unknown application is PT404');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused offers wrote nothing');
select tests.authenticate_as(:'c');
select x.id as mo_c from make_mortgage_offer(:'ma1', 0.0350, 150000) as x \gset
select tests.reset_role();
select results_eq(
    format($$select application_id, lender_id, borrower_id, interest_rate, monthly_payment, status
             from public.mortgage_offers where id = %L$$, :'mo_c'),
    format($$values (%L, %L::uuid, %L::uuid, 0.0350::numeric(6, 4), 150000::bigint, 'open')$$, :'ma1', :'c', :'a'),
    'make_mortgage_offer stores the lender''s open offer'
);
select matches(:'mo_c'::text, '^mo-[0-9]{13}-[0-9a-f]{12}$', 'an offer id is mo-<13 digits>-<12 hex digits>');
select results_eq(
    format($$select a.status, e.actor_id, e.meta from public.mortgage_applications as a
             join public.events as e on e.type = 'mortgage.offered' and e.subject_id = %L where a.id = %L$$,
        :'mo_c', :'ma1'),
    format($$values ('offered', %L::uuid, jsonb_build_object('application_id', %L, 'interest_rate', 0.0350))$$,
        :'c', :'ma1'),
    'the application becomes offered; the offer logs mortgage.offered'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'c');
select is((make_mortgage_offer(:'ma1', 0.035, 150000)).id, :'mo_c',
    'offering again with the same terms returns the offer');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.034, 150000)', :'ma1'), 'PT409', 'invalid_state',
    'offering again with other terms is PT409');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... neither writes anything');
select tests.authenticate_as(:'d');
select x.id as mo_d from make_mortgage_offer(:'ma1', 0.0375, 155000) as x \gset
select tests.authenticate_as(:'c');
select results_eq(
    format($$select x ->> 'status', (x -> 'offered_by_me')::boolean from list_open_mortgage_applications() as x
             where x ->> 'id' = %L$$, :'ma1'),
    $$values ('offered', true)$$, 'the application is still listed, offered, offered_by_me true for the lender');
select tests.authenticate_as(:'e');
select results_eq(
    format($$select (x -> 'offered_by_me')::boolean from list_open_mortgage_applications() as x
             where x ->> 'id' = %L$$, :'ma1'),
    $$values (false)$$, '... false for a lender who did not offer');

-- Who sees applications and offers.
select tests.authenticate_as(:'a');
select results_eq(
    format($$select (select count(*) from public.mortgage_applications where id = %L),
             (select string_agg(id, ',' order by id) from public.mortgage_offers where application_id = %L)$$,
        :'ma1', :'ma1'),
    format($$select 1::bigint, string_agg(x, ',' order by x) from unnest(array[%L, %L]) as x$$, :'mo_c', :'mo_d'),
    'the borrower sees its application and all its offers'
);
select tests.authenticate_as(:'c');
select results_eq(
    format($$select (select count(*) from public.mortgage_applications where id = %L),
             (select string_agg(id, ',') from public.mortgage_offers where application_id = %L)$$,
        :'ma1', :'ma1'),
    format($$values (1::bigint, %L)$$, :'mo_c'),
    'a lender who offered sees the application and only its own offer'
);
select tests.authenticate_as(:'e');
select is_empty(
    format($$select 1 from public.mortgage_applications where id = %1$L
             union all select 1 from public.mortgage_offers where application_id = %1$L$$, :'ma1'),
    'a lender who did not offer sees neither the application nor its offers'
);

-- accept_mortgage_offer.
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'c');
select tests.throws_hint(format('select accept_mortgage_offer(%L)', :'mo_c'), 'PT403', 'forbidden',
    'the lender cannot accept its offer');
select tests.authenticate_as(:'e');
select tests.throws_hint(format('select accept_mortgage_offer(%L)', :'mo_c'), 'PT404', 'not_found',
    'a stranger: PT404');
select tests.authenticate_as(:'a');
select tests.throws_hint($$select accept_mortgage_offer('mo-0000000000000-000000000000')$$, 'PT404', 'not_found',
    'an unknown offer is PT404');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused acceptances wrote nothing');
select tests.authenticate_as(:'a');
select x.id as mc from accept_mortgage_offer(:'mo_c') as x \gset
select tests.reset_role();
select results_eq(
    format($$select offer_id, application_id, borrower_id, lender_id, contract_id, status
             from public.mortgage_contracts where id = %L$$, :'mc'),
    format($$values (%L, %L, %L::uuid, %L::uuid, null::uuid, 'draft')$$, :'mo_c', :'ma1', :'a', :'c'),
    'the borrower accepts: a draft mortgage contract of borrower and lender'
);
select matches(:'mc'::text, '^mc-[0-9]{13}-[0-9a-f]{12}$', 'a mortgage contract id is mc-<13 digits>-<12 hex digits>');
select results_eq(
    format($$select (select string_agg(id || ':' || status, ' ' order by status) from public.mortgage_offers
                     where application_id = %1$L),
                    (select status from public.mortgage_applications where id = %1$L)$$, :'ma1'),
    format($$values (%L, 'accepted')$$, :'mo_c' || ':accepted ' || :'mo_d' || ':withdrawn'),
    'the offer is accepted, the other withdrawn, the application accepted'
);
select is(
    (select to_jsonb(x) - array['id'] from public.fee_events as x where x.subject_id = :'mc'),
    jsonb_build_object(
        'fee_id', 'mortgage.accepted', 'subject_type', 'mortgage_contract', 'subject_id', :'mc',
        'base_amount', 30000100, 'amount_cents', 150000, 'currency', 'eur', 'beneficiary_id', null,
        'reverses_id', null, 'settlement_id', null, 'created_at', '2032-05-10 12:00+00'::timestamptz,
        'fee_rule', '{"id": "mortgage.accepted", "scope": "mortgage", "percentage": 0.005, "fixed_amount": 0,
                      "currency": null, "beneficiary_id": null}'::jsonb
    ),
    'one platform fee event of scope mortgage: 30000100 x 0.5 % = 150000.5 -> 150000 (half to even)'
);
select results_eq(
    format($$select actor_id, meta from public.events where type = 'mortgage.accepted' and subject_id = %L$$, :'mc'),
    format($$values (%L::uuid, jsonb_build_object('application_id', %L, 'offer_id', %L, 'fee_events', 1))$$,
        :'a', :'ma1', :'mo_c'),
    'accepting logs mortgage.accepted'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format('select accept_mortgage_offer(%L)', :'mo_c'), 'PT409', 'invalid_state',
    'accepting the same offer again is PT409');
select tests.throws_hint(format('select accept_mortgage_offer(%L)', :'mo_d'), 'PT409', 'invalid_state',
    'accepting another offer of the accepted application is PT409');
select tests.authenticate_as(:'e');
select tests.throws_hint(format('select make_mortgage_offer(%L, 0.03, 100000)', :'ma1'), 'PT404', 'not_found',
    'an offer on an accepted application is PT404: a closed application is listed nowhere');
select tests.throws_hint(
    $$select register_contract('x', 'application/pdf', 1, 'javascript:alert(1)', repeat('e', 64))$$,
    'PT400', 'invalid_argument', 'a javascript: storage_url is PT400');
select tests.throws_hint(
    $$select register_contract('x', 'application/pdf', 1, 'http://example.test/c.pdf', repeat('e', 64))$$,
    'PT400', 'invalid_argument', 'a plain http storage_url is PT400');
select tests.throws_hint(
    $$select log_transfer('in', '0xabc', 'Polygon', 1, 'ETH', 1000000000000001, 'eur')$$,
    'PT400', 'invalid_argument', 'a fiat amount above 10^15 is PT400');
select tests.throws_hint(
    $$select apply_for_mortgage('house-1', 1000000000000001, 'eur', 10, 'fixed', 0.05)$$,
    'PT400', 'invalid_argument', 'a loan above 10^15 is PT400');
select tests.authenticate_as(:'c');
select results_eq(format('select id, status from make_mortgage_offer(%L, 0.0350, 150000)', :'ma1'),
    format($$values (%L, 'accepted')$$, :'mo_c'), 'the lender''s retry with the same terms returns its offer');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and none of those writes anything');
select tests.authenticate_as(:'e');
select is_empty(format($$select 1 from list_open_mortgage_applications() as x where x ->> 'id' = %L$$, :'ma1'),
    'an accepted application is no longer listed');
select tests.reset_role();
select throws_ok(format($$update public.mortgage_offers set status = 'accepted' where id = %L$$, :'mo_d'), '23505',
    null, 'even the owner cannot make a second offer of an application accepted (unique partial index)');
select tests.authenticate_as(:'a');
select results_eq('select id from public.mortgage_contracts', format('values (%L)', :'mc'),
    'the borrower sees the mortgage contract');
select tests.authenticate_as(:'c');
select results_eq('select id from public.mortgage_contracts', format('values (%L)', :'mc'), '... the lender too');
select tests.authenticate_as(:'d');
select is_empty('select 1 from public.mortgage_contracts', '... not the lender whose offer was withdrawn');
select tests.authenticate_as(:'a');
select isnt((apply_for_mortgage(:'h1', 30000100, 'eur', 25, 'fixed', 0.0375)).id, :'ma1',
    'once accepted, an application for the same property is a new one');
-- b's application: another fee, another currency.
select tests.authenticate_as(:'d');
select x.id as mo_db from make_mortgage_offer(:'mb', 0.05, 200000) as x \gset
select tests.authenticate_as(:'b');
select x.id as mc_b from accept_mortgage_offer(:'mo_db') as x \gset
select tests.reset_role();
select is(pg_temp.fees_of(:'mc_b'), 'mortgage.accepted:150002', '30000300 usd x 0.5 % = 150001.5 -> 150002 (even)');

-- log_transfer.
select tests.authenticate_as(:'a');
select x.id as t1 from log_transfer(
    'in', '0xAbC123', 'Ethereum Mainnet', 1.5, ' eth ', 12350, 'EUR', 'DE89370400440532013000', '{"note": "first"}',
    'key-1'
) as x \gset
select tests.reset_role();
select is(
    (select to_jsonb(x) - array['id', 'created_at', 'updated_at'] from public.transfers as x where x.id = :'t1'),
    jsonb_build_object(
        'thinker_id', :'a', 'direction', 'in', 'wallet_address', '0xAbC123', 'network', 'Ethereum Mainnet',
        'crypto_amount', 1.5, 'crypto_symbol', 'ETH', 'fiat_amount', 12350, 'fiat_currency', 'eur',
        'external_account', 'DE89370400440532013000', 'meta', '{"note": "first"}'::jsonb, 'status', 'logged',
        'idempotency_key', 'key-1', 'settled_at', null
    ),
    'log_transfer stores the caller''s logged transfer: symbol uppercase, currency lowercase'
);
select matches(:'t1'::text, '^tx-[0-9]{13}-[0-9a-f]{12}$', 'a transfer id is tx-<13 digits>-<12 hex digits>');
select results_eq(
    format($$select fee_id, subject_type, base_amount, amount_cents, currency, beneficiary_id,
             fee_rule ->> 'scope', created_at from public.fee_events where subject_id = %L$$, :'t1'),
    $$values ('transfer.logged', 'transfer', 12350::bigint, 124::bigint, 'eur', null::uuid, 'transfer',
              '2032-05-10 12:00+00'::timestamptz)$$,
    'one platform fee event of scope transfer: 12350 x 1 % = 123.5 -> 124 (half to even)'
);
select results_eq(
    format($$select actor_id, meta from public.events where type = 'transfer.logged' and subject_id = %L$$, :'t1'),
    format($$values (%L::uuid, '{"direction": "in", "network": "Ethereum Mainnet", "fiat_amount": 12350,
             "fiat_currency": "eur", "fee_events": 1}'::jsonb)$$, :'a'),
    'logging logs transfer.logged'
);
select tests.authenticate_as(:'a');
select x.id as t2 from log_transfer('out', '0xAbC123', 'Polygon', 20, 'USDC', 12250, 'eur') as x \gset
select x.id as t3 from log_transfer(
    'in', 'skrill:someone', 'Polygon', 0.000000000000000001, 'USDC', 0, 'eur'
) as x \gset
select x.id as t4 from log_transfer('in', '0xAbC123', 'Polygon', 100, 'USDC', 10000, 'usd') as x \gset
select tests.reset_role();
select is(pg_temp.fees_of(:'t2'), 'transfer.logged:122', '12250 x 1 % = 122.5 -> 122 (half to even)');
select results_eq(
    format($$select t.crypto_amount, pg_temp.fees_of(t.id), e.meta ->> 'fee_events' from public.transfers as t
             join public.events as e on e.type = 'transfer.logged' and e.subject_id = t.id where t.id = %L$$, :'t3'),
    $$values (0.000000000000000001::numeric(36, 18), '', '0')$$,
    '18 decimals are kept; a fiat amount of 0 leaves no fee event'
);

select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint($$select log_transfer('sideways', 'w', 'n', 1, 'ETH', 1, 'eur')$$, 'PT400',
    'invalid_argument', 'a direction other than in or out is PT400');
select tests.throws_hint($$select log_transfer('in', '0xab cd', 'n', 1, 'ETH', 1, 'eur')$$, 'PT400',
    'invalid_argument', 'a wallet address with a space is PT400');
select tests.throws_hint(format($$select log_transfer('in', %L, 'n', 1, 'ETH', 1, 'eur')$$, repeat('w', 201)),
    'PT400', 'invalid_argument', 'a wallet address of 201 characters is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', ' ', 1, 'ETH', 1, 'eur')$$, 'PT400', 'invalid_argument',
    'a blank network is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 0, 'ETH', 1, 'eur')$$, 'PT400', 'invalid_argument',
    'a crypto amount of 0 is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1e18, 'ETH', 1, 'eur')$$, 'PT400',
    'invalid_argument', 'a crypto amount of 10^18 is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 0.0000000000000000001, 'ETH', 1, 'eur')$$, 'PT400',
    'invalid_argument', 'a crypto amount with 19 decimals is PT400');
select tests.throws_hint(format($$select log_transfer('in', 'w', 'n', 1, %L, 1, 'eur')$$, repeat('X', 17)), 'PT400',
    'invalid_argument', 'a symbol of 17 characters is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1, 'ETH-2', 1, 'eur')$$, 'PT400', 'invalid_argument',
    'a symbol with - is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1, 'ETH', -1, 'eur')$$, 'PT400', 'invalid_argument',
    'a negative fiat amount is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1, 'ETH', 1, 'euro')$$, 'PT400', 'invalid_argument',
    'a currency of 4 letters is PT400');
select tests.throws_hint(format($$select log_transfer('in', 'w', 'n', 1, 'ETH', 1, 'eur', %L)$$, repeat('x', 201)),
    'PT400', 'invalid_argument', 'an external account of 201 characters is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1, 'ETH', 1, 'eur', p_meta => '["x"]')$$, 'PT400',
    'invalid_argument', 'meta that is not an object is PT400');
select tests.throws_hint($$select log_transfer('in', 'w', 'n', 1, 'ETH', 1, 'eur', p_idempotency_key => 'paycore:x')$$,
    'PT400', 'invalid_argument', 'an idempotency key in the reserved paycore: namespace is PT400');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused transfers wrote nothing');

-- Idempotency: per caller and key.
select tests.authenticate_as(:'a');
select is(
    (log_transfer(
        'in', '0xAbC123', 'Ethereum Mainnet', 1.50, 'ETH', 12350, 'eur', 'DE89370400440532013000',
        '{"note": "first"}', 'key-1'
    )).id,
    :'t1', 'a retry with the same key and arguments returns the first transfer'
);
select tests.throws_hint(
    $$select log_transfer('in', '0xAbC123', 'Ethereum Mainnet', 1.5, 'ETH', 12351, 'eur', 'DE89370400440532013000',
      '{"note": "first"}', 'key-1')$$,
    'PT409', 'idempotency_conflict', 'the same key with another amount is PT409 idempotency_conflict'
);
select tests.throws_hint(
    $$select log_transfer('in', '0xAbC123', 'Ethereum Mainnet', 1.5, 'ETH', 12350, 'eur', 'DE89370400440532013000',
      '{"note": "second"}', 'key-1')$$,
    'PT409', 'idempotency_conflict', '... with other meta too'
);
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... the retry charged no second fee event and none of them wrote');
select tests.authenticate_as(:'b');
select x.id as tb from log_transfer(
    'in', '0xAbC123', 'Ethereum Mainnet', 1.5, 'ETH', 12350, 'eur', 'DE89370400440532013000', '{"note": "first"}',
    'key-1'
) as x \gset
select tests.reset_role();
select results_eq(format('select thinker_id, pg_temp.fees_of(id) from public.transfers where id = %L', :'tb'),
    format($$values (%L::uuid, 'transfer.logged:124')$$, :'b'),
    'another user''s same key is independent: its own transfer and fee');

-- settle_transfer.
select tests.travel_to('2032-05-10 13:00:00+00');
select tests.authenticate_as_service_role();
select results_eq(format('select id, status, settled_at from settle_transfer(%L)', :'t1'),
    format($$values (%L, 'settled', '2032-05-10 13:00+00'::timestamptz)$$, :'t1'),
    'service_role settles a logged transfer at the clock');
select tests.travel_to('2032-05-10 14:00:00+00');
select results_eq(format('select status, settled_at from settle_transfer(%L)', :'t1'),
    $$values ('settled', '2032-05-10 13:00+00'::timestamptz)$$, 'settling again returns it unchanged');
select tests.throws_hint($$select settle_transfer('tx-0000000000000-000000000000')$$, 'PT404', 'not_found',
    'an unknown transfer is PT404');
select tests.reset_role();
select results_eq(
    format($$select actor_id, meta from public.events where type = 'transfer.settled' and subject_id = %L$$, :'t1'),
    $$values (null::uuid, '{"fiat_amount": 12350, "fiat_currency": "eur"}'::jsonb)$$,
    'settling logs transfer.settled once'
);
select tests.authenticate_as(:'a');
select throws_ok(format('select settle_transfer(%L)', :'t2'), '42501', null, 'authenticated may not settle');
select results_eq('select id from public.transfers order by id',
    format('select x from unnest(array[%L, %L, %L, %L]) as x order by x', :'t1', :'t2', :'t3', :'t4'),
    'a thinker sees its own transfers');
select tests.authenticate_as(:'b');
select results_eq('select id from public.transfers', format('values (%L)', :'tb'), '... and no other''s');

-- Fees of every scope (a booking, transfers, mortgages) made on 2032-05-10 settle together.
select tests.reset_role();
select tests.travel_to('2032-05-11 10:00:00+00');
create temp table due as
select x.id, x.beneficiary_id, x.currency, x.amount_cents from public.fee_events as x
where x.settlement_id is null and x.created_at < '2032-05-11 00:00+00';
create temp table p1 as
select * from paycore.settle_fees('2032-05-10', '2032-05-10');
select results_eq(
    $$select beneficiary_id, currency, total_cents, fee_event_count from p1
      order by beneficiary_id nulls first, currency$$,
    $$select d.beneficiary_id, d.currency, sum(d.amount_cents)::bigint, count(*)::integer
      from due as d group by d.beneficiary_id, d.currency order by d.beneficiary_id nulls first, d.currency$$,
    'settle_fees settles every unsettled fee event of the period, whatever its scope'
);
select results_eq(
    $$select currency, count(*) from p1 where beneficiary_id is null and currency in ('eur', 'usd')
      group by currency order by currency$$,
    $$values ('eur', 1::bigint), ('usd', 1::bigint)$$,
    'the platform gets one settlement per currency'
);
select is_empty(
    format($$select 1 from public.fee_events as x
             left join p1 on p1.beneficiary_id is null and p1.currency = x.currency
             where x.subject_id in (%L, %L, %L, %L, %L, %L, %L)
             and x.settlement_id is distinct from p1.id$$, :'bk1', :'t1', :'t2', :'t4', :'tb', :'mc', :'mc_b'),
    'the booking''s, the transfers'' and the mortgages'' fee events are in the platform''s settlement of their currency'
);
select ok(
    (select array_agg(distinct x.fee_rule ->> 'scope') from public.fee_events as x
     inner join p1 on x.settlement_id = p1.id where p1.beneficiary_id is null and p1.currency = 'eur')
    @> array['mortgage', 'transfer', 'voucher'],
    'the platform''s eur settlement holds fee events of the scopes voucher, transfer and mortgage'
);
select is_empty(
    $$with f as (
          select x.beneficiary_id, x.currency, sum(x.amount_cents) as all_cents,
                 coalesce(sum(x.amount_cents) filter (where x.settlement_id is null), 0) as unsettled
          from public.fee_events as x group by x.beneficiary_id, x.currency
      ),
      s as (
          select t.beneficiary_id, t.currency, sum(t.total_cents) as settled
          from public.settlements as t group by t.beneficiary_id, t.currency
      )
      select 1 from f full join s on s.beneficiary_id is not distinct from f.beneficiary_id and s.currency = f.currency
      where coalesce(s.settled, 0) + coalesce(f.unsettled, 0) <> coalesce(f.all_cents, 0)$$,
    'per beneficiary and currency, the settlements plus the unsettled fee events are all fee events'
);

-- The dashboards read now(), not the clock: their rows are placed relative to now().
select tests.create_user('ops-p@example.test') as p \gset
select tests.create_user('ops-q@example.test') as q \gset
select tests.create_user('ops-r@example.test') as r \gset
insert into public.thinkers (id) values (:'p'), (:'q'), (:'r');
select online_sessions as pn_sessions, online_thinkers as pn_thinkers, pair_codes as pn_codes
from public.marketplace_presence_now \gset
insert into public.presence_sessions (thinker_id, pair_code, status, last_seen_at, online_since)
values
(:'p', 'dash_alpha', 'online', now() - interval '30 seconds', now() - interval '5 minutes'),
(:'q', 'dash_alpha', 'online', now() - interval '50 seconds', now() - interval '50 seconds'),
(:'p', 'dash_beta', 'offline', now() - interval '30 seconds', now() - interval '1 hour'),
(:'q', 'dash_beta', 'online', now() - interval '2 minutes', now() - interval '1 hour'),
(:'r', 'dash_beta', 'online', now() - interval '3 days', now() - interval '3 days'),
(:'p', 'dash_gamma', 'online', now() - interval '8 days', now() - interval '8 days');
select tests.authenticate_as_service_role();
select results_eq(
    format($$select online_sessions - %s, online_thinkers - %s, pair_codes - %s from public.marketplace_presence_now$$,
        :pn_sessions, :pn_thinkers, :pn_codes),
    $$values (2::bigint, 2::bigint, 1::bigint)$$,
    'marketplace_presence_now: the 2 sessions seen in the last minute and online, their 2 thinkers and 1 code'
);
select results_eq(
    $$select x.pair_code, x.sessions_7d, x.online_now
      from (select v.*, row_number() over () as n from public.marketplace_popular_pair_codes as v) as x
      where x.pair_code like 'dash\_%' order by x.n$$,
    $$values ('dash_beta', 3::bigint, 0::bigint), ('dash_alpha', 2::bigint, 2::bigint)$$,
    'marketplace_popular_pair_codes: sessions of the last 7 days, most first, with those online now'
);
select tests.reset_role();

-- Bookings and template utilisation: a template of a's vouchers, booked by b.
insert into public.voucher_templates (id, service_type, title, default_duration)
values ('dash.template', 'dash.session', 'Dashboard session', 60), ('dash.empty', 'dash.empty', 'Unused', 30);
select
    coalesce(sum(bookings) filter (where day = (now() at time zone 'UTC')::date), 0) as bd_today,
    coalesce(sum(cancelled) filter (where day = (now() at time zone 'UTC')::date), 0) as bd_today_cancelled,
    coalesce(sum(bookings) filter (where day = ((now() - interval '2 days') at time zone 'UTC')::date), 0) as bd_2
from public.marketplace_bookings_per_day \gset
select tests.authenticate_as(:'a');
create temp table dash_vouchers as
select n, (issue_voucher(
    null, null, null, '2032-05-12 00:00+00', '2032-05-20 00:00+00', p_template_id => 'dash.template'
)).id as id
from generate_series(1, 5) as n;
select tests.authenticate_as(:'b');
create temp table dash_bookings as
select v.n, (book_voucher(v.id, '2032-05-13 00:00+00'::timestamptz + v.n * interval '1 hour')).id as id
from dash_vouchers as v;
select tests.authenticate_as(:'a');
select string_agg((consume_voucher(id)).status, ',') as consumed from dash_vouchers where n = 1 \gset
select tests.authenticate_as(:'b');
select string_agg((cancel_booking(id)).status, ',') as cancelled from dash_bookings where n = 2 \gset
select tests.reset_role();
update public.voucher_bookings set created_at = now() - interval '2 days'
where id = (select k.id from dash_bookings as k where k.n = 3);
update public.voucher_bookings set created_at = now() - interval '91 days'
where id = (select k.id from dash_bookings as k where k.n = 4);
update public.vouchers set created_at = now() - interval '91 days'
where id = (select v.id from dash_vouchers as v where v.n = 5);
select tests.authenticate_as_service_role();
select results_eq(
    format($$select
             coalesce(sum(bookings) filter (where day = (now() at time zone 'UTC')::date), 0) - %s,
             coalesce(sum(cancelled) filter (where day = (now() at time zone 'UTC')::date), 0) - %s,
             coalesce(sum(bookings) filter (where day = ((now() - interval '2 days') at time zone 'UTC')::date), 0)
             - %s,
             count(*) filter (where day = ((now() - interval '91 days') at time zone 'UTC')::date)
             from public.marketplace_bookings_per_day$$, :bd_today, :bd_today_cancelled, :bd_2),
    $$values (3::numeric, 1::numeric, 1::numeric, 0::bigint)$$,
    'marketplace_bookings_per_day: per UTC day of creation, 3 today (1 cancelled), 1 two days ago, none 91 days ago'
);
select results_eq(
    $$select template_id, title, vouchers_90d, booked_or_consumed, consumed, utilisation
      from public.marketplace_template_utilisation where template_id in ('dash.template', 'dash.empty')$$,
    $$values ('dash.template', 'Dashboard session', 4::bigint, 3::bigint, 1::bigint, 0.7500::numeric),
             ('dash.empty', 'Unused', 0::bigint, 0::bigint, 0::bigint, null::numeric)$$,
    'marketplace_template_utilisation: 4 vouchers in 90 days, 3 booked or consumed, 1 consumed: 0.75; '
    'a template without vouchers has no utilisation'
);
select tests.reset_role();

-- Mortgage figures: p borrows, q lends.
select open_applications as mf_open, offered_applications as mf_offered, accepted_offers_90d as mf_accepted
from public.marketplace_mortgage_figures \gset
select tests.authenticate_as(:'p');
create temp table dash_apps as
select n, (apply_for_mortgage(
    (register_property('Dash Street ' || n)).id, 1000000, 'eur', 20, 'fixed', 0.05
)).id as id
from generate_series(1, 4) as n;
select tests.authenticate_as(:'q');
create temp table dash_offers as
select a.n, (make_mortgage_offer(a.id, 0.01 * a.n, 5000)).id as id from dash_apps as a where a.n > 1;
select tests.authenticate_as(:'p');
select string_agg((accept_mortgage_offer(id)).status, ',') as accepted from dash_offers where n in (3, 4) \gset
select tests.reset_role();
update public.mortgage_offers set created_at = now() - interval '91 days'
where id = (select o.id from dash_offers as o where o.n = 4);
select tests.authenticate_as_service_role();
select results_eq(
    format($$select open_applications - %s, offered_applications - %s, accepted_offers_90d - %s
             from public.marketplace_mortgage_figures$$, :mf_open, :mf_offered, :mf_accepted),
    $$values (1::bigint, 1::bigint, 1::bigint)$$,
    'marketplace_mortgage_figures: one more open, one more offered, one more accepted offer in 90 days '
    '(not the one older than that)'
);
select results_eq(
    $$select average_accepted_rate_90d, average_offered_rate_90d from public.marketplace_mortgage_figures$$,
    $$select round(avg(o.interest_rate) filter (where o.status = 'accepted'), 6), round(avg(o.interest_rate), 6)
      from public.mortgage_offers as o where o.created_at >= now() - interval '90 days'$$,
    '... and the average rates of the offers of 90 days, accepted and all'
);
select tests.reset_role();

-- Transfer sums: p's transfers on a network of its own.
select tests.authenticate_as(:'p');
create temp table dash_transfers as
select x.n, (log_transfer(x.direction, 'w', 'Dash Net', 1, 'ETH', x.fiat, x.currency)).id as id
from (values (1, 'in', 1000, 'eur'), (2, 'in', 2500, 'eur'), (3, 'out', 700, 'eur'), (4, 'in', 300, 'usd'),
             (5, 'in', 400, 'eur'), (6, 'out', 900, 'eur')) as x (n, direction, fiat, currency);
select tests.reset_role();
update public.transfers set created_at = now() - interval '2 days'
where id = (select t.id from dash_transfers as t where t.n = 5);
update public.transfers set created_at = now() - interval '91 days'
where id = (select t.id from dash_transfers as t where t.n = 6);
select tests.authenticate_as_service_role();
select results_eq(
    $$select day, direction, fiat_currency, transfers, fiat_amount
      from public.marketplace_transfer_sums where network = 'Dash Net'$$,
    $$values ((now() at time zone 'UTC')::date, 'in', 'eur', 2::bigint, 3500::numeric),
             ((now() at time zone 'UTC')::date, 'in', 'usd', 1::bigint, 300::numeric),
             ((now() at time zone 'UTC')::date, 'out', 'eur', 1::bigint, 700::numeric),
             (((now() - interval '2 days') at time zone 'UTC')::date, 'in', 'eur', 1::bigint, 400::numeric)$$,
    'marketplace_transfer_sums: per UTC day, direction, network and currency in 90 days, newest first'
);

-- The dashboards are service_role's only.
select tests.authenticate_as(:'a');
select throws_ok('select 1 from public.marketplace_presence_now', '42501', null,
    'authenticated may not read marketplace_presence_now');
select throws_ok('select 1 from public.marketplace_popular_pair_codes', '42501', null,
    '... nor marketplace_popular_pair_codes');
select throws_ok('select 1 from public.marketplace_bookings_per_day', '42501', null,
    '... nor marketplace_bookings_per_day');
select throws_ok('select 1 from public.marketplace_template_utilisation', '42501', null,
    '... nor marketplace_template_utilisation');
select throws_ok('select 1 from public.marketplace_mortgage_figures', '42501', null,
    '... nor marketplace_mortgage_figures');
select throws_ok('select 1 from public.marketplace_transfer_sums', '42501', null,
    '... nor marketplace_transfer_sums');
select tests.clear_authentication();
select throws_ok('select 1 from public.marketplace_presence_now', '42501', null,
    'anon may not read marketplace_presence_now');
select throws_ok('select 1 from public.marketplace_popular_pair_codes', '42501', null,
    '... nor marketplace_popular_pair_codes');
select throws_ok('select 1 from public.marketplace_bookings_per_day', '42501', null,
    '... nor marketplace_bookings_per_day');
select throws_ok('select 1 from public.marketplace_template_utilisation', '42501', null,
    '... nor marketplace_template_utilisation');
select throws_ok('select 1 from public.marketplace_mortgage_figures', '42501', null,
    '... nor marketplace_mortgage_figures');
select throws_ok('select 1 from public.marketplace_transfer_sums', '42501', null,
    '... nor marketplace_transfer_sums');
select tests.reset_role();

select * from finish();
rollback;
