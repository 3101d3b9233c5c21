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
