-- marketplace money: issue, book, cancel, consume and transfer vouchers, each with its fee
-- events and its events row in one transaction; settle fee events per beneficiary, currency
-- and period exactly once; move settlements from open to invoiced to paid.

create trigger voucher_templates_set_updated_at
before update on public.voucher_templates
for each row execute function paycore.tg__set_updated_at();
create trigger vouchers_set_updated_at
before update on public.vouchers
for each row execute function paycore.tg__set_updated_at();
create trigger voucher_bookings_set_updated_at
before update on public.voucher_bookings
for each row execute function paycore.tg__set_updated_at();
create trigger fees_set_updated_at
before update on public.fees
for each row execute function paycore.tg__set_updated_at();
create trigger settlements_set_updated_at
before update on public.settlements
for each row execute function paycore.tg__set_updated_at();
create trigger settlement_runs_set_updated_at
before update on paycore.settlement_runs
for each row execute function paycore.tg__set_updated_at();

create function paycore.tg_fee_events__append_only()
returns trigger
language plpgsql
as $$
begin
    -- The one change a fee event takes: its settlement, set once by settle_fees, to an open
    -- settlement of its beneficiary and currency.
    if tg_op = 'UPDATE' and old.settlement_id is null and new.settlement_id is not null
        and to_jsonb(new) - 'settlement_id' = to_jsonb(old) - 'settlement_id'
        and exists (
            select 1 from public.settlements as s
            where s.id = new.settlement_id and s.status = 'open'
              and s.beneficiary_id is not distinct from new.beneficiary_id and s.currency = new.currency
        ) then
        return new;
    end if;
    raise exception '% on public.fee_events refused: fee events are append-only (a reversal is a new, negative one)', tg_op
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg_fee_events__append_only() is
'Refuses UPDATE, DELETE and TRUNCATE of fee_events, except setting a null settlement_id once, '
'to an open settlement of the event''s beneficiary and currency.';

create trigger fee_events_append_only
before update or delete on public.fee_events
for each row execute function paycore.tg_fee_events__append_only();
create trigger fee_events_no_truncate
before truncate on public.fee_events
for each statement execute function paycore.tg_fee_events__append_only();

create function paycore.tg_settlements__guard()
returns trigger
language plpgsql
as $$
begin
    -- An open settlement may grow (a rerun of its period adds fee events committed late) and
    -- move on; an invoiced one only move on; a paid one never changes. Nothing leaves.
    if tg_op = 'UPDATE' and old.status <> 'paid'
        and (new.id, new.beneficiary_id, new.period_from, new.period_to, new.currency, new.created_at)
        is not distinct from (old.id, old.beneficiary_id, old.period_from, old.period_to, old.currency, old.created_at)
        and (old.status = 'open'
            or (new.total_cents, new.fee_event_count) = (old.total_cents, old.fee_event_count))
        and (new.status = old.status
            or (old.status, new.status) in (('open', 'invoiced'), ('invoiced', 'paid'))) then
        return new;
    end if;
    raise exception '% on public.settlements refused: a settlement only moves open -> invoiced -> paid, and is never edited once paid', tg_op
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg_settlements__guard() is
'Refuses DELETE and TRUNCATE of settlements, any update of a paid one, a change of its '
'beneficiary, currency or period, a total changed after open, and any status move but '
'open -> invoiced -> paid.';

create trigger settlements_guard
before update or delete on public.settlements
for each row execute function paycore.tg_settlements__guard();
create trigger settlements_no_truncate
before truncate on public.settlements
for each statement execute function paycore.tg_settlements__guard();

