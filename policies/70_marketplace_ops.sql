-- marketplace operations: a thinker sees its presence sessions, properties and transfers;
-- the parties of a room see it; a contract is seen by its creator and the parties of what it
-- is linked to; the borrower and the lenders who offered see an application, the borrower
-- all its offers, a lender its own; the dashboards are service_role's.

alter table public.rooms enable row level security;
revoke all on table public.rooms from public, anon, authenticated, service_role;
grant select on table public.rooms to authenticated, service_role;
create policy rooms_select_parties on public.rooms
for select to authenticated
using ((select auth.uid()) in (owner_id, partner_id));

alter table public.presence_sessions enable row level security;
revoke all on table public.presence_sessions from public, anon, authenticated, service_role;
grant select on table public.presence_sessions to authenticated, service_role;
create policy presence_sessions_select_own on public.presence_sessions
for select to authenticated
using (thinker_id = (select auth.uid()));

alter table public.contracts enable row level security;
revoke all on table public.contracts from public, anon, authenticated, service_role;
grant select on table public.contracts to authenticated, service_role;
-- The links read here are those the caller sees (contract_links' own policy): links to its
-- vouchers and rooms. contract_links' policy does not read contracts, so no recursion.
create policy contracts_select_creator_or_parties on public.contracts
for select to authenticated
using (
    created_by = (select auth.uid())
    or exists (
        select 1 from public.contract_links as l
        where l.contract_id = contracts.id
    )
);

alter table public.contract_links enable row level security;
revoke all on table public.contract_links from public, anon, authenticated, service_role;
grant select on table public.contract_links to authenticated, service_role;
create policy contract_links_select_creator_or_parties on public.contract_links
for select to authenticated
using (
    created_by = (select auth.uid())
    or exists (
        select 1 from public.vouchers as v
        where v.id = contract_links.voucher_id and (select auth.uid()) in (v.issuer_id, v.holder_id)
    )
    or exists (
        select 1 from public.rooms as r
        where r.id = contract_links.room_id and (select auth.uid()) in (r.owner_id, r.partner_id)
    )
);

alter table public.properties enable row level security;
revoke all on table public.properties from public, anon, authenticated, service_role;
grant select on table public.properties to authenticated, service_role;
create policy properties_select_own on public.properties
for select to authenticated
using (owner_id = (select auth.uid()));

alter table public.mortgage_applications enable row level security;
revoke all on table public.mortgage_applications from public, anon, authenticated, service_role;
grant select on table public.mortgage_applications to authenticated, service_role;
create policy mortgage_applications_select_borrower_or_lenders on public.mortgage_applications
for select to authenticated
using (
    borrower_id = (select auth.uid())
    or exists (
        select 1 from public.mortgage_offers as o
        where o.application_id = mortgage_applications.id and o.lender_id = (select auth.uid())
    )
);

alter table public.mortgage_offers enable row level security;
revoke all on table public.mortgage_offers from public, anon, authenticated, service_role;
grant select on table public.mortgage_offers to authenticated, service_role;
create policy mortgage_offers_select_borrower_or_lender on public.mortgage_offers
for select to authenticated
using ((select auth.uid()) in (borrower_id, lender_id));

alter table public.mortgage_contracts enable row level security;
revoke all on table public.mortgage_contracts from public, anon, authenticated, service_role;
grant select on table public.mortgage_contracts to authenticated, service_role;
create policy mortgage_contracts_select_parties on public.mortgage_contracts
for select to authenticated
using ((select auth.uid()) in (borrower_id, lender_id));

alter table public.transfers enable row level security;
revoke all on table public.transfers from public, anon, authenticated, service_role;
grant select on table public.transfers to authenticated, service_role;
create policy transfers_select_own on public.transfers
for select to authenticated
using (thinker_id = (select auth.uid()));

revoke all on sequence paycore.property_numbers from public;

revoke all on table public.marketplace_presence_now from public, anon, authenticated, service_role;
grant select on table public.marketplace_presence_now to service_role;
revoke all on table public.marketplace_popular_pair_codes from public, anon, authenticated, service_role;
grant select on table public.marketplace_popular_pair_codes to service_role;
revoke all on table public.marketplace_bookings_per_day from public, anon, authenticated, service_role;
grant select on table public.marketplace_bookings_per_day to service_role;
revoke all on table public.marketplace_template_utilisation from public, anon, authenticated, service_role;
grant select on table public.marketplace_template_utilisation to service_role;
revoke all on table public.marketplace_mortgage_figures from public, anon, authenticated, service_role;
grant select on table public.marketplace_mortgage_figures to service_role;
revoke all on table public.marketplace_transfer_sums from public, anon, authenticated, service_role;
grant select on table public.marketplace_transfer_sums to service_role;

revoke all on function paycore.check_pair_code(text) from public;
revoke all on function paycore.presence_beat(uuid, text, text) from public;
revoke all on function paycore.check_room_party(uuid, text) from public;

revoke all on function public.presence_heartbeat(text, text) from public, anon, authenticated, service_role;
grant execute on function public.presence_heartbeat(text, text) to authenticated;

revoke all on function public.presence_leave(text) from public, anon, authenticated, service_role;
grant execute on function public.presence_leave(text) to authenticated;

revoke all on function public.presence_match(text) from public, anon, authenticated, service_role;
grant execute on function public.presence_match(text) to authenticated;

revoke all on function public.register_contract(text, text, bigint, text, text)
from public, anon, authenticated, service_role;
grant execute on function public.register_contract(text, text, bigint, text, text) to authenticated;

revoke all on function public.link_contract(uuid, text, text, text) from public, anon, authenticated, service_role;
grant execute on function public.link_contract(uuid, text, text, text) to authenticated;

revoke all on function public.register_property(text, jsonb) from public, anon, authenticated, service_role;
grant execute on function public.register_property(text, jsonb) to authenticated;

revoke all on function public.list_open_mortgage_applications() from public, anon, authenticated, service_role;
grant execute on function public.list_open_mortgage_applications() to authenticated;

revoke all on function public.apply_for_mortgage(text, bigint, text, integer, text, numeric)
from public, anon, authenticated, service_role;
grant execute on function public.apply_for_mortgage(text, bigint, text, integer, text, numeric) to authenticated;

revoke all on function public.make_mortgage_offer(text, numeric, bigint) from public, anon, authenticated, service_role;
grant execute on function public.make_mortgage_offer(text, numeric, bigint) to authenticated;

revoke all on function public.accept_mortgage_offer(text) from public, anon, authenticated, service_role;
grant execute on function public.accept_mortgage_offer(text) to authenticated;

revoke all on function public.log_transfer(text, text, text, numeric, text, bigint, text, text, jsonb, text)
from public, anon, authenticated, service_role;
grant execute on function public.log_transfer(text, text, text, numeric, text, bigint, text, text, jsonb, text)
to authenticated;

revoke all on function public.settle_transfer(text) from public, anon, authenticated, service_role;
grant execute on function public.settle_transfer(text) to service_role;
