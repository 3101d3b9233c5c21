-- marketplace money: issue_voucher, book_voucher, cancel_booking, consume_voucher,
-- transfer_voucher with their fee events; paycore.settle_fees and mark_settlement; the
-- append-only and settlement guards; who sees what.
begin;
select plan(210);

-- Owner-only helpers (called after tests.reset_role()).
-- Everything a marketplace call may write: a refused call leaves it as it was.
create function pg_temp.state()
returns jsonb
language sql stable
as $$
    select tests.digest(array[
        'public.thinkers',
        'public.vouchers',
        'public.voucher_bookings',
        'public.fee_events',
        'public.settlements',
        'paycore.settlement_runs',
        'public.events'
    ]::regclass[])
$$;

-- The fee events of one booking, as 'rule:amount' in order.
create function pg_temp.fees_of(p_booking_id text)
returns text
language sql stable
as $$
    select coalesce(string_agg(e.fee_id || ':' || e.amount_cents, ' ' order by e.fee_id, e.amount_cents), '')
    from public.fee_events as e
    where e.subject_type = 'voucher_booking' and e.subject_id = p_booking_id
$$;

-- Issues a voucher as the current (authenticated) caller and returns its id.
create function pg_temp.issue(
    p_price bigint default null,
    p_currency text default null,
    p_transferable boolean default false,
    p_from timestamptz default '2031-03-11 00:00+00',
    p_until timestamptz default '2031-03-20 00:00+00'
)
returns text
language sql volatile
as $$
    select v.id
    from public.issue_voucher(
        'consulting.session', 'Test voucher', 60, p_from, p_until, p_price, p_currency,
        p_transferable => p_transferable
    ) as v
$$;

select tests.travel_to('2031-03-10 09:00:00+00');
set local timezone = 'UTC';

select tests.create_user('market-a@example.test') as a \gset
select tests.create_user('market-b@example.test') as b \gset
select tests.create_user('market-c@example.test') as c \gset
select tests.create_user('market-d@example.test') as d \gset
select tests.create_user('market-e@example.test') as e \gset
select tests.create_user('market-f@example.test') as f \gset
select tests.create_user('market-g@example.test') as g \gset

-- Round half to even, the one fee formula.
select is(paycore.round_half_even(0.5), 0::bigint, 'round_half_even: 0.5 -> 0');
select is(paycore.round_half_even(1.5), 2::bigint, 'round_half_even: 1.5 -> 2');
select is(paycore.round_half_even(2.5), 2::bigint, 'round_half_even: 2.5 -> 2');
select is(paycore.round_half_even(-2.5), -2::bigint, 'round_half_even: -2.5 -> -2');
select is(paycore.round_half_even(2.4999), 2::bigint, 'round_half_even: 2.4999 -> 2');
select is(paycore.round_half_even(2.5001), 3::bigint, 'round_half_even: 2.5001 -> 3');
select is(paycore.fee_amount(1050, 0.01, 30), 40::bigint, 'fee_amount: round-half-even(1050 x 1 %) + 30 = 40');

-- issue_voucher.
select is_empty(format('select 1 from public.thinkers where id = %L', :'a'),
    'a user has no thinker row before its first marketplace call');
select tests.authenticate_as(:'a');
select x.id as v0 from issue_voucher(
    'consulting.session', 'Strategy call', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00', 1025, 'EUR',
    p_description => 'An hour.', p_transferable => true, p_terms => '{"place": "online"}'
) as x \gset
select tests.reset_role();
select is(
    (select to_jsonb(v) - array['id', 'created_at', 'updated_at'] from public.vouchers as v where v.id = :'v0'),
    jsonb_build_object(
        'issuer_id', :'a', 'holder_id', null, 'template_id', null, 'service_type', 'consulting.session',
        'title', 'Strategy call', 'description', 'An hour.', 'duration_minutes', 60,
        'valid_from', '2031-03-11 00:00+00'::timestamptz, 'valid_until', '2031-03-20 00:00+00'::timestamptz,
        'price_amount', 1025, 'price_currency', 'eur', 'status', 'issued', 'transferable', true,
        'terms', '{"place": "online"}'::jsonb, 'consumed_at', null
    ),
    'issue_voucher stores the caller''s voucher: issuer = caller, no holder, issued, currency EUR stored eur'
);
select matches(:'v0'::text, '^v-[0-9]{13}-[0-9a-f]{12}$', 'a voucher id is v-<13 digits>-<12 hex digits>');
select is(split_part(:'v0', '-', 2), (extract(epoch from timestamptz '2031-03-10 09:00+00') * 1000)::bigint::text,
    '... the digits are the milliseconds of paycore.clock()');
select results_eq(
    format($$select actor_id, subject_type, meta from public.events
             where type = 'voucher.issued' and subject_id = %L$$, :'v0'),
    format($$values (%L::uuid, 'voucher', '{"template_id": null, "service_type": "consulting.session",
             "price_amount": 1025, "price_currency": "eur"}'::jsonb)$$, :'a'),
    'issuing logs voucher.issued'
);
select results_eq(format('select count(*) from public.thinkers where id = %L', :'a'), 'values (1::bigint)',
    'the first marketplace call creates the caller''s thinker row');

select tests.authenticate_as(:'a');
select x.id as vt1 from issue_voucher(
    null, null, null, '2031-03-11 00:00+00', '2031-03-20 00:00+00', p_template_id => 'therapy',
    p_terms => '{"room": "3"}'
) as x \gset
select x.id as vt2 from issue_voucher(
    'therapy.group', 'Group therapy', 90, '2031-03-11 00:00+00', '2031-03-20 00:00+00', p_template_id => 'therapy',
    p_description => 'Four people.', p_terms => '{"cancellation": "never", "size": 4}'
) as x \gset
select tests.reset_role();
select results_eq(
    format($$select template_id, service_type, title, description, duration_minutes, terms
             from public.vouchers where id = %L$$, :'vt1'),
    $$values ('therapy', 'therapy.session', 'Therapy session', 'One therapy session.', 50,
              '{"cancellation": "free until 48 hours before the slot", "room": "3"}'::jsonb)$$,
    'a template fills service type, title, description and duration; its default terms lie under p_terms'
);
select results_eq(
    format($$select template_id, service_type, title, description, duration_minutes, terms
             from public.vouchers where id = %L$$, :'vt2'),
    $$values ('therapy', 'therapy.group', 'Group therapy', 'Four people.', 90,
              '{"cancellation": "never", "size": 4}'::jsonb)$$,
    'what the caller gives wins over the template, p_terms over its default terms'
);
select results_eq(format('select count(*) from public.thinkers where id = %L', :'a'), 'values (1::bigint)',
    'the thinker row is created once');

select tests.authenticate_as(:'a');
select lives_ok(
    $$select issue_voucher('consulting.session', 'Day', 1440, '2031-03-11 00:00+00', '2031-03-12 00:00+00', 0, 'usd')$$,
    '1440 minutes in a validity of exactly one slot, price 0, is accepted');
select lives_ok(
    $$select issue_voucher('consulting.session', 'Minute', 1, '2031-03-11 00:00+00', '2031-03-11 00:01+00')$$,
    '1 minute, free (no price), is accepted');

-- Refused issues write nothing, not even the thinker row of a first-time caller.
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(
    $$select issue_voucher(null, null, null, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
      p_template_id => 'no.such')$$,
    'PT404', 'not_found', 'an unknown template is PT404');
select tests.throws_hint(
    $$select issue_voucher('Consulting Session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'a service type that is not a slug is PT400');
select tests.throws_hint(
    $$select issue_voucher(null, 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'no service type (and no template) is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', '   ', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'a blank title is PT400');
select tests.throws_hint(
    format($$select issue_voucher('consulting.session', %L, 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
        repeat('x', 201)),
    'PT400', 'invalid_argument', 'a title beyond 200 characters is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', null, 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'no title (and no template) is PT400');
select tests.throws_hint(
    format($$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
             p_description => %L)$$, repeat('x', 2001)),
    'PT400', 'invalid_argument', 'a description beyond 2000 characters is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 0, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'a duration of 0 minutes is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 1441, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'a duration of 1441 minutes is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-11 00:59+00')$$,
    'PT400', 'invalid_argument', 'a validity that does not hold one slot is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-09 00:00+00', '2031-03-10 09:00+00')$$,
    'PT400', 'invalid_argument', 'a validity ending now (in the past) is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', 'infinity')$$,
    'PT400', 'invalid_argument', 'an infinite validity is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2132-03-11 00:00+00')$$,
    'PT400', 'invalid_argument', 'a validity ending more than 100 years ahead is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
        1000000000000001, 'eur')$$,
    'PT400', 'invalid_argument', 'a price above 10^15 is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, null, '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'no valid_from is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00', 1025)$$,
    'PT400', 'invalid_argument', 'a price without a currency is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
      null, 'eur')$$,
    'PT400', 'invalid_argument', 'a currency without a price is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
      -1, 'eur')$$,
    'PT400', 'invalid_argument', 'a negative price is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
      100, 'EURO')$$,
    'PT400', 'invalid_argument', 'a currency of 4 letters is PT400');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
      p_terms => '["free"]')$$,
    'PT400', 'invalid_argument', 'terms that are not an object are PT400');