create function paycore.tg_voucher_bookings__release()
returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A booked slot deleted with its holder's account (the only delete: nothing else
    -- deletes bookings): the voucher is bookable again and the booking's fees are reversed,
    -- as by a cancellation. A consumed voucher keeps its fees; a voucher deleted with its
    -- issuer leaves its fee events as they are. SECURITY DEFINER: the delete cascades from
    -- auth.users, run by Supabase Auth's own role, which may not write paycore's tables.
    if old.status = 'booked' then
        update public.vouchers as v set status = 'issued'
        where v.id = old.voucher_id and v.status = 'booked';
        if found then
            perform paycore.reverse_fees('voucher_booking', old.id);
        end if;
    end if;
    return old;
end;
$$;
comment on function paycore.tg_voucher_bookings__release() is
'After a booked slot is deleted (with its holder''s auth user), sets its voucher back to '
'issued and reverses the booking''s fee events, unless the voucher is consumed or gone.';

create trigger voucher_bookings_release
after delete on public.voucher_bookings
for each row execute function paycore.tg_voucher_bookings__release();

create function paycore.ensure_thinker(p_user_id uuid)
returns void
language plpgsql volatile
as $$
begin
    if not exists (select 1 from public.thinkers as t where t.id = p_user_id) then
        -- Parallel first calls of one user: the first insert wins, the others do nothing,
        -- whichever unique key (id, public_id) they meet.
        insert into public.thinkers (id) values (p_user_id)
        on conflict do nothing;
    end if;
end;
$$;
comment on function paycore.ensure_thinker(uuid) is
'Creates the thinker row of an auth user unless it exists; safe under parallel first calls. '
'Internal.';

create function paycore.marketplace_user()
returns uuid
language plpgsql stable
as $$
begin
    if paycore.caller_role() <> 'authenticated' then
        raise exception 'marketplace functions act as the signed-in user: call them with a user''s JWT (role %)',
            paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    return paycore.resolve_user_id(null);
end;
$$;
comment on function paycore.marketplace_user() is
'The signed-in caller of a marketplace function (auth.uid()); PT403 for every role but '
'authenticated. Internal: the read-only part of marketplace_caller.';

create function paycore.marketplace_caller()
returns uuid
language plpgsql volatile
as $$
declare
    v_uid uuid := paycore.marketplace_user();
begin
    perform paycore.ensure_thinker(v_uid);
    return v_uid;
end;
$$;
comment on function paycore.marketplace_caller() is
'The signed-in caller of a marketplace function (marketplace_user), its thinker row created on '
'its first call. Internal.';

create function paycore.new_marketplace_id(p_prefix text)
returns text
language sql volatile
as $$
    -- <prefix>-<milliseconds since 1970, 13 digits>-<12 random hex digits> (48 random bits
    -- of a version 4 uuid).
    select p_prefix || '-'
        || lpad(floor(extract(epoch from paycore.clock()) * 1000)::bigint::text, 13, '0') || '-'
        || left(replace(gen_random_uuid()::text, '-', ''), 12)
$$;
comment on function paycore.new_marketplace_id(text) is
'A new id in the seed''s format: <prefix>-<milliseconds of paycore.clock()>-<12 random hex '
'digits> (v-..., b-...). Internal.';

create function paycore.currency(p_name text, p_value text)
returns text
language plpgsql immutable
as $$
declare
    v_currency text := lower(btrim(p_value));
begin
    if v_currency is null or v_currency !~ '^[a-z]{3}$' then
        raise exception '% must be a 3-letter ISO 4217 code', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return v_currency;
end;
$$;
comment on function paycore.currency(text, text) is
'p_value as a currency code, trimmed and lowercased (EUR -> eur); PT400 invalid_argument '
'unless it is three letters. Internal: the one currency rule of the marketplace.';

create function paycore.round_half_even(p_value numeric)
returns bigint
language sql immutable
as $$
    -- Banker's rounding: a tie goes to the even neighbour (2.5 -> 2, 3.5 -> 4, -2.5 -> -2).
    select (case
        when p_value - floor(p_value) > 0.5 then floor(p_value) + 1
        when p_value - floor(p_value) < 0.5 then floor(p_value)
        when mod(floor(p_value), 2) = 0 then floor(p_value)
        else floor(p_value) + 1
    end)::bigint
