-- coaching data: a reading and its versions are its user's; a matching is both users'.

alter table public.coach_readings enable row level security;
revoke all on table public.coach_readings from public, anon, authenticated, service_role;
grant select on table public.coach_readings to authenticated, service_role;
create policy coach_readings_select_own on public.coach_readings
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.reading_versions enable row level security;
revoke all on table public.reading_versions from public, anon, authenticated, service_role;
grant select on table public.reading_versions to authenticated, service_role;
create policy reading_versions_select_own on public.reading_versions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.partner_matchings enable row level security;
revoke all on table public.partner_matchings from public, anon, authenticated, service_role;
grant select on table public.partner_matchings to authenticated, service_role;
create policy partner_matchings_select_pair on public.partner_matchings
for select to authenticated
using ((select auth.uid()) in (user_id_1, user_id_2));

revoke all on function paycore.tg_reading_versions__append_only() from public;
revoke all on function paycore.check_reading_content(text) from public;
revoke all on function paycore.reading_owner_filter() from public;

revoke all on function public.create_reading(text, text, jsonb, uuid) from public, anon, authenticated, service_role;
grant execute on function public.create_reading(text, text, jsonb, uuid) to authenticated, service_role;

revoke all on function public.add_reading_version(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.add_reading_version(uuid, text) to authenticated, service_role;

revoke all on function public.get_reading(uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_reading(uuid) to authenticated, service_role;

revoke all on function public.save_matching(uuid, text, jsonb, jsonb, uuid)
from public, anon, authenticated, service_role;
grant execute on function public.save_matching(uuid, text, jsonb, jsonb, uuid) to authenticated, service_role;