select tests.throws_hint(
    format($$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00',
             p_terms => jsonb_build_object('x', %L))$$, repeat('x', 8200)),
    'PT400', 'invalid_argument', 'terms beyond 8 kB are PT400');
select tests.authenticate_as(:'g');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', '', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT400', 'invalid_argument', 'a first-time caller''s refused issue is PT400 too');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb,
    'the refused issues wrote nothing: no voucher, no events row, no thinker row for the first-time caller');
select tests.throws_hint(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    'PT403', 'forbidden', 'the owner (not a signed-in user) is PT403');
select tests.clear_authentication();
select throws_ok(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    '42501', null, 'anon may not call issue_voucher');
select tests.authenticate_as_service_role();
select throws_ok(
    $$select issue_voucher('consulting.session', 'x', 60, '2031-03-11 00:00+00', '2031-03-20 00:00+00')$$,
    '42501', null, 'service_role may not call issue_voucher');

-- book_voucher. a's vouchers: 2031-03-11 to 2031-03-20, 60 minutes.
select tests.authenticate_as(:'a');
select pg_temp.issue(1025, 'eur') as v1 \gset
select pg_temp.issue(1075, 'eur') as v2 \gset
select pg_temp.issue(125, 'eur') as v3 \gset
select pg_temp.issue() as vfree \gset
select pg_temp.issue(25, 'eur') as vzero \gset
select pg_temp.issue(1000, 'eur') as v6 \gset
select tests.authenticate_as(:'b');
select x.id as bk1 from book_voucher(:'v1', '2031-03-11 10:00+00') as x \gset
select tests.reset_role();
select is(
    (select to_jsonb(k) - array['id', 'created_at', 'updated_at'] from public.voucher_bookings as k
     where k.id = :'bk1'),
    jsonb_build_object(
        'voucher_id', :'v1', 'issuer_id', :'a', 'holder_id', :'b', 'slot_start', '2031-03-11 10:00+00'::timestamptz,
        'slot_end', '2031-03-11 11:00+00'::timestamptz, 'status', 'booked', 'cancel_reason', null,
        'cancelled_by', null, 'cancelled_at', null
    ),
    'book_voucher books the slot for the caller: slot_end = slot_start + duration'
);
select matches(:'bk1'::text, '^b-[0-9]{13}-[0-9a-f]{12}$', 'a booking id is b-<13 digits>-<12 hex digits>');
select results_eq(format('select status, holder_id from public.vouchers where id = %L', :'v1'),
    format($$values ('booked', %L::uuid)$$, :'b'), 'the voucher is booked and the caller its holder');
select is(
    (select to_jsonb(e) - array['id'] from public.fee_events as e where e.subject_id = :'bk1'),
    jsonb_build_object(
        'fee_id', 'voucher.booking', 'subject_type', 'voucher_booking', 'subject_id', :'bk1', 'base_amount', 1025,
        'amount_cents', 20, 'currency', 'eur', 'beneficiary_id', null, 'reverses_id', null, 'settlement_id', null,
        'created_at', '2031-03-10 09:00+00'::timestamptz,
        'fee_rule', '{"id": "voucher.booking", "scope": "voucher", "percentage": 0.02, "fixed_amount": 0,
                      "currency": null, "beneficiary_id": null}'::jsonb
    ),
    'the booking leaves one platform fee event: 1025 x 2 % = 20.5 -> 20, with the rule''s snapshot, at the clock'
);
select results_eq(
    format($$select actor_id, subject_type, meta ->> 'voucher_id', (meta ->> 'slot_start')::timestamptz,
             (meta ->> 'slot_end')::timestamptz, meta ->> 'fee_events'
             from public.events where type = 'voucher.booked' and subject_id = %L$$, :'bk1'),
    format($$values (%L::uuid, 'voucher_booking', %L, '2031-03-11 10:00+00'::timestamptz,
             '2031-03-11 11:00+00'::timestamptz, '1')$$, :'b', :'v1'),
    'booking logs voucher.booked'
);

select pg_temp.state() as before \gset
select tests.authenticate_as(:'b');
select is((book_voucher(:'v1', '2031-03-11 10:00+00')).id, :'bk1',
    'the holder booking its booked slot again gets the same booking');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and nothing more: no booking, no fee event, no events row');
select tests.authenticate_as(:'b');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 12:00+00')$$, :'v1'), 'PT409', 'invalid_state',
    'the holder booking another slot of its booked voucher is PT409');
select tests.authenticate_as(:'c');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 10:00+00')$$, :'v1'), 'PT404', 'not_found',
    'a voucher held by someone else is PT404 to a stranger');
select tests.throws_hint($$select book_voucher('v-0000000000000-000000000000', '2031-03-11 10:00+00')$$, 'PT404',
    'not_found', 'an unknown voucher is PT404');
select tests.throws_hint(format('select book_voucher(%L, null)', :'v2'), 'PT400', 'invalid_argument',
    'no slot start is PT400');
select tests.authenticate_as(:'a');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 10:00+00')$$, :'vfree'), 'PT403', 'forbidden',
    'the issuer cannot book its own voucher');
