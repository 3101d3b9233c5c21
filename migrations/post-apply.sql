-- Runs after every yoyo apply: yoyo's own bookkeeping tables live in the connection's
-- schema (public by default), where Supabase's default privileges would hand them to
-- anon and authenticated. Take every privilege back from the client roles and turn RLS on.
do $$
declare
    v_table regclass;
begin
    for v_table in
        select c.oid::regclass
        from pg_catalog.pg_class as c
        where c.relnamespace = current_schema()::regnamespace
            and c.relkind = 'r'
            and c.relname in ('_yoyo_migration', '_yoyo_log', '_yoyo_version', 'yoyo_lock')
    loop
        execute format('alter table %s enable row level security', v_table);
        execute format('revoke all on table %s from public', v_table);
        execute format('revoke all on table %s from anon, authenticated, service_role', v_table);
    end loop;
end;
$$;
