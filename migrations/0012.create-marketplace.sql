-- depends: 0011.protect-profile-service-metadata
-- create-marketplace: schema/60_marketplace.sql, functions/60_marketplace.sql, policies/60_marketplace.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- marketplace money: thinkers (the marketplace's users), voucher templates, vouchers and
-- their bookings, fee rules, the fee events every priced write leaves, and the settlements
-- that roll fee events up per beneficiary, currency and period.

-- The exclusion constraint of bookings compares issuer ids (uuid) with = in a GiST index:
-- btree_gist provides that operator class. Supabase keeps extensions in schema extensions;
-- on plain PostgreSQL both are created here, marked 'paycore: compat' for the rollback.
do $$
begin
    if to_regnamespace('extensions') is null then
        create schema extensions;
        comment on schema extensions is 'paycore: compat';
        grant usage on schema extensions to anon, authenticated, service_role;
    end if;
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'btree_gist') then
        create extension btree_gist with schema extensions;
        comment on extension btree_gist is 'paycore: compat';
    end if;
end;
$$;

create table public.thinkers (
    id uuid not null,
    -- A stable id to show to others: derived from the user id by a one-way hash.
    public_id text not null generated always as (
        't-' || left(encode(sha256(id::text::bytea), 'hex'), 20)
    ) stored,
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    constraint thinkers_pkey primary key (id),
    constraint thinkers_public_id_key unique (public_id),
    constraint thinkers_id_fkey foreign key (id) references auth.users (id) on delete cascade,
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
comment on table public.thinkers is
'A user of the marketplace: id is the auth user, the row is created on the user''s first '
'marketplace call. Read by its user only.';
comment on column public.thinkers.id is 'The auth user (auth.users.id).';
comment on column public.thinkers.public_id is
't- and 20 hex digits of sha256(id): an id to show to other users that does not reveal the '
'auth user id.';
comment on column public.thinkers.meta is 'JSON object of optional profile information.';

create table public.voucher_templates (
    id text not null,
    service_type text not null,
    title text not null,
    description text,
    default_duration integer not null,
    default_terms jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint voucher_templates_pkey primary key (id),
    constraint id_is_a_slug check (id ~ '^[a-z0-9][a-z0-9_.-]*$' and length(id) <= 100),
    constraint service_type_is_a_slug check (service_type ~ '^[a-z0-9][a-z0-9_.-]*$' and length(service_type) <= 100),
    constraint title_is_not_blank check (btrim(title) <> '' and length(title) <= 200),
    constraint description_is_at_most_2000_characters check (length(description) <= 2000),
    constraint default_duration_is_1_to_1440_minutes check (default_duration between 1 and 1440),
    constraint default_terms_is_an_object check (jsonb_typeof(default_terms) = 'object')
);
comment on table public.voucher_templates is
'Templates of the trades (consulting, therapy, realestate.viewing, ...): issue_voucher fills '
'what its caller leaves null from one. Read by signed-in users; written by the owner.';
comment on column public.voucher_templates.id is 'Template id (a slug), issue_voucher''s p_template_id.';
comment on column public.voucher_templates.service_type is 'The service type a voucher of this template gets.';
comment on column public.voucher_templates.title is 'The default title.';
comment on column public.voucher_templates.description is 'The default description.';
comment on column public.voucher_templates.default_duration is 'The default duration in minutes (1 to 1440).';
comment on column public.voucher_templates.default_terms is
'The default terms (JSON object); a voucher''s own terms are merged over them.';

insert into public.voucher_templates (id, service_type, title, description, default_duration, default_terms)
values
(
    'consulting', 'consulting.session', 'Consulting session', 'One consulting session.', 60,
    '{"cancellation": "free until 24 hours before the slot"}'
),
(
    'coaching', 'coaching.session', 'Coaching session', 'One coaching session.', 60,
    '{"cancellation": "free until 24 hours before the slot"}'
),
(
    'therapy', 'therapy.session', 'Therapy session', 'One therapy session.', 50,
    '{"cancellation": "free until 48 hours before the slot"}'
),
(
    'realestate.viewing', 'realestate.viewing', 'Property viewing', 'A viewing of a property.', 30,
    '{"cancellation": "free until 2 hours before the slot"}'
),
(
    'legal.consultation', 'legal.consultation', 'Legal consultation', 'One legal consultation.', 45,
    '{"cancellation": "free until 24 hours before the slot"}'
),
(
    'mortgage.consultation', 'mortgage.consultation', 'Mortgage consultation',
    'A consultation about a mortgage.', 60, '{"cancellation": "free until 24 hours before the slot"}'
);

create table public.vouchers (
    id text not null,
    issuer_id uuid not null,
    holder_id uuid,
    template_id text,
    service_type text not null,
    title text not null,
    description text,
    duration_minutes integer not null,
    valid_from timestamptz not null,
    valid_until timestamptz not null,
    price_amount bigint,
    price_currency text,
    status text not null default 'issued',
    transferable boolean not null default false,
    terms jsonb not null default '{}',
    consumed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint vouchers_pkey primary key (id),
    constraint vouchers_issuer_id_fkey foreign key (issuer_id) references public.thinkers (id) on delete cascade,
    constraint vouchers_holder_id_fkey foreign key (holder_id) references public.thinkers (id) on delete set null,
    constraint vouchers_template_id_fkey foreign key (template_id) references public.voucher_templates (id),
    constraint id_is_a_voucher_id check (id ~ '^v-[0-9]{13}-[0-9a-f]{12}$'),
    constraint holder_is_not_the_issuer check (holder_id <> issuer_id),
    constraint service_type_is_a_slug check (service_type ~ '^[a-z0-9][a-z0-9_.-]*$' and length(service_type) <= 100),
    constraint title_is_not_blank check (btrim(title) <> '' and length(title) <= 200),
    constraint description_is_at_most_2000_characters check (length(description) <= 2000),
    constraint duration_is_1_to_1440_minutes check (duration_minutes between 1 and 1440),
    constraint validity_holds_one_slot check (
        valid_until >= valid_from + make_interval(mins => duration_minutes)
    ),
    constraint price_has_amount_and_currency check ((price_amount is null) = (price_currency is null)),
    constraint price_is_0_to_10e15 check (price_amount between 0 and 1000000000000000),
    constraint price_currency_is_iso_lowercase check (price_currency ~ '^[a-z]{3}$'),
    constraint status_is_known check (status in ('issued', 'booked', 'consumed', 'cancelled', 'expired')),
    constraint consumed_at_iff_consumed check ((status = 'consumed') = (consumed_at is not null)),
    constraint terms_is_an_object check (jsonb_typeof(terms) = 'object')
)
-- Room on each page for the new version a booking writes (a HOT update when the holder
-- does not change).
with (fillfactor = 90);
create index vouchers_issuer_id_idx on public.vouchers (issuer_id);
create index vouchers_holder_id_idx on public.vouchers (holder_id);
-- The dashboard of utilisation per template (70_marketplace_ops). No index on template_id
-- alone (it would only serve deleting one of the few templates) and status in no index: a
-- booking's update of a voucher then writes fewer index entries.
create index vouchers_created_at_idx on public.vouchers (created_at) include (template_id);
comment on table public.vouchers is
'A voucher for one slot of a service, issued by issuer_id (issue_voucher). The first user '
'to book it becomes its holder. Read by its issuer and its holder. A voucher whose '
'valid_until has passed is expired whatever status says: it can no longer be booked.';
comment on column public.vouchers.id is 'v-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.vouchers.issuer_id is 'The thinker who offers the service.';
comment on column public.vouchers.holder_id is
'The thinker who holds the voucher: whoever booked it first, or received it by transfer_voucher.';
comment on column public.vouchers.template_id is 'The template it was issued from, if any.';
comment on column public.vouchers.service_type is 'What kind of service (a slug: consulting.session, ...).';
comment on column public.vouchers.title is 'Title, 1 to 200 characters.';
comment on column public.vouchers.description is 'Description, up to 2000 characters.';
comment on column public.vouchers.duration_minutes is 'The length of the slot in minutes (1 to 1440).';
comment on column public.vouchers.valid_from is 'The earliest start of a slot.';
comment on column public.vouchers.valid_until is 'The latest end of a slot; after it the voucher is expired.';
comment on column public.vouchers.price_amount is
'Price in minor units (cents) of price_currency, or null (free: no fee).';
comment on column public.vouchers.price_currency is 'ISO 4217 currency code, lowercase, with price_amount.';
comment on column public.vouchers.status is
'issued (bookable), booked, consumed (the service was given), cancelled or expired (kept for '
'the seed''s data; paycore computes expiry from valid_until instead).';
comment on column public.vouchers.transferable is 'Whether its holder may pass it on (transfer_voucher).';
comment on column public.vouchers.terms is
'The terms (JSON object, at most 8 kB): the template''s default terms with the issuer''s over them.';
comment on column public.vouchers.consumed_at is 'When consume_voucher marked it consumed.';

create table public.voucher_bookings (
    id text not null,
    voucher_id text not null,
    issuer_id uuid not null,
    holder_id uuid not null,
    slot_start timestamptz not null,
    slot_end timestamptz not null,
    status text not null default 'booked',
    cancel_reason text,
    cancelled_by uuid,
    cancelled_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint voucher_bookings_pkey primary key (id),
    constraint voucher_bookings_voucher_id_fkey foreign key (voucher_id)
    references public.vouchers (id) on delete cascade,
    constraint voucher_bookings_issuer_id_fkey foreign key (issuer_id)
    references public.thinkers (id) on delete cascade,
    constraint voucher_bookings_holder_id_fkey foreign key (holder_id)
    references public.thinkers (id) on delete cascade,
    constraint voucher_bookings_cancelled_by_fkey foreign key (cancelled_by)
    references public.thinkers (id) on delete set null,
    -- Two booked slots of one issuer never overlap, whatever function (or bug) writes them.
    constraint voucher_bookings_issuer_slot_excl exclude using gist (
        issuer_id with =, tstzrange(slot_start, slot_end) with &&
    ) where (status = 'booked'),
    constraint id_is_a_booking_id check (id ~ '^b-[0-9]{13}-[0-9a-f]{12}$'),
    constraint slot_ends_after_it_starts check (slot_end > slot_start),
    constraint status_is_known check (status in ('booked', 'cancelled')),
    constraint cancelled_at_iff_cancelled check ((status = 'cancelled') = (cancelled_at is not null)),
    constraint cancel_reason_is_at_most_500_characters check (length(cancel_reason) <= 500)
);
-- A voucher has at most one booked slot at a time.
create unique index voucher_bookings_voucher_id_booked_key on public.voucher_bookings (voucher_id)
where status = 'booked';
create index voucher_bookings_voucher_id_idx on public.voucher_bookings (voucher_id);
create index voucher_bookings_holder_id_idx on public.voucher_bookings (holder_id);
create index voucher_bookings_cancelled_by_idx on public.voucher_bookings (cancelled_by);
-- The dashboard of bookings per day (70_marketplace_ops).
create index voucher_bookings_created_at_idx on public.voucher_bookings (created_at) include (status);
-- The day of a booking, grouped by that dashboard: its number of distinct values lets the
-- planner hash the groups instead of sorting every row of the window.
create statistics public.voucher_bookings_created_day_stats (ndistinct)
on ((created_at at time zone 'UTC')::date), status from public.voucher_bookings;
comment on table public.voucher_bookings is
'The slots booked on vouchers (book_voucher) and their cancellations (cancel_booking). Booked '
'slots of one issuer never overlap (exclusion constraint); a cancelled slot is free again. '
'Read by the voucher''s issuer and holder.';
comment on column public.voucher_bookings.id is 'b-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.voucher_bookings.issuer_id is 'The voucher''s issuer (whose calendar the slot is in).';
comment on column public.voucher_bookings.holder_id is 'The voucher''s holder, who booked (or received) it.';
comment on column public.voucher_bookings.slot_start is 'Start of the slot.';
comment on column public.voucher_bookings.slot_end is 'End of the slot: slot_start plus the voucher''s duration.';
comment on column public.voucher_bookings.status is 'booked or cancelled.';
comment on column public.voucher_bookings.cancel_reason is 'Why it was cancelled, up to 500 characters.';
comment on column public.voucher_bookings.cancelled_by is 'Who cancelled it (the issuer or the holder).';
comment on column public.voucher_bookings.cancelled_at is 'When it was cancelled.';

create table public.fees (
    id text not null,
    scope text not null,
    percentage numeric(6, 4) not null default 0,
    fixed_amount bigint not null default 0,
    currency text,
    active boolean not null default true,
    beneficiary_id uuid,
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint fees_pkey primary key (id),
    constraint fees_beneficiary_id_fkey foreign key (beneficiary_id)
    references public.thinkers (id) on delete restrict,
    constraint id_is_a_slug check (id ~ '^[a-z0-9][a-z0-9_.-]*$' and length(id) <= 100),
    constraint scope_is_known check (scope in ('voucher', 'transfer', 'room', 'mortgage')),
    constraint percentage_is_0_to_1 check (percentage between 0 and 1),
    constraint fixed_amount_is_0_to_10e15 check (fixed_amount between 0 and 1000000000000000),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint fixed_amount_has_a_currency check (fixed_amount = 0 or currency is not null),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index fees_scope_idx on public.fees (scope) where active;
create index fees_beneficiary_id_idx on public.fees (beneficiary_id);
comment on table public.fees is
'Fee rules: every active rule of a scope charges each priced write of that scope '
'round-half-even(base x percentage) + fixed_amount cents, in the subject''s currency. A rule '
'with a currency applies only to subjects in that currency; one without, to any. Written by '
'the owner (SQL or a migration); read by service_role. Past fee events keep a snapshot of '
'the rule, so editing a rule changes no past fee.';
comment on column public.fees.id is 'Rule id (a slug): voucher.booking, transfer.logged, ...';
comment on column public.fees.scope is 'What the rule charges: voucher (bookings), transfer, room or mortgage.';
comment on column public.fees.percentage is 'A fraction of the base: 0.02 is 2 %.';
comment on column public.fees.fixed_amount is 'Cents added to every fee of the rule (needs a currency).';
comment on column public.fees.currency is 'The only currency the rule applies to, or null for any currency.';
comment on column public.fees.active is 'Whether the rule charges new writes.';
comment on column public.fees.beneficiary_id is
'The thinker who receives the fee, or null for the platform itself (the operator of the '
'deployment).';
comment on column public.fees.meta is 'JSON object of context.';

insert into public.fees (id, scope, percentage, fixed_amount, currency, active, meta)
values (
    'voucher.booking', 'voucher', 0.0200, 0, null, true,
    '{"description": "platform fee: 2 % of the voucher price"}'
);

create table public.settlements (
    id uuid not null default gen_random_uuid(),
    beneficiary_id uuid,
    period_from date not null,
    period_to date not null,
    total_cents bigint not null,
    currency text not null,
    fee_event_count integer not null,
    status text not null default 'open',
    invoiced_at timestamptz,
    paid_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint settlements_pkey primary key (id),
    constraint settlements_beneficiary_currency_period_key unique nulls not distinct (
        beneficiary_id, currency, period_from, period_to
    ),
    constraint settlements_beneficiary_id_fkey foreign key (beneficiary_id)
    references public.thinkers (id) on delete restrict,
    constraint period_is_ordered check (period_from <= period_to),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint fee_event_count_is_positive check (fee_event_count > 0),
    constraint status_is_known check (status in ('open', 'invoiced', 'paid')),
    constraint invoiced_at_iff_invoiced_or_paid check ((status in ('invoiced', 'paid')) = (invoiced_at is not null)),
    constraint paid_at_iff_paid check ((status = 'paid') = (paid_at is not null))
);
create index settlements_period_from_idx on public.settlements (period_from);
comment on table public.settlements is
'The fees of one beneficiary in one currency for one period, rolled up by paycore.settle_fees: '
'total_cents is the sum of the fee events whose settlement_id is this row (negative when '
'reversals outweigh new fees). open, then invoiced, then paid (mark_settlement); never edited '
'once paid. Read by the beneficiary; platform fees (beneficiary null) by service_role.';
comment on column public.settlements.beneficiary_id is 'Who receives the fees; null for the platform itself.';
comment on column public.settlements.period_from is 'First day of the period (UTC).';
comment on column public.settlements.period_to is 'Last day of the period (UTC), included.';
comment on column public.settlements.total_cents is 'Sum of its fee events in minor units of currency.';
comment on column public.settlements.currency is 'ISO 4217 currency code, lowercase.';
comment on column public.settlements.fee_event_count is 'How many fee events it settles.';
comment on column public.settlements.status is 'open, invoiced or paid.';
comment on column public.settlements.invoiced_at is 'When it was marked invoiced.';
comment on column public.settlements.paid_at is 'When it was marked paid.';

create table public.fee_events (
    id uuid not null default gen_random_uuid(),
    fee_id text not null,
    subject_type text not null,
    subject_id text not null,
    base_amount bigint not null,
    amount_cents bigint not null,
    currency text not null,
    fee_rule jsonb not null,
    beneficiary_id uuid,
    reverses_id uuid,
    settlement_id uuid,
    created_at timestamptz not null default now(),
    constraint fee_events_pkey primary key (id),
    constraint fee_events_reverses_id_key unique (reverses_id),
    constraint fee_events_fee_id_fkey foreign key (fee_id) references public.fees (id),
    constraint fee_events_beneficiary_id_fkey foreign key (beneficiary_id)
    references public.thinkers (id) on delete restrict,
    constraint fee_events_reverses_id_fkey foreign key (reverses_id) references public.fee_events (id),
    constraint fee_events_settlement_id_fkey foreign key (settlement_id) references public.settlements (id),
    constraint subject_type_is_known check (
        subject_type in ('voucher_booking', 'transfer', 'room', 'mortgage_contract')
    ),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint amount_is_not_zero check (amount_cents <> 0),
    constraint fee_rule_is_an_object check (jsonb_typeof(fee_rule) = 'object')
);
create index fee_events_subject_idx on public.fee_events (subject_type, subject_id);
-- Partial: platform fees (beneficiary null) and unsettled events (most, as they are written)
-- cost these indexes nothing.
create index fee_events_beneficiary_id_idx on public.fee_events (beneficiary_id) where beneficiary_id is not null;
create index fee_events_settlement_id_idx on public.fee_events (settlement_id) where settlement_id is not null;
-- What settle_fees scans: the unsettled events up to the end of a period.
create index fee_events_unsettled_created_at_idx on public.fee_events (created_at)
where settlement_id is null;
comment on table public.fee_events is
'One fee charged on one write (a booking, a transfer, ...), written in the same transaction as '
'that write; a reversal (reverses_id) is a negative copy, written once, when the write is '
'undone: the original is never edited. Append-only, except settlement_id, set once by '
'settle_fees. Read by the beneficiary.';
comment on column public.fee_events.fee_id is 'The rule (fees.id) that charged it.';
comment on column public.fee_events.subject_type is 'What was charged: voucher_booking, transfer, ...';
comment on column public.fee_events.subject_id is 'The id of what was charged (a booking id, ...).';
comment on column public.fee_events.base_amount is 'The amount the percentage was taken of, in cents.';
comment on column public.fee_events.amount_cents is
'The fee: round-half-even(base_amount x percentage) + fixed_amount; negative for a reversal.';
comment on column public.fee_events.currency is 'The subject''s currency (ISO 4217, lowercase).';
comment on column public.fee_events.fee_rule is
'Snapshot of the rule when the fee was charged: id, scope, percentage, fixed_amount, currency, '
'beneficiary_id.';
comment on column public.fee_events.beneficiary_id is 'Who receives the fee; null for the platform itself.';
comment on column public.fee_events.reverses_id is
'For a reversal, the fee event it reverses (at most one reversal each).';
comment on column public.fee_events.settlement_id is 'The settlement that rolled it up; null while unsettled.';
comment on column public.fee_events.created_at is
'When the fee was charged (paycore.clock() of the write): what settle_fees compares with a period.';

-- The periods settle_fees ran for: two runs of different but overlapping periods would
-- settle a fee for two periods' accounts; the same period again adds only what is new.
create table paycore.settlement_runs (
    period_from date not null,
    period_to date not null,
    runs integer not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint settlement_runs_pkey primary key (period_from, period_to),
    constraint settlement_runs_no_overlap_excl exclude using gist (
        daterange(period_from, period_to, '[]') with &&
    ),
    constraint period_is_ordered check (period_from <= period_to),
    constraint runs_is_positive check (runs > 0)
);
comment on table paycore.settlement_runs is
'One row per period settle_fees ran for, with how often: periods never overlap (exclusion '
'constraint), so each day belongs to one period.';

insert into paycore.reserved_event_namespaces (namespace, description)
values
('voucher', 'marketplace vouchers: issued, booked, cancelled, consumed, transferred'),
('settlement', 'marketplace settlements: created, invoiced, paid'),
('fee', 'marketplace fees'),
('thinker', 'marketplace thinkers');

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
