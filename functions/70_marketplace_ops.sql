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