$$;
comment on function paycore.round_half_even(numeric) is
'p_value rounded to a whole number, ties to the even neighbour (2.5 -> 2, 3.5 -> 4). Internal.';

create function paycore.fee_amount(p_base bigint, p_percentage numeric, p_fixed_amount bigint)
returns bigint
language sql immutable
as $$
    select paycore.round_half_even(p_base * p_percentage) + p_fixed_amount
$$;
comment on function paycore.fee_amount(bigint, numeric, bigint) is
'The fee of a rule on p_base cents: round-half-even(p_base x p_percentage) + p_fixed_amount. '
'Internal: the one fee formula.';

create function paycore.charge_fees(
    p_scope text, p_subject_type text, p_subject_id text, p_base bigint, p_currency text
)
returns integer
language plpgsql volatile
as $$
declare
    v_count integer;
begin
    -- Every active rule of the scope in the subject's currency (or any), each with the
    -- snapshot of the rule it used; a fee of 0 leaves no event.
    insert into public.fee_events (
        fee_id, subject_type, subject_id, base_amount, amount_cents, currency, fee_rule,
        beneficiary_id, created_at
    )
    select
        f.id, p_subject_type, p_subject_id, p_base, a.amount, p_currency,
        jsonb_build_object(
            'id', f.id, 'scope', f.scope, 'percentage', f.percentage, 'fixed_amount', f.fixed_amount,
            'currency', f.currency, 'beneficiary_id', f.beneficiary_id
        ),
        f.beneficiary_id, paycore.clock()
    from public.fees as f
    cross join lateral (select paycore.fee_amount(p_base, f.percentage, f.fixed_amount) as amount) as a
    where f.active and f.scope = p_scope and (f.currency is null or f.currency = p_currency)
      and a.amount <> 0;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;
comment on function paycore.charge_fees(text, text, text, bigint, text) is
'Writes the fee events the active fees rules of p_scope charge on p_base cents of p_currency '
'for one subject, and returns how many. Internal: every priced write calls it in its own '
'transaction.';

create function paycore.reverse_fees(p_subject_type text, p_subject_id text)
returns integer
language plpgsql volatile
as $$
declare
    v_count integer;
begin
    -- A negative copy of each fee event of the subject, once (fee_events_reverses_id_key):
    -- the originals stay as they are, settled or not.
    insert into public.fee_events (
        fee_id, subject_type, subject_id, base_amount, amount_cents, currency, fee_rule,
        beneficiary_id, reverses_id, created_at
    )
    select
        e.fee_id, e.subject_type, e.subject_id, -e.base_amount, -e.amount_cents, e.currency, e.fee_rule,
        e.beneficiary_id, e.id, paycore.clock()
    from public.fee_events as e
    where e.subject_type = p_subject_type and e.subject_id = p_subject_id and e.reverses_id is null
    on conflict (reverses_id) do nothing;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;
comment on function paycore.reverse_fees(text, text) is
'Reverses the fee events of one subject with negative fee events (at most one reversal per '
'event) and returns how many it wrote. Internal.';

create function public.issue_voucher(
    p_service_type text,
    p_title text,
    p_duration_minutes integer,
    p_valid_from timestamptz,
    p_valid_until timestamptz,
    p_price_amount bigint default null,
    p_price_currency text default null,
    p_template_id text default null,
    p_description text default null,
    p_transferable boolean default false,
    p_terms jsonb default '{}'
)
returns public.vouchers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_template public.voucher_templates;
    v_service_type text;
    v_title text;
    v_description text;
    v_duration integer;
    v_currency text;
    v_terms jsonb;
    v_voucher public.vouchers;
