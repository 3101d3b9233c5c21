-- Stripe: apply_stripe_event (the envelope, once per id, applied / duplicate / ignored /
-- failed), Checkout Sessions and their credit grants, the credit capacity and its
-- reservations, failed events and retry_stripe_event, subscriptions in any order, invoices,
-- refunds, payment logs; who sees what. The events are real Stripe fixtures
-- (tests/fixtures/stripe, read from the repository root) and variants built from them.
\set ev_cs_completed `cat tests/fixtures/stripe/checkout.session.completed.json`
\set ev_cs_pending `cat tests/fixtures/stripe/checkout.session.completed.async_pending.json`
\set ev_cs_async_ok `cat tests/fixtures/stripe/checkout.session.async_payment_succeeded.json`
\set ev_cs_async_failed `cat tests/fixtures/stripe/checkout.session.async_payment_failed.json`
\set ev_cs_no_metadata `cat tests/fixtures/stripe/checkout.session.completed.missing_metadata.json`
\set ev_cs_subscription `cat tests/fixtures/stripe/checkout.session.completed.subscription.json`
\set ev_sub_created `cat tests/fixtures/stripe/customer.subscription.created.json`
\set ev_sub_updated `cat tests/fixtures/stripe/customer.subscription.updated.json`
\set ev_sub_past_due `cat tests/fixtures/stripe/customer.subscription.updated.past_due.json`
\set ev_sub_deleted `cat tests/fixtures/stripe/customer.subscription.deleted.json`
\set ev_customer_updated `cat tests/fixtures/stripe/customer.updated.json`
\set ev_inv_paid `cat tests/fixtures/stripe/invoice.paid.json`
\set ev_inv_succeeded `cat tests/fixtures/stripe/invoice.payment_succeeded.json`
\set ev_inv_failed `cat tests/fixtures/stripe/invoice.payment_failed.json`
\set ev_ch_refunded `cat tests/fixtures/stripe/charge.refunded.json`
\set ev_ch_refunded_partial `cat tests/fixtures/stripe/charge.refunded.partial.json`
\set ev_ch_refunded_legacy `cat tests/fixtures/stripe/charge.refunded.legacy_2022-08-01.json`
\set ev_pi_succeeded `cat tests/fixtures/stripe/payment_intent.succeeded.json`
\set ev_pi_failed `cat tests/fixtures/stripe/payment_intent.payment_failed.json`
\set ev_dp_created `cat tests/fixtures/stripe/charge.dispute.created.json`
\set ev_dp_closed `cat tests/fixtures/stripe/charge.dispute.closed.json`
\set ev_re_created `cat tests/fixtures/stripe/refund.created.json`
\set ev_re_updated `cat tests/fixtures/stripe/refund.updated.json`
-- The fixtures' user, sessions, payment intent, charge, subscription and invoices.
\set u '6f1c7a52-3b0e-4d8e-9a51-2c4f0e9b7d13'
\set cs_a 'cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY'
\set cs_b 'cs_test_b1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY'
\set cs_c 'cs_test_c1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY'
\set pi 'pi_1PgafyB7WZ01zgkWSjxsAJo3'
\set ch 'ch_1PgafuB7WZ01zgkWXYmPNZs8'
\set sub 'sub_1Pgc6rB7WZ01zgkWNy0Cn5nw'
\set price 'price_1PgafmB7WZ01zgkW6dKueIc5'
\set in_paid 'in_1Pgc6tB7WZ01zgkWu9fdqL6I'
\set in_failed 'in_1Pgc6tB7WZ01zgkWu9fdqL6J'
-- A user no event knows yet: created later, for retry_stripe_event.
\set x '0e6d5c4b-2a19-4f87-b6e5-d4c3b2a19f87'
begin;
select plan(191);

create temporary table fx (name text primary key, ev jsonb not null);
insert into fx (name, ev)
values
('cs_completed', :'ev_cs_completed'),
('cs_pending', :'ev_cs_pending'),
('cs_async_ok', :'ev_cs_async_ok'),
('cs_async_failed', :'ev_cs_async_failed'),
('cs_no_metadata', :'ev_cs_no_metadata'),
('cs_subscription', :'ev_cs_subscription'),
('sub_created', :'ev_sub_created'),
('sub_updated', :'ev_sub_updated'),
('sub_past_due', :'ev_sub_past_due'),
('sub_deleted', :'ev_sub_deleted'),
('customer_updated', :'ev_customer_updated'),
('inv_paid', :'ev_inv_paid'),
('inv_succeeded', :'ev_inv_succeeded'),
('inv_failed', :'ev_inv_failed'),
('ch_refunded', :'ev_ch_refunded'),
('ch_refunded_partial', :'ev_ch_refunded_partial'),
('ch_refunded_legacy', :'ev_ch_refunded_legacy'),
('pi_succeeded', :'ev_pi_succeeded'),
('pi_failed', :'ev_pi_failed'),
('dp_created', :'ev_dp_created'),
('dp_closed', :'ev_dp_closed'),
('re_created', :'ev_re_created'),
('re_updated', :'ev_re_updated');

-- Owner-only helpers (called after tests.reset_role()).
-- A fixture; with p_id, under that new event id (ids are deduplicated).
create function pg_temp.ev(p_name text, p_id text default null)
returns jsonb
language sql stable
as $$
    select case when p_id is null then f.ev else jsonb_set(f.ev, '{id}', to_jsonb(p_id)) end
    from pg_temp.fx as f
    where f.name = p_name
$$;

-- p_event with data.object.<p_path> (comma-separated keys) set to p_value.
create function pg_temp.obj(p_event jsonb, p_path text, p_value jsonb)
returns jsonb
language sql immutable
as $$
    select jsonb_set(p_event, string_to_array('data,object,' || p_path, ','), p_value)
$$;

-- A Checkout Session event: fixture p_name under event id p_id, for session p_cs of user
-- p_user (metadata.user_id and client_reference_id), optionally of the checkout p_checkout
-- (metadata.checkout_id) and with payment intent p_pi.
create function pg_temp.session(
    p_name text, p_id text, p_cs text, p_user text, p_checkout text default null, p_pi text default null
)
returns jsonb
language plpgsql stable
as $$
declare
    v_event jsonb := pg_temp.ev(p_name, p_id);
begin
    v_event := pg_temp.obj(v_event, 'id', to_jsonb(p_cs));
    v_event := pg_temp.obj(v_event, 'metadata,user_id', to_jsonb(p_user));
    v_event := pg_temp.obj(v_event, 'client_reference_id', to_jsonb(p_user));
    if p_checkout is not null then
        v_event := pg_temp.obj(v_event, 'metadata,checkout_id', to_jsonb(p_checkout));
    end if;
    if p_pi is not null then
        v_event := pg_temp.obj(v_event, 'payment_intent', to_jsonb(p_pi));
    end if;
    return v_event;
end;
$$;

-- Everything applying an event may write, but the event store: a refused or failed event
-- leaves it as it was.
create function pg_temp.state()
returns jsonb
language sql stable
as $$
    select tests.digest(array[
        'public.checkout_sessions',
        'public.user_credit_purchases',
        'public.credits',
        'public.credit_transactions',
        'public.user_subscriptions',
        'public.payment_history',
        'public.payment_logs',
        'public.invoice_logs',
        'public.events'
    ]::regclass[])
$$;

-- The event store.
create function pg_temp.stored()
returns text
language sql stable
as $$
    select md5(coalesce(string_agg(e::text, '|' order by e.id), '')) from paycore.stripe_events as e
$$;

create function pg_temp.balance(p_user_id uuid)
returns bigint
language sql stable
as $$
    select coalesce((select c.balance from public.credits as c where c.user_id = p_user_id), 0)
$$;

-- A subscription's row, without what differs between two subscriptions of the same story.
create function pg_temp.sub(p_subscription_id text)
returns jsonb
language sql stable
as $$
    select to_jsonb(s) - array['id', 'stripe_subscription_id']
    from public.user_subscriptions as s
    where s.stripe_subscription_id = p_subscription_id