-- An overlapping slot in the issuer's calendar.
select tests.authenticate_as(:'b');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 10:30+00')$$, :'v2'), 'PT409', 'slot_taken',
    'a slot overlapping another booked slot of the issuer is PT409 slot_taken');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused bookings wrote nothing');
select results_eq(
    format($$select v.status, v.holder_id, (select count(*) from public.voucher_bookings as k where k.voucher_id = v.id)
             from public.vouchers as v where v.id = %L$$, :'v2'),
    $$values ('issued', null::uuid, 0::bigint)$$,
    '... the voucher of the taken slot is still issued, without holder or booking'
);
select tests.authenticate_as(:'b');
select x.id as bk2 from book_voucher(:'v2', '2031-03-11 11:00+00') as x \gset
select tests.authenticate_as(:'c');
select x.id as bk3 from book_voucher(:'v3', '2031-03-11 09:00+00') as x \gset
select tests.reset_role();
select results_eq(
    format($$select voucher_id, slot_start, slot_end from public.voucher_bookings where id in (%L, %L)
             order by slot_start$$, :'bk3', :'bk2'),
    format($$values (%L, '2031-03-11 09:00+00'::timestamptz, '2031-03-11 10:00+00'::timestamptz),
                    (%L, '2031-03-11 11:00+00'::timestamptz, '2031-03-11 12:00+00'::timestamptz)$$, :'v3', :'v2'),
    'slots that touch the booked one (ending at its start, starting at its end) are booked'
);
select is(pg_temp.fees_of(:'bk2'), 'voucher.booking:22', 'a fee of 1075 x 2 % = 21.5 rounds to 22');
select is(pg_temp.fees_of(:'bk3'), 'voucher.booking:2', 'a fee of 125 x 2 % = 2.5 rounds to 2');
select tests.authenticate_as(:'d');
select pg_temp.issue() as w1 \gset
select tests.authenticate_as(:'c');
select lives_ok(format($$select book_voucher(%L, '2031-03-11 10:00+00')$$, :'w1'),
    'another issuer''s slot may overlap (each issuer has its own calendar)');
select x.id as bkfree from book_voucher(:'vfree', '2031-03-11 13:00+00') as x \gset
select x.id as bkzero from book_voucher(:'vzero', '2031-03-11 14:00+00') as x \gset
select tests.reset_role();
select is(pg_temp.fees_of(:'bkfree'), '', 'a free voucher (no price) leaves no fee event');
select is(pg_temp.fees_of(:'bkzero'), '', 'a fee of 0 (25 x 2 % = 0.5 -> 0) leaves no fee event');

-- The slot lies inside the validity and not in the past. d's vouchers: 2031-03-11, one day.
select tests.authenticate_as(:'d');
select pg_temp.issue(null, null, false, '2031-03-11 00:00+00', '2031-03-12 00:00+00') as x1 \gset
select pg_temp.issue(null, null, false, '2031-03-11 00:00+00', '2031-03-12 00:00+00') as x2 \gset
select pg_temp.issue(null, null, false, '2031-03-11 00:00+00', '2031-03-12 00:00+00') as x3 \gset
select pg_temp.issue(null, null, false, '2031-03-11 00:00+00', '2031-03-12 00:00+00') as x4 \gset
select pg_temp.issue(null, null, false, '2031-03-09 00:00+00', '2031-03-12 00:00+00') as xp \gset
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'c');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-10 23:00+00')$$, :'x1'), 'PT400',
    'invalid_argument', 'a slot before the validity is PT400');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 23:30+00')$$, :'x1'), 'PT400',
    'invalid_argument', 'a slot partly after the validity is PT400');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-10 08:00+00')$$, :'xp'), 'PT400',
    'invalid_argument', 'a slot in the past (inside the validity) is PT400');
select tests.throws_hint(format($$select book_voucher(%L, 'infinity')$$, :'x1'), 'PT400',
    'invalid_argument', 'an infinite slot start is PT400');
select tests.throws_hint(format($$select book_voucher(%L, '294276-12-31 23:00+00')$$, :'x1'), 'PT400',
    'invalid_argument', 'a slot at the end of time is PT400, not an overflow');
select tests.travel_to('2031-03-12 06:00+00');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-12 07:00+00')$$, :'x3'), 'PT409',
    'invalid_state', 'a voucher past its valid_until is expired: PT409 (before any check of the slot)');
select tests.travel_to('2031-03-10 09:00+00');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and those refusals wrote nothing');
select tests.authenticate_as(:'c');
select lives_ok(format($$select book_voucher(%L, '2031-03-11 00:00+00')$$, :'x1'),
    'a slot starting exactly at valid_from is booked');
select lives_ok(format($$select book_voucher(%L, '2031-03-11 23:00+00')$$, :'x2'),
    'a slot ending exactly at valid_until is booked');

-- Fee rules: each active rule of the scope in the voucher's currency (or any) charges.
select tests.reset_role();
insert into public.thinkers (id) values (:'f');
insert into public.fees (id, scope, percentage, fixed_amount, currency, beneficiary_id)
values ('test.fixed', 'voucher', 0.01, 30, 'eur', :'f');
insert into public.fees (id, scope, percentage, currency) values ('test.usd', 'voucher', 0.1, 'usd');
insert into public.fees (id, scope, percentage, active) values ('test.off', 'voucher', 0.5, false);
insert into public.fees (id, scope, percentage) values ('test.transfer', 'transfer', 0.5);
select tests.authenticate_as(:'a');
select pg_temp.issue(1050, 'eur') as vf1 \gset
select pg_temp.issue(1150, 'eur') as vf2 \gset
select pg_temp.issue(1000, 'usd') as vu \gset
select pg_temp.issue(1050, 'eur') as vf3 \gset
select pg_temp.issue(0, 'eur') as vp0 \gset
select tests.authenticate_as(:'b');
select x.id as bkf1 from book_voucher(:'vf1', '2031-03-12 10:00+00') as x \gset
select x.id as bkf2 from book_voucher(:'vf2', '2031-03-12 11:00+00') as x \gset
select x.id as bku from book_voucher(:'vu', '2031-03-12 12:00+00') as x \gset
select tests.reset_role();
select is(pg_temp.fees_of(:'bkf1'), 'test.fixed:40 voucher.booking:21',
    'every active voucher rule charges: 1050 eur -> 2 % = 21, and 1 % (10.5 -> 10) + 30 fixed = 40; '
    'not the usd rule, the inactive one or another scope''s');
select is(pg_temp.fees_of(:'bkf2'), 'test.fixed:42 voucher.booking:23',
    '1150 eur -> 23, and 11.5 -> 12 + 30 = 42');
select is(pg_temp.fees_of(:'bku'), 'test.usd:100 voucher.booking:20',
    'a usd voucher: the usd rule and the any-currency rule charge, the eur rule does not');
