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
