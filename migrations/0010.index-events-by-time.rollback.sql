-- transactional: false
-- Undoes 0010.index-events-by-time.
drop index concurrently if exists public.events_created_at_app_id_type_actor_id_idx;
