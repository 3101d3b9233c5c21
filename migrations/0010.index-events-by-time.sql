-- depends: 0009.create-analytics
-- transactional: false
-- index-events-by-time: schema/10_core.sql. Built concurrently, outside a transaction (the
-- directive above tells yoyo), so that writes to public.events (every paycore write logs
-- one) go on while it is built. The settings are the session's: reset at the end (apply
-- migrations over a direct or session-pooled connection, not the transaction pooler). A
-- build waits for the transactions already running; if it fails (lock_timeout), PostgreSQL
-- leaves an INVALID index, which the check below reports: drop it and apply again.
set lock_timeout = '10s';
set statement_timeout = '2h';
-- squawk-ignore ban-concurrent-index-creation-in-transaction
create index concurrently if not exists events_created_at_app_id_type_actor_id_idx
on public.events (created_at, app_id, type, actor_id);
-- A build that failed before leaves an INVALID index, which if not exists would accept:
-- refuse to record the migration as applied then.
do $$
begin
    if exists (
        select 1 from pg_catalog.pg_index as i
        where i.indexrelid = 'public.events_created_at_app_id_type_actor_id_idx'::regclass and not i.indisvalid
    ) then
        raise exception 'index events_created_at_app_id_type_actor_id_idx is INVALID (an earlier build failed)'
        using hint = 'drop index concurrently public.events_created_at_app_id_type_actor_id_idx; then apply again';
    end if;
end;
$$;
reset statement_timeout;
reset lock_timeout;
