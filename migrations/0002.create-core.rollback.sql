-- Undoes 0002.create-core.
drop function public.track_event(text, text, jsonb, text);
drop function paycore.log_event(text, uuid, text, text, text, jsonb, text);
drop table public.events;
