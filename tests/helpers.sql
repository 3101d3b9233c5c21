-- The tests schema: helpers for pgTAP files, in the spirit of supabase-test-helpers.
-- Installed only into test databases (scripts/localdb.py install_test_helpers), never
-- by a migration. pgTAP and plpgsql_check live in this schema too.

grant usage on schema tests to anon, authenticated, service_role;

create or replace function tests.create_user(p_email text default null)
returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id uuid := gen_random_uuid();
begin
    insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
    values (
        v_id, 'authenticated', 'authenticated',
        coalesce(p_email, v_id || '@example.test'), '{"provider": "email"}', '{}'
    );
    return v_id;
end;
$$;
comment on function tests.create_user(text) is
'Inserts an auth user and returns its id; works under any role (SECURITY DEFINER).';

create or replace function tests.open_temp_tables()
returns void
language plpgsql
as $$
declare
    v_oid oid;
begin
    -- pgTAP keeps its counters in temp tables owned by the session user; a test that
    -- switches to a client role must still be able to write them.
    for v_oid in
        select c.oid from pg_class as c
        where c.relnamespace = pg_my_temp_schema() and c.relkind in ('r', 'S')
    loop
        execute format('grant all on %s to public', v_oid::regclass);
    end loop;
end;
$$;

create or replace function tests.act_as(p_role text, p_claims jsonb default null)
returns void
language plpgsql
as $$
begin
    perform set_config('role', 'none', true);
    perform tests.open_temp_tables();
    perform set_config('request.jwt.claims', coalesce(p_claims::text, ''), true);
    perform set_config('role', p_role, true);
end;
$$;
comment on function tests.act_as(text, jsonb) is
'Until the end of the transaction, runs as p_role (any role: a custom JWT role, a login role) '
'with p_claims as request.jwt.claims.';

create or replace function tests.authenticate_as(p_user_id uuid)
returns void
language plpgsql
as $$
begin
    perform set_config('role', 'none', true);  -- so that auth.users can be read for the email
    perform tests.act_as('authenticated', jsonb_build_object(
        'sub', p_user_id, 'role', 'authenticated', 'aal', 'aal1',
        'email', (select u.email from auth.users as u where u.id = p_user_id)
    ));
end;
$$;
comment on function tests.authenticate_as(uuid) is
'Until the end of the transaction, acts as PostgREST does for a signed-in user: role '
'authenticated and request.jwt.claims with sub, role, email and aal.';

create or replace function tests.authenticate_as_service_role()
returns void
language sql
as $$
    select tests.act_as('service_role', '{"role": "service_role"}');
$$;
comment on function tests.authenticate_as_service_role() is
'Until the end of the transaction, acts as PostgREST does for the service_role key.';

create or replace function tests.clear_authentication()
returns void
language sql
as $$
    select tests.act_as('anon', '{"role": "anon"}');
$$;
comment on function tests.clear_authentication() is
'Until the end of the transaction, acts as PostgREST does for a request without a user (anon).';

create or replace function tests.reset_role()
returns void
language plpgsql
as $$
begin
    perform set_config('role', 'none', true);
    perform set_config('request.jwt.claims', '', true);
end;
$$;
comment on function tests.reset_role() is 'Back to the session user (the test owner).';

create or replace function tests.travel_to(p_time timestamptz)
returns void
language sql
as $$
    select set_config('paycore.now', p_time::text, true);
$$;
comment on function tests.travel_to(timestamptz) is
'Sets paycore.clock() to p_time until the end of the transaction.';

create or replace function tests.throws_hint(
    p_sql text, p_sqlstate text, p_hint text, p_description text
)
returns text
language plpgsql
as $$
declare
    v_state text;
    v_hint text;
    v_message text;
begin
    begin
        execute p_sql;
    exception when others then
        get stacked diagnostics
            v_state = returned_sqlstate, v_hint = pg_exception_hint, v_message = message_text;
        v_hint := nullif(v_hint, '');
        if v_state = p_sqlstate and v_hint is not distinct from p_hint then
            return tests.ok(true, p_description);
        end if;
        return tests.ok(false, p_description) || e'\n' || tests.diag(
            format(e'    have: %s hint=%s (%s)\n    want: %s hint=%s', v_state, v_hint, v_message, p_sqlstate, p_hint)
        );
    end;
    return tests.ok(false, p_description) || e'\n'
        || tests.diag(format(e'    have: no error\n    want: %s hint=%s', p_sqlstate, p_hint));
end;
$$;
comment on function tests.throws_hint(text, text, text, text) is
'Like pgTAP throws_ok, but matches the SQLSTATE and the HINT key (README: Errors).';

create or replace function tests.set_claims(p_claims text, p_legacy_sub text default null)
returns void
language plpgsql
as $$
begin
    perform set_config('request.jwt.claims', coalesce(p_claims, ''), true);
    perform set_config('request.jwt.claim.sub', coalesce(p_legacy_sub, ''), true);
end;
$$;
comment on function tests.set_claims(text, text) is
'Sets request.jwt.claims (and the legacy request.jwt.claim.sub) until the end of the transaction.';

create or replace function tests.digest(p_tables regclass[])
returns jsonb
language plpgsql stable
as $$
declare
    v_table regclass;
    v_digest jsonb := '{}';
    v_rows text;
begin
    foreach v_table in array p_tables loop
        execute format(
            'select count(*) || '':'' || md5(coalesce(string_agg(t::text, ''|'' order by t::text), '''')) from %s as t',
            v_table
        ) into v_rows;
        -- Keyed by the table's name, without its schema.
        v_digest := v_digest || jsonb_build_object(
            (select c.relname from pg_catalog.pg_class as c where c.oid = v_table), v_rows
        );
    end loop;
    return v_digest;
end;
$$;
comment on function tests.digest(regclass[]) is
'Per table (keyed by its name), its row count and an md5 of all its rows: equal before and '
'after a call when the call wrote nothing to those tables (a refused call changes nothing).';

-- Supabase Storage's delete guard, as on a Supabase project.
\ir supabase/storage_guard.sql