select results_eq(
    format($$select beneficiary_id, currency, fee_rule from public.fee_events
             where subject_id = %L and fee_id = 'test.fixed'$$, :'bkf1'),
    format($$values (%1$L::uuid, 'eur', jsonb_build_object('id', 'test.fixed', 'scope', 'voucher',
             'percentage', 0.01, 'fixed_amount', 30, 'currency', 'eur', 'beneficiary_id', %1$L))$$, :'f'),
    'a beneficiary rule''s fee event is the beneficiary''s, with the snapshot of its rule'
);
update public.fees set percentage = 0.5, fixed_amount = 99 where id = 'test.fixed';
select results_eq(
    format($$select amount_cents, fee_rule ->> 'percentage', fee_rule ->> 'fixed_amount' from public.fee_events
             where subject_id = %L and fee_id = 'test.fixed'$$, :'bkf1'),
    $$values (40::bigint, '0.0100', '30')$$,
    'editing a rule changes no past fee event'
);
select tests.authenticate_as(:'b');
select x.id as bkf3 from book_voucher(:'vf3', '2031-03-12 13:00+00') as x \gset
select x.id as bkp0 from book_voucher(:'vp0', '2031-03-12 14:00+00') as x \gset
select tests.reset_role();
select is(pg_temp.fees_of(:'bkf3'), 'test.fixed:624 voucher.booking:21',
    'a new booking uses the edited rule: 1050 x 50 % + 99 = 624');
update public.fees set percentage = 0.01, fixed_amount = 30 where id = 'test.fixed';
select is(pg_temp.fees_of(:'bkp0'), 'test.fixed:99',
    'a price of 0 is a price: the fixed part of a rule charges it (0 x 50 % + 99), the 2 % (0) leaves no event');
update public.fees set active = false where id in ('test.fixed', 'test.usd');

-- cancel_booking.
select tests.authenticate_as(:'b');
select lives_ok(format($$select cancel_booking(%L, 'Feeling ill')$$, :'bk1'), 'the holder cancels its booking');
select tests.reset_role();
select results_eq(
    format('select status, cancel_reason, cancelled_by, cancelled_at from public.voucher_bookings where id = %L',
        :'bk1'),
    format($$values ('cancelled', 'Feeling ill', %L::uuid, '2031-03-10 09:00+00'::timestamptz)$$, :'b'),
    'the booking is cancelled, with reason, by whom and when'
);
select results_eq(format('select status, holder_id from public.vouchers where id = %L', :'v1'),
    format($$values ('issued', %L::uuid)$$, :'b'), 'the voucher is issued again and keeps its holder');
select results_eq(
    format($$select e.base_amount, e.amount_cents, e.reverses_id, e.currency, e.beneficiary_id, e.fee_rule,
             e.settlement_id, e.created_at
             from public.fee_events as e where e.subject_id = %L order by e.amount_cents desc$$, :'bk1'),
    format($$select o.base_amount, o.amount_cents, o.reverses_id, o.currency, o.beneficiary_id, o.fee_rule,
             o.settlement_id, o.created_at from public.fee_events as o where o.subject_id = %1$L and o.reverses_id is null
             union all
             select -1025::bigint, -20::bigint, o.id, 'eur', null::uuid, o.fee_rule, null::uuid,
             '2031-03-10 09:00+00'::timestamptz
             from public.fee_events as o where o.subject_id = %1$L and o.reverses_id is null$$, :'bk1'),
    'its fee event is reversed by a negative copy pointing to it'
);
select results_eq(
    format($$select base_amount, amount_cents, reverses_id, settlement_id from public.fee_events
             where subject_id = %L and reverses_id is null$$, :'bk1'),
    $$values (1025::bigint, 20::bigint, null::uuid, null::uuid)$$,
    '... and the original is unchanged'
);
select results_eq(
    format($$select actor_id, meta from public.events where type = 'voucher.booking_cancelled' and subject_id = %L$$,
        :'bk1'),
    format($$values (%L::uuid, jsonb_build_object('voucher_id', %L, 'by', 'holder', 'fee_reversals', 1))$$,
        :'b', :'v1'),
    'cancelling logs voucher.booking_cancelled'
);

select pg_temp.state() as before \gset
select tests.authenticate_as(:'b');
select tests.throws_hint(format('select cancel_booking(%L)', :'bk1'), 'PT409', 'invalid_state',
    'cancelling a cancelled booking is PT409');
select tests.throws_hint(format('select cancel_booking(%L, %L)', :'bk2', repeat('x', 501)), 'PT400',
    'invalid_argument', 'a reason beyond 500 characters is PT400');
select tests.throws_hint($$select cancel_booking('b-0000000000000-000000000000')$$, 'PT404', 'not_found',
    'an unknown booking is PT404');
select tests.authenticate_as(:'c');
select tests.throws_hint(format('select cancel_booking(%L)', :'bk2'), 'PT404', 'not_found',
    'someone else''s booking is PT404 to a stranger');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 15:00+00')$$, :'v1'), 'PT404', 'not_found',
    'the voucher, bookable again, stays its holder''s: PT404 to anyone else');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused cancellations wrote nothing');

select tests.authenticate_as(:'a');
select is((cancel_booking(:'bk2')).cancelled_by, :'a'::uuid, 'the issuer cancels a booking of its voucher');
select tests.reset_role();
select results_eq(
    format($$select meta ->> 'by', pg_temp.fees_of(%1$L) from public.events
             where type = 'voucher.booking_cancelled' and subject_id = %1$L$$, :'bk2'),
    $$values ('issuer', 'voucher.booking:-22 voucher.booking:22')$$,
    '... logged as by the issuer, its fee reversed'
);
select tests.authenticate_as(:'c');
select lives_ok(format($$select book_voucher(%L, '2031-03-11 10:00+00')$$, :'v6'),
    'a cancelled slot is free again: another voucher of the issuer books it');
select tests.authenticate_as(:'b');
select x.id as bk1b from book_voucher(:'v1', '2031-03-11 15:00+00') as x \gset
select tests.reset_role();
select isnt(:'bk1b'::text, :'bk1'::text, 'the holder books its voucher again: a new booking');
select is(pg_temp.fees_of(:'bk1b'), 'voucher.booking:20', '... with its own fee event');
select tests.authenticate_as(:'b');
select lives_ok(format('select cancel_booking(%L)', :'bkf1'), 'a booking with two fee events is cancelled');
select tests.reset_role();
select is(pg_temp.fees_of(:'bkf1'), 'test.fixed:-40 test.fixed:40 voucher.booking:-21 voucher.booking:21',
    '... each fee event reversed once, even though its rule is now inactive');
select is_empty(
    format($$select 1 from public.fee_events as r join public.fee_events as o on o.id = r.reverses_id
             where r.subject_id = %L
             and (r.amount_cents, r.base_amount, r.currency, r.fee_id, r.fee_rule, r.beneficiary_id)
             is distinct from (-o.amount_cents, -o.base_amount, o.currency, o.fee_id, o.fee_rule, o.beneficiary_id)$$,
        :'bkf1'),
    '... each reversal a negative copy of its original, the rule snapshot included'
);

-- consume_voucher.
select pg_temp.state() as before \gset
select tests.authenticate_as(:'b');
select tests.throws_hint(format('select consume_voucher(%L)', :'v1'), 'PT403', 'forbidden',
    'the holder cannot consume the voucher');
select tests.authenticate_as(:'c');
select tests.throws_hint(format('select consume_voucher(%L)', :'v1'), 'PT404', 'not_found',
    'a stranger: PT404');
select tests.authenticate_as(:'a');
select tests.throws_hint(format('select consume_voucher(%L)', :'v0'), 'PT409', 'invalid_state',
    'a voucher that is not booked is not consumed: PT409');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused consumptions wrote nothing');
