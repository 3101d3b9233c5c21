-- Guards over the whole schema: every object, present and future. A new table, function
-- or grant that breaks the security model fails here without a test of its own.
begin;
select plan(18);

-- 0. pg_temp shadowing, tried for real (first in this file: plpgsql resolves a function's
--    types when a session first calls it). Temp domains named like the types paycore's
--    functions use, whose check raises, are in place while every SECURITY DEFINER function of
--    the API is called. A function that resolved a type from pg_temp would run the session's
--    code as its owner; the control, pinned to search_path = '' as before the fix, does.
--    (Run as the owner here; an attacker would be any login role with EXECUTE.)
create function pg_temp.shadow_ran(p anyelement) returns boolean language plpgsql as $f$
begin
    raise exception 'pg_temp code ran as %', current_user;
end;
$f$;
create function pg_temp.shadowing_hits() returns text[]
language plpgsql set search_path = pg_catalog, pg_temp as $f$
declare
    v_hits text[] := '{}';
    v_type text;
    v_user uuid;
    v_gen uuid;
    v_gen2 uuid;
    v_issuer uuid;
    v_holder uuid;
    v_voucher text;
    v_booking text;
    v_settlement uuid;
    v_contract uuid;
    v_property text;
    v_application text;
    v_offer text;
    v_transfer text;
    v_checkout uuid;