$$;

-- The DETAIL (JSON) of the error p_sql raises.
create function pg_temp.error_detail(p_sql text)
returns jsonb
language plpgsql
as $$
declare
    v_detail text;
begin
    execute p_sql;
    return null;
exception when others then
    get stacked diagnostics v_detail = pg_exception_detail;
    return nullif(v_detail, '')::jsonb;
end;
$$;

-- The four subscription events, in every one of the 24 orders, each order on a fresh
-- subscription id: the final row of each. Order 1 is {1,2,3,4}, the order of their times.
create function pg_temp.subscription_orders()
returns table (n integer, ord integer[], final jsonb)
language plpgsql volatile
as $$
declare
    v_names text [] := array['sub_created', 'sub_updated', 'sub_deleted', 'sub_past_due'];
    v_ord integer [];
    v_sub text;
    v_k integer;
begin
    n := 0;
    for v_ord in
        with recursive p (o) as (
            select array[]::integer []
            union all
            select p.o || i.i
            from p cross join generate_series(1, 4) as i (i)
            where cardinality(p.o) < 4 and not i.i = any(p.o)
        )
        select p.o from p where cardinality(p.o) = 4 order by p.o
    loop
        n := n + 1;
        v_sub := 'sub_order' || lpad(n::text, 2, '0');
        foreach v_k in array v_ord loop
            perform paycore.apply_stripe_event(
                pg_temp.obj(pg_temp.ev(v_names[v_k], format('evt_order%s_%s', n, v_k)), 'id', to_jsonb(v_sub))
            );
        end loop;
        ord := v_ord;
        final := pg_temp.sub(v_sub);
        return next;
    end loop;
end;
$$;

select tests.travel_to('2026-07-25 17:00:00+00');
set local timezone = 'UTC';

insert into auth.users (id, email) values (:'u', 'stripe-fixture@example.test');
select tests.create_user('stripe-v@example.test') as v \gset
select tests.create_user('stripe-w@example.test') as w \gset
select tests.create_user('stripe-c@example.test') as c \gset

-- Who may call apply_stripe_event: paycore_webhook and the owner.
select tests.act_as('paycore_webhook');
select paycore.apply_stripe_event(:'ev_customer_updated'::jsonb) as webhook_result \gset
reset role;
select tests.reset_role();
select is(
    :'webhook_result'::text, 'ignored',
    'paycore_webhook applies an event: an unknown type (customer.updated) is ignored');
select results_eq(
    $$select type, api_version, livemode, created, payload = pg_temp.ev('customer_updated'), status, error,
             attempts, processed_at
      from paycore.stripe_events where id = 'evt_qJIY9JdnSwLy7CSPAqWY1Lvv'$$,
    $$values ('customer.updated', '2026-07-29.dahlia', false, to_timestamp(1785000010), true, 'ignored',
              null::text, 1, '2026-07-25 17:00:00+00'::timestamptz)$$,
    '... stored with status ignored: type, api_version, livemode, created, payload, processed_at'
);
select tests.authenticate_as(:'u');
select tests.throws_hint(
    $$select paycore.apply_stripe_event('{"id": "evt_auth1"}')$$, '42501', null,
    'authenticated may not call apply_stripe_event');
select tests.authenticate_as_service_role();
select tests.throws_hint(
    $$select paycore.apply_stripe_event('{"id": "evt_service1"}')$$, '42501', null,
    'service_role may not call apply_stripe_event');
select tests.clear_authentication();
select tests.throws_hint(
    $$select paycore.apply_stripe_event('{"id": "evt_anon1"}')$$, '42501', null,
    'anon may not call apply_stripe_event');
select tests.reset_role();

-- The envelope: not an event is PT400 and stores nothing.
select pg_temp.state() as before_state, pg_temp.stored() as before_stored \gset
select tests.throws_hint(
    $$select paycore.apply_stripe_event(null)$$, 'PT400', 'invalid_argument', 'a null event is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event('[{"id": "evt_array1"}]')$$, 'PT400', 'invalid_argument',
    'an event that is not a JSON object (an array) is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event('"evt_scalar1"')$$, 'PT400', 'invalid_argument',
    'an event that is not a JSON object (a string) is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('cs_completed') - 'id')$$, 'PT400', 'invalid_argument',
    'an event without id is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('cs_completed', 'ch_1PgafuB7WZ01zgkW'))$$,
    'PT400', 'invalid_argument', 'an id that is not evt_... is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('cs_completed', 'evt_bad-id'))$$,
    'PT400', 'invalid_argument', 'an id with other characters than letters, digits and _ is PT400');
select tests.throws_hint(
    format($$select paycore.apply_stripe_event(pg_temp.ev('cs_completed', %L))$$, 'evt_' || repeat('a', 252)),
    'PT400', 'invalid_argument', 'an id beyond 255 characters is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('cs_completed', 'evt_env_no_type') - 'type')$$,
    'PT400', 'invalid_argument', 'an event without type is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(jsonb_set(pg_temp.ev('cs_completed', 'evt_env_blank_type'), '{type}', '" "'))$$,
    'PT400', 'invalid_argument', 'a blank type is PT400');
select tests.throws_hint(
    format(
        $$select paycore.apply_stripe_event(jsonb_set(pg_temp.ev('cs_completed', 'evt_env_long_type'), '{type}', %L))$$,
        to_jsonb(repeat('x', 101))),
    'PT400', 'invalid_argument', 'a type beyond 100 characters is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(
        jsonb_set(pg_temp.ev('cs_completed', 'evt_env_created_text'), '{created}', '"1785000000"'))$$,
    'PT400', 'invalid_argument', 'created that is not a number (a string) is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(
        jsonb_set(pg_temp.ev('cs_completed', 'evt_env_created_neg'), '{created}', '-1'))$$,
    'PT400', 'invalid_argument', 'created before 1970 (not Unix seconds) is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(
        jsonb_set(pg_temp.ev('cs_completed', 'evt_env_object_text'), '{data,object}', '"cs_test_x"'))$$,
    'PT400', 'invalid_argument', 'data.object that is not an object is PT400');
select is(pg_temp.state(), :'before_state'::jsonb, '... and the refused events changed nothing');
select is(pg_temp.stored(), :'before_stored', '... nor stored anything');

-- A missing created or data.object is not an event either (jsonb_typeof of a missing key is
-- null: the check must not let it through).
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('cs_completed', 'evt_env_no_created') - 'created')$$,
    'PT400', 'invalid_argument', 'an event without created is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(jsonb_set(pg_temp.ev('cs_completed', 'evt_env_no_object'), '{data}', '{}'))$$,
    'PT400', 'invalid_argument', 'an event without data.object is PT400');
select tests.throws_hint(
    $$select paycore.apply_stripe_event(pg_temp.ev('customer_updated', 'evt_env_no_data') - 'data')$$,
    'PT400', 'invalid_argument', 'an event of an unknown type without data is PT400');
select is(pg_temp.stored(), :'before_stored', '... and none of them is stored');

-- The credit capacity: begin_credit_checkout reserves a package's credits for 24 hours.
update paycore.settings set value = '250' where key = 'platform_credit_capacity';
select tests.authenticate_as_service_role();
select x.id as k1 from public.begin_credit_checkout(:'c', 'pkg_100_credits') as x \gset
select x.id as k2 from public.begin_credit_checkout(:'c', 'pkg_100_credits') as x \gset
select tests.reset_role();
select results_eq(
    format($$select user_id, mode, package_id, credits, amount_total, currency, status, reservation, expires_at,
                    stripe_session_id
             from public.checkout_sessions where id = %L$$, :'k1'),
    format($$values (%L::uuid, 'payment', 'pkg_100_credits', 100::bigint, 1000::bigint, 'usd', 'open', 'reserved',
                     '2026-07-26 17:00:00+00'::timestamptz, null::text)$$, :'c'),
    'begin_credit_checkout: an open payment session of the package, its credits reserved for 24 hours'
);
select results_eq(
    format($$select type, meta from public.events where subject_id = %L$$, :'k1'),
    $$values ('checkout.begun', '{"credits": 100, "package_id": "pkg_100_credits"}'::jsonb)$$,
    '... and logs checkout.begun'
);
select pg_temp.state() as before_state \gset
select tests.authenticate_as_service_role();
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'c'),
    'PT409', 'capacity_exceeded', 'a third 100 credits beyond a capacity of 250 is PT409 capacity_exceeded');
