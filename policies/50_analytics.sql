-- analytics: a user reads the nudges it was sent; statistics and retention are the service's.

alter table public.nudges_sent enable row level security;
revoke all on table public.nudges_sent from public, anon, authenticated, service_role;
grant select on table public.nudges_sent to authenticated, service_role;
create policy nudges_sent_select_own on public.nudges_sent
for select to authenticated
using (user_id = (select auth.uid()));

revoke all on function public.record_nudge(uuid, text, text, text, jsonb)
from public, anon, authenticated, service_role;
grant execute on function public.record_nudge(uuid, text, text, text, jsonb) to service_role;

revoke all on function public.get_ecosystem_stats(integer) from public, anon, authenticated, service_role;
grant execute on function public.get_ecosystem_stats(integer) to service_role;

revoke all on function paycore.purge_events(interval, integer, integer) from public;
