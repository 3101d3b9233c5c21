-- Undoes 0009.create-analytics.
drop function paycore.purge_events(interval, integer, integer);
drop function public.get_ecosystem_stats(integer);
drop function public.record_nudge(uuid, text, text, text, jsonb);
drop table public.nudges_sent;
delete from paycore.reserved_event_namespaces
where namespace = 'nudge';