select is(
    pg_temp.error_detail(format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'c')),
    '{"capacity": 250, "sold": 0, "reserved": 200, "requested": 100}'::jsonb,
    '... its DETAIL is JSON: capacity, sold, reserved, requested');
select is(
    public.get_platform_credit_status(), '{"capacity": 250, "sold": 0, "reserved": 200, "available": 50}'::jsonb,
    'get_platform_credit_status: capacity 250, reserved 200, available 50');
select tests.reset_role();
select is(pg_temp.state(), :'before_state'::jsonb, '... and the refused checkout wrote nothing');

select tests.travel_to('2026-07-26 18:00:00+00');
select tests.authenticate_as_service_role();
select is(
    public.get_platform_credit_status(), '{"capacity": 250, "sold": 0, "reserved": 0, "available": 250}'::jsonb,
    'past expires_at, an open session no longer holds its reservation');
select x.id as k3 from public.begin_credit_checkout(:'c', 'pkg_100_credits') as x \gset
select tests.reset_role();
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_pending', 'evt_cap_k3_pending', 'cs_test_capk3', :'c', :'k3')),
    'applied', 'a session completed but unpaid (asynchronous payment) is applied');
select results_eq(
    format($$select stripe_session_id, status, payment_status, reservation from public.checkout_sessions
             where id = %L$$, :'k3'),
    $$values ('cs_test_capk3', 'complete', 'unpaid', 'reserved')$$,
    '... the session begun by paycore (metadata.checkout_id) is complete, unpaid, still reserved'
);
select tests.travel_to('2026-07-28 00:00:00+00');
select tests.authenticate_as_service_role();
select is(
    public.get_platform_credit_status() ->> 'reserved', '100',
    '... and keeps holding its reservation past expires_at');
select x.id as k4 from public.begin_credit_checkout(:'c', 'pkg_100_credits') as x \gset
select tests.reset_role();
select is(
    paycore.apply_stripe_event(
        pg_temp.session('cs_completed', 'evt_cap_k4_completed', 'cs_test_capk4', :'c', :'k4', 'pi_capk4')
    ),
    'applied', 'a paid session of a begun checkout is applied');
select is(
    (select c.reservation from public.checkout_sessions as c where c.id = :'k4'), 'sold',
    '... its reservation is sold');
select tests.authenticate_as_service_role();
select is(
    public.get_platform_credit_status(), '{"capacity": 250, "sold": 100, "reserved": 100, "available": 50}'::jsonb,
    '... and counts as sold, no longer as reserved');
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'c'),
    'PT409', 'capacity_exceeded', 'sold and reserved credits both count against the capacity');
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_nope')$$, :'c'),
    'PT404', 'not_found', 'an unknown package is PT404');
select tests.reset_role();
update public.credit_packages set active = false where id = 'pkg_2000_credits';
select tests.authenticate_as_service_role();
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_2000_credits')$$, :'c'),
    'PT404', 'not_found', 'a package not on sale (inactive) is PT404');
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'x'),
    'PT404', 'not_found', 'an unknown user is PT404');
select tests.authenticate_as(:'c');
select tests.throws_hint(
    $$select public.begin_credit_checkout(null, 'pkg_100_credits')$$, '42501', null,
    'authenticated may not call begin_credit_checkout');
select tests.throws_hint(
    $$select public.get_platform_credit_status()$$, '42501', null,
    'authenticated may not call get_platform_credit_status');
select tests.clear_authentication();
select tests.throws_hint(
    format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'c'), '42501', null,
    'anon may not call begin_credit_checkout');
select tests.throws_hint(
    $$select public.get_platform_credit_status()$$, '42501', null,
    'anon may not call get_platform_credit_status');
select tests.reset_role();
update paycore.settings set value = 'null' where key = 'platform_credit_capacity';
select tests.authenticate_as_service_role();
select lives_ok(
    format($$select public.begin_credit_checkout(%L, 'pkg_500_credits')$$, :'c'),
    'a capacity of null (JSON null) is no limit: 500 credits more are reserved');
select is(
    public.get_platform_credit_status(), '{"capacity": null, "sold": 100, "reserved": 600, "available": null}'::jsonb,
    '... and the status shows capacity and available null');
select tests.reset_role();

-- A paid credit Checkout Session grants the package's credits once.
select is(paycore.apply_stripe_event(pg_temp.ev('cs_completed')), 'applied', 'checkout.session.completed (paid)');
select results_eq(
    $$select type, api_version, livemode, created, payload = pg_temp.ev('cs_completed'), status, error,
             attempts, processed_at
      from paycore.stripe_events where id = 'evt_oLcWDpkHfyCr2B36UL6FGgJh'$$,
    $$values ('checkout.session.completed', '2026-07-29.dahlia', false, to_timestamp(1785000000), true,
              'applied', null::text, 1, '2026-07-28 00:00:00+00'::timestamptz)$$,
    '... stored as applied: type, api_version, livemode, created, payload, processed_at'
);
select is(pg_temp.balance(:'u'), 100::bigint, '... grants the package''s 100 credits');
select results_eq(
    format($$select amount, balance_after, type, description, metadata from public.credit_transactions
             where user_id = %L and idempotency_key = %L$$, :'u', 'paycore:checkout:' || :'cs_a' || ':grant'),
    format($$values (100::bigint, 100::bigint, 'purchase', 'Credit package pkg_100_credits',
                     jsonb_build_object('stripe_session_id', %L, 'package_id', 'pkg_100_credits'))$$, :'cs_a'),
    '... in one ledger row of type purchase, key paycore:checkout:<session>:grant'
);
select results_eq(
    format($$select p.user_id, p.package_id, p.credits, p.amount, p.currency, p.stripe_payment_intent_id, p.status,
                    p.amount_refunded, p.transaction_id = t.id, p.checkout_session_id = c.id
             from public.user_credit_purchases as p
             join public.checkout_sessions as c on c.stripe_session_id = p.stripe_session_id
             join public.credit_transactions as t on t.idempotency_key = 'paycore:checkout:' || p.stripe_session_id || ':grant'
             where p.stripe_session_id = %L$$, :'cs_a'),
    format($$values (%L::uuid, 'pkg_100_credits', 100::bigint, 1000::bigint, 'usd', %L, 'paid', 0::bigint,
                     true, true)$$, :'u', :'pi'),
    '... one user_credit_purchases row: package, credits, amount, payment intent, its ledger row and session'
);
select results_eq(
    format($$select user_id, mode, package_id, credits, status, payment_status, amount_total, currency,
                    stripe_payment_intent_id, stripe_customer_id, reservation, expires_at, stripe_event_created_at
             from public.checkout_sessions where stripe_session_id = %L$$, :'cs_a'),
    format($$values (%L::uuid, 'payment', 'pkg_100_credits', 100::bigint, 'complete', 'paid', 1000::bigint, 'usd',
                     %L, 'cus_QXg1o8vcGmoR32', null::text, to_timestamp(1785086280), to_timestamp(1785000000))$$,
        :'u', :'pi'),
    '... the checkout_sessions row is complete / paid, with no reservation (paycore did not begin it)'
);
select results_eq(
    format($$select meta from public.events where type = 'credit.purchased' and actor_id = %L$$, :'u'),
    format($$values (jsonb_build_object('credits', 100, 'stripe_session_id', %L))$$, :'cs_a'),
    '... and logs credit.purchased'
);

