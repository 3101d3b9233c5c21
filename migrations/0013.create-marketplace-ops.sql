-- depends: 0012.create-marketplace
-- create-marketplace-ops: schema/70_marketplace_ops.sql, functions/70_marketplace_ops.sql, policies/70_marketplace_ops.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- marketplace operations: presence sessions and the rooms of matched pairs, contracts (the
-- legal hub) and their links, the mortgage vertical (properties, applications, offers,
-- contracts), telbank transfers, and the dashboards of the seed as views for service_role.

create table public.rooms (
    id text not null,
    type text not null default 'mixed',
    owner_id uuid not null,
    partner_id uuid,
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    constraint rooms_pkey primary key (id),
    constraint rooms_owner_id_fkey foreign key (owner_id) references public.thinkers (id) on delete cascade,
    constraint rooms_partner_id_fkey foreign key (partner_id) references public.thinkers (id) on delete cascade,
    constraint id_is_a_room_id check (id ~ '^[a-z]+:[a-z0-9_.:+-]+$' and length(id) <= 250),
    constraint type_is_known check (type in ('text', 'video', 'file', 'contract', 'mixed')),
    constraint partner_is_not_the_owner check (partner_id <> owner_id),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index rooms_owner_id_idx on public.rooms (owner_id);
create index rooms_partner_id_idx on public.rooms (partner_id);
comment on table public.rooms is
'A room two parties share: presence_match creates (or reuses) one per matched pair and pair '
'code. Read by its parties (owner_id and partner_id).';
comment on column public.rooms.id is
'<source>:<...>, as in the seed (voucher:v-..., mortgage:offer:...): a pair''s room is '
'presence:<pair code>:<public id>+<public id>, the two public ids in order.';
comment on column public.rooms.type is 'text, video, file, contract or mixed.';
comment on column public.rooms.owner_id is 'A party: for a pair''s room the thinker with the smaller id.';
comment on column public.rooms.partner_id is 'The other party: for a pair''s room the thinker with the larger id.';
comment on column public.rooms.meta is 'JSON object of context, e.g. {"source": "presence", "pair_code": "..."}.';

create table public.presence_sessions (
    id uuid not null default gen_random_uuid(),
    thinker_id uuid not null,
    pair_code text not null,
    status text not null default 'online',
    room_id text,
    last_seen_at timestamptz not null,
    online_since timestamptz not null,
    beats integer not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint presence_sessions_pkey primary key (id),
    constraint presence_sessions_thinker_id_pair_code_key unique (thinker_id, pair_code),
    constraint presence_sessions_thinker_id_fkey foreign key (thinker_id)
    references public.thinkers (id) on delete cascade,
    constraint presence_sessions_room_id_fkey foreign key (room_id) references public.rooms (id) on delete set null,
    constraint pair_code_is_a_keyword check (pair_code ~ '^[a-z0-9][a-z0-9_.-]*$' and length(pair_code) <= 64),
    constraint status_is_known check (status in ('online', 'offline')),
    constraint beats_is_positive check (beats > 0)
);
create index presence_sessions_pair_code_last_seen_at_idx on public.presence_sessions (pair_code, last_seen_at);
create index presence_sessions_last_seen_at_idx on public.presence_sessions (last_seen_at)
include (pair_code, status, thinker_id);
create index presence_sessions_room_id_idx on public.presence_sessions (room_id);
comment on table public.presence_sessions is
'A thinker''s presence under one pair code (one row per thinker and pair code), kept by '
'presence_heartbeat. Online while status is online and last_seen_at is within a minute of '
'paycore.clock() (60 s still counts): a session is offline once more than a minute has passed '
'since its last heartbeat, with no job. Read by its thinker.';
comment on column public.presence_sessions.pair_code is
'The keyword two people share to find each other (projekt_alpha, familie, ...): 1 to 64 '
'characters, lowercase letters, digits, _ . -, stored lowercase.';
comment on column public.presence_sessions.status is
'What the thinker last declared: online (presence_heartbeat) or offline (presence_leave). The '
'effective status is online only while last_seen_at is also within a minute.';
comment on column public.presence_sessions.room_id is 'The room the thinker last said it is in.';
comment on column public.presence_sessions.last_seen_at is 'The last heartbeat (paycore.clock()).';
comment on column public.presence_sessions.online_since is 'When the current online stretch began.';
comment on column public.presence_sessions.beats is 'Heartbeats in the current online stretch (1 when it began).';

create table public.contracts (
    id uuid not null default gen_random_uuid(),
    name text not null,
    mime_type text not null,
    byte_size bigint not null,
    storage_url text not null,
    hash_sha256 text not null,
    created_by uuid not null,
    created_at timestamptz not null default now(),
    constraint contracts_pkey primary key (id),
    constraint contracts_created_by_hash_sha256_key unique (created_by, hash_sha256),
    constraint contracts_created_by_fkey foreign key (created_by) references public.thinkers (id) on delete cascade,
    constraint name_is_not_blank check (btrim(name) <> '' and length(name) <= 200),
    constraint mime_type_is_a_media_type check (mime_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$'),
    constraint byte_size_is_positive check (byte_size > 0),
    constraint storage_url_is_at_most_2048_characters check (length(storage_url) between 1 and 2048),
    constraint hash_sha256_is_lowercase_hex check (hash_sha256 ~ '^[0-9a-f]{64}$')
);
comment on table public.contracts is
'A contract document of the legal hub (the file itself lives in storage): registered by '
'register_contract, one row per creator and content hash. Read by its creator and by the '
'parties of the vouchers and rooms it is linked to.';
comment on column public.contracts.name is 'Name to show (e.g. "Mortgage contract #123"), 1 to 200 characters.';
comment on column public.contracts.mime_type is
'Media type, one of the setting contract_mime_types (application/pdf, ...).';
comment on column public.contracts.byte_size is 'Size of the file in bytes (> 0).';
comment on column public.contracts.storage_url is
'Where the file is (S3, R2, Supabase Storage path), up to 2048 characters.';
comment on column public.contracts.hash_sha256 is 'SHA-256 of the file: 64 lowercase hex digits.';
comment on column public.contracts.created_by is 'The thinker who registered it.';

create table public.contract_links (
    id uuid not null default gen_random_uuid(),
    contract_id uuid not null,
    voucher_id text,
    room_id text,
    role text not null,
    created_by uuid,
    created_at timestamptz not null default now(),
    constraint contract_links_pkey primary key (id),
    constraint contract_links_contract_target_key unique nulls not distinct (contract_id, voucher_id, room_id),
    constraint contract_links_contract_id_fkey foreign key (contract_id)
    references public.contracts (id) on delete cascade,
    constraint contract_links_voucher_id_fkey foreign key (voucher_id)
    references public.vouchers (id) on delete cascade,
    constraint contract_links_room_id_fkey foreign key (room_id) references public.rooms (id) on delete cascade,
    constraint contract_links_created_by_fkey foreign key (created_by)
    references public.thinkers (id) on delete set null,
    constraint links_one_target check ((voucher_id is null) <> (room_id is null)),
    constraint role_is_known check (role in ('primary', 'annex', 'offer', 'application'))
);
create index contract_links_voucher_id_idx on public.contract_links (voucher_id);
create index contract_links_room_id_idx on public.contract_links (room_id);
create index contract_links_created_by_idx on public.contract_links (created_by);
comment on table public.contract_links is
'A contract linked to one voucher or one room (link_contract), with its role there; one link '
'per contract and target. Read by the contract''s creator and the parties of the target.';
comment on column public.contract_links.voucher_id is 'The voucher it is linked to (or room_id).';
comment on column public.contract_links.room_id is 'The room it is linked to (or voucher_id).';
comment on column public.contract_links.role is 'primary, annex, offer or application.';
comment on column public.contract_links.created_by is 'Who linked it.';

create sequence paycore.property_numbers;
comment on sequence paycore.property_numbers is 'The <n> of property ids house-<n>.';
create table public.properties (
    id text not null default 'house-' || nextval('paycore.property_numbers'),
    owner_id uuid not null,
    address text not null,
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    constraint properties_pkey primary key (id),
    constraint properties_owner_id_address_key unique (owner_id, address),
    constraint properties_owner_id_fkey foreign key (owner_id) references public.thinkers (id) on delete cascade,
    constraint id_is_a_property_id check (id ~ '^house-[1-9][0-9]*$'),
    constraint address_is_not_blank check (btrim(address) <> '' and length(address) <= 500),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index properties_owner_id_idx on public.properties (owner_id);
comment on table public.properties is
'A property that mortgages are applied for (register_property): house-<n>. Read by its owner; '
'lenders see it through list_open_mortgage_applications.';
comment on column public.properties.owner_id is 'The thinker who registered it.';
comment on column public.properties.address is 'Its address, 1 to 500 characters.';
comment on column public.properties.meta is 'JSON object of details (rooms, area, year, ...), at most 8 kB.';

create table public.mortgage_applications (
    id text not null,
    property_id text not null,
    borrower_id uuid not null,
    desired_loan bigint not null,
    currency text not null,
    duration_years integer not null,
    rate_type text not null,
    max_interest numeric(6, 4) not null,
    status text not null default 'open',
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint mortgage_applications_pkey primary key (id),
    constraint mortgage_applications_property_id_fkey foreign key (property_id)
    references public.properties (id) on delete cascade,
    constraint mortgage_applications_borrower_id_fkey foreign key (borrower_id)
    references public.thinkers (id) on delete cascade,
    constraint id_is_an_application_id check (id ~ '^ma-[0-9]{13}-[0-9a-f]{12}$'),
    constraint desired_loan_is_1_to_10e15 check (desired_loan between 1 and 1000000000000000),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint duration_is_1_to_50_years check (duration_years between 1 and 50),
    constraint rate_type_is_known check (rate_type in ('fixed', 'variable')),
    constraint max_interest_is_a_fraction check (max_interest > 0 and max_interest <= 1),
    constraint status_is_known check (status in ('open', 'offered', 'accepted', 'rejected')),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index mortgage_applications_borrower_id_idx on public.mortgage_applications (borrower_id);
-- One pending application per borrower and property: a retry returns it.
create unique index mortgage_applications_borrower_id_property_id_pending_key
on public.mortgage_applications (borrower_id, property_id)
where status in ('open', 'offered');
create index mortgage_applications_property_id_idx on public.mortgage_applications (property_id);
-- What lenders list (list_open_mortgage_applications) and the dashboard counts.
create index mortgage_applications_status_created_at_idx on public.mortgage_applications (status, created_at);
comment on table public.mortgage_applications is
'A borrower''s application for a mortgage on a property (apply_for_mortgage): open, offered '
'(at least one offer), accepted (one offer accepted) or rejected. Read by the borrower and by '
'the lenders who made an offer on it.';
comment on column public.mortgage_applications.id is 'ma-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.mortgage_applications.borrower_id is 'The thinker who applies.';
comment on column public.mortgage_applications.desired_loan is
'The loan asked for, in minor units (cents) of currency.';
comment on column public.mortgage_applications.currency is 'ISO 4217 currency code, lowercase.';
comment on column public.mortgage_applications.duration_years is 'Term of the loan in years (1 to 50).';
comment on column public.mortgage_applications.rate_type is 'fixed or variable.';
comment on column public.mortgage_applications.max_interest is
'The highest yearly interest rate the borrower accepts, as a fraction: 0.0375 is 3.75 %.';
comment on column public.mortgage_applications.status is 'open, offered, accepted or rejected.';
comment on column public.mortgage_applications.meta is 'JSON object of context, at most 8 kB.';

create table public.mortgage_offers (
    id text not null,
    application_id text not null,
    lender_id uuid not null,
    borrower_id uuid not null,
    interest_rate numeric(6, 4) not null,
    monthly_payment bigint not null,
    status text not null default 'open',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint mortgage_offers_pkey primary key (id),
    constraint mortgage_offers_application_id_lender_id_key unique (application_id, lender_id),
    constraint mortgage_offers_application_id_fkey foreign key (application_id)
    references public.mortgage_applications (id) on delete cascade,
    constraint mortgage_offers_lender_id_fkey foreign key (lender_id) references public.thinkers (id) on delete cascade,
    constraint mortgage_offers_borrower_id_fkey foreign key (borrower_id)
    references public.thinkers (id) on delete cascade,
    constraint id_is_an_offer_id check (id ~ '^mo-[0-9]{13}-[0-9a-f]{12}$'),
    constraint lender_is_not_the_borrower check (lender_id <> borrower_id),
    constraint interest_rate_is_a_fraction check (interest_rate >= 0 and interest_rate <= 1),
    constraint monthly_payment_is_1_to_10e15 check (monthly_payment between 1 and 1000000000000000),
    constraint status_is_known check (status in ('open', 'accepted', 'withdrawn'))
);
-- Exactly one offer of an application can ever be accepted, whatever writes it.
create unique index mortgage_offers_application_id_accepted_key on public.mortgage_offers (application_id)
where status = 'accepted';
create index mortgage_offers_lender_id_idx on public.mortgage_offers (lender_id);
create index mortgage_offers_borrower_id_idx on public.mortgage_offers (borrower_id);
create index mortgage_offers_created_at_idx on public.mortgage_offers (created_at) include (status, interest_rate);
comment on table public.mortgage_offers is
'A lender''s offer on an application (make_mortgage_offer), one per lender and application: '
'open, accepted (at most one per application: a unique partial index) or withdrawn (another '
'offer was accepted). Read by the borrower and by its lender.';
comment on column public.mortgage_offers.id is 'mo-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.mortgage_offers.lender_id is 'The thinker who offers.';
comment on column public.mortgage_offers.borrower_id is 'The application''s borrower (a copy, for RLS).';
comment on column public.mortgage_offers.interest_rate is
'Yearly interest rate as a fraction (0.0375 is 3.75 %), at most the application''s max_interest.';
comment on column public.mortgage_offers.monthly_payment is
'Monthly payment in minor units of the application''s currency.';
comment on column public.mortgage_offers.status is 'open, accepted or withdrawn.';

create table public.mortgage_contracts (
    id text not null,
    offer_id text not null,
    application_id text not null,
    borrower_id uuid not null,
    lender_id uuid not null,
    contract_id uuid,
    status text not null default 'draft',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint mortgage_contracts_pkey primary key (id),
    constraint mortgage_contracts_offer_id_key unique (offer_id),
    constraint mortgage_contracts_application_id_key unique (application_id),
    constraint mortgage_contracts_offer_id_fkey foreign key (offer_id)
    references public.mortgage_offers (id) on delete cascade,
    constraint mortgage_contracts_application_id_fkey foreign key (application_id)
    references public.mortgage_applications (id) on delete cascade,
    constraint mortgage_contracts_borrower_id_fkey foreign key (borrower_id)
    references public.thinkers (id) on delete cascade,
    constraint mortgage_contracts_lender_id_fkey foreign key (lender_id)
    references public.thinkers (id) on delete cascade,
    constraint mortgage_contracts_contract_id_fkey foreign key (contract_id)
    references public.contracts (id) on delete set null,
    constraint id_is_a_mortgage_contract_id check (id ~ '^mc-[0-9]{13}-[0-9a-f]{12}$'),
    constraint status_is_known check (status in ('draft', 'signed', 'archived'))
);
create index mortgage_contracts_borrower_id_idx on public.mortgage_contracts (borrower_id);
create index mortgage_contracts_lender_id_idx on public.mortgage_contracts (lender_id);
create index mortgage_contracts_contract_id_idx on public.mortgage_contracts (contract_id);
comment on table public.mortgage_contracts is
'The contract of an accepted offer, created as a draft by accept_mortgage_offer (one per '
'application). Read by the borrower and the lender.';
comment on column public.mortgage_contracts.id is 'mc-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.mortgage_contracts.contract_id is 'The contract document, once registered and attached.';
comment on column public.mortgage_contracts.status is 'draft, signed or archived.';

create table public.transfers (
    id text not null,
    thinker_id uuid not null,
    direction text not null,
    wallet_address text not null,
    network text not null,
    crypto_amount numeric(36, 18) not null,
    crypto_symbol text not null,
    fiat_amount bigint not null,
    fiat_currency text not null,
    external_account text,
    meta jsonb not null default '{}',
    status text not null default 'logged',
    idempotency_key text,
    settled_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint transfers_pkey primary key (id),
    constraint transfers_thinker_id_idempotency_key_key unique (thinker_id, idempotency_key),
    constraint transfers_thinker_id_fkey foreign key (thinker_id) references public.thinkers (id) on delete cascade,
    constraint id_is_a_transfer_id check (id ~ '^tx-[0-9]{13}-[0-9a-f]{12}$'),
    constraint direction_is_known check (direction in ('in', 'out')),
    constraint wallet_address_is_printable check (wallet_address ~ '^[!-~]+$' and length(wallet_address) <= 200),
    constraint network_is_not_blank check (btrim(network) <> '' and length(network) <= 100),
    constraint crypto_amount_is_positive check (crypto_amount > 0),
    constraint crypto_symbol_is_a_ticker check (crypto_symbol ~ '^[A-Z0-9]{1,16}$'),
    constraint fiat_amount_is_0_to_10e15 check (fiat_amount between 0 and 1000000000000000),
    constraint fiat_currency_is_iso_lowercase check (fiat_currency ~ '^[a-z]{3}$'),
    constraint external_account_is_at_most_200_characters check (length(external_account) <= 200),
    constraint status_is_known check (status in ('logged', 'settled')),
    constraint settled_at_iff_settled check ((status = 'settled') = (settled_at is not null)),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index transfers_created_at_idx on public.transfers (created_at)
include (direction, network, fiat_currency, fiat_amount);
-- As for bookings per day: the dashboard's groups are hashed, not sorted.
create statistics public.transfers_created_day_stats (ndistinct)
on ((created_at at time zone 'UTC')::date), direction, network, fiat_currency from public.transfers;
comment on table public.transfers is
'A telbank transfer a thinker logged (log_transfer): crypto in or out of a wallet against fiat '
'on an external account; logged, then settled by the service (settle_transfer). Read by the '
'thinker who logged it.';
comment on column public.transfers.id is 'tx-<milliseconds since 1970>-<12 random hex digits>.';
comment on column public.transfers.thinker_id is 'The thinker who logged it.';
comment on column public.transfers.direction is 'in or out.';
comment on column public.transfers.wallet_address is 'The wallet address: 1 to 200 printable ASCII characters.';
comment on column public.transfers.network is 'The chain (Ethereum Mainnet, Polygon, ...), 1 to 100 characters.';
comment on column public.transfers.crypto_amount is 'Amount of crypto_symbol (> 0, up to 18 decimals).';
comment on column public.transfers.crypto_symbol is 'Ticker, uppercase letters and digits (ETH, USDC, ...).';
comment on column public.transfers.fiat_amount is
'Fiat value in minor units (cents) of fiat_currency: the fee''s base.';
comment on column public.transfers.fiat_currency is 'ISO 4217 currency code, lowercase.';
comment on column public.transfers.external_account is 'IBAN, Skrill account or reference, up to 200 characters.';
comment on column public.transfers.meta is 'JSON object of context, at most 8 kB.';
comment on column public.transfers.status is 'logged or settled.';
comment on column public.transfers.idempotency_key is
'The caller''s key of log_transfer, per thinker: a retry with it returns this transfer.';
comment on column public.transfers.settled_at is 'When settle_transfer settled it.';


insert into public.fees (id, scope, percentage, fixed_amount, currency, active, meta)
values
(
    'transfer.logged', 'transfer', 0.0100, 0, null, true,
    '{"description": "platform fee: 1 % of the fiat amount of a transfer"}'
),
(
    'mortgage.accepted', 'mortgage', 0.0050, 0, null, true,
    '{"description": "platform fee: 0.5 % of the loan of an accepted mortgage offer"}'
);

insert into paycore.settings (key, value, description)
values (
    'contract_mime_types',
    jsonb_build_array(
        'application/pdf', 'image/png', 'image/jpeg', 'text/plain', 'application/msword',
        'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
        'application/vnd.oasis.opendocument.text'
    ),
    'The media types register_contract accepts (JSON array of lowercase strings).'
)
on conflict (key) do nothing;

insert into paycore.reserved_event_namespaces (namespace, description)
values
('presence', 'marketplace presence: online, matched'),
('room', 'marketplace rooms'),
('contract', 'legal hub contracts: registered, linked'),
('property', 'mortgage properties: registered'),
('mortgage', 'mortgages: applied, offered, accepted'),
('transfer', 'telbank transfers: logged, settled');

-- The seed's dashboards, for service_role (they bypass RLS there; security_invoker keeps
-- RLS in force for any other role a view might ever be granted to). They read now(), the
-- server's time, not paycore.clock(), and each reads a range of one index.
create view public.marketplace_presence_now
with (security_invoker = true)
as
select
    count(*) as online_sessions,
    count(distinct s.thinker_id) as online_thinkers,
    count(distinct s.pair_code) as pair_codes
from public.presence_sessions as s
where s.last_seen_at >= now() - interval '1 minute' and s.status = 'online';
comment on view public.marketplace_presence_now is
'Presence now: sessions online (a heartbeat in the last minute, not declared offline), their '
'thinkers and pair codes. service_role only.';

create view public.marketplace_popular_pair_codes
with (security_invoker = true)
as
select
    s.pair_code,
    count(*) as sessions_7d,
    count(*) filter (where s.last_seen_at >= now() - interval '1 minute' and s.status = 'online') as online_now
from public.presence_sessions as s
where s.last_seen_at >= now() - interval '7 days'
group by s.pair_code
order by sessions_7d desc, s.pair_code asc;
comment on view public.marketplace_popular_pair_codes is
'Pair codes by the sessions seen in the last 7 days, most first, with how many are online now. '
'service_role only.';

create view public.marketplace_bookings_per_day
with (security_invoker = true)
as
select
    (b.created_at at time zone 'UTC')::date as day,
    count(*) as bookings,
    count(*) filter (where b.status = 'cancelled') as cancelled
from public.voucher_bookings as b
where b.created_at >= now() - interval '90 days'
group by day
order by day desc;
comment on view public.marketplace_bookings_per_day is
'Bookings made per day (UTC) in the last 90 days, newest first, and how many of them are '
'cancelled now. service_role only.';

create view public.marketplace_template_utilisation
with (security_invoker = true)
as
select
    t.id as template_id,
    t.title,
    count(v.template_id) as vouchers_90d,
    count(v.template_id) filter (where v.status in ('booked', 'consumed')) as booked_or_consumed,
    count(v.template_id) filter (where v.status = 'consumed') as consumed,
    round(
        (count(v.template_id) filter (where v.status in ('booked', 'consumed')))::numeric
        / nullif(count(v.template_id), 0), 4
    ) as utilisation
from public.voucher_templates as t
left join public.vouchers as v on t.id = v.template_id and v.created_at >= now() - interval '90 days'
group by t.id, t.title
order by vouchers_90d desc, t.id asc;
comment on view public.marketplace_template_utilisation is
'Per voucher template, the vouchers issued from it in the last 90 days, how many are booked or '
'consumed, and that share (utilisation, 0 to 1). service_role only.';

create view public.marketplace_mortgage_figures
with (security_invoker = true)
as
select
    (
        select count(*) from public.mortgage_applications as a
        where a.status = 'open'
    ) as open_applications,
    (
        select count(*) from public.mortgage_applications as a
        where a.status = 'offered'
    ) as offered_applications,
    o.accepted_offers_90d,
    o.average_accepted_rate_90d,
    o.average_offered_rate_90d
from (
    select
        count(*) filter (where x.status = 'accepted') as accepted_offers_90d,
        round(avg(x.interest_rate) filter (where x.status = 'accepted'), 6) as average_accepted_rate_90d,
        round(avg(x.interest_rate), 6) as average_offered_rate_90d
    from public.mortgage_offers as x
    where x.created_at >= now() - interval '90 days'
) as o;
comment on view public.marketplace_mortgage_figures is
'Mortgage figures: applications open and offered now; offers of the last 90 days accepted, '
'their average rate and the average rate of all offers (fractions). service_role only.';

create view public.marketplace_transfer_sums
with (security_invoker = true)
as
select
    (t.created_at at time zone 'UTC')::date as day,
    t.direction,
    t.network,
    t.fiat_currency,
    count(*) as transfers,
    sum(t.fiat_amount) as fiat_amount
from public.transfers as t
where t.created_at >= now() - interval '90 days'
group by day, t.direction, t.network, t.fiat_currency
order by day desc, t.direction asc, t.network asc, t.fiat_currency asc;
comment on view public.marketplace_transfer_sums is
'Transfers in and out per day (UTC), network and fiat currency in the last 90 days: how many '
'and their fiat sum in minor units. service_role only.';

-- marketplace operations: presence heartbeats and matches, contracts and their links,
-- properties and the mortgage flow (apply, offer, accept), telbank transfers; each write
-- with its fee events (scopes mortgage and transfer) and its events row in one transaction.

create trigger presence_sessions_set_updated_at
before update on public.presence_sessions
for each row execute function paycore.tg__set_updated_at();
create trigger mortgage_applications_set_updated_at
before update on public.mortgage_applications
for each row execute function paycore.tg__set_updated_at();
create trigger mortgage_offers_set_updated_at
before update on public.mortgage_offers
for each row execute function paycore.tg__set_updated_at();
create trigger mortgage_contracts_set_updated_at
before update on public.mortgage_contracts
for each row execute function paycore.tg__set_updated_at();
create trigger transfers_set_updated_at
before update on public.transfers
for each row execute function paycore.tg__set_updated_at();

create function paycore.check_pair_code(p_pair_code text)
returns text
language plpgsql immutable
as $$
declare
    v_code text := lower(btrim(p_pair_code));
begin
    if v_code is null or v_code !~ '^[a-z0-9][a-z0-9_.-]*$' or length(v_code) > 64 then
        raise exception 'p_pair_code must be 1 to 64 letters, digits, _ . - (starting with a letter or digit)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return v_code;
end;
$$;
comment on function paycore.check_pair_code(text) is
'p_pair_code trimmed and lowercased; PT400 invalid_argument unless it is 1 to 64 letters, '
'digits, _ . - starting with a letter or digit. Internal.';

create function paycore.presence_beat(p_thinker_id uuid, p_pair_code text, p_room_id text)
returns public.presence_sessions
language plpgsql volatile
as $$
declare
    v_now timestamptz := paycore.clock();
    v_session public.presence_sessions;
begin
    -- One upsert: parallel first heartbeats of one thinker meet on the unique key and all
    -- succeed with one row. A stretch of presence begins (beats = 1) when the row is new,
    -- was declared offline, or was silent for more than a minute.
    insert into public.presence_sessions as s (thinker_id, pair_code, room_id, last_seen_at, online_since)
    values (p_thinker_id, p_pair_code, p_room_id, v_now, v_now)
    on conflict (thinker_id, pair_code) do update
    set
        status = 'online',
        room_id = coalesce(excluded.room_id, s.room_id),
        last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at),
        online_since = case
            when s.status = 'offline' or s.last_seen_at < excluded.last_seen_at - interval '1 minute'
                then excluded.online_since
            else s.online_since
        end,
        beats = case
            when s.status = 'offline' or s.last_seen_at < excluded.last_seen_at - interval '1 minute' then 1
            else s.beats + 1
        end
    returning * into v_session;
    if v_session.beats = 1 then
        perform paycore.log_event(
            'presence.online', p_thinker_id, 'presence_session', v_session.id::text, null,
            jsonb_build_object('pair_code', p_pair_code)
        );
    end if;
    return v_session;
end;
$$;
comment on function paycore.presence_beat(uuid, text, text) is
'Records a heartbeat of a thinker under a pair code (the session created on the first) and '
'returns the session; logs presence.online only when a stretch of presence begins. Internal.';

create function paycore.check_room_party(p_uid uuid, p_room_id text)
returns void
language plpgsql stable
as $$
begin
    if not exists (
        select 1 from public.rooms as r where r.id = p_room_id and p_uid in (r.owner_id, r.partner_id)
    ) then
        raise exception 'room % does not exist', p_room_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
end;
$$;
comment on function paycore.check_room_party(uuid, text) is
'PT404 not_found unless p_room_id is a room p_uid is a party to. Internal.';

create function public.presence_heartbeat(p_pair_code text, p_room_id text default null)
returns public.presence_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_code text := paycore.check_pair_code(p_pair_code);
begin
    if p_room_id is not null then
        perform paycore.check_room_party(v_uid, p_room_id);
    end if;
    return paycore.presence_beat(v_uid, v_code, p_room_id);
end;
$$;
comment on function public.presence_heartbeat(text, text) is
'The signed-in caller is online under p_pair_code (stored lowercase): its session for that '
'code is created or refreshed and returned, status online, last_seen_at now; p_room_id (a '
'room the caller is a party to, else PT404) records where it is, null keeps it. Logs '
'presence.online only when the session goes online (new, declared offline before, or silent '
'for over a minute). authenticated only.';

create function public.presence_leave(p_pair_code text)
returns public.presence_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_code text := paycore.check_pair_code(p_pair_code);
    v_session public.presence_sessions;
begin
    update public.presence_sessions as s set status = 'offline'
    where s.thinker_id = v_uid and s.pair_code = v_code
    returning * into v_session;
    if not found then
        raise exception 'no presence session under pair code %', v_code
        using errcode = 'PT404', hint = 'not_found';
    end if;
    return v_session;
end;
$$;
comment on function public.presence_leave(text) is
'The signed-in caller declares itself offline under p_pair_code (before the minute of silence '
'would) and gets its session back; no session PT404. A later heartbeat brings it back online. '
'authenticated only.';

create function public.presence_match(p_pair_code text)
returns setof public.presence_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_code text := paycore.check_pair_code(p_pair_code);
    v_me public.presence_sessions;
    v_my_public_id text;
    v_other public.presence_sessions;
    v_other_public_id text;
    v_others public.presence_sessions[] := '{}';
    v_room_ids text[] := '{}';
    v_owner_ids uuid[] := '{}';
    v_partner_ids uuid[] := '{}';
    v_room_id text;
begin
    -- Asking for a match is a heartbeat too.
    v_me := paycore.presence_beat(v_uid, v_code, null);
    select t.public_id into v_my_public_id from public.thinkers as t where t.id = v_uid;
    for v_other in
        select s.*
        from public.presence_sessions as s
        where s.pair_code = v_code and s.last_seen_at >= v_me.last_seen_at - interval '1 minute'
          and s.status = 'online' and s.thinker_id <> v_uid
        order by s.last_seen_at desc, s.id
        limit 100
    loop
        select t.public_id into v_other_public_id from public.thinkers as t where t.id = v_other.thinker_id;
        -- The pair's room: one id per pair and code, whoever asks first.
        v_others := v_others || v_other;
        v_room_ids := v_room_ids || ('presence:' || v_code || ':'
            || least(v_my_public_id, v_other_public_id) || '+' || greatest(v_my_public_id, v_other_public_id));
        v_owner_ids := v_owner_ids || least(v_uid, v_other.thinker_id);
        v_partner_ids := v_partner_ids || greatest(v_uid, v_other.thinker_id);
    end loop;
    -- The rooms in id order, the one order every caller shares: parallel matches of a pair
    -- meet on the primary key without a deadlock, and share one room.
    for v_room_id in
        insert into public.rooms (id, type, owner_id, partner_id, meta)
        select r.id, 'mixed', r.owner_id, r.partner_id, jsonb_build_object('source', 'presence', 'pair_code', v_code)
        from unnest(v_room_ids, v_owner_ids, v_partner_ids) as r (id, owner_id, partner_id)
        order by r.id
        on conflict (id) do nothing
        returning id
    loop
        perform paycore.log_event(
            'presence.matched', v_uid, 'room', v_room_id, null, jsonb_build_object('pair_code', v_code)
        );
    end loop;
    for i in 1 .. coalesce(array_length(v_others, 1), 0) loop
        v_other := v_others[i];
        v_other.room_id := v_room_ids[i];
        return next v_other;
    end loop;
end;
$$;
comment on function public.presence_match(text) is
'The other thinkers online under p_pair_code (a heartbeat within the minute before the '
'caller''s, not declared offline), most recent first, at most 100; the call is a heartbeat of '
'the caller too. For each, the room of the pair is created or reused (presence:<code>:<public '
'id>+<public id>, both thinkers its parties) and is the room_id of the returned row; a new '
'room logs presence.matched. authenticated only.';

create function public.register_contract(
    p_name text, p_mime_type text, p_byte_size bigint, p_storage_url text, p_hash_sha256 text
)
returns public.contracts
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_mime text := lower(btrim(p_mime_type));
    v_hash text := lower(btrim(p_hash_sha256));
    v_contract public.contracts;
begin
    perform paycore.check_text('p_name', p_name, 200, true);
    if v_mime is null or not coalesce(paycore.setting('contract_mime_types') ? v_mime, false) then
        raise exception 'p_mime_type % is not accepted (the setting contract_mime_types lists those that are)', v_mime
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_byte_size is null or p_byte_size <= 0 then
        raise exception 'p_byte_size must be more than 0'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_storage_url', p_storage_url, 2048, true);
    -- Shown to the other parties as a link: a storage URL or path, never javascript: or data:.
    if p_storage_url !~ '^((https|s3|gs|r2|b2)://[^[:space:]"''<>\\]+|[A-Za-z0-9_][A-Za-z0-9_.%()+/ -]*)$' then
        raise exception 'p_storage_url must be an https://, s3://, gs://, r2:// or b2:// URL or a storage path'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if v_hash is null or v_hash !~ '^[0-9a-f]{64}$' then
        raise exception 'p_hash_sha256 must be a SHA-256 as 64 hex digits'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    -- One contract per creator and content: a retry returns the first registration.
    insert into public.contracts (name, mime_type, byte_size, storage_url, hash_sha256, created_by)
    values (p_name, v_mime, p_byte_size, p_storage_url, v_hash, v_uid)
    on conflict (created_by, hash_sha256) do nothing
    returning * into v_contract;
    if v_contract.id is null then
        select c.* into v_contract from public.contracts as c where c.created_by = v_uid and c.hash_sha256 = v_hash;
        return v_contract;
    end if;
    perform paycore.log_event(
        'contract.registered', v_uid, 'contract', v_contract.id::text, null,
        jsonb_build_object('mime_type', v_mime, 'byte_size', p_byte_size)
    );
    return v_contract;
end;
$$;
comment on function public.register_contract(text, text, bigint, text, text) is
'Registers a contract document of the signed-in caller (its creator) and returns it: p_name 1 '
'to 200 characters, p_mime_type one of the setting contract_mime_types, p_byte_size > 0, '
'p_storage_url 1 to 2048 characters, p_hash_sha256 64 hex digits (stored lowercase). The same '
'hash again returns the first registration unchanged. authenticated only.';

create function public.link_contract(
    p_contract_id uuid, p_role text, p_voucher_id text default null, p_room_id text default null
)
returns public.contract_links
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_contract public.contracts;
    v_link public.contract_links;
begin
    if p_role is null or p_role not in ('primary', 'annex', 'offer', 'application') then
        raise exception 'p_role must be primary, annex, offer or application'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if (p_voucher_id is null) = (p_room_id is null) then
        raise exception 'give exactly one of p_voucher_id and p_room_id'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select c.* into v_contract from public.contracts as c where c.id = p_contract_id and c.created_by = v_uid;
    if not found then
        raise exception 'contract % does not exist (only its creator links it)', p_contract_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if p_voucher_id is not null and not exists (
        select 1 from public.vouchers as v where v.id = p_voucher_id and v_uid in (v.issuer_id, v.holder_id)
    ) then
        raise exception 'voucher % does not exist', p_voucher_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if p_room_id is not null then
        perform paycore.check_room_party(v_uid, p_room_id);
    end if;

    insert into public.contract_links (contract_id, voucher_id, room_id, role, created_by)
    values (p_contract_id, p_voucher_id, p_room_id, p_role, v_uid)
    on conflict (contract_id, voucher_id, room_id) do nothing
    returning * into v_link;
    if v_link.id is null then
        -- Linked before: a retry with the same role gets that link.
        select l.* into v_link from public.contract_links as l
        where l.contract_id = p_contract_id
          and l.voucher_id is not distinct from p_voucher_id and l.room_id is not distinct from p_room_id;
        if v_link.role <> p_role then
            raise exception 'contract % is linked there already as %', p_contract_id, v_link.role
            using errcode = 'PT409', hint = 'invalid_state';
        end if;
        return v_link;
    end if;
    perform paycore.log_event(
        'contract.linked', v_uid, 'contract', p_contract_id::text, null,
        jsonb_build_object('role', p_role, 'voucher_id', p_voucher_id, 'room_id', p_room_id)
    );
    return v_link;
end;
$$;
comment on function public.link_contract(uuid, text, text, text) is
'Links a contract of the signed-in caller (its creator; else PT404) to exactly one voucher or '
'room the caller is a party to (else PT404), with p_role primary, annex, offer or application, '
'and returns the link; the parties of the target then read the contract. Linking there again '
'returns the link, or PT409 invalid_state with another role. authenticated only.';

create function public.register_property(p_address text, p_meta jsonb default '{}')
returns public.properties
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_property public.properties;
begin
    perform paycore.check_text('p_address', p_address, 500, true);
    perform paycore.check_json_object('p_meta', coalesce(p_meta, '{}'), 8192);
    -- One property per owner and address: a retry returns it.
    insert into public.properties (owner_id, address, meta)
    values (v_uid, p_address, coalesce(p_meta, '{}'))
    on conflict (owner_id, address) do nothing
    returning * into v_property;
    if v_property.id is null then
        select p.* into v_property from public.properties as p where p.owner_id = v_uid and p.address = p_address;
        return v_property;
    end if;
    perform paycore.log_event('property.registered', v_uid, 'property', v_property.id, null, '{}');
    return v_property;
end;
$$;
comment on function public.register_property(text, jsonb) is
'Registers a property of the signed-in caller (its owner) and returns it, id house-<n>: '
'p_address 1 to 500 characters, p_meta a JSON object of at most 8 kB. The same address again '
'returns the first registration unchanged. authenticated only.';

create function public.list_open_mortgage_applications()
returns setof jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    -- A read: no thinker row is created for a caller who only looks.
    v_uid uuid := paycore.marketplace_user();
begin
    -- What a lender needs to make an offer, never who the borrower is.
    return query
    select jsonb_build_object(
        'id', a.id,
        'property_id', a.property_id,
        'address', p.address,
        'property', p.meta,
        'desired_loan', a.desired_loan,
        'currency', a.currency,
        'duration_years', a.duration_years,
        'rate_type', a.rate_type,
        'max_interest', a.max_interest,
        'status', a.status,
        'created_at', a.created_at,
        'offered_by_me', exists (
            select 1 from public.mortgage_offers as o where o.application_id = a.id and o.lender_id = v_uid
        )
    )
    from public.mortgage_applications as a
    join public.properties as p on p.id = a.property_id
    where a.status in ('open', 'offered') and a.borrower_id <> v_uid
    order by a.created_at desc, a.id;
end;
$$;
comment on function public.list_open_mortgage_applications() is
'The open and offered mortgage applications of other borrowers, newest first, as JSON objects: '
'id, property_id, address, property (its meta), desired_loan, currency, duration_years, '
'rate_type, max_interest, status, created_at, offered_by_me; never the borrower. How lenders '
'find what to offer on (PostgREST: limit and offset page it). authenticated only.';

create function public.apply_for_mortgage(
    p_property_id text,
    p_desired_loan bigint,
    p_currency text,
    p_duration_years integer,
    p_rate_type text,
    p_max_interest numeric
)
returns public.mortgage_applications
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_currency text;
    v_application public.mortgage_applications;
begin
    if p_desired_loan is null or p_desired_loan <= 0 or p_desired_loan > 1000000000000000 then
        raise exception 'p_desired_loan must be 1 to 10^15 minor units'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_currency := paycore.currency('p_currency', p_currency);
    if p_duration_years is null or p_duration_years not between 1 and 50 then
        raise exception 'p_duration_years must be 1 to 50'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_rate_type is null or p_rate_type not in ('fixed', 'variable') then
        raise exception 'p_rate_type must be fixed or variable'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_max_interest is null or p_max_interest <= 0 or p_max_interest > 1 or p_max_interest <> round(p_max_interest, 4) then
        raise exception 'p_max_interest must be a fraction above 0 and at most 1 with up to 4 decimals (0.0375 is 3.75 %%)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- A borrower applies for a property it registered: a property's address and details
    -- reach lenders (list_open_mortgage_applications) only when its owner applies.
    if not exists (select 1 from public.properties as p where p.id = p_property_id and p.owner_id = v_uid) then
        raise exception 'property % does not exist (a borrower applies for a property it registered)', p_property_id
        using errcode = 'PT404', hint = 'not_found';
    end if;

    -- One pending application per borrower and property: a retry with the same terms
    -- returns it, other terms are PT409.
    insert into public.mortgage_applications (
        id, property_id, borrower_id, desired_loan, currency, duration_years, rate_type, max_interest
    )
    values (
        paycore.new_marketplace_id('ma'), p_property_id, v_uid, p_desired_loan, v_currency,
        p_duration_years, p_rate_type, p_max_interest
    )
    on conflict (borrower_id, property_id) where status in ('open', 'offered') do nothing
    returning * into v_application;
    if v_application.id is null then
        select a.* into v_application from public.mortgage_applications as a
        where a.borrower_id = v_uid and a.property_id = p_property_id and a.status in ('open', 'offered');
        if (v_application.desired_loan, v_application.currency, v_application.duration_years,
            v_application.rate_type, v_application.max_interest)
            is distinct from (p_desired_loan, v_currency, p_duration_years, p_rate_type, p_max_interest) then
            raise exception 'an application for property % is pending already (%)', p_property_id, v_application.id
            using errcode = 'PT409', hint = 'invalid_state';
        end if;
        return v_application;
    end if;
    perform paycore.log_event(
        'mortgage.applied', v_uid, 'mortgage_application', v_application.id, null,
        jsonb_build_object('property_id', p_property_id)
    );
    return v_application;
end;
$$;
comment on function public.apply_for_mortgage(text, bigint, text, integer, text, numeric) is
'Applies for a mortgage on a property as the signed-in borrower and returns the application '
'(open): p_desired_loan > 0 cents of p_currency (stored lowercase), p_duration_years 1 to 50, '
'p_rate_type fixed or variable, p_max_interest a fraction in (0, 1] with up to 4 decimals. '
'One pending application per borrower and property: the same terms again return it, other '
'terms PT409 invalid_state. A property the caller did not register PT404. authenticated only.';

create function public.make_mortgage_offer(p_application_id text, p_interest_rate numeric, p_monthly_payment bigint)
returns public.mortgage_offers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_application public.mortgage_applications;
    v_offer public.mortgage_offers;
begin
    if p_interest_rate is null or p_interest_rate < 0 or p_interest_rate > 1
        or p_interest_rate <> round(p_interest_rate, 4) then
        raise exception 'p_interest_rate must be a fraction from 0 to 1 with up to 4 decimals (0.0375 is 3.75 %%)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_monthly_payment is null or p_monthly_payment <= 0 or p_monthly_payment > 1000000000000000 then
        raise exception 'p_monthly_payment must be 1 to 10^15 minor units'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- The application's row lock serialises offers and the acceptance.
    select a.* into v_application from public.mortgage_applications as a where a.id = p_application_id for update;
    if not found then
        raise exception 'mortgage application % does not exist', p_application_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_application.borrower_id = v_uid then
        raise exception 'a borrower cannot make an offer on its own application'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    select o.* into v_offer from public.mortgage_offers as o
    where o.application_id = p_application_id and o.lender_id = v_uid;
    if found then
        -- One offer per lender and application: a retry with the same terms gets it.
        if (v_offer.interest_rate, v_offer.monthly_payment) <> (p_interest_rate, p_monthly_payment) then
            raise exception 'you made an offer on application % already (%)', p_application_id, v_offer.id
            using errcode = 'PT409', hint = 'invalid_state';
        end if;
        return v_offer;
    end if;
    if v_application.status not in ('open', 'offered') then
        -- A closed application is listed nowhere: to a lender without an offer on it, it
        -- does not exist.
        raise exception 'mortgage application % does not exist', p_application_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if p_interest_rate > v_application.max_interest then
        raise exception 'the rate % is above the application''s max_interest %', p_interest_rate, v_application.max_interest
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    insert into public.mortgage_offers (id, application_id, lender_id, borrower_id, interest_rate, monthly_payment)
    values (
        paycore.new_marketplace_id('mo'), p_application_id, v_uid, v_application.borrower_id,
        p_interest_rate, p_monthly_payment
    )
    returning * into v_offer;
    update public.mortgage_applications as a set status = 'offered'
    where a.id = p_application_id and a.status = 'open';
    perform paycore.log_event(
        'mortgage.offered', v_uid, 'mortgage_offer', v_offer.id, null,
        jsonb_build_object('application_id', p_application_id, 'interest_rate', p_interest_rate)
    );
    return v_offer;
end;
$$;
comment on function public.make_mortgage_offer(text, numeric, bigint) is
'Makes an offer on an open or offered application as the signed-in lender (not its borrower: '
'PT403) and returns it; the application becomes offered. p_interest_rate a fraction with up to '
'4 decimals, at most the application''s max_interest (else PT400); p_monthly_payment > 0 '
'cents. One offer per lender and application: the same terms again return it, other terms '
'PT409 invalid_state; an accepted or rejected application PT409. authenticated only.';

create function public.accept_mortgage_offer(p_offer_id text)
returns public.mortgage_contracts
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_offer public.mortgage_offers;
    v_application public.mortgage_applications;
    v_contract public.mortgage_contracts;
    v_fees integer;
begin
    select o.* into v_offer from public.mortgage_offers as o
    where o.id = p_offer_id and v_uid in (o.borrower_id, o.lender_id);
    if not found then
        raise exception 'mortgage offer % does not exist', p_offer_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_offer.borrower_id <> v_uid then
        raise exception 'only the borrower accepts an offer'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    -- Two sessions of the borrower accepting two offers at once: the application's row lock
    -- lets one through; the other then sees it accepted. The unique index on accepted offers
    -- holds even without this lock.
    select a.* into v_application from public.mortgage_applications as a
    where a.id = v_offer.application_id for update;
    select o.* into v_offer from public.mortgage_offers as o where o.id = p_offer_id;
    if v_application.status not in ('open', 'offered') or v_offer.status <> 'open' then
        raise exception 'mortgage application % is % (offer %): no offer can be accepted now',
            v_application.id, v_application.status, v_offer.status
        using errcode = 'PT409', hint = 'invalid_state';
    end if;

    update public.mortgage_offers as o set status = 'accepted' where o.id = p_offer_id;
    update public.mortgage_offers as o set status = 'withdrawn'
    where o.application_id = v_application.id and o.id <> p_offer_id and o.status = 'open';
    update public.mortgage_applications as a set status = 'accepted' where a.id = v_application.id;
    insert into public.mortgage_contracts (id, offer_id, application_id, borrower_id, lender_id)
    values (paycore.new_marketplace_id('mc'), p_offer_id, v_application.id, v_uid, v_offer.lender_id)
    returning * into v_contract;
    v_fees := paycore.charge_fees(
        'mortgage', 'mortgage_contract', v_contract.id, v_application.desired_loan, v_application.currency
    );
    perform paycore.log_event(
        'mortgage.accepted', v_uid, 'mortgage_contract', v_contract.id, null,
        jsonb_build_object('application_id', v_application.id, 'offer_id', p_offer_id, 'fee_events', v_fees)
    );
    return v_contract;
end;
$$;
comment on function public.accept_mortgage_offer(text) is
'The signed-in borrower accepts an open offer: it becomes accepted, the other open offers '
'withdrawn, the application accepted, and a draft mortgage contract is created and returned, '
'with the fee events of scope mortgage on the desired loan. The lender PT403; a stranger '
'PT404; an application accepted already (a second accept) or rejected PT409 invalid_state. '
'authenticated only.';

create function public.log_transfer(
    p_direction text,
    p_wallet_address text,
    p_network text,
    p_crypto_amount numeric,
    p_crypto_symbol text,
    p_fiat_amount bigint,
    p_fiat_currency text,
    p_external_account text default null,
    p_meta jsonb default '{}',
    p_idempotency_key text default null
)
returns public.transfers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.marketplace_caller();
    v_symbol text := upper(btrim(p_crypto_symbol));
    v_currency text;
    v_meta jsonb := coalesce(p_meta, '{}');
    v_transfer public.transfers;
    v_fees integer;
begin
    if p_direction is null or p_direction not in ('in', 'out') then
        raise exception 'p_direction must be in or out'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_wallet_address is null or p_wallet_address !~ '^[!-~]+$' or length(p_wallet_address) > 200 then
        raise exception 'p_wallet_address must be 1 to 200 printable ASCII characters without spaces'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_text('p_network', p_network, 100, true);
    if p_crypto_amount is null or p_crypto_amount <= 0 or p_crypto_amount >= 1e18
        or p_crypto_amount <> round(p_crypto_amount, 18) then
        raise exception 'p_crypto_amount must be more than 0 and below 10^18, with up to 18 decimals'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if v_symbol is null or v_symbol !~ '^[A-Z0-9]{1,16}$' then
        raise exception 'p_crypto_symbol must be 1 to 16 letters or digits'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_fiat_amount is null or p_fiat_amount < 0 or p_fiat_amount > 1000000000000000 then
        raise exception 'p_fiat_amount must be 0 to 10^15 minor units'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_currency := paycore.currency('p_fiat_currency', p_fiat_currency);
    perform paycore.check_text('p_external_account', p_external_account, 200, false);
    perform paycore.check_json_object('p_meta', v_meta, 8192);
    perform paycore.check_idempotency_key('p_idempotency_key', p_idempotency_key);

    insert into public.transfers (
        id, thinker_id, direction, wallet_address, network, crypto_amount, crypto_symbol,
        fiat_amount, fiat_currency, external_account, meta, idempotency_key
    )
    values (
        paycore.new_marketplace_id('tx'), v_uid, p_direction, p_wallet_address, p_network, p_crypto_amount,
        v_symbol, p_fiat_amount, v_currency, p_external_account, v_meta, p_idempotency_key
    )
    on conflict (thinker_id, idempotency_key) do nothing
    returning * into v_transfer;
    if v_transfer.id is null then
        -- A retry (or a concurrent twin) with the same key: the first transfer, if the
        -- arguments are the same.
        select t.* into v_transfer from public.transfers as t
        where t.thinker_id = v_uid and t.idempotency_key = p_idempotency_key;
        if (v_transfer.direction, v_transfer.wallet_address, v_transfer.network, v_transfer.crypto_amount,
            v_transfer.crypto_symbol, v_transfer.fiat_amount, v_transfer.fiat_currency,
            v_transfer.external_account, v_transfer.meta)
            is distinct from (p_direction, p_wallet_address, p_network, p_crypto_amount::numeric(36, 18),
                v_symbol, p_fiat_amount, v_currency, p_external_account, v_meta) then
            raise exception 'p_idempotency_key % was used for another transfer (%)', p_idempotency_key, v_transfer.id
            using errcode = 'PT409', hint = 'idempotency_conflict';
        end if;
        return v_transfer;
    end if;
    v_fees := paycore.charge_fees('transfer', 'transfer', v_transfer.id, p_fiat_amount, v_currency);
    perform paycore.log_event(
        'transfer.logged', v_uid, 'transfer', v_transfer.id, null,
        jsonb_build_object(
            'direction', p_direction, 'network', p_network, 'fiat_amount', p_fiat_amount,
            'fiat_currency', v_currency, 'fee_events', v_fees
        )
    );
    return v_transfer;
end;
$$;
comment on function public.log_transfer(text, text, text, numeric, text, bigint, text, text, jsonb, text) is
'Logs a telbank transfer of the signed-in caller and returns it (logged), with the fee events '
'of scope transfer on p_fiat_amount. p_direction in or out; p_wallet_address 1 to 200 '
'printable ASCII characters; p_network 1 to 100; p_crypto_amount > 0 and < 10^18 with up to '
'18 decimals; p_crypto_symbol 1 to 16 letters or digits (stored uppercase); p_fiat_amount >= 0 '
'cents of p_fiat_currency (stored lowercase); p_external_account up to 200; p_meta a JSON '
'object of at most 8 kB. p_idempotency_key (optional, per caller): a retry with the same key '
'and arguments returns the first transfer and charges nothing again; other arguments PT409 '
'idempotency_conflict. authenticated only.';

create function public.settle_transfer(p_transfer_id text)
returns public.transfers
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_transfer public.transfers;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not settle transfers', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    select t.* into v_transfer from public.transfers as t where t.id = p_transfer_id for update;
    if not found then
        raise exception 'transfer % does not exist', p_transfer_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_transfer.status = 'settled' then
        -- A retry changes nothing.
        return v_transfer;
    end if;
    update public.transfers as t set status = 'settled', settled_at = paycore.clock()
    where t.id = p_transfer_id
    returning * into v_transfer;
    perform paycore.log_event(
        'transfer.settled', null, 'transfer', p_transfer_id, null,
        jsonb_build_object('fiat_amount', v_transfer.fiat_amount, 'fiat_currency', v_transfer.fiat_currency)
    );
    return v_transfer;
end;
$$;
comment on function public.settle_transfer(text) is
'Marks a logged transfer settled and returns it; settled already returns it unchanged (a '
'retry). Unknown id PT404. service_role only.';

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