begin
    if p_template_id is not null then
        select t.* into v_template from public.voucher_templates as t where t.id = p_template_id;
        if not found then
            raise exception 'voucher template % does not exist', p_template_id
            using errcode = 'PT404', hint = 'not_found';
        end if;
    end if;
    -- A template fills what the caller leaves null.
    v_service_type := coalesce(p_service_type, v_template.service_type);
    v_title := coalesce(p_title, v_template.title);
    v_description := coalesce(p_description, v_template.description);
    v_duration := coalesce(p_duration_minutes, v_template.default_duration);

    if v_service_type is null or v_service_type !~ '^[a-z0-9][a-z0-9_.-]*$' or length(v_service_type) > 100 then
        raise exception 'p_service_type must be a slug: lowercase letters, digits, _ . -, up to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_title', v_title, 200, true);
    perform paycore.check_text('p_description', v_description, 2000, false);
    if v_duration is null or v_duration not between 1 and 1440 then
        raise exception 'p_duration_minutes must be 1 to 1440'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_valid_from is null or p_valid_until is null then
        raise exception 'p_valid_from and p_valid_until are required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if not (isfinite(p_valid_from) and isfinite(p_valid_until))
        or p_valid_until > paycore.clock() + interval '100 years' then
        raise exception 'the validity must end within 100 years (finite times)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_valid_until < p_valid_from + make_interval(mins => v_duration) then
        raise exception 'the validity % to % does not hold one slot of % minutes', p_valid_from, p_valid_until, v_duration
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_valid_until <= paycore.clock() then
        raise exception 'p_valid_until must be in the future'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if (p_price_amount is null) <> (p_price_currency is null) then
        raise exception 'p_price_amount and p_price_currency go together: both or neither'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_price_amount < 0 or p_price_amount > 1000000000000000 then
        raise exception 'p_price_amount must be 0 to 10^15 minor units'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_price_currency is not null then
        v_currency := paycore.currency('p_price_currency', p_price_currency);
    end if;
    perform paycore.check_json_object('p_terms', coalesce(p_terms, '{}'), 8192);
    v_terms := coalesce(v_template.default_terms, '{}') || coalesce(p_terms, '{}');
    perform paycore.check_json_object('p_terms', v_terms, 8192);

    insert into public.vouchers (
        id, issuer_id, template_id, service_type, title, description, duration_minutes,
        valid_from, valid_until, price_amount, price_currency, transferable, terms
    )
    values (
        paycore.new_marketplace_id('v'), v_uid, p_template_id, v_service_type, v_title, v_description,
        v_duration, p_valid_from, p_valid_until, p_price_amount, v_currency,
        coalesce(p_transferable, false), v_terms
    )
    returning * into v_voucher;
    perform paycore.log_event(
        'voucher.issued', v_uid, 'voucher', v_voucher.id, null,
        jsonb_build_object(
            'template_id', p_template_id, 'service_type', v_service_type,
            'price_amount', p_price_amount, 'price_currency', v_currency
        )
    );
    return v_voucher;
end;
$$;
comment on function public.issue_voucher(
    text, text, integer, timestamptz, timestamptz, bigint, text, text, text, boolean, jsonb
) is
'Issues a voucher of the signed-in caller (the issuer) and returns it. A template '
'(p_template_id) fills what is null: service type, title, description, duration; its '
'default terms lie under p_terms. The validity must hold one slot and end in the future; a '
'price is both amount (>= 0 cents) and currency (any case, stored lowercase) or neither. '
'authenticated only.';

create function public.book_voucher(p_voucher_id text, p_slot_start timestamptz)
returns public.voucher_bookings
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_now timestamptz := paycore.clock();
    v_voucher public.vouchers;
    v_booking public.voucher_bookings;
    v_slot_end timestamptz;
    v_fees integer := 0;