select pg_temp.state() as before_state, pg_temp.stored() as before_stored \gset
select is(paycore.apply_stripe_event(pg_temp.ev('cs_completed')), 'duplicate', 'the same event id again is duplicate');
select is(pg_temp.state(), :'before_state'::jsonb, '... and changes nothing: balance, ledger, sessions, purchases');
select is(pg_temp.stored(), :'before_stored', '... nor the stored event');
select is(
    paycore.apply_stripe_event(pg_temp.ev('cs_completed', 'evt_cs_a_again')), 'applied',
    'the same session in an event of another id is applied');
select results_eq(
    format($$select (select count(*) from public.credit_transactions where user_id = %L),
                    (select count(*) from public.user_credit_purchases where stripe_session_id = %L)$$, :'u', :'cs_a'),
    $$values (1::bigint, 1::bigint)$$,
    '... but grants nothing more');

select is(
    paycore.apply_stripe_event(pg_temp.ev('cs_pending')), 'applied',
    'checkout.session.completed with an asynchronous payment pending (unpaid) is applied');
select results_eq(
    format($$select c.status, c.payment_status,
                    (select count(*) from public.user_credit_purchases as p where p.stripe_session_id = c.stripe_session_id)
             from public.checkout_sessions as c where c.stripe_session_id = %L$$, :'cs_c'),
    $$values ('complete', 'unpaid', 0::bigint)$$,
    '... the session is complete and unpaid, and nothing is granted');
select is(pg_temp.balance(:'u'), 100::bigint, '... the balance is unchanged');
select is(
    paycore.apply_stripe_event(pg_temp.ev('cs_async_ok')), 'applied', 'checkout.session.async_payment_succeeded');
select is(pg_temp.balance(:'u'), 200::bigint, '... grants the 100 credits');
select results_eq(
    format($$select c.payment_status, p.credits, p.stripe_payment_intent_id
             from public.checkout_sessions as c join public.user_credit_purchases as p on p.checkout_session_id = c.id
             where c.stripe_session_id = %L$$, :'cs_c'),
    $$values ('paid', 100::bigint, 'pi_1PgafyB7WZ01zgkWSjxsAJo4')$$,
    '... the session is paid, with its purchase');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.ev('cs_pending', 'evt_cs_c_completed_paid'), 'payment_status', '"paid"')
    ),
    'applied', 'a completed event reporting the same session paid is applied');
select results_eq(
    format($$select count(*) from public.credit_transactions where user_id = %L and idempotency_key = %L$$,
        :'u', 'paycore:checkout:' || :'cs_c' || ':grant'),
    $$values (1::bigint)$$,
    '... completed and async_payment_succeeded both paid: one grant');
select is(pg_temp.balance(:'u'), 200::bigint, '... the balance is unchanged');

select is(
    paycore.apply_stripe_event(pg_temp.ev('cs_subscription')), 'applied',
    'a subscription Checkout Session is applied');
select results_eq(
    format($$select mode, app_id, stripe_subscription_id, package_id, credits from public.checkout_sessions
             where stripe_session_id = %L$$, :'cs_b'),
    format($$values ('subscription', 'cv', %L, null::text, null::bigint)$$, :'sub'),
    '... recorded with the app of its metadata and its subscription, granting no credits');

-- Reservations of begun checkouts: released by a failed payment or an expiry, sold when paid.
select tests.authenticate_as_service_role();
select x.id as r1 from public.begin_credit_checkout(:'u', 'pkg_100_credits') as x \gset
select x.id as r2 from public.begin_credit_checkout(:'u', 'pkg_100_credits') as x \gset
select x.id as r3 from public.begin_credit_checkout(:'u', 'pkg_100_credits') as x \gset
select x.id as r4 from public.begin_credit_checkout(:'u', 'pkg_100_credits') as x \gset
select tests.reset_role();
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_pending', 'evt_r1_pending', 'cs_test_r1', :'u', :'r1')), 'applied',
    'a begun checkout completed with its payment pending');
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_async_failed', 'evt_r1_failed', 'cs_test_r1', :'u', :'r1')),
    'applied', '... then checkout.session.async_payment_failed');
select results_eq(
    format($$select status, payment_status, reservation, stripe_session_id from public.checkout_sessions
             where id = %L$$, :'r1'),
    $$values ('complete', 'unpaid', 'released', 'cs_test_r1')$$,
    '... releases the reservation');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            jsonb_set(pg_temp.session('cs_pending', 'evt_r2_expired', 'cs_test_r2', :'u', :'r2'),
                '{type}', '"checkout.session.expired"'),
            'status', '"expired"'
        )
    ),
    'applied', 'checkout.session.expired of a begun checkout');
select results_eq(
    format($$select status, reservation from public.checkout_sessions where id = %L$$, :'r2'),
    $$values ('expired', 'released')$$,
    '... releases the reservation');
select is(pg_temp.balance(:'u'), 200::bigint, '... neither grants anything');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(
                pg_temp.session('cs_completed', 'evt_r3_completed', 'cs_test_r3', :'u', :'r3', 'pi_r3'),
                'amount_total', '999999'
            ),
            'metadata,package_id', '"pkg_2000_credits"'
        )
    ),
    'applied', 'a paid session of a begun checkout, amount_total 999999 and another package in its metadata');
select results_eq(
    format($$select c.reservation, p.credits, p.amount, p.package_id
             from public.checkout_sessions as c join public.user_credit_purchases as p on p.checkout_session_id = c.id
             where c.id = %L$$, :'r3'),
    $$values ('sold', 100::bigint, 999999::bigint, 'pkg_100_credits')$$,
    '... is sold and grants the begun package''s 100 credits: the event''s amounts and metadata change nothing');
select is(pg_temp.balance(:'u'), 300::bigint, '... 100 credits');
update public.credit_packages set credits = 150 where id = 'pkg_100_credits';
select is(
    paycore.apply_stripe_event(
        pg_temp.session('cs_completed', 'evt_r4_completed', 'cs_test_r4', :'u', :'r4', 'pi_r4')
    ),
    'applied', 'a paid session of a checkout begun before its package changed to 150 credits');
update public.credit_packages set credits = 100 where id = 'pkg_100_credits';
select is(pg_temp.balance(:'u'), 400::bigint, '... grants the 100 credits of when the checkout began');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(pg_temp.session('cs_completed', 'evt_cs_big', 'cs_test_big', :'u', null, 'pi_big'),
                'amount_total', '999999'),
            'metadata,credits', '"5000"'
        )
    ),
    'applied', 'a paid session paycore did not begin, amount_total 999999 and credits 5000 in its metadata');
select is(pg_temp.balance(:'u'), 500::bigint, '... grants the package''s 100 credits, no more');

-- Failed events: stored with the reason, nothing of them applied.
select pg_temp.state() as before_state \gset
select is(
    paycore.apply_stripe_event(pg_temp.ev('cs_no_metadata')), 'failed',
    'a session without metadata nor client_reference_id fails');
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_completed', 'evt_fail_not_uuid', 'cs_test_fail1', 'user-42')),
    'failed', 'a user id that is not a uuid fails');
select is(
    paycore.apply_stripe_event(
        pg_temp.session('cs_completed', 'evt_fail_unknown_user', 'cs_test_fail2', :'x', null, 'pi_x1')
    ),
    'failed', 'an unknown user fails');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.session('cs_completed', 'evt_fail_two_users', 'cs_test_fail3', :'u'), 'client_reference_id',
            to_jsonb(:'v'::text)
        )
    ),
    'failed', 'metadata user_id and another client_reference_id fail');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.session('cs_completed', 'evt_fail_package', 'cs_test_fail4', :'u'), 'metadata,package_id',
            '"pkg_nope"'
        )
    ),
    'failed', 'an unknown package fails');
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_completed', 'evt_fail_other_user', 'cs_test_fail5', :'v', :'r1')),
    'failed', 'a session naming a checkout paycore began for another user fails');