begin
    foreach v_type in array array['uuid', 'text', 'jsonb', 'timestamptz', 'int8', 'int4', 'bool'] loop
        execute format('create domain pg_temp.%I as pg_catalog.%I check (pg_temp.shadow_ran(value))',
            v_type, v_type);
    end loop;
    -- The control: created now (plpgsql resolves types when it first compiles a function).
    execute $c$
        create function pg_temp.control_old_style() returns void language plpgsql security definer
        set search_path = '' as $b$
        declare
            v uuid := '00000000-0000-4000-8000-000000000001';
        begin
            perform v;
        end;
        $b$
    $c$;
    begin perform pg_temp.control_old_style(); exception when others then v_hits := v_hits || 'control'::pg_catalog.text; end;
    begin v_user := tests.create_user(null); exception when others then v_hits := v_hits || 'tests.create_user'::pg_catalog.text; end;
    begin v_issuer := tests.create_user(null); exception when others then v_hits := v_hits || 'tests.create_user'::pg_catalog.text; end;
    begin v_holder := tests.create_user(null); exception when others then v_hits := v_hits || 'tests.create_user'::pg_catalog.text; end;
    begin perform public.adjust_credits(v_user, 100, 'gift'); exception when others then v_hits := v_hits || 'adjust_credits'::pg_catalog.text; end;
    begin perform public.get_user_balance(v_user); exception when others then v_hits := v_hits || 'get_user_balance'::pg_catalog.text; end;
    begin select g.id into v_gen from public.start_generation(v_user, 'image', 'm', 'p', 10) as g;
    exception when others then v_hits := v_hits || 'start_generation'::pg_catalog.text; end;
    begin select g.id into v_gen2 from public.start_generation(v_user, 'image', 'm', 'p', 10) as g;
    exception when others then v_hits := v_hits || 'start_generation'::pg_catalog.text; end;
    begin perform public.complete_generation(v_gen, '["x"]'); exception when others then v_hits := v_hits || 'complete_generation'::pg_catalog.text; end;
    begin perform public.fail_generation(v_gen2, 'x'); exception when others then v_hits := v_hits || 'fail_generation'::pg_catalog.text; end;
    begin perform public.get_user_app_tier(v_user, 'cv'); exception when others then v_hits := v_hits || 'get_user_app_tier'::pg_catalog.text; end;
    begin perform public.check_usage_limit(v_user, 'cv_generations', 1, 'shadow'); exception when others then v_hits := v_hits || 'check_usage_limit'::pg_catalog.text; end;
    begin perform public.release_usage(v_user, 'cv_generations', 1, 'shadow-release'); exception when others then v_hits := v_hits || 'release_usage'::pg_catalog.text; end;
    begin perform public.get_usage('cv', v_user); exception when others then v_hits := v_hits || 'get_usage'::pg_catalog.text; end;
    begin perform public.set_profile_service_metadata(v_user, '{"plan": "x"}'); exception when others then v_hits := v_hits || 'set_profile_service_metadata'::pg_catalog.text; end;
    begin select r.id into v_gen from public.create_reading('natal', 'text', '{}', v_user) as r;
    exception when others then v_hits := v_hits || 'create_reading'::pg_catalog.text; end;
    begin perform public.add_reading_version(v_gen, 'text 2'); exception when others then v_hits := v_hits || 'add_reading_version'::pg_catalog.text; end;
    begin perform public.get_reading(v_gen); exception when others then v_hits := v_hits || 'get_reading'::pg_catalog.text; end;
    begin perform public.save_matching(tests.create_user(null), 'synastry', '{"a": 1}', '{}', v_user);
    exception when others then v_hits := v_hits || 'save_matching'::pg_catalog.text; end;
    begin perform public.record_nudge(v_user, 'cv', 'cv.shadow', 'email', '{}');
    exception when others then v_hits := v_hits || 'record_nudge'::pg_catalog.text; end;
    begin perform public.get_ecosystem_stats(7); exception when others then v_hits := v_hits || 'get_ecosystem_stats'::pg_catalog.text; end;
    begin select c.id into v_checkout from public.begin_credit_checkout(v_user, 'pkg_100_credits') as c;
    exception when others then v_hits := v_hits || 'begin_credit_checkout'::pg_catalog.text; end;
    begin perform public.get_platform_credit_status(); exception when others then v_hits := v_hits || 'get_platform_credit_status'::pg_catalog.text; end;
    begin perform public.attach_checkout_session(v_checkout, 'cs_test_guard_shadow', pg_catalog.now() + '1 hour'::pg_catalog.interval);
    exception when others then v_hits := v_hits || 'attach_checkout_session'::pg_catalog.text; end;
    begin perform public.release_credit_checkout((public.begin_credit_checkout(v_user, 'pkg_100_credits')).id);
    exception when others then v_hits := v_hits || 'release_credit_checkout'::pg_catalog.text; end;
    begin
        insert into public.prices (stripe_price_id, app_id, tier_id) values ('price_guard_shadow', 'cv', 'premium');
        perform public.begin_subscription_checkout(v_user, 'price_guard_shadow');
    exception when others then v_hits := v_hits || 'begin_subscription_checkout'::pg_catalog.text; end;
    begin
        if paycore.apply_stripe_event(pg_catalog.jsonb_build_object(
            'id', 'evt_guard_shadow', 'type', 'checkout.session.completed', 'created', 1785000000,
            'livemode', false, 'api_version', '2026-07-29.dahlia',
            'data', pg_catalog.jsonb_build_object('object', pg_catalog.jsonb_build_object(
                'id', 'cs_test_guard_shadow', 'object', 'checkout.session', 'mode', 'payment',
                'status', 'complete', 'payment_status', 'paid', 'amount_total', 1000, 'currency', 'usd',
                'payment_intent', 'pi_guard_shadow', 'client_reference_id', v_user::pg_catalog.text,
                'metadata', pg_catalog.jsonb_build_object('checkout_id', v_checkout::pg_catalog.text))))
        ) <> 'applied' then
            v_hits := v_hits || 'apply_stripe_event result'::pg_catalog.text;
        end if;
    exception when others then v_hits := v_hits || 'apply_stripe_event'::pg_catalog.text; end;
    begin
        if paycore.apply_stripe_event(pg_catalog.jsonb_build_object(
            'id', 'evt_guard_shadow_fail', 'type', 'checkout.session.completed', 'created', 1785000001,
            'data', pg_catalog.jsonb_build_object('object', pg_catalog.jsonb_build_object(
                'id', 'cs_test_guard_fail', 'mode', 'payment', 'status', 'complete', 'payment_status', 'paid',
                'metadata', pg_catalog.jsonb_build_object('user_id', v_user::pg_catalog.text, 'package_id', 'nope'))))
        ) <> 'failed' then
            v_hits := v_hits || 'apply_stripe_event failure'::pg_catalog.text;
        end if;
    exception when others then v_hits := v_hits || 'apply_stripe_event failure'::pg_catalog.text; end;
    begin
        insert into public.credit_packages (id, name, credits, price_amount) values ('nope', 'Nope', 5, 100);
        perform public.retry_stripe_event('evt_guard_shadow_fail');
    exception when others then v_hits := v_hits || 'retry_stripe_event'::pg_catalog.text; end;
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_user, 'role', 'authenticated')::pg_catalog.text, true);
    perform set_config('role', 'authenticated', true);
    begin perform public.track_event('guards', 'shadow.tried'); exception when others then v_hits := v_hits || 'track_event'::pg_catalog.text; end;
    begin perform public.get_user_balance(); exception when others then v_hits := v_hits || 'get_user_balance as authenticated'::pg_catalog.text; end;
    begin perform public.update_profile('Shadow', 'https://example.test/a.png', '{"a": 1}'); exception when others then v_hits := v_hits || 'update_profile'::pg_catalog.text; end;
    begin perform public.check_usage_limit(null, 'cv_exports', 2); exception when others then v_hits := v_hits || 'check_usage_limit as authenticated'::pg_catalog.text; end;
    -- The marketplace, ten days ago (so that a period that is over holds its fee events).
    perform set_config('paycore.now', (pg_catalog.now() - '10 days'::pg_catalog.interval)::pg_catalog.text, true);
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_issuer, 'role', 'authenticated')::pg_catalog.text, true);
    begin select v.id into v_voucher from public.issue_voucher('consulting.session', 'Shadow', 60,
        pg_catalog.now() + '1 day'::pg_catalog.interval, pg_catalog.now() + '2 days'::pg_catalog.interval,
        1000, 'eur', 'consulting', 'd', true, '{"a": 1}') as v;
    exception when others then v_hits := v_hits || 'issue_voucher'::pg_catalog.text; end;
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_holder, 'role', 'authenticated')::pg_catalog.text, true);
    begin select b.id into v_booking from public.book_voucher(v_voucher,
        pg_catalog.date_trunc('hour', pg_catalog.now()) + '25 hours'::pg_catalog.interval) as b;
    exception when others then v_hits := v_hits || 'book_voucher'::pg_catalog.text; end;
    begin perform public.cancel_booking(v_booking, 'shadow'); exception when others then v_hits := v_hits || 'cancel_booking'::pg_catalog.text; end;
    begin perform public.book_voucher(v_voucher, pg_catalog.date_trunc('hour', pg_catalog.now()) + '26 hours'::pg_catalog.interval);
    exception when others then v_hits := v_hits || 'book_voucher again'::pg_catalog.text; end;
    begin perform public.transfer_voucher(v_voucher, v_user); exception when others then v_hits := v_hits || 'transfer_voucher'::pg_catalog.text; end;
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_issuer, 'role', 'authenticated')::pg_catalog.text, true);
    begin perform public.consume_voucher(v_voucher); exception when others then v_hits := v_hits || 'consume_voucher'::pg_catalog.text; end;
    begin perform public.presence_heartbeat('shadow', null); exception when others then v_hits := v_hits || 'presence_heartbeat'::pg_catalog.text; end;
    begin select c.id into v_contract from public.register_contract('Shadow', 'application/pdf', 10, 's3://shadow',
        pg_catalog.repeat('a', 64)) as c;
    exception when others then v_hits := v_hits || 'register_contract'::pg_catalog.text; end;
    begin perform public.link_contract(v_contract, 'primary', v_voucher, null);
    exception when others then v_hits := v_hits || 'link_contract'::pg_catalog.text; end;
    begin select p.id into v_property from public.register_property('Shadow street 1', '{"a": 1}') as p;
    exception when others then v_hits := v_hits || 'register_property'::pg_catalog.text; end;
    begin select a.id into v_application from public.apply_for_mortgage(v_property, 100000, 'eur', 20, 'fixed', 0.05) as a;
    exception when others then v_hits := v_hits || 'apply_for_mortgage'::pg_catalog.text; end;
    begin select t.id into v_transfer from public.log_transfer('in', '0xshadow', 'Polygon', 1.5, 'ETH', 1000, 'eur', 'ref',
        '{"a": 1}', 'shadow-key') as t;
    exception when others then v_hits := v_hits || 'log_transfer'::pg_catalog.text; end;
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_holder, 'role', 'authenticated')::pg_catalog.text, true);
    begin perform public.presence_heartbeat('shadow', null); exception when others then v_hits := v_hits || 'presence_heartbeat'::pg_catalog.text; end;
    begin perform public.presence_match('shadow'); exception when others then v_hits := v_hits || 'presence_match'::pg_catalog.text; end;
    begin perform public.presence_leave('shadow'); exception when others then v_hits := v_hits || 'presence_leave'::pg_catalog.text; end;
    begin perform public.list_open_mortgage_applications(); exception when others then v_hits := v_hits || 'list_open_mortgage_applications'::pg_catalog.text; end;
    begin select o.id into v_offer from public.make_mortgage_offer(v_application, 0.04, 900) as o;
    exception when others then v_hits := v_hits || 'make_mortgage_offer'::pg_catalog.text; end;
    perform set_config('request.jwt.claims',
        json_build_object('sub', v_issuer, 'role', 'authenticated')::pg_catalog.text, true);
    begin perform public.accept_mortgage_offer(v_offer); exception when others then v_hits := v_hits || 'accept_mortgage_offer'::pg_catalog.text; end;
    perform set_config('role', 'none', true);
    perform set_config('request.jwt.claims', '', true);
    perform set_config('paycore.now', '', true);
    begin select s.id into v_settlement from paycore.settle_fees(
        (pg_catalog.now() at time zone 'UTC')::pg_catalog.date - 3000, (pg_catalog.now() at time zone 'UTC')::pg_catalog.date - 1) as s
        where s.beneficiary_id is null and s.currency = 'eur';
    exception when others then v_hits := v_hits || 'settle_fees'::pg_catalog.text; end;
    perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
    perform set_config('role', 'service_role', true);
    begin perform public.mark_settlement(v_settlement, 'invoiced'); exception when others then v_hits := v_hits || 'mark_settlement'::pg_catalog.text; end;
    begin perform public.settle_transfer(v_transfer); exception when others then v_hits := v_hits || 'settle_transfer'::pg_catalog.text; end;
    perform set_config('role', 'none', true);
    perform set_config('request.jwt.claims', '', true);
    foreach v_type in array array['uuid', 'text', 'jsonb', 'timestamptz', 'int8', 'int4', 'bool'] loop
        execute format('drop domain pg_temp.%I cascade', v_type);
    end loop;
    drop function pg_temp.control_old_style();
    return v_hits;
