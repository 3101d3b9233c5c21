-- core: who reads the event log, who writes it.

alter table public.events enable row level security;
revoke all on table public.events from public, anon, authenticated, service_role;
grant select on table public.events to authenticated, service_role;
create policy events_select_own on public.events
for select to authenticated
using (actor_id = (select auth.uid()));

revoke all on function paycore.log_event(text, uuid, text, text, text, jsonb, text) from public;

revoke all on function public.track_event(text, text, jsonb, text) from public, anon, authenticated, service_role;
grant execute on function public.track_event(text, text, jsonb, text) to authenticated;

revoke all on function paycore.take_client_event_slot(uuid) from public;
revoke all on table paycore.reserved_event_namespaces from public;
revoke all on table paycore.client_event_counters from public;