select is(
    paycore.apply_stripe_event(pg_temp.ev('sub_created')), 'failed',
    'a subscription to a price public.prices does not map fails');
select is(pg_temp.state(), :'before_state'::jsonb, '... and none of them changed anything');
select results_eq(
    $$select e.id, e.status, e.error ~ x.reason, e.processed_at is not null
      from paycore.stripe_events as e
      join (values
          ('evt_vfBFUmULUnJWX8DLPncOtcsZ', 'names no user'),
          ('evt_fail_not_uuid', 'is not a uuid'),
          ('evt_fail_unknown_user', 'does not exist'),
          ('evt_fail_two_users', 'differ'),
          ('evt_fail_package', 'no known credit package'),
          ('evt_fail_other_user', 'another user'),
          ('evt_g1LG7V8qpKSQTe2JaXX1lnng', 'add it to public.prices')
      ) as x (id, reason) on x.id = e.id
      order by e.id collate "C"$$,
    $$values ('evt_fail_not_uuid', 'failed', true, true),
             ('evt_fail_other_user', 'failed', true, true),
             ('evt_fail_package', 'failed', true, true),
             ('evt_fail_two_users', 'failed', true, true),
             ('evt_fail_unknown_user', 'failed', true, true),
             ('evt_g1LG7V8qpKSQTe2JaXX1lnng', 'failed', true, true),
             ('evt_vfBFUmULUnJWX8DLPncOtcsZ', 'failed', true, true)$$,
    '... each is stored as failed with its reason'
);

-- retry_stripe_event applies a failed event again once the data is fixed.
insert into public.prices (stripe_price_id, app_id, tier_id) values (:'price', 'cv', 'premium');
insert into auth.users (id, email) values (:'x', 'stripe-x@example.test');
select tests.authenticate_as_service_role();
select is(
    public.retry_stripe_event('evt_g1LG7V8qpKSQTe2JaXX1lnng'), 'applied',
    'retry_stripe_event of the subscription once its price is mapped: applied');
select is(
    public.retry_stripe_event('evt_fail_unknown_user'), 'applied',
    'retry_stripe_event of the session once its user exists: applied');
select is(
    public.retry_stripe_event('evt_vfBFUmULUnJWX8DLPncOtcsZ'), 'failed',
    'retry_stripe_event of an event whose data is still wrong: failed');
select tests.throws_hint(
    $$select public.retry_stripe_event('evt_oLcWDpkHfyCr2B36UL6FGgJh')$$, 'PT409', 'invalid_state',
    'retry_stripe_event of an applied event is PT409');
select tests.throws_hint(
    $$select public.retry_stripe_event('evt_customer_never_sent')$$, 'PT404', 'not_found',
    'retry_stripe_event of an unknown id is PT404');
select tests.authenticate_as(:'u');
select tests.throws_hint(
    $$select public.retry_stripe_event('evt_fail_package')$$, '42501', null,
    'authenticated may not call retry_stripe_event');
select tests.clear_authentication();
select tests.throws_hint(
    $$select public.retry_stripe_event('evt_fail_package')$$, '42501', null,
    'anon may not call retry_stripe_event');
select tests.reset_role();
select results_eq(
    $$select id, status, attempts, error is null from paycore.stripe_events
      where id in ('evt_g1LG7V8qpKSQTe2JaXX1lnng', 'evt_fail_unknown_user', 'evt_vfBFUmULUnJWX8DLPncOtcsZ')
      order by id collate "C"$$,
    $$values ('evt_fail_unknown_user', 'applied', 2, true),
             ('evt_g1LG7V8qpKSQTe2JaXX1lnng', 'applied', 2, true),
             ('evt_vfBFUmULUnJWX8DLPncOtcsZ', 'failed', 2, false)$$,
    '... each retry counts an attempt; an applied one clears the error'
);
select is(pg_temp.balance(:'x'), 100::bigint, '... the retried session granted its credits');

-- Subscriptions: the row, and its tier.
select results_eq(
    format($$select user_id, app_id, tier_id, tier_rank, status, stripe_price_id, stripe_customer_id,
                    stripe_session_id, currency, activated_at, current_period_start, current_period_end,
                    cancel_at_period_end, canceled_at, stripe_event_created_at, entitled_until
             from public.user_subscriptions where stripe_subscription_id = %L$$, :'sub'),
    format($$values (%L::uuid, 'cv', 'premium', 1, 'active', %L, 'cus_QXg1o8vcGmoR32', %L, 'usd',
                     to_timestamp(1785000000), to_timestamp(1785000000), to_timestamp(1787678400), false,
                     null::timestamptz, to_timestamp(1785000001), to_timestamp(1787678400) + interval '3 days')$$,
        :'u', :'price', :'cs_b'),
    'customer.subscription.created: cv premium (from public.prices), active, the period of items.data[0], '
    'its Checkout Session, stripe_event_created_at the event''s created'
);
select tests.travel_to('2026-08-01 12:00:00+00');
select tests.authenticate_as_service_role();
select is(public.get_user_app_tier(:'u', 'cv'), 'premium', '... the user has cv premium inside the period');
select tests.reset_role();
select is(
    paycore.apply_stripe_event(pg_temp.ev('sub_updated')), 'applied',
    'customer.subscription.updated (cancel_at_period_end)');
select results_eq(
    format($$select status, cancel_at_period_end, canceled_at, entitled_until, stripe_event_created_at
             from public.user_subscriptions where stripe_subscription_id = %L$$, :'sub'),
    $$values ('active', true, to_timestamp(1785432000), to_timestamp(1787678400), to_timestamp(1785432000))$$,
    '... still active, ending at the period''s end');
select pg_temp.sub(:'sub')::text as before_sub \gset
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(jsonb_set(pg_temp.ev('sub_updated', 'evt_sub_older'), '{created}', '1785200000'),
                'status', '"past_due"'),
            'cancel_at_period_end', 'false'
        )
    ),
    'applied', 'an update older than the one applied last arrives');
select is(pg_temp.sub(:'sub'), :'before_sub'::jsonb, '... and changes nothing');
select is(
    paycore.apply_stripe_event(pg_temp.ev('sub_deleted')), 'applied', 'customer.subscription.deleted');
select results_eq(
    format($$select status, canceled_at, entitled_until, stripe_event_created_at
             from public.user_subscriptions where stripe_subscription_id = %L$$, :'sub'),
    $$values ('canceled', to_timestamp(1785432000), null::timestamptz, to_timestamp(1787678400))$$,
    '... canceled: it entitles nothing');
select tests.authenticate_as_service_role();
select is(public.get_user_app_tier(:'u', 'cv'), 'free', '... the user is back to cv free');
select tests.reset_role();
select pg_temp.sub(:'sub')::text as before_sub \gset
select is(
    paycore.apply_stripe_event(pg_temp.ev('sub_past_due')), 'applied',
    'a past_due update newer than the deletion');
select is(pg_temp.sub(:'sub'), :'before_sub'::jsonb, '... does not revive it: still canceled');
select is(
    paycore.apply_stripe_event(pg_temp.obj(pg_temp.ev('sub_updated', 'evt_sub_unknown'), 'id', '"sub_unknown1"')),
    'applied', 'an update of a subscription never seen before');
select results_eq(
    $$select user_id, tier_id, status, cancel_at_period_end, current_period_end from public.user_subscriptions
      where stripe_subscription_id = 'sub_unknown1'$$,
    format($$values (%L::uuid, 'premium', 'active', true, to_timestamp(1787678400))$$, :'u'),
    '... creates its row (the user from its metadata)');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(
                pg_temp.obj(
                    pg_temp.ev('sub_created', 'evt_sub_old_api') #- '{data,object,items,data,0,current_period_start}'
                    #- '{data,object,items,data,0,current_period_end}',
                    'id', '"sub_oldapi1"'
                ),
                'current_period_start', '1785000000'
            ),
            'current_period_end', '1787678400'
        )
    ),
    'applied', 'a subscription of the old API shape (the period at the top level, none in items)');
