-- marketplace money: issuer and holder see a voucher and its bookings; a beneficiary its fee
-- events and settlements; a thinker its own row. Fee rules and platform fees: service_role.

alter table public.thinkers enable row level security;
revoke all on table public.thinkers from public, anon, authenticated, service_role;
grant select on table public.thinkers to authenticated, service_role;
create policy thinkers_select_own on public.thinkers
for select to authenticated
using (id = (select auth.uid()));

alter table public.voucher_templates enable row level security;
revoke all on table public.voucher_templates from public, anon, authenticated, service_role;
grant select on table public.voucher_templates to authenticated, service_role;
create policy voucher_templates_select_all on public.voucher_templates
for select to authenticated
using (true);

alter table public.vouchers enable row level security;
revoke all on table public.vouchers from public, anon, authenticated, service_role;
grant select on table public.vouchers to authenticated, service_role;
create policy vouchers_select_parties on public.vouchers
for select to authenticated
using ((select auth.uid()) in (issuer_id, holder_id));

alter table public.voucher_bookings enable row level security;
revoke all on table public.voucher_bookings from public, anon, authenticated, service_role;
grant select on table public.voucher_bookings to authenticated, service_role;
create policy voucher_bookings_select_parties on public.voucher_bookings
for select to authenticated
using ((select auth.uid()) in (issuer_id, holder_id));

alter table public.fees enable row level security;
revoke all on table public.fees from public, anon, authenticated, service_role;
grant select on table public.fees to service_role;

alter table public.fee_events enable row level security;
revoke all on table public.fee_events from public, anon, authenticated, service_role;
grant select on table public.fee_events to authenticated, service_role;
create policy fee_events_select_beneficiary on public.fee_events
for select to authenticated
using (beneficiary_id = (select auth.uid()));

alter table public.settlements enable row level security;
revoke all on table public.settlements from public, anon, authenticated, service_role;
grant select on table public.settlements to authenticated, service_role;
create policy settlements_select_beneficiary on public.settlements
for select to authenticated
using (beneficiary_id = (select auth.uid()));

revoke all on function paycore.tg_fee_events__append_only() from public;
revoke all on function paycore.tg_settlements__guard() from public;
revoke all on function paycore.tg_voucher_bookings__release() from public;
revoke all on function paycore.ensure_thinker(uuid) from public;
revoke all on function paycore.marketplace_user() from public;
revoke all on function paycore.marketplace_caller() from public;
revoke all on function paycore.new_marketplace_id(text) from public;
revoke all on function paycore.currency(text, text) from public;
revoke all on function paycore.round_half_even(numeric) from public;
revoke all on function paycore.fee_amount(bigint, numeric, bigint) from public;
revoke all on function paycore.charge_fees(text, text, text, bigint, text) from public;
revoke all on function paycore.reverse_fees(text, text) from public;
revoke all on function paycore.settle_fees(date, date) from public;

revoke all on function public.issue_voucher(
    text, text, integer, timestamptz, timestamptz, bigint, text, text, text, boolean, jsonb
) from public, anon, authenticated, service_role;
grant execute on function public.issue_voucher(
    text, text, integer, timestamptz, timestamptz, bigint, text, text, text, boolean, jsonb
) to authenticated;

revoke all on function public.book_voucher(text, timestamptz) from public, anon, authenticated, service_role;
grant execute on function public.book_voucher(text, timestamptz) to authenticated;

revoke all on function public.cancel_booking(text, text) from public, anon, authenticated, service_role;
grant execute on function public.cancel_booking(text, text) to authenticated;

revoke all on function public.consume_voucher(text) from public, anon, authenticated, service_role;
grant execute on function public.consume_voucher(text) to authenticated;

revoke all on function public.transfer_voucher(text, uuid) from public, anon, authenticated, service_role;
grant execute on function public.transfer_voucher(text, uuid) to authenticated;

revoke all on function public.mark_settlement(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.mark_settlement(uuid, text) to service_role;