select tests.authenticate_as(:'a');
select results_eq(format('select status, consumed_at from consume_voucher(%L)', :'v1'),
    $$values ('consumed', '2031-03-10 09:00+00'::timestamptz)$$, 'the issuer consumes the booked voucher');
select tests.reset_role();
select results_eq(
    format($$select actor_id, meta ->> 'booking_id' from public.events
             where type = 'voucher.consumed' and subject_id = %L$$, :'v1'),
    format($$values (%L::uuid, %L)$$, :'a', :'bk1b'),
    'consuming logs voucher.consumed with the booking'
);
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format('select consume_voucher(%L)', :'v1'), 'PT409', 'invalid_state',
    'consuming twice is PT409');
select tests.authenticate_as(:'b');
select tests.throws_hint(format('select cancel_booking(%L)', :'bk1b'), 'PT409', 'invalid_state',
    'the booking of a consumed voucher cannot be cancelled');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 17:00+00')$$, :'v1'), 'PT409', 'invalid_state',
    'a consumed voucher cannot be booked');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, '... and those refusals wrote nothing');

-- transfer_voucher.
select tests.authenticate_as(:'a');
select pg_temp.issue(null, null, true) as t1 \gset
select tests.authenticate_as(:'b');
select x.id as bkt1 from book_voucher(:'t1', '2031-03-13 10:00+00') as x \gset
select tests.reset_role();
select pg_temp.state() as before \gset
select tests.authenticate_as(:'a');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', :'e'), 'PT403', 'forbidden',
    'the issuer cannot transfer the voucher');
select tests.authenticate_as(:'c');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', :'e'), 'PT404', 'not_found',
    'a stranger: PT404');
select tests.authenticate_as(:'b');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'v2', :'e'), 'PT409', 'invalid_state',
    'a voucher that is not transferable: PT409');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', :'b'), 'PT400', 'invalid_argument',
    'a transfer to oneself is PT400');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', :'a'), 'PT400', 'invalid_argument',
    'a transfer to the issuer is PT400');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', gen_random_uuid()), 'PT404', 'not_found',
    'a transfer to an unknown user is PT404');
select tests.throws_hint(format('select transfer_voucher(%L, null)', :'t1'), 'PT400', 'invalid_argument',
    'no new holder is PT400');
select tests.travel_to('2031-03-20 00:00+00');
select tests.throws_hint(format('select transfer_voucher(%L, %L)', :'t1', :'e'), 'PT409', 'invalid_state',
    'a voucher at its valid_until is expired: not transferred, PT409');
select tests.travel_to('2031-03-10 09:00+00');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused transfers wrote nothing');
select tests.authenticate_as(:'b');
select is((transfer_voucher(:'t1', :'e')).holder_id, :'e'::uuid, 'the holder transfers the voucher');
select tests.reset_role();
select is((select holder_id from public.voucher_bookings where id = :'bkt1'), :'e'::uuid,
    'its booked slot goes with it');
select results_eq(
    format($$select actor_id, meta ->> 'to' from public.events where type = 'voucher.transferred' and subject_id = %L$$,
        :'t1'),
    format($$select %L::uuid, public_id from public.thinkers where id = %L$$, :'b', :'e'),
    'transferring logs voucher.transferred with the new holder''s public id (its thinker row is created)'
);
select tests.authenticate_as(:'b');
select is_empty(format('select 1 from public.vouchers where id = %L', :'t1'),
    'the old holder no longer sees the voucher');
select is_empty(format('select 1 from public.voucher_bookings where id = %L', :'bkt1'), '... nor its booking');
select tests.authenticate_as(:'e');
select results_eq(
    format($$select v.id, b.id from public.vouchers as v join public.voucher_bookings as b on b.voucher_id = v.id
             where v.id = %L$$, :'t1'),
    format('values (%L, %L)', :'t1', :'bkt1'),
    'the new holder sees the voucher and its booking'
);
select tests.authenticate_as(:'b');
select tests.throws_hint(format('select cancel_booking(%L)', :'bkt1'), 'PT404', 'not_found',
    'the old holder can no longer cancel the booking');
select tests.authenticate_as(:'e');
select lives_ok(format('select cancel_booking(%L)', :'bkt1'), '... the new holder may');