select results_eq(
    $$select status, current_period_start, current_period_end from public.user_subscriptions
      where stripe_subscription_id = 'sub_oldapi1'$$,
    $$values ('active', to_timestamp(1785000000), to_timestamp(1787678400))$$,
    '... takes the period from the top level');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(pg_temp.ev('sub_created', 'evt_sub_other_app'), 'id', '"sub_otherapp1"'),
            'metadata,app_id', '"letters"'
        )
    ),
    'failed', 'a subscription whose metadata names another app than its price''s fails');

-- The four subscription events in every order end in the same row.
create temporary table sub_orders as select * from pg_temp.subscription_orders();
select results_eq(
    $$select count(*), count(distinct ord) from sub_orders$$, $$values (24::bigint, 24::bigint)$$,
    '24 orders of (created, updated, deleted, past_due), each on its own subscription');
select results_eq(
    $$select final ->> 'status', final ->> 'stripe_event_created_at', final ->> 'cancel_at_period_end'
      from sub_orders where n = 1$$,
    $$values ('canceled', '2026-08-25T17:20:00+00:00', 'true')$$,
    'in the order of their times: canceled, from the deletion');
select is(
    (select count(*) from sub_orders as o where o.final = (select f.final from sub_orders as f where f.n = 1)),
    24::bigint,
    'every one of the 24 orders ends in that row: the deletion wins whenever it arrives');

-- Invoices: payment_history, invoice_logs and the tier's monthly credits once per invoice.
select pg_temp.balance(:'u') as before_balance \gset
select is(paycore.apply_stripe_event(pg_temp.ev('inv_paid')), 'applied', 'invoice.paid');
select results_eq(
    format($$select user_id, stripe_subscription_id, amount, currency, status, paid_at, failed_at
             from public.payment_history where stripe_invoice_id = %L$$, :'in_paid'),
    format($$values (%L::uuid, %L, 2000::bigint, 'usd', 'succeeded', to_timestamp(1785000002), null::timestamptz)$$,
        :'u', :'sub'),
    '... payment_history: succeeded, amount and paid_at');
select results_eq(
    format($$select stripe_event_id, event_type, user_id, stripe_subscription_id, amount_paid, amount_due, currency,
                    status, billing_reason, credits_granted
             from public.invoice_logs where stripe_invoice_id = %L$$, :'in_paid'),
    format($$values ('evt_zKCEmeHZw5VX1QQcnuVMyY9F', 'invoice.paid', %L::uuid, %L, 2000::bigint, 2000::bigint, 'usd',
                     'paid', 'subscription_create', 100::bigint)$$, :'u', :'sub'),
    '... an invoice_logs row with the credits it granted');
select results_eq(
    format($$select amount, type from public.credit_transactions where user_id = %L and idempotency_key = %L$$,
        :'u', 'paycore:invoice:' || :'in_paid' || ':grant'),
    $$values (100::bigint, 'subscription')$$,
    '... cv premium''s monthly_credits (100) in one ledger row, key paycore:invoice:<invoice>:grant');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint + 100, '... the balance grows by 100');
select is(
    paycore.apply_stripe_event(pg_temp.ev('inv_succeeded')), 'applied',
    'invoice.payment_succeeded of the same invoice');
select results_eq(
    format($$select (select count(*) from public.credit_transactions where idempotency_key = %L),
                    (select count(*) from public.payment_history where stripe_invoice_id = %L),
                    (select credits_granted from public.invoice_logs where stripe_event_id = %L)$$,
        'paycore:invoice:' || :'in_paid' || ':grant', :'in_paid', 'evt_KggqDmgOW9ipa9AEVetEIqbA'),
    $$values (1::bigint, 1::bigint, 0::bigint)$$,
    '... grants nothing more: one ledger row, one payment_history row, its log row granted 0');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint + 100, '... the balance is unchanged');
select is(paycore.apply_stripe_event(pg_temp.ev('inv_failed')), 'applied', 'invoice.payment_failed');
select results_eq(
    format($$select status, amount, paid_at, failed_at from public.payment_history where stripe_invoice_id = %L$$,
        :'in_failed'),
    $$values ('failed', 2000::bigint, null::timestamptz, to_timestamp(1787682000))$$,
    '... payment_history: failed, with failed_at');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint + 100, '... grants nothing');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.ev('inv_failed', 'evt_inv_paid_then_failed'), 'id', to_jsonb(:'in_paid'::text))
    ),
    'applied', 'a payment failure of the invoice already paid');
select results_eq(
    format($$select status, paid_at, failed_at from public.payment_history where stripe_invoice_id = %L$$,
        :'in_paid'),
    $$values ('succeeded', to_timestamp(1785000002), null::timestamptz)$$,
    '... does not overwrite the payment');

-- Refunds take back the refunded share of a purchase's credits, never below zero.
select pg_temp.balance(:'u') as before_balance \gset
select is(
    paycore.apply_stripe_event(pg_temp.ev('ch_refunded_partial')), 'applied',
    'charge.refunded: 400 of the 1000 paid for 100 credits');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint - 40, '... claws back 40 credits');
select results_eq(
    format($$select amount_refunded, credits_clawed_back, credits_unrecovered, status from public.user_credit_purchases
             where stripe_payment_intent_id = %L$$, :'pi'),
    $$values (400::bigint, 40::bigint, 0::bigint, 'partially_refunded')$$,
    '... the purchase is partially refunded');
select results_eq(
    format($$select amount, type from public.credit_transactions where user_id = %L and idempotency_key = %L$$,
        :'u', 'paycore:charge:' || :'ch' || ':clawback:400'),
    $$values (-40::bigint, 'refund')$$,
    '... in one ledger row of type refund');
select is(
    paycore.apply_stripe_event(pg_temp.ev('ch_refunded')), 'applied', 'charge.refunded: all 1000 refunded');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint - 100, '... claws back the 60 credits more');
select is(
    paycore.apply_stripe_event(pg_temp.ev('ch_refunded_legacy')), 'applied',
    'the same full refund in the 2022-08-01 API shape');
select is(pg_temp.balance(:'u'), :'before_balance'::bigint - 100, '... claws back nothing more');
select results_eq(
    format($$select amount_refunded, credits_clawed_back, credits_unrecovered, status from public.user_credit_purchases
             where stripe_payment_intent_id = %L$$, :'pi'),
    $$values (1000::bigint, 100::bigint, 0::bigint, 'refunded')$$,
    '... the purchase is refunded: 100 credits clawed back');
select results_eq(
    format($$select stripe_event_id, user_id, object_id, amount, stripe_charge_id, stripe_payment_intent_id, meta
             from public.payment_logs where event_type = 'charge.refunded' and object_id = %L
             order by amount, meta ->> 'credits_clawed_back'$$, :'ch'),
    format($$values
        ('evt_nckl3HoOhCEk59kncjbIPisI', %1$L::uuid, %2$L, 400::bigint, %2$L, %3$L,
         '{"credits_clawed_back": 40, "credits_unrecovered": 0}'::jsonb),
        ('evt_ZVPHAUnKiD09ROmnPj6NqHeL', %1$L::uuid, %2$L, 1000::bigint, %2$L, %3$L,
         '{"credits_clawed_back": 0, "credits_unrecovered": 0}'::jsonb),
        ('evt_gvc4LnE3Vc14H7h5hiR6rLUq', %1$L::uuid, %2$L, 1000::bigint, %2$L, %3$L,
         '{"credits_clawed_back": 60, "credits_unrecovered": 0}'::jsonb)$$, :'u', :'ch', :'pi'),
    '... a payment_logs row for each refund event');

