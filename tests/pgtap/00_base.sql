-- base: Supabase-compatible roles and auth helpers, the clock, caller identity.
begin;
select plan(40);

-- Roles as on Supabase.
select has_role('anon');
select has_role('authenticated');
select has_role('service_role');
select has_role('paycore_webhook');
select is(
    (select rolbypassrls from pg_roles where rolname = 'service_role'), true,
    'service_role bypasses RLS'
);
select is(
    (select count(*)::int from pg_roles
     where rolname in ('anon', 'authenticated', 'service_role', 'paycore_webhook') and rolcanlogin),
    0, 'the client roles and paycore_webhook cannot log in'
);

-- auth.uid() / role() / email() / jwt(): Supabase's semantics.
select tests.set_claims(
    '{"sub": "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e", "role": "authenticated", "email": "a@example.test"}'
);
select is(auth.uid(), '8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e'::uuid, 'auth.uid() reads sub from request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() reads role');
select is(auth.email(), 'a@example.test', 'auth.email() reads email');
select is(auth.jwt() ->> 'sub', '8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e', 'auth.jwt() is the claims as jsonb');
select tests.set_claims(
    '{"sub": "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e"}', 'c0c0c0c0-0000-4000-8000-000000000001'
);
select is(auth.uid(), 'c0c0c0c0-0000-4000-8000-000000000001'::uuid,
    'the legacy request.jwt.claim.sub setting wins, as on Supabase');
select tests.set_claims(null);
select is(auth.uid(), null, 'no claims: auth.uid() is null');
select is(auth.jwt(), null, 'no claims: auth.jwt() is null');

select is(storage.foldername('u1/images/a.png'), array['u1', 'images'], 'storage.foldername() gives the folders');

-- The clock.
select is(paycore.clock(), now(), 'paycore.clock() is now() by default');
select tests.travel_to('2030-01-31 23:59:59+00');
select is(paycore.clock(), '2030-01-31 23:59:59+00'::timestamptz, 'set local paycore.now moves the clock');
select tests.travel_to(null);

-- Caller identity: resolve_user_id.
select tests.create_user('base-a@example.test') as a \gset
select tests.create_user('base-b@example.test') as b \gset
select is(paycore.resolve_user_id(:'b'), :'b'::uuid, 'a trusted role acts on any given user');
select tests.throws_hint('select paycore.resolve_user_id(null)', 'PT400', 'invalid_argument',
    'a trusted role must name the user');


-- The helpers are internal: only their owner calls them. Test them as client roles
-- through SECURITY DEFINER wrappers, which is how every paycore function reaches them.
create function pg_temp.resolve(p uuid) returns uuid language sql security definer
set search_path = pg_catalog, pg_temp as $$ select paycore.resolve_user_id(p) $$;
create function pg_temp.caller_role() returns text language sql security definer
set search_path = pg_catalog, pg_temp as $$ select paycore.caller_role() $$;
grant execute on function pg_temp.resolve(uuid), pg_temp.caller_role() to public;

select tests.authenticate_as_service_role();
select is(pg_temp.caller_role(), 'service_role', 'caller_role() sees service_role inside SECURITY DEFINER');
select tests.reset_role();
select tests.authenticate_as(:'a');
select is(pg_temp.resolve(null), :'a'::uuid, 'authenticated with null acts on itself');
select is(pg_temp.resolve(:'a'), :'a'::uuid, 'authenticated may name itself');
select tests.throws_hint(format('select pg_temp.resolve(%L)', :'b'), 'PT403', 'forbidden',
    'authenticated may not name another user');
select tests.throws_hint('select paycore.clock()', '42501', null,
    'clients cannot execute paycore internals directly');
select tests.set_claims('{"role": "authenticated"}');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden',
    'authenticated without a sub is refused');
select tests.clear_authentication();
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden', 'anon is refused');
select tests.reset_role();

-- Trusted roles: service_role, members of paycore_webhook, the owner. Nobody else.
create role paycore_test_premium nologin;
grant authenticated to paycore_test_premium;
create role paycore_test_authenticator login noinherit;
grant anon to paycore_test_authenticator;
grant authenticated to paycore_test_authenticator;
grant service_role to paycore_test_authenticator;
create role paycore_test_hook login;
grant paycore_webhook to paycore_test_hook;
create role paycore_test_stranger login;
grant usage on schema tests to paycore_test_premium, paycore_test_authenticator, paycore_test_hook,
paycore_test_stranger;
select tests.authenticate_as_service_role();
select is(pg_temp.resolve(:'b'), :'b'::uuid, 'service_role acts on any given user');
select tests.act_as('paycore_test_hook');
select is(pg_temp.resolve(:'b'), :'b'::uuid, 'a member of paycore_webhook acts on any given user');
select tests.act_as('paycore_test_premium', jsonb_build_object('sub', :'a', 'role', 'paycore_test_premium'));
select tests.throws_hint(format('select pg_temp.resolve(%L)', :'b'), 'PT403', 'forbidden',
    'a custom JWT role that inherits from authenticated may not act on another user');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden', '... nor on anyone');
select tests.act_as('paycore_test_authenticator');
select tests.throws_hint(format('select pg_temp.resolve(%L)', :'b'), 'PT403', 'forbidden',
    'PostgREST''s authenticator itself (before set role) may not act on users');
select tests.act_as('paycore_test_stranger');
select tests.throws_hint(format('select pg_temp.resolve(%L)', :'b'), 'PT403', 'forbidden',
    'any other login role may not act on users');
select tests.reset_role();

-- A JWT outlives its user: deleted or soft-deleted, the caller is refused.
select tests.create_user('base-gone@example.test') as gone \gset
select tests.authenticate_as(:'gone');
select is(pg_temp.resolve(null), :'gone'::uuid, 'a live user acts on itself');
select tests.reset_role();
update auth.users set deleted_at = now() where id = :'gone';
select tests.authenticate_as(:'gone');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden',
    'the JWT of a soft-deleted user is PT403');
select tests.reset_role();
delete from auth.users where id = :'gone';
select tests.authenticate_as(:'gone');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden',
    'the JWT of a deleted user is PT403');
select tests.set_claims('{"sub": "not-a-uuid", "role": "authenticated"}');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden',
    'a JWT whose sub is not a uuid is PT403, not a cast error');
select tests.set_claims('{"sub": "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e", "m": "\u0000"}');
select tests.throws_hint('select pg_temp.resolve(null)', 'PT403', 'forbidden',
    'claims that PostgreSQL cannot read as jsonb (a NUL escape) are PT403');
select tests.reset_role();

-- Blank means white space of any kind.
select is(
    array[paycore.is_blank(''), paycore.is_blank(e' \t\r\n'), paycore.is_blank(e'\u00a0\u2009\u3000\ufeff'),
          paycore.is_blank(' a '), paycore.is_blank(null)],
    array[true, true, true, false, null],
    'is_blank: empty, ASCII and Unicode white space are blank; text is not'
);
select is(paycore.is_blank(e'\u0085\u00ad\u200c\u200d\u2060\u3164\u2800'), true,
    'is_blank: next line and the characters that show nothing are blank');

-- Supabase's default privileges on public, emulated on plain PostgreSQL.
create table public.tmp_default_privileges (id int);
select table_privs_are('public', 'tmp_default_privileges', 'anon',
    array['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'],
    'new public tables are granted to anon, as on Supabase (so paycore revokes per object)');
select is(
    (select count(*)::int from pg_namespace where nspname = 'paycore'
     and has_schema_privilege('anon', oid, 'usage')),
    0, 'anon has no usage on schema paycore'
);

select * from finish();
rollback;
