-- Undoes 0012.create-marketplace.
drop function public.mark_settlement(uuid, text);
drop function paycore.settle_fees(date, date);
drop function public.transfer_voucher(text, uuid);
drop function public.consume_voucher(text);
drop function public.cancel_booking(text, text);
drop function public.book_voucher(text, timestamptz);
drop function public.issue_voucher(
    text, text, integer, timestamptz, timestamptz, bigint, text, text, text, boolean, jsonb
);
drop table public.fee_events;
drop table public.settlements;
drop table public.fees;
drop table paycore.settlement_runs;
drop table public.voucher_bookings;
drop table public.vouchers;
drop table public.voucher_templates;
drop table public.thinkers;
drop function paycore.reverse_fees(text, text);
drop function paycore.charge_fees(text, text, text, bigint, text);
drop function paycore.fee_amount(bigint, numeric, bigint);
drop function paycore.round_half_even(numeric);
drop function paycore.currency(text, text);
drop function paycore.new_marketplace_id(text);
drop function paycore.marketplace_caller();
drop function paycore.marketplace_user();
drop function paycore.ensure_thinker(uuid);
drop function paycore.tg_settlements__guard();
drop function paycore.tg_voucher_bookings__release();
drop function paycore.tg_fee_events__append_only();
delete from paycore.reserved_event_namespaces
where namespace in ('voucher', 'settlement', 'fee', 'thinker');
-- btree_gist and schema extensions only where 0012 created them (plain PostgreSQL).
do $$
begin
    if pg_catalog.obj_description(
        (select e.oid from pg_catalog.pg_extension as e where e.extname = 'btree_gist'), 'pg_extension'
    ) = 'paycore: compat' then
        drop extension btree_gist;
    end if;
    if pg_catalog.obj_description(to_regnamespace('extensions'), 'pg_namespace') = 'paycore: compat' then
        drop schema extensions;
    end if;
end;
$$;
