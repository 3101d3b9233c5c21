-- depends: 0009.create-analytics
-- transactional: false
-- index-events-by-time: schema/10_core.sql. Built concurrently, outside a transaction (the
-- directive above tells yoyo), so that writes to public.events (every paycore write logs
-- one) go on while it is built. The settings are the session's: reset at the end. If the
-- build fails, PostgreSQL leaves an INVALID index: drop it before running yoyo apply again.
set lock_timeout = '10s';
set statement_timeout = '2h';
-- squawk-ignore ban-concurrent-index-creation-in-transaction
create index concurrently if not exists events_created_at_app_id_type_actor_id_idx
on public.events (created_at, app_id, type, actor_id);
reset statement_timeout;
reset lock_timeout;