end;
$f$;
select tests.open_temp_tables();
select is(pg_temp.shadowing_hits(), array['control'],
    'no SECURITY DEFINER function resolves a type from pg_temp (the old search_path = '''' one does)');

-- 1. RLS is enabled on every table of public (yoyo's bookkeeping tables included).
select is_empty(
    $$select c.oid::regclass::text from pg_class as c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity$$,
    'RLS is enabled on every public table'
);

-- 2. Every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp: with '' (or
--    without pg_temp last) PostgreSQL looks up types and tables in pg_temp first, so a
--    session's temp domain would run its code as the owner.
select is_empty(
    $$select p.oid::regprocedure::text from pg_proc as p
      where p.prosecdef
        and p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
        and not coalesce('search_path=pg_catalog, pg_temp' = any(p.proconfig), false)$$,
    'every SECURITY DEFINER function has search_path = pg_catalog, pg_temp'
);

-- 3. The EXECUTE matrix of every public and paycore function, per role: the one place
--    where who may call what is declared. A function missing here is callable by nobody.
select set_eq(
    $$select p.oid::regprocedure::text, r.role
      from pg_proc as p
      cross join (values ('public'), ('anon'), ('authenticated'), ('service_role'), ('paycore_webhook')) as r (role)
      where p.pronamespace in ('public'::regnamespace, 'paycore'::regnamespace)
        and case r.role
            when 'public' then exists (
                select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as a
                where a.grantee = 0 and a.privilege_type = 'EXECUTE')
            else has_function_privilege(r.role, p.oid, 'EXECUTE')
        end$$,
    $$values
        ('adjust_credits(uuid,bigint,text,text,jsonb,text)', 'service_role'),
        ('complete_generation(uuid,jsonb,text,text)', 'service_role'),
        ('fail_generation(uuid,text)', 'service_role'),
        ('get_user_balance(uuid)', 'authenticated'),
        ('get_user_balance(uuid)', 'service_role'),
        ('start_generation(uuid,text,text,text,bigint,jsonb,text)', 'service_role'),
        ('track_event(text,text,jsonb,text)', 'authenticated'),
        ('update_profile(text,text,jsonb)', 'authenticated'),
        ('set_profile_service_metadata(uuid,jsonb)', 'service_role'),
        ('get_user_app_tier(uuid,text)', 'authenticated'),
        ('get_user_app_tier(uuid,text)', 'service_role'),
        ('check_usage_limit(uuid,text,integer,text)', 'authenticated'),
        ('check_usage_limit(uuid,text,integer,text)', 'service_role'),
        ('release_usage(uuid,text,integer,text)', 'service_role'),
        ('get_usage(text,uuid)', 'authenticated'),
        ('get_usage(text,uuid)', 'service_role'),
        ('create_reading(text,text,jsonb,uuid)', 'authenticated'),
        ('create_reading(text,text,jsonb,uuid)', 'service_role'),
        ('add_reading_version(uuid,text)', 'authenticated'),
        ('add_reading_version(uuid,text)', 'service_role'),
        ('get_reading(uuid)', 'authenticated'),
        ('get_reading(uuid)', 'service_role'),
        ('save_matching(uuid,text,jsonb,jsonb,uuid)', 'authenticated'),
        ('save_matching(uuid,text,jsonb,jsonb,uuid)', 'service_role'),
        ('record_nudge(uuid,text,text,text,jsonb)', 'service_role'),
        ('get_ecosystem_stats(integer)', 'service_role'),
        ('issue_voucher(text,text,integer,timestamp with time zone,timestamp with time zone,bigint,text,text,text,boolean,jsonb)', 'authenticated'),
        ('book_voucher(text,timestamp with time zone)', 'authenticated'),
        ('cancel_booking(text,text)', 'authenticated'),
        ('consume_voucher(text)', 'authenticated'),
        ('transfer_voucher(text,uuid)', 'authenticated'),
        ('mark_settlement(uuid,text)', 'service_role'),
        ('presence_heartbeat(text,text)', 'authenticated'),
        ('presence_leave(text)', 'authenticated'),
        ('presence_match(text)', 'authenticated'),
        ('register_contract(text,text,bigint,text,text)', 'authenticated'),
        ('link_contract(uuid,text,text,text)', 'authenticated'),
        ('register_property(text,jsonb)', 'authenticated'),
        ('list_open_mortgage_applications()', 'authenticated'),
        ('apply_for_mortgage(text,bigint,text,integer,text,numeric)', 'authenticated'),
        ('make_mortgage_offer(text,numeric,bigint)', 'authenticated'),
        ('accept_mortgage_offer(text)', 'authenticated'),
        ('log_transfer(text,text,text,numeric,text,bigint,text,text,jsonb,text)', 'authenticated'),
        ('settle_transfer(text)', 'service_role'),
        ('paycore.apply_stripe_event(jsonb)', 'paycore_webhook'),
        ('begin_credit_checkout(uuid,text)', 'service_role'),
        ('begin_credit_checkout(uuid,text)', 'paycore_webhook'),
        ('get_platform_credit_status()', 'service_role'),
        ('retry_stripe_event(text)', 'service_role'),
        ('begin_subscription_checkout(uuid,text)', 'service_role'),
        ('begin_subscription_checkout(uuid,text)', 'paycore_webhook'),
        ('attach_checkout_session(uuid,text,timestamp with time zone)', 'service_role'),
        ('attach_checkout_session(uuid,text,timestamp with time zone)', 'paycore_webhook'),
        ('release_credit_checkout(uuid)', 'service_role'),
        ('release_credit_checkout(uuid)', 'paycore_webhook')
    $$,
    'EXECUTE on public and paycore functions is exactly the declared matrix'
);

-- 4. No client role writes any table: every write is a function.
select is_empty(
    $$select c.oid::regclass::text, r.role
      from pg_class as c
      cross join (values ('anon'), ('authenticated'), ('service_role')) as r (role)
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
        and has_table_privilege(r.role, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')$$,
    'no public table grants INSERT, UPDATE, DELETE or TRUNCATE to anon, authenticated or service_role'
);

-- 5. plpgsql_check finds no error in any PL/pgSQL function (trigger functions are checked
--    against the table they fire on).
select is_empty(
    $$select p.oid::regprocedure::text, e.message
      from pg_proc as p
      join pg_language as l on l.oid = p.prolang and l.lanname = 'plpgsql'
      cross join lateral tests.plpgsql_check_function_tb(
          p.oid,
          coalesce((select t.tgrelid from pg_trigger as t where t.tgfoid = p.oid limit 1), 0)
      ) as e
      where p.pronamespace in ('public'::regnamespace, 'paycore'::regnamespace)
        and e.level = 'error'$$,
    'plpgsql_check reports no error'
);

-- 6. yoyo's bookkeeping tables are invisible to client roles.
select is_empty(
    $$select c.oid::regclass::text, r.role
      from pg_class as c
      cross join (values ('anon'), ('authenticated'), ('service_role')) as r (role)
      where c.relname in ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock')
        and has_table_privilege(r.role, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')$$,
    'yoyo''s tables are invisible to anon, authenticated and service_role'
);
select isnt_empty(
    $$select 1 from pg_class where relname = '_yoyo_migration'$$,
    '... and they exist in this database (built by yoyo)'
);

-- 7. No client role reaches the paycore schema.
select is_empty(
    $$select r.role from (values ('anon'), ('authenticated'), ('service_role')) as r (role)
      where has_schema_privilege(r.role, 'paycore', 'USAGE')$$,
    'no client role has USAGE on schema paycore'
);

-- 8. Every paycore table and function says what it guarantees.
select is_empty(
    $$select c.oid::regclass::text from pg_class as c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
        and c.relname not like '%yoyo%' and obj_description(c.oid, 'pg_class') is null
      union all
      select p.oid::regprocedure::text from pg_proc as p
      where p.pronamespace in ('public'::regnamespace, 'paycore'::regnamespace)
        and obj_description(p.oid, 'pg_proc') is null$$,
    'every public table and every public or paycore function has a comment'
);

-- 9. Every table has created_at timestamptz not null default now().
select is_empty(
    $$select c.oid::regclass::text from pg_class as c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and c.relname not like '%yoyo%'
        and not exists (
            select 1 from pg_attribute as a join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
            where a.attrelid = c.oid and a.attname = 'created_at' and a.attnotnull
              and a.atttypid = 'timestamptz'::regtype and pg_get_expr(d.adbin, d.adrelid) = 'now()'
        )$$,
    'every public table has created_at timestamptz not null default now()'
);

-- 10. Where rows change (an updated_at column), a trigger keeps updated_at.
select is_empty(
    $$select c.oid::regclass::text from pg_class as c
      join pg_attribute as a on a.attrelid = c.oid and a.attname = 'updated_at' and not a.attisdropped
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and not exists (
            select 1 from pg_trigger as t
            where t.tgrelid = c.oid and t.tgfoid = 'paycore.tg__set_updated_at()'::regprocedure
        )$$,
    'every public table with updated_at has the trigger that keeps it'
);

-- 11. Every CHECK constraint of public is named, not left to the default <table>_<col>_check.
select is_empty(
    $$select conrelid::regclass::text, conname from pg_constraint
      where connamespace = 'public'::regnamespace and contype = 'c' and conname ~ '_check$'$$,
    'CHECK constraints are named as assertions'
);

-- 12. What anon may read at all: the declared list.
select set_eq(
    $$select c.relname::text from pg_class as c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
        and has_table_privilege('anon', c.oid, 'SELECT')$$,
    $$values ('credit_packages'), ('apps'), ('tiers'), ('features'), ('tier_limits'), ('prices')$$,
    'anon reads only the declared public tables'
);

-- 12b. PostgREST picks an RPC by name and argument names: an overload answers PGRST203
--      ("could not choose the best candidate"), an unnamed argument cannot be passed at all.
select is_empty(
    $$select p.proname::text from pg_proc as p
      where p.pronamespace = 'public'::regnamespace
      group by p.proname having count(*) > 1$$,
    'no two public functions share a name (no RPC overloads)'
);
select is_empty(
    $$select p.oid::regprocedure::text from pg_proc as p
      where p.pronamespace = 'public'::regnamespace and p.pronargs > 0
        and (p.proargnames is null
             or exists (select 1 from unnest(p.proargnames[1:p.pronargs]) as n (name) where n.name = ''))$$,
    'every argument of a public function has a name'
);

-- 13. Row isolation over every table that names a user: with rows of two users in place,
--     a signed-in user sees none of the other's rows. Seed rows for new modules here.
select tests.create_user('guard-a@example.test') as a \gset
select tests.create_user('guard-b@example.test') as b \gset
select from adjust_credits(:'a', 10, 'gift');
select from adjust_credits(:'b', 10, 'gift');
select from start_generation(:'a', 'image', 'm', 'p', 1);
select from start_generation(:'b', 'image', 'm', 'p', 1);
insert into public.user_subscriptions (user_id, app_id, tier_id, status, stripe_subscription_id)
values (:'a', 'cv', 'premium', 'active', 'sub_guard_a'), (:'b', 'cv', 'premium', 'active', 'sub_guard_b');
insert into public.payment_history (stripe_invoice_id, user_id, amount, status, paid_at)
values ('in_guard_a', :'a', 900, 'succeeded', now()), ('in_guard_b', :'b', 900, 'succeeded', now());
select from check_usage_limit(:'a', 'cv_generations');
select from check_usage_limit(:'b', 'cv_generations');
select tests.create_user('guard-c@example.test') as c \gset
select from create_reading('natal', 'A''s reading', '{}', :'a');
select from create_reading('natal', 'B''s reading', '{}', :'b');
select from save_matching(:'c', 'synastry', '{"score": 1}', '{}', :'a');
select from save_matching(:'c', 'synastry', '{"score": 2}', '{}', :'b');
select from record_nudge(:'a', 'cv', 'cv.guard', 'email');
select from record_nudge(:'b', 'cv', 'cv.guard', 'email');
-- Marketplace, five days ago: a and b each issue a voucher that c books; each of a and b
-- receives a fee of both bookings; the period up to yesterday is settled.
insert into public.thinkers (id) values (:'a'), (:'b') on conflict do nothing;
insert into public.fees (id, scope, percentage, beneficiary_id)
values ('guard.a', 'voucher', 0.1, :'a'), ('guard.b', 'voucher', 0.1, :'b');
select tests.travel_to(now() - interval '5 days');
select tests.authenticate_as(:'a');
select id as voucher_a from issue_voucher(
    'consulting.session', 'A', 60, now() + interval '1 day', now() + interval '2 days', 1000, 'eur'
) \gset
select tests.authenticate_as(:'b');
select id as voucher_b from issue_voucher(
    'consulting.session', 'B', 60, now() + interval '1 day', now() + interval '2 days', 1000, 'eur'
) \gset
select tests.authenticate_as(:'c');
select from book_voucher(:'voucher_a', date_trunc('hour', now()) + interval '25 hours');
select from book_voucher(:'voucher_b', date_trunc('hour', now()) + interval '25 hours');
-- ... a and b each: a presence under one pair code with c (a room each), a contract linked
-- to their voucher, a property with an application that c offers on and they accept, a
-- transfer.
select from presence_heartbeat('guards');
select tests.authenticate_as(:'a');
select from presence_match('guards');
select id as contract_a from register_contract('A', 'application/pdf', 1, 's3://a', repeat('a', 64)) \gset
select from link_contract(:'contract_a', 'primary', :'voucher_a');
select id as property_a from register_property('A street 1') \gset
select id as application_a from apply_for_mortgage(:'property_a', 100000, 'eur', 20, 'fixed', 0.05) \gset
select from log_transfer('in', '0xa', 'Polygon', 1, 'ETH', 1000, 'eur');
select tests.authenticate_as(:'b');
select from presence_match('guards');
select id as contract_b from register_contract('B', 'application/pdf', 1, 's3://b', repeat('b', 64)) \gset
select from link_contract(:'contract_b', 'primary', :'voucher_b');
select id as property_b from register_property('B street 1') \gset
select id as application_b from apply_for_mortgage(:'property_b', 100000, 'eur', 20, 'fixed', 0.05) \gset
select from log_transfer('in', '0xb', 'Polygon', 1, 'ETH', 1000, 'eur');
select tests.authenticate_as(:'c');
select id as offer_a from make_mortgage_offer(:'application_a', 0.04, 900) \gset
select id as offer_b from make_mortgage_offer(:'application_b', 0.04, 900) \gset
select tests.authenticate_as(:'a');
select from accept_mortgage_offer(:'offer_a');
select tests.authenticate_as(:'b');
select from accept_mortgage_offer(:'offer_b');
select tests.reset_role();
select tests.travel_to(now());
-- Stripe: a and b each a paid credit checkout, an invoice and a payment intent.
create function pg_temp.guard_stripe(p_n text, p_user uuid)
returns void
language plpgsql
as $$
begin
    perform paycore.apply_stripe_event(jsonb_build_object(
        'id', 'evt_guard_cs_' || p_n, 'type', 'checkout.session.completed', 'created', 1785000000,
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'cs_test_guard_' || p_n, 'mode', 'payment', 'status', 'complete', 'payment_status', 'paid',
            'payment_intent', 'pi_guard_' || p_n, 'amount_total', 1000, 'currency', 'usd',
            'metadata', jsonb_build_object('user_id', p_user, 'package_id', 'pkg_100_credits')))));
    perform paycore.apply_stripe_event(jsonb_build_object(
        'id', 'evt_guard_in_' || p_n, 'type', 'invoice.paid', 'created', 1785000000,
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'in_guard_' || p_n, 'status', 'paid', 'amount_paid', 900, 'currency', 'usd',
            'metadata', jsonb_build_object('user_id', p_user)))));
    perform paycore.apply_stripe_event(jsonb_build_object(
        'id', 'evt_guard_pi_' || p_n, 'type', 'payment_intent.succeeded', 'created', 1785000000,
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'pi_guard_' || p_n, 'object', 'payment_intent', 'amount', 1000, 'currency', 'usd',
            'status', 'succeeded'))));
end;
$$;
select pg_temp.guard_stripe('a', :'a');
select pg_temp.guard_stripe('b', :'b');
select from paycore.settle_fees((now() at time zone 'UTC')::date - 3000, (now() at time zone 'UTC')::date - 1);
select tests.authenticate_as(:'b');
select from track_event('guards', 'seeded');
select from update_profile('B');
select tests.authenticate_as(:'a');
select from track_event('guards', 'seeded');

create function pg_temp.rows_of_others(p_me uuid)
returns setof text
language plpgsql
as $$
declare
    v_table regclass;
    v_columns text;
    v_count bigint;
begin
    -- A row is the user's when any of its user columns (user_id, actor_id, or any uuid column
    -- with a foreign key to auth.users, or to a table keyed by the auth user such as thinkers:
    -- a pair table has two) names the user.
    for v_table, v_columns in
        select c.oid::regclass, string_agg(quote_ident(a.attname), ', ' order by a.attnum)
        from pg_class as c
        join pg_attribute as a on a.attrelid = c.oid and not a.attisdropped
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
          and a.atttypid = 'uuid'::regtype
          and (a.attname in ('user_id', 'actor_id') or exists (
              select 1 from pg_constraint as k
              where k.conrelid = c.oid and k.contype = 'f' and k.conkey = array[a.attnum]
                and (k.confrelid = 'auth.users'::regclass or exists (
                    select 1 from pg_constraint as pk
                    join pg_constraint as fk on fk.conrelid = pk.conrelid and fk.conkey = pk.conkey
                    where pk.conrelid = k.confrelid and pk.contype = 'p'
                      and fk.contype = 'f' and fk.confrelid = 'auth.users'::regclass))))
          and has_table_privilege(c.oid, 'SELECT')
        group by c.oid
    loop
        execute format('select count(*) from %s where not coalesce($1 = any(array[%s]), false)', v_table, v_columns)
        into v_count using p_me;
        if v_count > 0 then
            return next format('%s: %s rows of other users', v_table, v_count);
        end if;
    end loop;
end;
$$;
select is_empty(format('select * from pg_temp.rows_of_others(%L)', :'a'),
    'a signed-in user sees no row of another user in any public table');
select tests.reset_role();
select cmp_ok(
    (select count(*)::int from pg_temp.rows_of_others(:'a')), '>=', 31,
    '... while those rows exist (credits, ledger, generations, events, profiles, subscriptions, '
    'payments, usage, readings, versions, matchings, nudges, thinkers, vouchers, bookings, fee '
    'events, settlements, presence, rooms, contracts, links, properties, applications, offers, '
    'mortgage contracts, transfers, checkout sessions, credit purchases, payment and invoice logs)'
);

select * from finish();
rollback;