begin
    if p_slot_start is null or not isfinite(p_slot_start) then
        raise exception 'p_slot_start is required (a finite time)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- The voucher's row lock serialises everything done to one voucher (book, cancel,
    -- consume, transfer); the exclusion constraint serialises one issuer's calendar.
    select v.* into v_voucher from public.vouchers as v where v.id = p_voucher_id for update;
    -- A held voucher is its holder's (and issuer's): to anyone else it does not exist.
    if not found or (v_voucher.holder_id is not null and v_uid not in (v_voucher.holder_id, v_voucher.issuer_id)) then
        raise exception 'voucher % does not exist', p_voucher_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_voucher.issuer_id = v_uid then
        raise exception 'the issuer cannot book its own voucher'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    -- The end only of a slot that may lie in the validity (no overflow from a far start).
    v_slot_end := least(p_slot_start, v_voucher.valid_until) + make_interval(mins => v_voucher.duration_minutes);
    if v_voucher.status = 'booked' then
        -- A retry: the holder booking its booked slot again gets that booking, nothing more.
        select b.* into v_booking from public.voucher_bookings as b
        where b.voucher_id = v_voucher.id and b.status = 'booked';
        if v_booking.holder_id = v_uid and v_booking.slot_start = p_slot_start then
            return v_booking;
        end if;
        raise exception 'voucher % is booked already: cancel that booking first', p_voucher_id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if v_voucher.status <> 'issued' then
        raise exception 'voucher % is %, not bookable', p_voucher_id, v_voucher.status
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if v_voucher.valid_until <= v_now then
        raise exception 'voucher % expired at %', p_voucher_id, v_voucher.valid_until
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if p_slot_start < v_now then
        raise exception 'the slot must not start in the past'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_slot_start < v_voucher.valid_from or v_slot_end > v_voucher.valid_until then
        raise exception 'the slot % to % is outside the voucher''s validity % to %',
            p_slot_start, v_slot_end, v_voucher.valid_from, v_voucher.valid_until
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    -- One booking at a time per issuer (its thinker row's lock, taken after the voucher's):
    -- concurrent inserts under an exclusion constraint can deadlock when both wait for a
    -- third transaction that holds an overlapping slot.
    perform 1 from public.thinkers as t where t.id = v_voucher.issuer_id for no key update;
    begin
        insert into public.voucher_bookings (id, voucher_id, issuer_id, holder_id, slot_start, slot_end)
        values (
            paycore.new_marketplace_id('b'), v_voucher.id, v_voucher.issuer_id, v_uid, p_slot_start, v_slot_end
        )
        returning * into v_booking;
    exception when exclusion_violation then
        raise exception 'the issuer has a booking that overlaps % to %', p_slot_start, v_slot_end
        using errcode = 'PT409', hint = 'slot_taken';
    end;
    update public.vouchers as v set status = 'booked', holder_id = v_uid where v.id = v_voucher.id;
    if v_voucher.price_amount is not null then
        v_fees := paycore.charge_fees(
            'voucher', 'voucher_booking', v_booking.id, v_voucher.price_amount, v_voucher.price_currency
        );
    end if;
    perform paycore.log_event(
        'voucher.booked', v_uid, 'voucher_booking', v_booking.id, null,
        jsonb_build_object(
            'voucher_id', v_voucher.id, 'slot_start', p_slot_start, 'slot_end', v_slot_end, 'fee_events', v_fees
        )
    );
    return v_booking;
end;
$$;
comment on function public.book_voucher(text, timestamptz) is
'Books the slot p_slot_start .. + duration of a voucher for the signed-in caller, who becomes '
'(or already is) its holder, and returns the booking, with the fee events of scope voucher on '
'its price. The slot lies inside the validity and not in the past (else PT400); a slot that '
'overlaps another booked slot of the issuer is PT409 slot_taken; a voucher expired, booked, '
'consumed or cancelled is PT409 invalid_state; the same holder booking its booked slot again '
'gets that booking back. A voucher held by someone else is PT404; the issuer''s own PT403. '
'authenticated only.';