-- A voucher whose status is cancelled (the seed's data) is not bookable.
select tests.authenticate_as(:'d');
select pg_temp.issue() as x5 \gset
select tests.reset_role();
update public.vouchers set status = 'cancelled' where id = :'x5';
select tests.authenticate_as(:'c');
select tests.throws_hint(format($$select book_voucher(%L, '2031-03-11 12:00+00')$$, :'x5'), 'PT409', 'invalid_state',
    'a cancelled voucher is not bookable: PT409');

-- Deleting the holder's auth user deletes its booked slot: the voucher is issued again and the
-- fees reversed, unless it is consumed. Deleting the issuer leaves the fee events as they are.
select tests.create_user('market-h@example.test') as h \gset
select tests.create_user('market-k@example.test') as k \gset
select tests.authenticate_as(:'a');
select pg_temp.issue(1000, 'eur') as vh1 \gset
select pg_temp.issue(1000, 'eur') as vh2 \gset
select tests.authenticate_as(:'k');
select pg_temp.issue(1000, 'eur') as vk \gset
select tests.authenticate_as(:'h');
select x.id as bkh1 from book_voucher(:'vh1', '2031-03-16 10:00+00') as x \gset
select x.id as bkh2 from book_voucher(:'vh2', '2031-03-16 11:00+00') as x \gset
select tests.authenticate_as(:'c');
select x.id as bkk from book_voucher(:'vk', '2031-03-16 10:00+00') as x \gset
select tests.authenticate_as(:'a');
select lives_ok(format('select consume_voucher(%L)', :'vh2'), 'the issuer consumes one of h''s vouchers');
select tests.reset_role();
delete from auth.users where id in (:'h', :'k');
select results_eq(
    format($$select v.status, v.holder_id, (select count(*) from public.voucher_bookings as b where b.voucher_id = v.id)
             from public.vouchers as v where v.id = %L$$, :'vh1'),
    $$values ('issued', null::uuid, 0::bigint)$$,
    'the booked voucher of a deleted holder is issued again, without holder or booking'
);
select is(pg_temp.fees_of(:'bkh1'), 'voucher.booking:-20 voucher.booking:20', '... and its fee reversed');
select results_eq(format('select status, holder_id from public.vouchers where id = %L', :'vh2'),
    $$values ('consumed', null::uuid)$$, 'a consumed voucher of a deleted holder stays consumed');
select is(pg_temp.fees_of(:'bkh2'), 'voucher.booking:20', '... and keeps its fee');
select is_empty(format('select 1 from public.vouchers where id = %L', :'vk'),
    'a deleted issuer''s vouchers are deleted');
select is(pg_temp.fees_of(:'bkk'), 'voucher.booking:20', '... their fee events stay, unreversed');

-- The exclusion constraint holds whatever writes the bookings: d's x3 and x4, directly as the owner.
select tests.reset_role();
select throws_ok(
    format($$insert into public.voucher_bookings (id, voucher_id, issuer_id, holder_id, slot_start, slot_end)
             values ('b-1930899600000-00000000000a', %1$L, %3$L, %4$L, '2031-03-11 15:00+00', '2031-03-11 16:00+00'),
                    ('b-1930899600000-00000000000b', %2$L, %3$L, %4$L, '2031-03-11 15:30+00', '2031-03-11 16:30+00')$$,
        :'x3', :'x4', :'d', :'c'),
    '23P01', null, 'two overlapping booked slots of one issuer are refused even to the owner (exclusion constraint)'
);
select lives_ok(
    format($$insert into public.voucher_bookings (
                 id, voucher_id, issuer_id, holder_id, slot_start, slot_end, status, cancelled_at
             )
             values ('b-1930899600000-00000000000a', %1$L, %3$L, %4$L, '2031-03-11 15:00+00', '2031-03-11 16:00+00',
                     'booked', null),
                    ('b-1930899600000-00000000000b', %2$L, %3$L, %4$L, '2031-03-11 15:30+00', '2031-03-11 16:30+00',
                     'cancelled', '2031-03-10 09:00+00')$$,
        :'x3', :'x4', :'d', :'c'),
    '... a cancelled slot may overlap a booked one'
);

-- paycore.settle_fees: the owner only, a period that is over.
select pg_temp.state() as before \gset
select tests.throws_hint($$select paycore.settle_fees('2031-03-10', '2031-03-10')$$, 'PT400', 'invalid_argument',
    'a period that is not over (it ends today, UTC) is PT400');
select tests.throws_hint($$select paycore.settle_fees('2031-03-09', '2031-03-08')$$, 'PT400', 'invalid_argument',
    'a period whose first day is after its last is PT400');
select tests.throws_hint($$select paycore.settle_fees(null, '2031-03-08')$$, 'PT400', 'invalid_argument',
    'a period without a first day is PT400');
select tests.authenticate_as(:'a');
select throws_ok($$select paycore.settle_fees('2031-03-01', '2031-03-01')$$, '42501', null,
    'authenticated may not call settle_fees');
select tests.authenticate_as_service_role();
select throws_ok($$select paycore.settle_fees('2031-03-01', '2031-03-01')$$, '42501', null,
    'service_role may not call settle_fees');
select tests.reset_role();
select is(pg_temp.state(), :'before'::jsonb, 'the refused runs wrote nothing');

-- Period 1 is 2031-03-10, settled on 2031-03-11. s1's booking is of 2031-03-11, after it.
select tests.travel_to('2031-03-11 09:00+00');
update public.fees set active = true where id = 'test.fixed';
select tests.authenticate_as(:'a');
select pg_temp.issue(1050, 'eur') as s1 \gset
select pg_temp.issue(1050, 'eur') as s2 \gset
select pg_temp.issue(1050, 'eur') as s3 \gset
select pg_temp.issue(1000, 'usd') as vu2 \gset
select tests.authenticate_as(:'b');
select x.id as bks1 from book_voucher(:'s1', '2031-03-14 10:00+00') as x \gset
select tests.reset_role();
select tests.travel_to('2031-03-11 10:00+00');
create temp table p1_due as
select e.id, e.beneficiary_id, e.currency, e.amount_cents from public.fee_events as e
where e.settlement_id is null and e.created_at < '2031-03-11 00:00+00';
create temp table p1 as
select * from paycore.settle_fees('2031-03-10', '2031-03-10');
select id as p1_f from p1 where beneficiary_id = :'f' \gset
select id as p1_eur from p1 where beneficiary_id is null and currency = 'eur' \gset
select id as p1_usd from p1 where beneficiary_id is null and currency = 'usd' \gset
select results_eq(
    $$select beneficiary_id, currency, total_cents, fee_event_count from p1
      order by beneficiary_id nulls first, currency$$,
    $$select d.beneficiary_id, d.currency, sum(d.amount_cents)::bigint as total_cents,
             count(*)::integer as fee_event_count
      from p1_due as d group by d.beneficiary_id, d.currency order by d.beneficiary_id nulls first, d.currency$$,
    'settle_fees makes one settlement per beneficiary and currency of the unsettled fee events up to the period''s end'
);
select results_eq(
    format('select status, period_from, period_to, total_cents, fee_event_count from p1 where beneficiary_id = %L',
        :'f'),
    $$values ('open', '2031-03-10'::date, '2031-03-10'::date, 765::bigint, 5)$$,
    'f''s: open, 40 + 42 + 624 + 99 - 40 = 765 in 5 fee events'
);
select results_eq(
    $$select currency, count(*) from p1 where beneficiary_id is null and currency in ('eur', 'usd')
      group by currency order by currency$$,
    $$values ('eur', 1::bigint), ('usd', 1::bigint)$$, 'the platform''s (beneficiary null): one per currency');
select is_empty(
    $$select 1 from p1_due as d
      join public.fee_events as e on e.id = d.id
      left join p1 as s on s.beneficiary_id is not distinct from d.beneficiary_id and s.currency = d.currency
      where e.settlement_id is distinct from s.id$$,
    'each fee event settled has the settlement_id of its beneficiary''s and currency''s settlement'
);
select is_empty(
    $$select 1 from p1 as s
      where (s.total_cents, s.fee_event_count) <> (
          select sum(e.amount_cents)::bigint as total_cents, count(*)::integer as fee_event_count
          from public.fee_events as e where e.settlement_id = s.id
      )$$,
    'each settlement''s total and count are those of its fee events'
);
select results_eq(
    format('select count(*), count(settlement_id) from public.fee_events where subject_id = %L', :'bks1'),
    $$values (2::bigint, 0::bigint)$$,
    'fee events created after the period''s end are not settled'
);
select results_eq(
    $$select r.runs, e.meta ->> 'fee_events_settled' from paycore.settlement_runs as r
      join public.events as e on e.type = 'settlement.run' and e.subject_id = '2031-03-10..2031-03-10'
      where r.period_from = '2031-03-10' and r.period_to = '2031-03-10'$$,
    $$select 1, count(*)::text from p1_due$$,
    'the run is recorded once, and logged with the number of fee events it settled'
);

select pg_temp.state() - array['settlement_runs', 'events'] as before \gset
select results_eq(
    $$select id, beneficiary_id, currency, total_cents, fee_event_count, status
      from paycore.settle_fees('2031-03-10', '2031-03-10')$$,
    $$select id, beneficiary_id, currency, total_cents, fee_event_count, status from p1
      order by beneficiary_id nulls first, currency$$,
    'a rerun of the period returns the same settlements'
);
select is(pg_temp.state() - array['settlement_runs', 'events'], :'before'::jsonb,
    '... and changes none (no settlement, no fee event)');
select is((select runs from paycore.settlement_runs where period_from = '2031-03-10'), 2,
    '... counted as a second run');
select pg_temp.state() as before \gset
select tests.throws_hint($$select paycore.settle_fees('2031-03-09', '2031-03-10')$$, 'PT409', 'invalid_state',
    'a different period overlapping a settled one is PT409');
select is(pg_temp.state(), :'before'::jsonb, '... and writes nothing');

-- Fee events of period 1 committed after its run: the rerun adds them to an open settlement,
-- not to an invoiced one.
select tests.authenticate_as_service_role();
select is((mark_settlement(:'p1_usd', 'invoiced')).status, 'invoiced', 'service_role marks a settlement invoiced');
select tests.reset_role();
select tests.travel_to('2031-03-10 20:00+00');
select tests.authenticate_as(:'c');
select x.id as bks3 from book_voucher(:'s3', '2031-03-15 10:00+00') as x \gset
select x.id as bku2 from book_voucher(:'vu2', '2031-03-15 14:00+00') as x \gset
select tests.reset_role();
select tests.travel_to('2031-03-11 10:00+00');
create temp table p1b as
select * from paycore.settle_fees('2031-03-10', '2031-03-10');
select results_eq(format('select id, total_cents, fee_event_count from p1b where beneficiary_id = %L', :'f'),
    format('values (%L::uuid, 805::bigint, 6)', :'p1_f'),
    'a rerun adds a late fee event to the still-open settlement (765 + 40)');
select results_eq(
    format($$select b.id, b.total_cents - o.total_cents, b.fee_event_count - o.fee_event_count
             from p1b as b join p1 as o on o.id = b.id where b.id = %L$$, :'p1_eur'),
    format('values (%L::uuid, 21::bigint, 1)', :'p1_eur'),
    '... the platform''s eur one too (+ 21)'
);
select results_eq(
    format('select status, total_cents, fee_event_count from public.settlements where id = %L', :'p1_usd'),
    format($$select 'invoiced', total_cents, fee_event_count from p1 where id = %L$$, :'p1_usd'),
    'an invoiced settlement takes nothing more');
select results_eq(format('select amount_cents, settlement_id from public.fee_events where subject_id = %L', :'bku2'),
    $$values (20::bigint, null::uuid)$$, '... its late fee event stays unsettled');
select is((select count(*) from public.settlements where period_from = '2031-03-10'), (select count(*) from p1),
    '... and no second settlement is made for it');

-- Period 2 is 2031-03-11: it nets out a cancellation of a booking settled in period 1 and
-- sweeps in the late fee event of period 1.
select tests.travel_to('2031-03-11 11:00+00');
select tests.authenticate_as(:'b');
select lives_ok(format('select cancel_booking(%L)', :'bkf2'), 'a booking settled in period 1 is cancelled');
select tests.reset_role();
select tests.travel_to('2031-03-12 09:00+00');
select tests.authenticate_as(:'c');
select x.id as bks2 from book_voucher(:'s2', '2031-03-15 12:00+00') as x \gset
select tests.reset_role();
create temp table p2_due as
select e.id, e.beneficiary_id, e.currency, e.amount_cents from public.fee_events as e
where e.settlement_id is null and e.created_at < '2031-03-12 00:00+00';
create temp table p2 as
select * from paycore.settle_fees('2031-03-11', '2031-03-11');
select results_eq(
    $$select beneficiary_id, currency, total_cents, fee_event_count from p2
      order by beneficiary_id nulls first, currency$$,
    $$select d.beneficiary_id, d.currency, sum(d.amount_cents)::bigint as total_cents,
             count(*)::integer as fee_event_count
      from p2_due as d group by d.beneficiary_id, d.currency order by d.beneficiary_id nulls first, d.currency$$,
    'period 2 settles every fee event unsettled up to its end'
);
select results_eq(
    format($$select s.period_from, s.currency, s.status from public.fee_events as e
             join public.settlements as s on s.id = e.settlement_id where e.subject_id = %L$$, :'bku2'),
    $$values ('2031-03-11'::date, 'usd', 'open')$$,
    '... the fee event left out of the invoiced settlement of period 1 included'
);
select results_eq(format('select total_cents, fee_event_count from p2 where beneficiary_id = %L', :'f'),
    $$values (-2::bigint, 2)$$, 'f''s period 2: the new fee 40 and the reversal -42, a negative total');
select results_eq(
    format($$select s.period_from, e.amount_cents from public.fee_events as e
             join public.settlements as s on s.id = e.settlement_id
             where e.subject_id = %L and e.fee_id = 'test.fixed' order by s.period_from$$, :'bkf2'),
    $$values ('2031-03-10'::date, 42::bigint), ('2031-03-11'::date, -42::bigint)$$,
    'the original stays in period 1, its reversal is in period 2'
);
select results_eq(format('select count(*), count(settlement_id) from public.fee_events where subject_id = %L', :'bks2'),
    $$values (2::bigint, 0::bigint)$$, 'fee events after period 2 are not settled');
select is_empty(
    $$with f as (
          select e.beneficiary_id, e.currency, sum(e.amount_cents) as all_cents,
                 coalesce(sum(e.amount_cents) filter (where e.settlement_id is null), 0) as unsettled
          from public.fee_events as e group by e.beneficiary_id, e.currency
      ),
      s as (
          select t.beneficiary_id, t.currency, sum(t.total_cents) as settled
          from public.settlements as t group by t.beneficiary_id, t.currency
      )
      select 1 from f full join s on s.beneficiary_id is not distinct from f.beneficiary_id and s.currency = f.currency
      where coalesce(s.settled, 0) + coalesce(f.unsettled, 0) <> coalesce(f.all_cents, 0)$$,
    'per beneficiary and currency, the settlements plus the unsettled fee events are all fee events'
);
select results_eq(
    format($$select (select sum(total_cents) from public.settlements where beneficiary_id = %1$L),
             (select sum(amount_cents) from public.fee_events where beneficiary_id = %1$L and settlement_id is null),
             (select sum(amount_cents) from public.fee_events where beneficiary_id = %1$L)$$, :'f'),
    $$values (803::numeric, 40::numeric, 843::numeric)$$,
    '... for f: 805 - 2 settled + 40 unsettled = 843'
);

-- mark_settlement: open -> invoiced -> paid, service_role only.
select tests.authenticate_as_service_role();
select tests.throws_hint(format($$select mark_settlement(%L, 'paid')$$, :'p1_f'), 'PT409', 'invalid_state',
    'open -> paid is PT409');
select tests.throws_hint(format($$select mark_settlement(%L, 'void')$$, :'p1_f'), 'PT400', 'invalid_argument',
    'an unknown status is PT400');
select tests.throws_hint(format($$select mark_settlement(%L, 'invoiced')$$, gen_random_uuid()), 'PT404', 'not_found',
    'an unknown settlement is PT404');
select tests.travel_to('2031-03-12 10:00+00');
select results_eq(format($$select status, invoiced_at, paid_at from mark_settlement(%L, 'invoiced')$$, :'p1_f'),
    $$values ('invoiced', '2031-03-12 10:00+00'::timestamptz, null::timestamptz)$$, 'open -> invoiced');
select tests.travel_to('2031-03-12 11:00+00');
select results_eq(format($$select status, invoiced_at, paid_at from mark_settlement(%L, 'invoiced')$$, :'p1_f'),
    $$values ('invoiced', '2031-03-12 10:00+00'::timestamptz, null::timestamptz)$$,
    'invoiced again returns it unchanged (a retry)');
select results_eq(format($$select status, invoiced_at, paid_at from mark_settlement(%L, 'paid')$$, :'p1_f'),
    $$values ('paid', '2031-03-12 10:00+00'::timestamptz, '2031-03-12 11:00+00'::timestamptz)$$, 'invoiced -> paid');
select tests.travel_to('2031-03-12 12:00+00');
select results_eq(format($$select status, invoiced_at, paid_at from mark_settlement(%L, 'paid')$$, :'p1_f'),
    $$values ('paid', '2031-03-12 10:00+00'::timestamptz, '2031-03-12 11:00+00'::timestamptz)$$,
    'paid again returns it unchanged');
select tests.throws_hint(format($$select mark_settlement(%L, 'invoiced')$$, :'p1_f'), 'PT409', 'invalid_state',
    'paid -> invoiced is PT409');
select tests.reset_role();
select results_eq(
    format($$select type, meta from public.events where subject_type = 'settlement' and subject_id = %L
             order by type$$, :'p1_f'),
    $$values ('settlement.invoiced', '{"total_cents": 805, "currency": "eur"}'::jsonb),
             ('settlement.paid', '{"total_cents": 805, "currency": "eur"}'::jsonb)$$,
    'each move logs one event, a retry none'
);
select tests.authenticate_as(:'f');
select throws_ok(format($$select mark_settlement(%L, 'paid')$$, :'p1_usd'), '42501', null,
    'authenticated may not call mark_settlement');

-- Paid settlements and fee events are not edited, even by the owner.
select tests.reset_role();
select tests.throws_hint(format('update public.settlements set total_cents = 0 where id = %L', :'p1_f'), 'PT403',
    'forbidden', 'a paid settlement is not updated');
select tests.throws_hint(format('update public.settlements set total_cents = 0 where id = %L', :'p1_usd'), 'PT403',
    'forbidden', 'an invoiced settlement''s total is not changed');
select tests.throws_hint(format('delete from public.settlements where id = %L', :'p1_eur'), 'PT403', 'forbidden',
    'a settlement is not deleted');
select tests.throws_hint(format('delete from public.fee_events where subject_id = %L', :'bks2'), 'PT403', 'forbidden',
    'a fee event is not deleted');
select tests.throws_hint(format('update public.fee_events set amount_cents = 1 where subject_id = %L', :'bks2'),
    'PT403', 'forbidden', 'a fee event''s amount is not updated');
select tests.throws_hint(
    format('update public.fee_events set settlement_id = %L where subject_id = %L', :'p1_eur', :'bks1'), 'PT403',
    'forbidden', 'a fee event''s settlement is set once');
-- ... and only to an open settlement of its own beneficiary and currency.
select tests.create_user('direct@example.test') as direct \gset
insert into public.thinkers (id) values (:'direct');
insert into public.settlements (beneficiary_id, period_from, period_to, total_cents, currency, fee_event_count)
values (null, '2040-01-01', '2040-01-31', 2, 'eur', 1), (:'direct', '2040-01-01', '2040-01-31', 2, 'usd', 1);
insert into public.fee_events (
    fee_id, subject_type, subject_id, base_amount, amount_cents, currency, fee_rule, beneficiary_id, created_at
)
values ('voucher.booking', 'voucher_booking', 'b-direct', 100, 2, 'eur', '{}', :'direct', '2040-01-02');
select tests.throws_hint(
    $$update public.fee_events set settlement_id = (
        select s.id from public.settlements as s where s.period_from = '2040-01-01' and s.beneficiary_id is null
    ) where subject_id = 'b-direct'$$,
    'PT403', 'forbidden', 'a fee event does not join a settlement of another beneficiary');
select tests.throws_hint(
    format($$update public.fee_events set settlement_id = (
        select s.id from public.settlements as s where s.period_from = '2040-01-01' and s.beneficiary_id = %L
    ) where subject_id = 'b-direct'$$, :'direct'),
    'PT403', 'forbidden', '... nor one of another currency');

-- Who sees what.
select string_agg(id, ',' order by id) as a_vouchers from public.vouchers where :'a' in (issuer_id, holder_id) \gset
select string_agg(id, ',' order by id) as b_vouchers from public.vouchers where :'b' in (issuer_id, holder_id) \gset
select string_agg(id, ',' order by id) as a_bookings from public.voucher_bookings where issuer_id = :'a' \gset
select string_agg(id, ',' order by id) as b_bookings from public.voucher_bookings where holder_id = :'b' \gset
select tests.authenticate_as(:'a');
select is((select string_agg(id, ',' order by id) from public.vouchers), :'a_vouchers',
    'the issuer sees its vouchers, and no other');
select is((select string_agg(id, ',' order by id) from public.voucher_bookings), :'a_bookings',
    '... and all their bookings');
select is_empty('select 1 from public.fee_events', 'the issuer sees none of the platform''s fee events');
select is_empty('select 1 from public.settlements', '... nor its settlements');
select tests.authenticate_as(:'b');
select is((select string_agg(id, ',' order by id) from public.vouchers), :'b_vouchers',
    'the holder sees the vouchers it holds');
select is((select string_agg(id, ',' order by id) from public.voucher_bookings), :'b_bookings',
    '... and their bookings');
select ok(:'b_vouchers' like '%' || :'v1' || '%' and :'b_bookings' like '%' || :'bk1b' || '%',
    '... among them a''s voucher v1 and its booking');
select is_empty('select 1 from public.fee_events', 'the holder sees no fee event');
select results_eq('select id from public.thinkers', format('values (%L::uuid)', :'b'),
    'a thinker sees only its own thinker row');
select throws_ok('select 1 from public.fees', '42501', null, 'fee rules are not readable by signed-in users');
select results_eq('select id from public.voucher_templates order by id',
    $$values ('coaching'), ('consulting'), ('legal.consultation'), ('mortgage.consultation'),
             ('realestate.viewing'), ('therapy')$$,
    'signed-in users read the 6 default voucher templates');
select tests.authenticate_as(:'g');
select is_empty('select 1 from public.vouchers', 'a stranger sees no voucher');
select is_empty('select 1 from public.voucher_bookings', '... and no booking');
select tests.authenticate_as(:'f');
select results_eq('select period_from, total_cents from public.settlements order by period_from',
    $$values ('2031-03-10'::date, 805::bigint), ('2031-03-11'::date, -2::bigint)$$,
    'a beneficiary sees its settlements, none of the platform''s');
select results_eq(
    'select count(*), sum(amount_cents), count(*) filter (where beneficiary_id is distinct from auth.uid()) '
    'from public.fee_events',
    $$values (9::bigint, 843::numeric, 0::bigint)$$,
    'a beneficiary sees its 9 fee events, none of the platform''s'
);
select tests.clear_authentication();
select throws_ok('select 1 from public.thinkers', '42501', null, 'anon reads no thinker');
select throws_ok('select 1 from public.voucher_templates', '42501', null, 'anon reads no template');
select throws_ok('select 1 from public.vouchers', '42501', null, 'anon reads no voucher');
select throws_ok('select 1 from public.voucher_bookings', '42501', null, 'anon reads no booking');
select throws_ok('select 1 from public.fees', '42501', null, 'anon reads no fee rule');
select throws_ok('select 1 from public.fee_events', '42501', null, 'anon reads no fee event');
select throws_ok('select 1 from public.settlements', '42501', null, 'anon reads no settlement');
select tests.reset_role();

select * from finish();
rollback;