select is(
    paycore.apply_stripe_event(pg_temp.session('cs_completed', 'evt_w_completed', 'cs_test_w1', :'w', null, 'pi_w1')),
    'applied', 'another user buys 100 credits');
select tests.authenticate_as_service_role();
select lives_ok(
    format($$select public.adjust_credits(%L, -80, 'generation', 'spent')$$, :'w'),
    '... and spends 80 of them');
select tests.reset_role();
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(pg_temp.ev('ch_refunded_partial', 'evt_w_refund_part'), 'id', '"ch_w1"'),
            'payment_intent', '"pi_w1"'
        )
    ),
    'applied', 'a refund of 400 of 1000 is due 40 credits');
select results_eq(
    format($$select (select balance from public.credits where user_id = %L), credits_clawed_back,
                    credits_unrecovered, status
             from public.user_credit_purchases where stripe_session_id = 'cs_test_w1'$$, :'w'),
    $$values (0::bigint, 20::bigint, 20::bigint, 'partially_refunded')$$,
    '... takes the 20 left: the balance is 0, 20 are unrecovered');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(pg_temp.ev('ch_refunded', 'evt_w_refund_full'), 'id', '"ch_w1"'), 'payment_intent', '"pi_w1"'
        )
    ),
    'applied', 'the full refund is due 60 credits more');
select results_eq(
    format($$select (select balance from public.credits where user_id = %L), credits_clawed_back,
                    credits_unrecovered, status
             from public.user_credit_purchases where stripe_session_id = 'cs_test_w1'$$, :'w'),
    $$values (0::bigint, 20::bigint, 80::bigint, 'refunded')$$,
    '... takes nothing from a zero balance: 80 unrecovered in all');
select results_eq(
    format($$select amount from public.credit_transactions where user_id = %L and type = 'refund'$$, :'w'),
    $$values (-20::bigint)$$,
    '... one clawback ledger row of -20');
select results_eq(
    $$select stripe_event_id, meta from public.payment_logs where object_id = 'ch_w1' order by stripe_event_id$$,
    $$values ('evt_w_refund_full', '{"credits_clawed_back": 0, "credits_unrecovered": 60}'::jsonb),
             ('evt_w_refund_part', '{"credits_clawed_back": 20, "credits_unrecovered": 20}'::jsonb)$$,
    '... the payment_logs rows record what was clawed back and what not');

-- Payment intents, refunds and disputes are logged, with the user of their Checkout Session.
select results_eq(
    $$select f.name, paycore.apply_stripe_event(pg_temp.ev(f.name))
      from unnest(array['pi_succeeded', 'pi_failed', 're_created', 're_updated', 'dp_created', 'dp_closed'])
          with ordinality as f (name, n)
      order by f.n$$,
    $$values ('pi_succeeded', 'applied'), ('pi_failed', 'applied'), ('re_created', 'applied'),
             ('re_updated', 'applied'), ('dp_created', 'applied'), ('dp_closed', 'applied')$$,
    'payment_intent.succeeded / payment_failed, refund.created / updated, charge.dispute.created / closed'
);
select results_eq(
    $$select stripe_event_id, event_type, object_id, user_id, amount, currency, status, stripe_payment_intent_id,
             stripe_charge_id, meta
      from public.payment_logs
      where event_type like 'payment_intent.%' or event_type like 'refund.%' or event_type like 'charge.dispute.%'
      order by event_type collate "C"$$,
    format($$values
        ('evt_7qxiDWtgt2GHAXbmaAzkNyXl', 'charge.dispute.closed', 'dp_1Pgc71B7WZ01zgkWMevJiAUx', %1$L::uuid,
         1000::bigint, 'usd', 'lost', %2$L, %3$L, '{"reason": "fraudulent"}'::jsonb),
        ('evt_dPBqyHt70BS9Z22aAWHsP66P', 'charge.dispute.created', 'dp_1Pgc71B7WZ01zgkWMevJiAUx', %1$L::uuid,
         1000::bigint, 'usd', 'warning_needs_response', %2$L, %3$L, '{"reason": "general"}'::jsonb),
        ('evt_0kgN0ZPhlQVhistF2O3XXyEr', 'payment_intent.payment_failed', %2$L, %1$L::uuid,
         1000::bigint, 'usd', 'requires_payment_method', %2$L, null, '{"failure_code": "card_declined"}'::jsonb),
        ('evt_mZZCDkg7vHohBtN1j368Q471', 'payment_intent.succeeded', %2$L, %1$L::uuid,
         1000::bigint, 'usd', 'succeeded', %2$L, %3$L, '{}'::jsonb),
        ('evt_pTkEqipUHKkxkQKLpKuHYjMX', 'refund.created', 're_1Pgc72B7WZ01zgkWqPvrRrPE', %1$L::uuid,
         1000::bigint, 'usd', 'succeeded', %2$L, %3$L, '{}'::jsonb),
        ('evt_hxK0u1J0JITRGio8HDwQDIsl', 'refund.updated', 're_1Pgc72B7WZ01zgkWqPvrRrPE', %1$L::uuid,
         1000::bigint, 'usd', 'succeeded', %2$L, %3$L, '{}'::jsonb)$$, :'u', :'pi', :'ch'),
    '... one payment_logs row each: amount, status, ids, the user of the session of the payment intent'
);
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.ev('pi_succeeded', 'evt_pi_unknown'), 'id', '"pi_unknown1"')
    ),
    'applied', 'a payment intent of no known Checkout Session');
select results_eq(
    $$select object_id, user_id from public.payment_logs where stripe_event_id = 'evt_pi_unknown'$$,
    $$values ('pi_unknown1', null::uuid)$$,
    '... is logged without a user');

-- Who sees what.
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(
                pg_temp.obj(pg_temp.ev('inv_paid', 'evt_w_invoice'), 'id', '"in_w1"'),
                'parent,subscription_details,metadata,user_id', to_jsonb(:'w'::text)
            ),
            'parent,subscription_details,subscription', '"sub_w1"'
        )
    ),
    'applied', 'an invoice of the other user (of a subscription paycore has no row of: its metadata names the user)');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(pg_temp.ev('inv_paid', 'evt_w_invoice_foreign'), 'id', '"in_w2"'),
            'parent,subscription_details,metadata,user_id', to_jsonb(:'w'::text)
        )
    ),
    'failed', 'an invoice of a known subscription whose metadata names another user than its owner fails');
select
    (select count(*) from public.checkout_sessions where user_id = :'u') as u_sessions,
    (select count(*) from public.user_credit_purchases where user_id = :'u') as u_purchases,
    (select count(*) from public.payment_logs where user_id = :'u') as u_payments,
    (select count(*) from public.invoice_logs where user_id = :'u') as u_invoices \gset
select tests.authenticate_as(:'u');
select results_eq(
    format($$select (select count(*) from public.checkout_sessions), (select count(*) from public.checkout_sessions
             where user_id = %L)$$, :'u'),
    format($$values (%s::bigint, %s::bigint)$$, :'u_sessions', :'u_sessions'),
    'a user reads its checkout sessions, and no other user''s');
select results_eq(
    format($$select (select count(*) from public.user_credit_purchases),
                    (select count(*) from public.user_credit_purchases where user_id = %L)$$, :'u'),
    format($$values (%s::bigint, %s::bigint)$$, :'u_purchases', :'u_purchases'),
    'a user reads its credit purchases, and no other user''s');
select results_eq(
    format($$select (select count(*) from public.payment_logs),
                    (select count(*) from public.payment_logs where user_id = %L)$$, :'u'),
    format($$values (%s::bigint, %s::bigint)$$, :'u_payments', :'u_payments'),
    'a user reads its payment logs, and no other user''s');
select results_eq(
    format($$select (select count(*) from public.invoice_logs),
                    (select count(*) from public.invoice_logs where user_id = %L)$$, :'u'),
    format($$values (%s::bigint, %s::bigint)$$, :'u_invoices', :'u_invoices'),
    'a user reads its invoice logs, and no other user''s');