create function public.cancel_booking(p_booking_id text, p_reason text default null)
returns public.voucher_bookings
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_booking public.voucher_bookings;
    v_voucher public.vouchers;
    v_reversed integer;
begin
    perform paycore.check_text('p_reason', p_reason, 500, false);
    select b.* into v_booking from public.voucher_bookings as b
    where b.id = p_booking_id and v_uid in (b.issuer_id, b.holder_id);
    if not found then
        raise exception 'booking % does not exist', p_booking_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    -- Locks in book_voucher's order: the voucher, then (by the update) the booking.
    select v.* into v_voucher from public.vouchers as v where v.id = v_booking.voucher_id for update;
    select b.* into v_booking from public.voucher_bookings as b where b.id = p_booking_id;
    -- Under the lock again: a transfer committed meanwhile may have moved the booking on.
    if v_uid not in (v_booking.issuer_id, v_booking.holder_id) then
        raise exception 'booking % does not exist', p_booking_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_booking.status = 'cancelled' then
        raise exception 'booking % is cancelled already', p_booking_id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if v_voucher.status = 'consumed' then
        raise exception 'voucher % is consumed: its booking cannot be cancelled', v_voucher.id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;

    update public.voucher_bookings as b
    set status = 'cancelled', cancel_reason = p_reason, cancelled_by = v_uid, cancelled_at = paycore.clock()
    where b.id = p_booking_id
    returning * into v_booking;
    update public.vouchers as v set status = 'issued' where v.id = v_voucher.id;
    v_reversed := paycore.reverse_fees('voucher_booking', p_booking_id);
    perform paycore.log_event(
        'voucher.booking_cancelled', v_uid, 'voucher_booking', p_booking_id, null,
        jsonb_build_object(
            'voucher_id', v_voucher.id,
            'by', case when v_uid = v_booking.issuer_id then 'issuer' else 'holder' end,
            'fee_reversals', v_reversed
        )
    );
    return v_booking;
end;
$$;
comment on function public.cancel_booking(text, text) is
'Cancels a booking (its issuer or its holder; p_reason up to 500 characters) and returns it: '
'the slot is free again, the voucher bookable again by its holder, and each fee event of the '
'booking is reversed by a negative one. Cancelled already, or its voucher consumed: PT409 '
'invalid_state. Someone else''s booking PT404. authenticated only.';

create function public.consume_voucher(p_voucher_id text)
returns public.vouchers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_voucher public.vouchers;
begin
    select v.* into v_voucher from public.vouchers as v
    where v.id = p_voucher_id and v_uid in (v.issuer_id, v.holder_id)
    for update;
    if not found then
        raise exception 'voucher % does not exist', p_voucher_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_voucher.issuer_id <> v_uid then
        raise exception 'only the issuer consumes a voucher'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if v_voucher.status <> 'booked' then
        raise exception 'voucher % is %: only a booked voucher is consumed', p_voucher_id, v_voucher.status
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    update public.vouchers as v set status = 'consumed', consumed_at = paycore.clock()
    where v.id = p_voucher_id
    returning * into v_voucher;
    perform paycore.log_event(
        'voucher.consumed', v_uid, 'voucher', p_voucher_id, null,
        jsonb_build_object('booking_id', (
            select b.id from public.voucher_bookings as b where b.voucher_id = p_voucher_id and b.status = 'booked'
        ))
    );
    return v_voucher;
end;
$$;
comment on function public.consume_voucher(text) is
'Marks a booked voucher consumed (the service was given) and returns it: its issuer only '
'(the holder PT403, anyone else PT404); not booked (consumed already too) PT409 invalid_state. '
'authenticated only.';

