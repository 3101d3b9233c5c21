-- Undoes 0008.create-coaching.
drop function public.save_matching(uuid, text, jsonb, jsonb, uuid);
drop function public.get_reading(uuid);
drop function public.add_reading_version(uuid, text);
drop function public.create_reading(text, text, jsonb, uuid);
drop table public.partner_matchings;
drop table public.reading_versions;
drop table public.coach_readings;
drop function paycore.check_reading_content(text);
drop function paycore.reading_owner_filter();
drop function paycore.tg_reading_versions__append_only();
delete from paycore.reserved_event_namespaces
where namespace in ('reading', 'matching');