select tests.authenticate_as(:'w');
select results_eq(
    $$select (select count(*) from public.checkout_sessions), (select count(*) from public.user_credit_purchases),
             (select count(*) from public.payment_logs), (select count(*) from public.invoice_logs)$$,
    $$values (1::bigint, 1::bigint, 2::bigint, 1::bigint)$$,
    'the other user reads only its own: one session, one purchase, two refund logs, one invoice log');
select tests.throws_hint(
    format($$insert into public.checkout_sessions (user_id, mode, expires_at) values (%L, 'subscription', now())$$,
        :'w'),
    '42501', null, 'a user may not write checkout sessions');
select tests.throws_hint(
    $$select 1 from paycore.stripe_events$$, '42501', null, 'authenticated cannot reach paycore.stripe_events');
select tests.authenticate_as_service_role();
select tests.throws_hint(
    $$select 1 from paycore.stripe_events$$, '42501', null, 'service_role cannot reach paycore.stripe_events');
select tests.clear_authentication();
select tests.throws_hint(
    $$select 1 from paycore.stripe_events$$, '42501', null, 'anon cannot reach paycore.stripe_events');
select tests.throws_hint(
    $$select 1 from public.checkout_sessions$$, '42501', null, 'anon reads no checkout session');
select tests.throws_hint(
    $$select 1 from public.user_credit_purchases$$, '42501', null, 'anon reads no credit purchase');
select tests.throws_hint(
    $$select 1 from public.payment_logs$$, '42501', null, 'anon reads no payment log');
select tests.throws_hint(
    $$select 1 from public.invoice_logs$$, '42501', null, 'anon reads no invoice log');
select tests.reset_role();

-- The checkout service's functions: a Checkout Session attached to a begun checkout, a
-- checkout released when Stripe could not create its session, a subscription checkout.
select tests.create_user('stripe-k@example.test') as k \gset
select tests.authenticate_as_service_role();
select x.id as kc from public.begin_credit_checkout(:'k', 'pkg_100_credits') as x \gset
select is(
    (public.attach_checkout_session(:'kc', 'cs_test_attach_1', now() + interval '2 hours')).stripe_session_id,
    'cs_test_attach_1', 'attach_checkout_session records the Checkout Session of a begun checkout');
select is(
    (public.attach_checkout_session(:'kc', 'cs_test_attach_1', now() + interval '2 hours')).stripe_session_id,
    'cs_test_attach_1', '... the same one again is a retry');
select tests.throws_hint(format($$select public.attach_checkout_session(%L, 'cs_test_attach_2', null)$$, :'kc'),
    'PT409', 'invalid_state', '... another one is PT409');
select tests.throws_hint(format($$select public.release_credit_checkout(%L)$$, :'kc'),
    'PT409', 'invalid_state', 'a checkout with a Checkout Session is not released by hand (its events end it)');
select x.id as kr from public.begin_credit_checkout(:'k', 'pkg_100_credits') as x \gset
select results_eq(format('select status, reservation from public.release_credit_checkout(%L)', :'kr'),
    $$values ('expired', 'released')$$,
    'release_credit_checkout ends a checkout whose Checkout Session could not be created');
select tests.reset_role();
select is(
    paycore.apply_stripe_event(pg_temp.session('cs_completed', 'evt_attach_other', 'cs_test_attach_3', :'k', :'kc')),
    'failed', 'a second Checkout Session naming a begun checkout fails, granting nothing');
select tests.authenticate_as_service_role();
select tests.throws_hint(format($$select public.begin_subscription_checkout(%L, 'price_unknown')$$, :'k'),
    'PT404', 'not_found', 'begin_subscription_checkout of an unknown price is PT404');
select results_eq(
    format(
        $$select mode, app_id, reservation
          from public.begin_subscription_checkout(%L, 'price_1PgafmB7WZ01zgkW6dKueIc5')$$, :'k'
    ),
    $$values ('subscription', 'cv', null::text)$$,
    '... of a known one a subscription checkout of its app, without reservation');
select tests.reset_role();
-- What a review found: sessions that did not pay the package's price, $0 invoices, a
-- cancellation whose price nobody mapped.
select tests.create_user('stripe-m@example.test') as m \gset
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(
                pg_temp.obj(pg_temp.session('cs_completed', 'evt_cheap', 'cs_test_cheap', :'m', null, 'pi_cheap'),
                    'metadata,package_id', '"pkg_2000_credits"'),
                'amount_subtotal', '1'),
            'amount_total', '1')
    ),
    'failed', 'a paid session that charged less than its package''s price fails, granting nothing');
select is(pg_temp.balance(:'m'), 0::bigint, '... no credit');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.session('cs_completed', 'evt_other_currency', 'cs_test_eur', :'m', null, 'pi_eur'),
            'currency', '"eur"')
    ),
    'failed', '... as does one in another currency than the package''s');
select x.id as mk from public.begin_credit_checkout(:'m', 'pkg_100_credits') as x \gset
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.session('cs_completed', 'evt_mode_swap', 'cs_test_mode_swap', :'m', :'mk', 'pi_swap'),
            'mode', '"subscription"')
    ),
    'failed', 'a subscription session naming a credit checkout fails');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(
            pg_temp.obj(
                pg_temp.obj(
                    pg_temp.obj(pg_temp.ev('inv_paid', 'evt_zero_invoice'), 'id', '"in_zero1"'),
                    'parent,subscription_details,metadata,user_id', to_jsonb(:'m'::text)),
                'parent,subscription_details,subscription', '"sub_zero1"'),
            'amount_paid', '0')
    ),
    'applied', 'a $0 subscription invoice (a trial) is applied');
select is(pg_temp.balance(:'m'), 0::bigint, '... and grants no monthly credits');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.obj(pg_temp.ev('sub_created', 'evt_m_sub_created'), 'id', '"sub_m1"'),
            'metadata,user_id', to_jsonb(:'m'::text))
    ),
    'applied', 'a subscription of m');
delete from public.prices where stripe_price_id = 'price_1PgafmB7WZ01zgkW6dKueIc5';
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.obj(pg_temp.ev('sub_deleted', 'evt_m_sub_deleted'), 'id', '"sub_m1"'),
            'metadata,user_id', to_jsonb(:'m'::text))
    ),
    'applied', 'its deletion after its price was unmapped is applied');
select is((select status from public.user_subscriptions where stripe_subscription_id = 'sub_m1'), 'canceled',
    '... and cancels it (keeping its app and tier)');
insert into public.prices (stripe_price_id, app_id, tier_id) values ('price_1PgafmB7WZ01zgkW6dKueIc5', 'cv', 'premium');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.obj(pg_temp.obj(pg_temp.ev('sub_created', 'evt_m2_expired'), 'id', '"sub_m2"'),
            'metadata,user_id', to_jsonb(:'m'::text)), 'status', '"incomplete_expired"')
    ),
    'applied', 'an incomplete_expired subscription');
select is(
    paycore.apply_stripe_event(
        pg_temp.obj(pg_temp.obj(pg_temp.obj(pg_temp.ev('sub_past_due', 'evt_m2_active'), 'id', '"sub_m2"'),
            'metadata,user_id', to_jsonb(:'m'::text)), 'status', '"active"')
    ),
    'applied', '... then a later active update');
select is((select status from public.user_subscriptions where stripe_subscription_id = 'sub_m2'),
    'incomplete_expired', '... leaves it incomplete_expired: final, like canceled');
update auth.users set deleted_at = now() where id = :'k';
select tests.authenticate_as_service_role();
select tests.throws_hint(format($$select public.begin_credit_checkout(%L, 'pkg_100_credits')$$, :'k'),
    'PT404', 'not_found', 'a user Supabase Auth soft-deleted begins no checkout');
select tests.reset_role();

select * from finish();
rollback;