create function public.transfer_voucher(p_voucher_id text, p_new_holder uuid)
returns public.vouchers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_voucher public.vouchers;
begin
    if p_new_holder is null then
        raise exception 'p_new_holder is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select v.* into v_voucher from public.vouchers as v
    where v.id = p_voucher_id and v_uid in (v.issuer_id, v.holder_id)
    for update;
    if not found then
        raise exception 'voucher % does not exist', p_voucher_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_voucher.holder_id is distinct from v_uid then
        raise exception 'only the holder transfers a voucher'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if not v_voucher.transferable then
        raise exception 'voucher % is not transferable', p_voucher_id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if v_voucher.status not in ('issued', 'booked') or v_voucher.valid_until <= paycore.clock() then
        raise exception 'voucher % is %: only an issued or booked voucher before its expiry is transferred',
            p_voucher_id, case when v_voucher.status in ('issued', 'booked') then 'expired' else v_voucher.status end
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    if p_new_holder in (v_uid, v_voucher.issuer_id) then
        raise exception 'p_new_holder must be someone else than the holder and the issuer'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if not exists (select 1 from auth.users as u where u.id = p_new_holder and u.deleted_at is null) then
        raise exception 'user % does not exist', p_new_holder
        using errcode = 'PT404', hint = 'not_found';
    end if;
    perform paycore.ensure_thinker(p_new_holder);

    update public.vouchers as v set holder_id = p_new_holder where v.id = p_voucher_id
    returning * into v_voucher;
    -- A booked slot goes with the voucher. The new row version is checked against the
    -- issuer's calendar again: under the issuer's lock, as in book_voucher.
    perform 1 from public.thinkers as t where t.id = v_voucher.issuer_id for no key update;
    update public.voucher_bookings as b set holder_id = p_new_holder
    where b.voucher_id = p_voucher_id and b.status = 'booked';
    perform paycore.log_event(
        'voucher.transferred', v_uid, 'voucher', p_voucher_id, null,
        jsonb_build_object('to', (select t.public_id from public.thinkers as t where t.id = p_new_holder))
    );
    return v_voucher;
end;
$$;
comment on function public.transfer_voucher(text, uuid) is
'Passes a transferable voucher (issued or booked, not expired) from the signed-in holder to '
'p_new_holder, with its booked slot, and returns it. Not the holder: PT403 (PT404 for a '
'stranger); not transferable or not in that state: PT409 invalid_state; to oneself or the '
'issuer PT400; an unknown user PT404. authenticated only.';

create function paycore.settle_fees(p_period_from date, p_period_to date)
returns setof public.settlements
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_end timestamptz;
    v_settled integer;
