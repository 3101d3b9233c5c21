-- Undoes 0013.create-marketplace-ops.
-- Fee events are money records and append-only: with any fee of 0013's rules charged, the
-- rollback stops here rather than leave them without their transfers and mortgages.
do $$
begin
    if exists (
        select 1 from public.fee_events as e where e.subject_type in ('transfer', 'mortgage_contract')
    ) then
        raise exception 'rollback of 0013 refused: fee events of transfers or mortgage contracts exist'
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
end;
$$;
-- Policies that read other tables first, so that the tables drop in any order.
drop policy mortgage_applications_select_borrower_or_lenders on public.mortgage_applications;
drop policy contracts_select_creator_or_parties on public.contracts;
drop view public.marketplace_transfer_sums;
drop view public.marketplace_mortgage_figures;
drop view public.marketplace_template_utilisation;
drop view public.marketplace_bookings_per_day;
drop view public.marketplace_popular_pair_codes;
drop view public.marketplace_presence_now;
drop function public.settle_transfer(text);
drop function public.log_transfer(text, text, text, numeric, text, bigint, text, text, jsonb, text);
drop function public.accept_mortgage_offer(text);
drop function public.make_mortgage_offer(text, numeric, bigint);
drop function public.apply_for_mortgage(text, bigint, text, integer, text, numeric);
drop function public.list_open_mortgage_applications();
drop function public.register_property(text, jsonb);
drop function public.link_contract(uuid, text, text, text);
drop function public.register_contract(text, text, bigint, text, text);
drop function public.presence_match(text);
drop function public.presence_leave(text);
drop function public.presence_heartbeat(text, text);
drop function paycore.check_room_party(uuid, text);
drop function paycore.presence_beat(uuid, text, text);
drop function paycore.check_pair_code(text);
drop table public.transfers;
drop table public.mortgage_contracts;
drop table public.mortgage_offers;
drop table public.mortgage_applications;
drop table public.properties;
drop sequence paycore.property_numbers;
drop table public.contract_links;
drop table public.contracts;
drop table public.presence_sessions;
drop table public.rooms;
delete from public.fees
where id in ('transfer.logged', 'mortgage.accepted');
delete from paycore.settings
where key = 'contract_mime_types';
delete from paycore.reserved_event_namespaces
where namespace in ('presence', 'room', 'contract', 'property', 'mortgage', 'transfer');
