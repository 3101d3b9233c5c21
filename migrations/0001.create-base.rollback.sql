-- Undoes 0001.create-base: drops the paycore schema and only those Supabase-compatible
-- objects that 0001 created itself (marked 'paycore: compat'). On Supabase that is nothing.
-- Roles are cluster-wide and other databases of the cluster may rely on them: they stay.
drop schema paycore cascade;

do $$
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
end;
$$;