begin
    if p_period_from is null or p_period_to is null or p_period_from > p_period_to then
        raise exception 'the period must be two dates, p_period_from <= p_period_to'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_period_to >= (paycore.clock() at time zone 'UTC')::date then
        raise exception 'the period % to % is not over (today is % UTC)',
            p_period_from, p_period_to, (paycore.clock() at time zone 'UTC')::date
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- One run at a time: a second run waits here, then finds the fee events settled.
    perform pg_catalog.pg_advisory_xact_lock(7205431789024518601);
    insert into paycore.settlement_runs (period_from, period_to)
    values (p_period_from, p_period_to)
    on conflict do nothing;
    if not found then
        update paycore.settlement_runs as r set runs = r.runs + 1
        where r.period_from = p_period_from and r.period_to = p_period_to;
        if not found then
            raise exception 'the period % to % overlaps a period settled before', p_period_from, p_period_to
            using errcode = 'PT409', hint = 'invalid_state';
        end if;
    end if;

    -- One statement, one snapshot: the fee events picked are exactly those summed and
    -- marked. Every unsettled event up to the period's end: one committed late (after an
    -- earlier run of its period) is settled now. A settlement already invoiced or paid
    -- takes nothing more: its late events wait for the next period.
    v_end := (p_period_to + 1)::timestamp at time zone 'UTC';
    with picked as (
        select e.id, e.beneficiary_id, e.currency, e.amount_cents
        from public.fee_events as e
        where e.settlement_id is null and e.created_at < v_end
        -- Not for update: a reversal's foreign key check (key share) on its original must
        -- not wait for the run, nor the run for open cancellations.
        for no key update
    ),
    sums as (
        select
            p.beneficiary_id, p.currency,
            sum(p.amount_cents) as total_cents, count(*)::integer as fee_event_count
        from picked as p
        group by p.beneficiary_id, p.currency
    ),
    upserted as (
        insert into public.settlements as s (
            beneficiary_id, period_from, period_to, total_cents, currency, fee_event_count
        )
        select u.beneficiary_id, p_period_from, p_period_to, u.total_cents::bigint, u.currency, u.fee_event_count
        from sums as u
        -- A group whose sum would not fit (bounded amounts make that unreachable) waits
        -- rather than stop every other group's settlement.
        where abs(u.total_cents) < 1000000000000000000
        on conflict (beneficiary_id, currency, period_from, period_to) do update
        set
            total_cents = s.total_cents + excluded.total_cents,
            fee_event_count = s.fee_event_count + excluded.fee_event_count
        where s.status = 'open'
        returning s.id, s.beneficiary_id, s.currency
    )
    update public.fee_events as f
    set settlement_id = u.id
    from picked as p
    join upserted as u on u.beneficiary_id is not distinct from p.beneficiary_id and u.currency = p.currency
    where f.id = p.id;
    get diagnostics v_settled = row_count;

    perform paycore.log_event(
        'settlement.run', null, 'settlement_period',
        to_char(p_period_from, 'YYYY-MM-DD') || '..' || to_char(p_period_to, 'YYYY-MM-DD'), null,
        jsonb_build_object('fee_events_settled', v_settled)
    );
    return query
    select s.* from public.settlements as s
    where s.period_from = p_period_from and s.period_to = p_period_to
    order by s.beneficiary_id nulls first, s.currency;
end;
$$;
comment on function paycore.settle_fees(date, date) is
'Rolls the unsettled fee events up to the end of a period that is over (UTC days, both '
'included) into one settlement per beneficiary and currency, sets their settlement_id, and '
'returns the period''s settlements. Runs one at a time; a rerun of the period adds only fee '
'events committed since (to a settlement still open) and otherwise changes nothing; a '
'period overlapping another one settled before is PT409 invalid_state. The owner only (a '
'job: pg_cron or a DBA).';

create function public.mark_settlement(p_settlement_id uuid, p_status text)
returns public.settlements
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_settlement public.settlements;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not mark settlements', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_status is null or p_status not in ('invoiced', 'paid') then
        raise exception 'p_status must be invoiced or paid'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select s.* into v_settlement from public.settlements as s where s.id = p_settlement_id for update;
    if not found then
        raise exception 'settlement % does not exist', p_settlement_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_settlement.status = p_status then
        -- A retry changes nothing.
        return v_settlement;
    end if;
    if (v_settlement.status, p_status) not in (('open', 'invoiced'), ('invoiced', 'paid')) then
        raise exception 'settlement % is %: it becomes % only from %', p_settlement_id, v_settlement.status,
            p_status, case p_status when 'invoiced' then 'open' else 'invoiced' end
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    update public.settlements as s
    set
        status = p_status,
        invoiced_at = coalesce(s.invoiced_at, paycore.clock()),
        paid_at = case when p_status = 'paid' then paycore.clock() end
    where s.id = p_settlement_id
    returning * into v_settlement;
    perform paycore.log_event(
        'settlement.' || p_status, null, 'settlement', p_settlement_id::text, null,
        jsonb_build_object('total_cents', v_settlement.total_cents, 'currency', v_settlement.currency)
    );
    return v_settlement;
end;
$$;
comment on function public.mark_settlement(uuid, text) is
'Moves a settlement open -> invoiced -> paid and returns it; the status it already has '
'changes nothing (a retry); any other move PT409 invalid_state. service_role only.';
