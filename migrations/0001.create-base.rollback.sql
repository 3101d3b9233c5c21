-- Undoes 0001.create-base: drops the paycore schema and only those Supabase-compatible
-- objects that 0001 created itself (marked 'paycore: compat'). On Supabase that is nothing.
drop schema paycore cascade;

do $$
declare
    v_role text;
begin
    if to_regnamespace('storage') is not null
        and obj_description(to_regnamespace('storage'), 'pg_namespace') = 'paycore: compat' then
        drop schema storage cascade;
    end if;
    if to_regnamespace('auth') is not null
        and obj_description(to_regnamespace('auth'), 'pg_namespace') = 'paycore: compat' then
        drop schema auth cascade;
    end if;
    if shobj_description((select oid from pg_roles where rolname = 'anon'), 'pg_authid') = 'paycore: compat' then
        alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
        alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
        alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
        revoke usage on schema public from anon, authenticated, service_role;
    end if;
    -- Roles are cluster-wide: a role that other databases still use stays.
    foreach v_role in array array['paycore_webhook', 'service_role', 'authenticated', 'anon'] loop
        if shobj_description((select oid from pg_roles where rolname = v_role), 'pg_authid') = 'paycore: compat' then
            begin
                execute format('drop role %I', v_role);
            exception when dependent_objects_still_exist then
                raise notice 'role % is still used elsewhere in this cluster; kept', v_role;
            end;
        end if;
    end loop;
end;
$$;
