-- depends: 0014.speed-up-log-event
-- create-stripe: schema/80_stripe.sql, functions/80_stripe.sql, policies/80_stripe.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- Stripe: the event store (every event Stripe sent, once by id, with what applying it did),
-- Checkout Sessions with their credit reservations against the platform's capacity, credit
-- purchases and their refunds, and the logs of invoices and payments.

create table paycore.stripe_events (
    id text not null,
    type text not null,
    api_version text,
    livemode boolean not null,
    created timestamptz not null,
    payload jsonb not null,
    status text not null,
    error text,
    attempts integer not null default 1,
    received_at timestamptz not null default now(),
    processed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint stripe_events_pkey primary key (id),
    constraint id_is_an_event_id check (id ~ '^evt_[A-Za-z0-9_]+$' and length(id) <= 255),
    constraint type_is_not_blank check (btrim(type) <> '' and length(type) <= 100),
    constraint status_is_known check (status in ('applied', 'ignored', 'failed')),
    constraint error_iff_failed check ((status = 'failed') = (error is not null)),
    constraint attempts_is_positive check (attempts > 0),
    constraint payload_is_an_object check (jsonb_typeof(payload) = 'object')
);
create index stripe_events_failed_idx on paycore.stripe_events (created) where status = 'failed';
create index stripe_events_type_created_idx on paycore.stripe_events (type, created);
comment on table paycore.stripe_events is
'Every Stripe event paycore received, once per event id (apply_stripe_event): applied, '
'ignored (a type paycore does not handle) or failed (a permanent error, in error: bad '
'metadata, unknown user, package or price; nothing of it was applied). A failed event is '
'applied again by retry_stripe_event once the data is fixed.';

create table public.checkout_sessions (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    mode text not null,
    package_id text,
    credits bigint,
    app_id text,
    amount_total bigint,
    currency text,
    stripe_session_id text,
    stripe_payment_intent_id text,
    stripe_customer_id text,
    stripe_subscription_id text,
    status text not null default 'open',
    payment_status text,
    reservation text,
    expires_at timestamptz not null,
    stripe_event_created_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint checkout_sessions_pkey primary key (id),
    constraint checkout_sessions_stripe_session_id_key unique (stripe_session_id),
    constraint checkout_sessions_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint checkout_sessions_package_id_fkey foreign key (package_id) references public.credit_packages (id),
    constraint mode_is_known check (mode in ('payment', 'subscription')),
    constraint payment_has_a_package check ((mode = 'payment') = (package_id is not null and credits is not null)),
    constraint credits_is_positive check (credits > 0),
    constraint amount_total_is_not_negative check (amount_total >= 0),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint stripe_session_id_is_a_session_id check (stripe_session_id ~ '^cs_[A-Za-z0-9_]+$'),
    constraint status_is_a_stripe_status check (status in ('open', 'complete', 'expired')),
    constraint payment_status_is_a_stripe_status check (payment_status in ('paid', 'unpaid', 'no_payment_required')),
    constraint reservation_is_known check (reservation in ('reserved', 'sold', 'released'))
);
create index checkout_sessions_user_id_idx on public.checkout_sessions (user_id);
create index checkout_sessions_reserved_idx on public.checkout_sessions (expires_at) include (credits, status)
where reservation = 'reserved';
create index checkout_sessions_stripe_payment_intent_id_idx on public.checkout_sessions (stripe_payment_intent_id);
create index checkout_sessions_stripe_subscription_id_idx on public.checkout_sessions (stripe_subscription_id);
comment on table public.checkout_sessions is
'Checkout Sessions: begun by paycore (begin_credit_checkout, with a reservation of the '
'package''s credits against the platform''s capacity) or first seen in a Stripe event. Read by '
'its user.';
comment on column public.checkout_sessions.mode is 'payment (a credit package) or subscription.';
comment on column public.checkout_sessions.credits is
'The package''s credits when the checkout began: what a paid session grants.';
comment on column public.checkout_sessions.app_id is 'For a subscription: the app of its metadata.';
comment on column public.checkout_sessions.status is 'Stripe''s session status: open, complete or expired.';
comment on column public.checkout_sessions.payment_status is
'Stripe''s payment_status: paid, unpaid or no_payment_required.';
comment on column public.checkout_sessions.reservation is
'The capacity reservation: reserved (held while the session is open and unexpired, or '
'complete and waiting for an asynchronous payment), sold (granted), released (expired or '
'failed); null for a session paycore did not begin.';
comment on column public.checkout_sessions.expires_at is 'When an open session stops holding its reservation.';
comment on column public.checkout_sessions.stripe_event_created_at is
'The time of the last Stripe event applied to it.';

create table public.user_credit_purchases (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    checkout_session_id uuid not null,
    stripe_session_id text not null,
    package_id text not null,
    credits bigint not null,
    amount bigint not null,
    currency text not null,
    stripe_payment_intent_id text,
    transaction_id uuid,
    amount_refunded bigint not null default 0,
    credits_clawed_back bigint not null default 0,
    credits_unrecovered bigint not null default 0,
    status text not null default 'paid',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint user_credit_purchases_pkey primary key (id),
    constraint user_credit_purchases_stripe_session_id_key unique (stripe_session_id),
    constraint user_credit_purchases_checkout_session_id_key unique (checkout_session_id),
    constraint user_credit_purchases_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint user_credit_purchases_checkout_session_id_fkey foreign key (checkout_session_id)
    references public.checkout_sessions (id) on delete cascade,
    constraint credits_is_positive check (credits > 0),
    constraint amount_is_not_negative check (amount >= 0),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint amount_refunded_is_not_negative check (amount_refunded >= 0),
    constraint clawback_is_at_most_the_credits check (
        credits_clawed_back >= 0 and credits_unrecovered >= 0
        and credits_clawed_back + credits_unrecovered <= credits
    ),
    constraint status_is_known check (status in ('paid', 'partially_refunded', 'refunded'))
);
create index user_credit_purchases_user_id_idx on public.user_credit_purchases (user_id);
-- A payment intent pays one Checkout Session: its refunds find one purchase.
create unique index user_credit_purchases_stripe_payment_intent_id_key
on public.user_credit_purchases (stripe_payment_intent_id);
comment on table public.user_credit_purchases is
'One row per paid credit Checkout Session: the credits granted (once, whichever of completed '
'and async_payment_succeeded arrives), and what refunds took back: credits_clawed_back from '
'the balance, credits_unrecovered what the balance no longer held. Read by its user.';
comment on column public.user_credit_purchases.transaction_id is 'The ledger row of the grant.';
comment on column public.user_credit_purchases.amount_refunded is
'Stripe''s cumulative amount_refunded of the charge, in minor units.';
comment on column public.user_credit_purchases.credits_clawed_back is 'Credits debited back for refunds.';
comment on column public.user_credit_purchases.credits_unrecovered is
'Credits a refund should have taken back but the balance no longer held (already spent).';

create table public.payment_logs (
    id uuid not null default gen_random_uuid(),
    stripe_event_id text not null,
    event_type text not null,
    object_id text not null,
    user_id uuid,
    amount bigint,
    currency text,
    status text,
    stripe_payment_intent_id text,
    stripe_charge_id text,
    meta jsonb not null default '{}',
    created_at timestamptz not null default now(),
    constraint payment_logs_pkey primary key (id),
    constraint payment_logs_stripe_event_id_key unique (stripe_event_id),
    constraint payment_logs_user_id_fkey foreign key (user_id) references auth.users (id) on delete set null,
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index payment_logs_user_id_idx on public.payment_logs (user_id);
create index payment_logs_object_id_idx on public.payment_logs (object_id);
comment on table public.payment_logs is
'One row per payment intent, refund, charge refund and dispute event: what Stripe reported '
'(amount, status, ids). Read by the user it concerns, when paycore knows it.';

create table public.invoice_logs (
    id uuid not null default gen_random_uuid(),
    stripe_event_id text not null,
    event_type text not null,
    stripe_invoice_id text not null,
    user_id uuid,
    stripe_subscription_id text,
    amount_paid bigint,
    amount_due bigint,
    currency text,
    status text,
    billing_reason text,
    credits_granted bigint not null default 0,
    created_at timestamptz not null default now(),
    constraint invoice_logs_pkey primary key (id),
    constraint invoice_logs_stripe_event_id_key unique (stripe_event_id),
    constraint invoice_logs_user_id_fkey foreign key (user_id) references auth.users (id) on delete set null,
    constraint credits_granted_is_not_negative check (credits_granted >= 0)
);
create index invoice_logs_user_id_idx on public.invoice_logs (user_id);
create index invoice_logs_stripe_invoice_id_idx on public.invoice_logs (stripe_invoice_id);
comment on table public.invoice_logs is
'One row per invoice event: amounts, status, billing reason, and the tier''s monthly credits '
'it granted (once per invoice). Read by its user.';

insert into paycore.settings (key, value, description)
values (
    'platform_credit_capacity', 'null',
    'The credits the platform may sell in all (JSON number), counting sold and reserved ones; '
    'null for no limit. begin_credit_checkout refuses beyond it (PT409 capacity_exceeded).'
)
on conflict (key) do nothing;

insert into paycore.reserved_event_namespaces (namespace, description)
values
('stripe', 'the Stripe module'),
('checkout', 'Checkout Sessions: begun, paid, expired');

-- Stripe: apply_stripe_event records an event once and applies it in the same transaction;
-- one handler per kind of object; the credit capacity and its reservations.

create trigger stripe_events_set_updated_at
before update on paycore.stripe_events
for each row execute function paycore.tg__set_updated_at();
create trigger checkout_sessions_set_updated_at
before update on public.checkout_sessions
for each row execute function paycore.tg__set_updated_at();
create trigger user_credit_purchases_set_updated_at
before update on public.user_credit_purchases
for each row execute function paycore.tg__set_updated_at();

create function paycore.stripe_time(p_value jsonb)
returns timestamptz
language plpgsql immutable
as $$
begin
    -- Stripe's times are Unix seconds; anything else is a malformed event.
    if p_value is null or jsonb_typeof(p_value) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p_value) <> 'number' or (p_value #>> '{}')::numeric not between 0 and 32503680000 then
        raise exception 'a Stripe time must be Unix seconds, not %', p_value
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return to_timestamp((p_value #>> '{}')::numeric);
end;
$$;
comment on function paycore.stripe_time(jsonb) is
'A Stripe time (Unix seconds, JSON number) as timestamptz; null for null; PT400 otherwise. Internal.';

create function paycore.stripe_amount(p_value jsonb)
returns bigint
language plpgsql immutable
as $$
begin
    if p_value is null or jsonb_typeof(p_value) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p_value) <> 'number' or (p_value #>> '{}')::numeric not between 0 and 1000000000000000
        or (p_value #>> '{}')::numeric <> trunc((p_value #>> '{}')::numeric) then
        raise exception 'a Stripe amount must be a whole number of minor units from 0 to 10^15, not %', p_value
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return (p_value #>> '{}')::bigint;
end;
$$;
comment on function paycore.stripe_amount(jsonb) is
'A Stripe amount (minor units, JSON number, 0 to 10^15) as bigint; null for null; PT400 '
'otherwise. Internal.';

create function paycore.stripe_price_id(p_line jsonb)
returns text
language sql immutable
as $$
    -- An invoice line names its price under pricing.price_details (API 2025-03-31.basil and
    -- later) or price; a subscription item under price; the oldest API versions under plan.
    select coalesce(p_line #>> '{pricing,price_details,price}', p_line #>> '{price,id}', p_line #>> '{plan,id}')
$$;
comment on function paycore.stripe_price_id(jsonb) is
'The price id of a subscription item or invoice line, whatever the API version. Internal.';

create function paycore.stripe_known_line(p_lines jsonb)
returns jsonb
language sql stable
as $$
    -- The first item (or line) whose price public.prices maps, else the first: not a
    -- one-off item that happens to come first.
    select l.value
    from jsonb_array_elements(case when jsonb_typeof(p_lines) = 'array' then p_lines else '[]' end)
        with ordinality as l (value, n)
    order by exists (
        select 1 from public.prices as p where p.stripe_price_id = paycore.stripe_price_id(l.value)
    ) desc, l.n
    limit 1
$$;
comment on function paycore.stripe_known_line(jsonb) is
'Of a Stripe list of subscription items or invoice lines, the first whose price paycore maps, '
'else the first; null for none. Internal.';

create function paycore.stripe_user(p_metadata jsonb, p_client_reference_id text)
returns uuid
language plpgsql stable
as $$
declare
    v_meta text := coalesce(p_metadata ->> 'user_id', p_metadata ->> 'userId');
    v_user text;
begin
    -- The metadata contract: user_id (userId from the Connection-Key seed), also carried
    -- by client_reference_id; two different users in one object are refused.
    if v_meta is not null and p_client_reference_id is not null and v_meta <> p_client_reference_id then
        raise exception 'metadata user_id % and client_reference_id % differ', v_meta, p_client_reference_id
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_user := coalesce(v_meta, p_client_reference_id);
    if v_user is null then
        return null;
    end if;
    if v_user !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        raise exception 'the user id % in the metadata is not a uuid', v_user
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if not exists (select 1 from auth.users as u where u.id = v_user::uuid) then
        raise exception 'user % does not exist', v_user
        using errcode = 'PT404', hint = 'not_found';
    end if;
    return v_user::uuid;
end;
$$;
comment on function paycore.stripe_user(jsonb, text) is
'The auth user a Stripe object names in metadata.user_id (or userId) or client_reference_id; '
'null when it names none; PT400 when they differ or it is not a uuid, PT404 when the user does '
'not exist. Internal.';

create function paycore.platform_credits()
returns table (capacity bigint, sold bigint, reserved bigint)
language sql stable
as $$
    select
        case when jsonb_typeof(paycore.setting('platform_credit_capacity')) = 'number'
            then (paycore.setting('platform_credit_capacity') #>> '{}')::bigint end,
        (select coalesce(sum(p.credits - p.credits_clawed_back), 0)::bigint
         from public.user_credit_purchases as p),
        (select coalesce(sum(c.credits), 0)::bigint
         from public.checkout_sessions as c
         where c.reservation = 'reserved' and (c.status = 'complete' or c.expires_at > paycore.clock()))
$$;
comment on function paycore.platform_credits() is
'The credit capacity (null: no limit), the credits sold (granted by purchases, less what '
'refunds took back: credits spent before a refund stay sold) and those reserved by checkouts '
'still holding them. Internal.';

create function public.begin_credit_checkout(p_user_id uuid, p_package_id text)
returns public.checkout_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_package public.credit_packages;
    v_credits record;
    v_session public.checkout_sessions;
begin
    if not exists (select 1 from auth.users as u where u.id = v_uid and u.deleted_at is null) then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;
    select p.* into v_package from public.credit_packages as p where p.id = p_package_id and p.active;
    if not found then
        raise exception 'credit package % does not exist or is not on sale', p_package_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    -- One reservation at a time: the capacity check and the reservation are one step.
    perform pg_catalog.pg_advisory_xact_lock(7205431789024518602);
    select * into v_credits from paycore.platform_credits();
    if v_credits.capacity is not null
        and v_credits.sold + v_credits.reserved + v_package.credits > v_credits.capacity then
        raise exception 'the platform cannot sell % more credits: capacity %, sold %, reserved %',
            v_package.credits, v_credits.capacity, v_credits.sold, v_credits.reserved
        using errcode = 'PT409', hint = 'capacity_exceeded',
        detail = json_build_object(
            'capacity', v_credits.capacity, 'sold', v_credits.sold, 'reserved', v_credits.reserved,
            'requested', v_package.credits
        )::text;
    end if;
    -- Stripe's default: a Checkout Session expires 24 hours after it is created.
    insert into public.checkout_sessions (
        user_id, mode, package_id, credits, amount_total, currency, reservation, expires_at
    )
    values (
        v_uid, 'payment', v_package.id, v_package.credits, v_package.price_amount, v_package.currency,
        'reserved', paycore.clock() + interval '24 hours'
    )
    returning * into v_session;
    perform paycore.log_event(
        'checkout.begun', v_uid, 'checkout_session', v_session.id::text, null,
        jsonb_build_object('package_id', v_package.id, 'credits', v_package.credits)
    );
    return v_session;
end;
$$;
comment on function public.begin_credit_checkout(uuid, text) is
'Begins a credit checkout of p_user_id for an active package: reserves its credits against the '
'platform''s capacity (the setting platform_credit_capacity; PT409 capacity_exceeded beyond '
'it) for 24 hours, and returns the session row whose id goes into the Checkout Session''s '
'metadata as checkout_id. service_role and paycore_webhook.';

create function public.begin_subscription_checkout(p_user_id uuid, p_stripe_price_id text)
returns public.checkout_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_price public.prices;
    v_session public.checkout_sessions;
begin
    if not exists (select 1 from auth.users as u where u.id = v_uid and u.deleted_at is null) then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;
    select p.* into v_price from public.prices as p where p.stripe_price_id = p_stripe_price_id;
    if not found then
        raise exception 'price % is not a subscription price of any app (public.prices)', p_stripe_price_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    insert into public.checkout_sessions (user_id, mode, app_id, expires_at)
    values (v_uid, 'subscription', v_price.app_id, paycore.clock() + interval '24 hours')
    returning * into v_session;
    perform paycore.log_event(
        'checkout.begun', v_uid, 'checkout_session', v_session.id::text, v_price.app_id,
        jsonb_build_object('stripe_price_id', p_stripe_price_id, 'tier_id', v_price.tier_id)
    );
    return v_session;
end;
$$;
comment on function public.begin_subscription_checkout(uuid, text) is
'Begins a subscription checkout of p_user_id for a price of public.prices (unknown PT404) and '
'returns the session row (mode subscription, its app), whose id goes into the Checkout '
'Session''s metadata as checkout_id, with user_id and app_id. service_role and paycore_webhook.';

create function public.attach_checkout_session(p_checkout_id uuid, p_stripe_session_id text, p_expires_at timestamptz)
returns public.checkout_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_session public.checkout_sessions;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not attach Checkout Sessions', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_stripe_session_id is null or p_stripe_session_id !~ '^cs_[A-Za-z0-9_]+$' or length(p_stripe_session_id) > 255 then
        raise exception 'p_stripe_session_id must be a Checkout Session id (cs_...)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select c.* into v_session from public.checkout_sessions as c where c.id = p_checkout_id for update;
    if not found then
        raise exception 'checkout % does not exist', p_checkout_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_session.stripe_session_id is not null then
        -- A retry with the same session changes nothing; another session is refused.
        if v_session.stripe_session_id = p_stripe_session_id then
            return v_session;
        end if;
        raise exception 'checkout % has Checkout Session % already', p_checkout_id, v_session.stripe_session_id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    update public.checkout_sessions as c
    set
        stripe_session_id = p_stripe_session_id,
        expires_at = coalesce(least(p_expires_at, paycore.clock() + interval '24 hours'), c.expires_at)
    where c.id = p_checkout_id
    returning * into v_session;
    return v_session;
end;
$$;
comment on function public.attach_checkout_session(uuid, text, timestamptz) is
'Records the Stripe Checkout Session created for a checkout paycore began, and its expiry (at '
'most 24 hours ahead); the same session again returns the row, another PT409. service_role '
'and paycore_webhook.';

create function public.release_credit_checkout(p_checkout_id uuid)
returns public.checkout_sessions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_session public.checkout_sessions;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not release checkouts', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    select c.* into v_session from public.checkout_sessions as c where c.id = p_checkout_id for update;
    if not found then
        raise exception 'checkout % does not exist', p_checkout_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_session.stripe_session_id is not null then
        raise exception 'checkout % has Checkout Session %: Stripe''s events end it', p_checkout_id,
            v_session.stripe_session_id
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    -- No Checkout Session was created (the Stripe API call failed): nothing can be paid.
    update public.checkout_sessions as c
    set status = 'expired', reservation = case when c.reservation = 'reserved' then 'released' else c.reservation end
    where c.id = p_checkout_id
    returning * into v_session;
    return v_session;
end;
$$;
comment on function public.release_credit_checkout(uuid) is
'Ends a checkout whose Stripe Checkout Session could not be created: expired, its reservation '
'released (again: no change). One with a Checkout Session PT409 (its events end it). '
'service_role and paycore_webhook.';

create function public.get_platform_credit_status()
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_credits record;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not read the platform''s credits', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    select * into v_credits from paycore.platform_credits();
    return jsonb_build_object(
        'capacity', v_credits.capacity,
        'sold', v_credits.sold,
        'reserved', v_credits.reserved,
        'available', v_credits.capacity - v_credits.sold - v_credits.reserved
    );
end;
$$;
comment on function public.get_platform_credit_status() is
'The platform''s credits: capacity (null: no limit), sold, reserved and available (null without '
'a limit). service_role.';

create function paycore.stripe_checkout_session(p_event jsonb)
returns text
language plpgsql volatile
as $$
declare
    v_type text := p_event ->> 'type';
    v_time timestamptz := paycore.stripe_time(p_event -> 'created');
    v_object jsonb := p_event #> '{data,object}';
    v_cs text := v_object ->> 'id';
    v_mode text := v_object ->> 'mode';
    v_checkout_id text := v_object #>> '{metadata,checkout_id}';
    v_user uuid;
    v_package_id text := coalesce(v_object #>> '{metadata,package_id}', v_object #>> '{metadata,packageId}');
    v_package public.credit_packages;
    v_session public.checkout_sessions;
    v_purchase_id uuid;
    v_change record;
    v_expected_amount bigint;
    v_expected_currency text;
    v_charged bigint;
begin
    if v_cs is null or v_cs !~ '^cs_[A-Za-z0-9_]+$' or coalesce(v_mode, '') not in ('payment', 'subscription')
        or coalesce(v_object ->> 'status', 'open') not in ('open', 'complete', 'expired') then
        raise exception 'a Checkout Session event needs data.object.id (cs_...), mode and status'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_user := paycore.stripe_user(v_object -> 'metadata', v_object ->> 'client_reference_id');

    -- The session paycore began (metadata.checkout_id), or the one seen before.
    if v_checkout_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        select c.* into v_session from public.checkout_sessions as c where c.id = v_checkout_id::uuid for update;
    end if;
    if v_session.id is null then
        select c.* into v_session from public.checkout_sessions as c where c.stripe_session_id = v_cs for update;
    end if;
    if v_session.id is not null and v_user is not null and v_session.user_id <> v_user then
        raise exception 'session % belongs to another user than its metadata names', v_cs
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if v_session.mode <> v_mode then
        raise exception 'session % is of mode % but checkout % is of mode %', v_cs, v_mode, v_session.id, v_session.mode
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if v_session.stripe_session_id <> v_cs then
        raise exception 'checkout % belongs to Checkout Session %, not %', v_checkout_id, v_session.stripe_session_id, v_cs
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    v_user := coalesce(v_session.user_id, v_user);
    if v_user is null then
        raise exception 'session % names no user (metadata user_id or client_reference_id)', v_cs
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    if v_session.id is null then
        if v_mode = 'payment' then
            -- The credits come from the package, never from the event's amounts.
            select p.* into v_package from public.credit_packages as p where p.id = v_package_id;
            if not found then
                raise exception 'session % names no known credit package (metadata package_id %)', v_cs, v_package_id
                using errcode = 'PT404', hint = 'not_found';
            end if;
        end if;
        insert into public.checkout_sessions (
            user_id, mode, package_id, credits, amount_total, currency, app_id, stripe_session_id, expires_at
        )
        values (
            v_user, v_mode, v_package.id, v_package.credits, v_package.price_amount, v_package.currency,
            v_object #>> '{metadata,app_id}', v_cs,
            coalesce(paycore.stripe_time(v_object -> 'expires_at'), v_time + interval '24 hours')
        )
        on conflict (stripe_session_id) do nothing
        returning * into v_session;
        if v_session.id is null then
            select c.* into v_session from public.checkout_sessions as c where c.stripe_session_id = v_cs for update;
        end if;
    end if;

    -- The session's state, from the newest event (an older one changes no state, but a
    -- payment it reports is still granted below).
    update public.checkout_sessions as c
    set
        stripe_session_id = v_cs,
        status = coalesce(v_object ->> 'status', c.status),
        payment_status = coalesce(v_object ->> 'payment_status', c.payment_status),
        -- A credit checkout keeps the package's price it began with: what a payment is checked against.
        amount_total = case when c.mode = 'subscription'
            then coalesce(paycore.stripe_amount(v_object -> 'amount_total'), c.amount_total) else c.amount_total end,
        currency = case when c.mode = 'subscription'
            then coalesce(lower(v_object ->> 'currency'), c.currency) else c.currency end,
        stripe_payment_intent_id = coalesce(v_object ->> 'payment_intent', c.stripe_payment_intent_id),
        stripe_customer_id = coalesce(v_object ->> 'customer', c.stripe_customer_id),
        stripe_subscription_id = coalesce(v_object ->> 'subscription', c.stripe_subscription_id),
        app_id = coalesce(c.app_id, v_object #>> '{metadata,app_id}'),
        stripe_event_created_at = v_time
    where c.id = v_session.id
      and (c.stripe_event_created_at is null or c.stripe_event_created_at <= v_time)
    returning * into v_session;
    if v_session.id is null then
        select c.* into v_session from public.checkout_sessions as c where c.stripe_session_id = v_cs;
    end if;

    if v_session.mode <> 'payment' then
        return 'applied';
    end if;
    if v_type in ('checkout.session.completed', 'checkout.session.async_payment_succeeded')
        and v_object ->> 'payment_status' = 'paid' then
        -- What was charged (before discounts: a coupon is the merchant's choice) must be the
        -- package's price, in its currency: a session of another integration on the same
        -- Stripe account, or one built by hand, cannot buy a package for less.
        select coalesce(v_session.amount_total, p.price_amount), coalesce(v_session.currency, p.currency)
        into v_expected_amount, v_expected_currency
        from public.credit_packages as p where p.id = v_session.package_id;
        v_charged := coalesce(
            paycore.stripe_amount(v_object -> 'amount_subtotal'), paycore.stripe_amount(v_object -> 'amount_total')
        );
        if v_charged is distinct from v_expected_amount or lower(v_object ->> 'currency') is distinct from v_expected_currency then
            raise exception 'session % charged % % for package % priced % %', v_cs, v_charged, lower(v_object ->> 'currency'),
                v_session.package_id, v_expected_amount, v_expected_currency
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
        -- The grant, once per session whichever event reports the payment first.
        insert into public.user_credit_purchases (
            user_id, checkout_session_id, stripe_session_id, package_id, credits, amount, currency,
            stripe_payment_intent_id
        )
        values (
            v_user, v_session.id, v_cs, v_session.package_id, v_session.credits,
            coalesce(paycore.stripe_amount(v_object -> 'amount_total'), v_session.amount_total, 0),
            coalesce(lower(v_object ->> 'currency'), v_session.currency, 'usd'),
            v_object ->> 'payment_intent'
        )
        on conflict (stripe_session_id) do nothing
        returning id into v_purchase_id;
        if v_purchase_id is not null then
            select * into v_change from paycore.apply_credit_change(
                v_user, v_session.credits, 'purchase', 'Credit package ' || v_session.package_id,
                jsonb_build_object('stripe_session_id', v_cs, 'package_id', v_session.package_id),
                null, 'paycore:checkout:' || v_cs || ':grant'
            );
            update public.user_credit_purchases as p set transaction_id = v_change.o_transaction_id
            where p.id = v_purchase_id;
            update public.checkout_sessions as c set reservation = 'sold'
            where c.id = v_session.id and c.reservation is not null;
            perform paycore.log_event(
                'credit.purchased', v_user, 'checkout_session', v_session.id::text, null,
                jsonb_build_object('credits', v_session.credits, 'stripe_session_id', v_cs)
            );
        end if;
    elsif v_type in ('checkout.session.async_payment_failed', 'checkout.session.expired') then
        update public.checkout_sessions as c set reservation = 'released'
        where c.id = v_session.id and c.reservation = 'reserved';
    end if;
    return 'applied';
end;
$$;
comment on function paycore.stripe_checkout_session(jsonb) is
'Applies a checkout.session.* event: records the session; a paid credit session grants its '
'package''s credits once (completed or async_payment_succeeded, key '
'paycore:checkout:<session>:grant); async_payment_failed and expired release the reservation. '
'Internal.';

create function paycore.stripe_subscription(p_event jsonb)
returns text
language plpgsql volatile
as $$
declare
    v_time timestamptz := paycore.stripe_time(p_event -> 'created');
    v_object jsonb := p_event #> '{data,object}';
    v_sub text := v_object ->> 'id';
    v_status text := v_object ->> 'status';
    v_item jsonb;
    v_price_id text;
    v_price public.prices;
    v_user uuid;
    v_existing public.user_subscriptions;
    v_session public.checkout_sessions;
    v_app text;
begin
    if v_sub is null or v_sub !~ '^sub_[A-Za-z0-9_]+$' or v_status is null then
        raise exception 'a subscription event needs data.object.id (sub_...) and status'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_item := paycore.stripe_known_line(v_object #> '{items,data}');
    v_price_id := coalesce(paycore.stripe_price_id(v_item), v_object #>> '{plan,id}');
    select s.* into v_existing from public.user_subscriptions as s where s.stripe_subscription_id = v_sub for update;
    select p.* into v_price from public.prices as p where p.stripe_price_id = v_price_id;
    if not found then
        -- A known subscription keeps its app and tier (its cancellation must never be lost
        -- for a price nobody mapped); a new one cannot be placed.
        if v_existing.id is null then
            raise exception 'subscription % has no price paycore knows (%): add it to public.prices', v_sub, v_price_id
            using errcode = 'PT404', hint = 'not_found';
        end if;
        v_price := row(v_existing.stripe_price_id, v_existing.app_id, v_existing.tier_id, null, null)::public.prices;
        v_price_id := v_existing.stripe_price_id;
    end if;
    select c.* into v_session from public.checkout_sessions as c where c.stripe_subscription_id = v_sub
    order by c.created_at limit 1;
    v_user := coalesce(paycore.stripe_user(v_object -> 'metadata', null), v_existing.user_id, v_session.user_id);
    if v_user is null then
        raise exception 'subscription % names no user (metadata user_id, or its Checkout Session)', v_sub
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_app := coalesce(v_object #>> '{metadata,app_id}', v_session.app_id);
    if v_app is not null and v_app <> v_price.app_id then
        raise exception 'subscription % is for app % but its price % is of app %', v_sub, v_app, v_price_id, v_price.app_id
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    -- Order-safe: an event older than the one the row was written from changes nothing, except
    -- the cancellation, which is final (no later past_due or update brings it back).
    insert into public.user_subscriptions as s (
        user_id, app_id, tier_id, stripe_session_id, stripe_customer_id, stripe_subscription_id,
        stripe_price_id, status, currency, metadata, activated_at, current_period_start,
        current_period_end, trial_end, cancel_at_period_end, canceled_at, stripe_event_created_at
    )
    values (
        v_user, v_price.app_id, v_price.tier_id, v_session.stripe_session_id, v_object ->> 'customer', v_sub,
        v_price_id, v_status, lower(v_object ->> 'currency'),
        case when jsonb_typeof(v_object -> 'metadata') = 'object' then v_object -> 'metadata' else '{}' end,
        paycore.stripe_time(v_object -> 'start_date'),
        paycore.stripe_time(coalesce(v_item -> 'current_period_start', v_object -> 'current_period_start')),
        paycore.stripe_time(coalesce(v_item -> 'current_period_end', v_object -> 'current_period_end')),
        paycore.stripe_time(v_object -> 'trial_end'),
        coalesce((v_object ->> 'cancel_at_period_end')::boolean, false),
        paycore.stripe_time(v_object -> 'canceled_at'),
        v_time
    )
    on conflict (stripe_subscription_id) do update
    set
        app_id = excluded.app_id,
        tier_id = excluded.tier_id,
        stripe_session_id = coalesce(s.stripe_session_id, excluded.stripe_session_id),
        stripe_customer_id = coalesce(excluded.stripe_customer_id, s.stripe_customer_id),
        stripe_price_id = excluded.stripe_price_id,
        status = excluded.status,
        currency = coalesce(excluded.currency, s.currency),
        metadata = excluded.metadata,
        activated_at = coalesce(s.activated_at, excluded.activated_at),
        current_period_start = coalesce(excluded.current_period_start, s.current_period_start),
        current_period_end = coalesce(excluded.current_period_end, s.current_period_end),
        trial_end = excluded.trial_end,
        cancel_at_period_end = excluded.cancel_at_period_end,
        canceled_at = excluded.canceled_at,
        stripe_event_created_at = excluded.stripe_event_created_at
    where s.status not in ('canceled', 'incomplete_expired')
      and (
          s.stripe_event_created_at is null or s.stripe_event_created_at <= excluded.stripe_event_created_at
          -- The end wins whenever it arrives: a state reported later than the cancellation
          -- (Stripe's retry notices, clocks a second apart) never outlives it. Both are final
          -- in Stripe.
          or excluded.status in ('canceled', 'incomplete_expired')
      );
    if found then
        perform paycore.log_event(
            'subscription.' || v_status, v_user, 'subscription', v_sub, v_price.app_id,
            jsonb_build_object('tier_id', v_price.tier_id, 'stripe_event_id', p_event ->> 'id')
        );
    end if;
    return 'applied';
end;
$$;
comment on function paycore.stripe_subscription(jsonb) is
'Applies a customer.subscription.* event: upserts user_subscriptions with the app and tier of '
'its price (public.prices; unknown PT404), the period from items (API >= 2025-03-31.basil) or '
'the top level; an event older than the row''s changes nothing, except a cancellation, which '
'applies whenever it arrives; after canceled nothing changes. Internal.';

create function paycore.stripe_invoice(p_event jsonb)
returns text
language plpgsql volatile
as $$
declare
    v_type text := p_event ->> 'type';
    v_time timestamptz := paycore.stripe_time(p_event -> 'created');
    v_object jsonb := p_event #> '{data,object}';
    v_invoice text := v_object ->> 'id';
    v_sub text := coalesce(
        v_object #>> '{parent,subscription_details,subscription}',
        v_object ->> 'subscription',
        v_object #>> '{lines,data,0,parent,subscription_item_details,subscription}',
        v_object #>> '{lines,data,0,subscription}'
    );
    v_price_id text;
    v_paid boolean := v_type in ('invoice.paid', 'invoice.payment_succeeded');
    v_amount_paid bigint := paycore.stripe_amount(v_object -> 'amount_paid');
    v_subscription public.user_subscriptions;
    v_user uuid;
    v_credits bigint := 0;
    v_key text;
begin
    if v_invoice is null or v_invoice !~ '^in_[A-Za-z0-9_]+$' then
        raise exception 'an invoice event needs data.object.id (in_...)'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select s.* into v_subscription from public.user_subscriptions as s where s.stripe_subscription_id = v_sub;
    -- The subscription's owner; metadata only for an invoice paycore knows no subscription of,
    -- and metadata that names someone else is refused.
    v_user := coalesce(
        paycore.stripe_user(
            coalesce(v_object #> '{parent,subscription_details,metadata}', v_object #> '{subscription_details,metadata}'),
            null
        ),
        paycore.stripe_user(v_object -> 'metadata', null)
    );
    if v_subscription.user_id is not null then
        if v_user is not null and v_user <> v_subscription.user_id then
            raise exception 'invoice % names user % but subscription % is of user %', v_invoice, v_user, v_sub,
                v_subscription.user_id
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
        v_user := v_subscription.user_id;
    end if;
    if v_user is null then
        raise exception 'invoice % names no user (subscription metadata user_id, or a known subscription)', v_invoice
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    -- payment_history: one row per invoice; a failure never overwrites a payment. Its row
    -- lock serialises the two events of one paid invoice (paid, payment_succeeded).
    if v_paid then
        insert into public.payment_history as h (
            stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, amount, currency,
            status, paid_at
        )
        values (
            v_invoice, v_user, v_object ->> 'customer', v_sub, coalesce(v_amount_paid, 0),
            coalesce(lower(v_object ->> 'currency'), 'usd'), 'succeeded',
            coalesce(paycore.stripe_time(v_object #> '{status_transitions,paid_at}'), v_time)
        )
        on conflict (stripe_invoice_id) do update
        set status = 'succeeded', amount = excluded.amount, paid_at = coalesce(h.paid_at, excluded.paid_at);
    else
        insert into public.payment_history as h (
            stripe_invoice_id, user_id, stripe_customer_id, stripe_subscription_id, amount, currency,
            status, failed_at
        )
        values (
            v_invoice, v_user, v_object ->> 'customer', v_sub,
            coalesce(paycore.stripe_amount(v_object -> 'amount_due'), 0),
            coalesce(lower(v_object ->> 'currency'), 'usd'), 'failed', v_time
        )
        on conflict (stripe_invoice_id) do update
        set failed_at = excluded.failed_at
        where h.status = 'failed';
    end if;

    -- A paid subscription invoice (its creation or a renewal) grants the tier's monthly
    -- credits, once per invoice.
    if v_paid and v_sub is not null and coalesce(v_amount_paid, 0) > 0
        and v_object ->> 'billing_reason' in ('subscription_create', 'subscription_cycle') then
        -- The line whose price paycore knows, else the subscription's price.
        v_price_id := paycore.stripe_price_id(paycore.stripe_known_line(v_object #> '{lines,data}'));
        if not exists (select 1 from public.prices as p where p.stripe_price_id = v_price_id) then
            v_price_id := v_subscription.stripe_price_id;
        end if;
        select t.monthly_credits into v_credits
        from public.tiers as t
        join public.prices as p on p.app_id = t.app_id and p.tier_id = t.id
        where p.stripe_price_id = v_price_id;
        if not found then
            raise exception 'paid subscription invoice % has no price paycore knows: add it to public.prices', v_invoice
            using errcode = 'PT404', hint = 'not_found';
        end if;
        v_credits := coalesce(v_credits, 0);
        v_key := 'paycore:invoice:' || v_invoice || ':grant';
        if v_credits > 0 and not exists (
            select 1 from public.credit_transactions as t where t.user_id = v_user and t.idempotency_key = v_key
        ) then
            perform paycore.apply_credit_change(
                v_user, v_credits, 'subscription', 'Monthly credits of invoice ' || v_invoice,
                jsonb_build_object('stripe_invoice_id', v_invoice, 'stripe_subscription_id', v_sub),
                null, v_key
            );
        else
            v_credits := 0;
        end if;
    end if;

    insert into public.invoice_logs (
        stripe_event_id, event_type, stripe_invoice_id, user_id, stripe_subscription_id, amount_paid,
        amount_due, currency, status, billing_reason, credits_granted
    )
    values (
        p_event ->> 'id', v_type, v_invoice, v_user, v_sub, v_amount_paid,
        paycore.stripe_amount(v_object -> 'amount_due'), lower(v_object ->> 'currency'),
        v_object ->> 'status', v_object ->> 'billing_reason', v_credits
    );
    perform paycore.log_event(
        case when v_paid then 'payment.succeeded' else 'payment.failed' end, v_user, 'invoice', v_invoice, null,
        jsonb_build_object('amount', coalesce(v_amount_paid, 0), 'credits_granted', v_credits)
    );
    return 'applied';
end;
$$;
comment on function paycore.stripe_invoice(jsonb) is
'Applies an invoice.paid / payment_succeeded / payment_failed event: payment_history (a '
'failure never overwrites a payment), invoice_logs, and for a paid subscription invoice '
'(subscription_create or subscription_cycle) the tier''s monthly_credits once (key '
'paycore:invoice:<invoice>:grant). Internal.';

create function paycore.stripe_charge_refunded(p_event jsonb)
returns text
language plpgsql volatile
as $$
declare
    v_object jsonb := p_event #> '{data,object}';
    v_charge text := v_object ->> 'id';
    v_refunded bigint := paycore.stripe_amount(v_object -> 'amount_refunded');
    v_captured bigint := coalesce(
        nullif(paycore.stripe_amount(v_object -> 'amount_captured'), 0), paycore.stripe_amount(v_object -> 'amount')
    );
    v_purchase public.user_credit_purchases;
    v_due bigint;
    v_delta bigint;
    v_balance bigint;
    v_recover bigint := 0;
begin
    if v_charge is null or v_charge !~ '^(ch|py)_[A-Za-z0-9_]+$' or v_refunded is null then
        raise exception 'a charge.refunded event needs data.object.id (ch_...) and amount_refunded'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select p.* into v_purchase from public.user_credit_purchases as p
    where p.stripe_payment_intent_id = v_object ->> 'payment_intent'
    for update;
    if v_purchase.id is not null and coalesce(v_captured, 0) > 0 then
        -- amount_refunded is cumulative: what is due back is the refunded share of the
        -- credits, less what earlier refunds took (or could not take) already.
        v_due := case
            when v_refunded >= v_captured then v_purchase.credits
            else floor(v_purchase.credits::numeric * v_refunded / v_captured)::bigint
        end;
        v_delta := v_due - v_purchase.credits_clawed_back - v_purchase.credits_unrecovered;
        if v_delta > 0 then
            select c.balance into v_balance from public.credits as c where c.user_id = v_purchase.user_id for update;
            v_recover := least(v_delta, coalesce(v_balance, 0));
            if v_recover > 0 then
                perform paycore.apply_credit_change(
                    v_purchase.user_id, -v_recover, 'refund', 'Refund of charge ' || v_charge,
                    jsonb_build_object('stripe_charge_id', v_charge, 'amount_refunded', v_refunded),
                    null, 'paycore:charge:' || v_charge || ':clawback:' || v_refunded
                );
            end if;
            update public.user_credit_purchases as p
            set
                credits_clawed_back = p.credits_clawed_back + v_recover,
                credits_unrecovered = p.credits_unrecovered + (v_delta - v_recover)
            where p.id = v_purchase.id;
        end if;
        update public.user_credit_purchases as p
        set
            amount_refunded = greatest(p.amount_refunded, v_refunded),
            status = case when greatest(p.amount_refunded, v_refunded) >= v_captured then 'refunded'
                else 'partially_refunded' end
        where p.id = v_purchase.id;
    end if;
    perform paycore.stripe_payment_log(p_event, v_purchase.user_id, jsonb_build_object(
        'credits_clawed_back', v_recover, 'credits_unrecovered', greatest(coalesce(v_delta, 0) - v_recover, 0)
    ));
    return 'applied';
end;
$$;
comment on function paycore.stripe_charge_refunded(jsonb) is
'Applies a charge.refunded event: for a credit purchase, debits the refunded share of its '
'credits (cumulative amount_refunded), never below a balance of zero, and records what it could '
'not take back; logs the refund in payment_logs. Internal.';

create function paycore.stripe_payment_log(p_event jsonb, p_user_id uuid, p_meta jsonb)
returns text
language plpgsql volatile
as $$
declare
    v_object jsonb := p_event #> '{data,object}';
    v_pi text := coalesce(v_object ->> 'payment_intent', case when v_object ->> 'object' = 'payment_intent'
        then v_object ->> 'id' end);
    v_user uuid := p_user_id;
begin
    if v_object ->> 'id' is null then
        raise exception 'a payment event needs data.object.id'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if v_user is null and v_pi is not null then
        select c.user_id into v_user from public.checkout_sessions as c where c.stripe_payment_intent_id = v_pi
        limit 1;
    end if;
    insert into public.payment_logs (
        stripe_event_id, event_type, object_id, user_id, amount, currency, status, stripe_payment_intent_id,
        stripe_charge_id, meta
    )
    values (
        p_event ->> 'id', p_event ->> 'type', v_object ->> 'id', v_user,
        paycore.stripe_amount(coalesce(v_object -> 'amount_refunded', v_object -> 'amount')),
        lower(v_object ->> 'currency'), v_object ->> 'status', v_pi,
        coalesce(v_object ->> 'charge', case when v_object ->> 'object' = 'charge' then v_object ->> 'id' end,
            v_object ->> 'latest_charge'),
        coalesce(p_meta, '{}') || jsonb_strip_nulls(jsonb_build_object(
            'reason', v_object ->> 'reason',
            'failure_code', v_object #>> '{last_payment_error,code}'
        ))
    )
    on conflict (stripe_event_id) do nothing;
    return 'applied';
end;
$$;
comment on function paycore.stripe_payment_log(jsonb, uuid, jsonb) is
'Records a payment intent, refund, charge or dispute event in payment_logs (the user from its '
'Checkout Session when known). Internal.';

create function paycore.stripe_dispatch(p_event jsonb)
returns text
language plpgsql volatile
as $$
begin
    case p_event ->> 'type'
        when 'checkout.session.completed', 'checkout.session.async_payment_succeeded',
            'checkout.session.async_payment_failed', 'checkout.session.expired' then
            return paycore.stripe_checkout_session(p_event);
        when 'customer.subscription.created', 'customer.subscription.updated', 'customer.subscription.deleted' then
            return paycore.stripe_subscription(p_event);
        when 'invoice.paid', 'invoice.payment_succeeded', 'invoice.payment_failed' then
            return paycore.stripe_invoice(p_event);
        when 'charge.refunded' then
            return paycore.stripe_charge_refunded(p_event);
        when 'payment_intent.succeeded', 'payment_intent.payment_failed', 'charge.dispute.created',
            'charge.dispute.closed', 'refund.created', 'refund.updated' then
            return paycore.stripe_payment_log(p_event, null, '{}');
        else
            return 'ignored';
    end case;
end;
$$;
comment on function paycore.stripe_dispatch(jsonb) is
'Applies one stored Stripe event by its type and returns applied, or ignored for a type paycore '
'does not handle. Internal.';

create function paycore.stripe_apply_stored(p_event_id text)
returns text
language plpgsql volatile
as $$
declare
    v_event paycore.stripe_events;
    v_result text;
    v_error text;
begin
    select e.* into v_event from paycore.stripe_events as e where e.id = p_event_id;
    begin
        v_result := paycore.stripe_dispatch(v_event.payload);
    exception
        -- A permanent failure of the event's data (paycore's PT4xx refusals, a value that
        -- does not fit a column): stored as failed, nothing of it applied. Anything else
        -- (a deadlock, a lock or statement timeout, a lost connection) is raised: the
        -- webhook answers 503 and Stripe retries.
        when sqlstate 'PT400' or sqlstate 'PT402' or sqlstate 'PT403' or sqlstate 'PT404' or sqlstate 'PT409'
            or data_exception or integrity_constraint_violation then
            get stacked diagnostics v_error = message_text;
            v_result := 'failed';
    end;
    update paycore.stripe_events as e
    set status = v_result, error = v_error, processed_at = paycore.clock()
    where e.id = p_event_id;
    return v_result;
end;
$$;
comment on function paycore.stripe_apply_stored(text) is
'Applies a stored event in a subtransaction and records the outcome: applied, ignored, or '
'failed with the error (its writes undone). Internal.';

create function paycore.apply_stripe_event(p_event jsonb)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id text := p_event ->> 'id';
begin
    if p_event is null or jsonb_typeof(p_event) <> 'object' or v_id is null or v_id !~ '^evt_[A-Za-z0-9_]+$'
        or length(v_id) > 255 or coalesce(btrim(p_event ->> 'type'), '') = '' or length(p_event ->> 'type') > 100
        -- coalesce: a missing key is null, and null <> 'number' would let it through.
        or coalesce(jsonb_typeof(p_event -> 'created'), '') <> 'number'
        or coalesce(jsonb_typeof(p_event #> '{data,object}'), '') <> 'object' then
        raise exception 'not a Stripe event: id (evt_...), type, created and data.object are required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- Once per event id: a second delivery (or a concurrent one, which waits for the first
    -- to commit) is a duplicate and changes nothing.
    insert into paycore.stripe_events (id, type, api_version, livemode, created, payload, status)
    values (
        v_id, p_event ->> 'type', p_event ->> 'api_version', coalesce(jsonb_typeof(p_event -> 'livemode') = 'boolean'
            and (p_event ->> 'livemode')::boolean, false),
        paycore.stripe_time(p_event -> 'created'), p_event, 'applied'
    )
    on conflict (id) do nothing;
    if not found then
        return 'duplicate';
    end if;
    return paycore.stripe_apply_stored(v_id);
end;
$$;
comment on function paycore.apply_stripe_event(jsonb) is
'Records a Stripe event once by id and applies it, in one transaction; returns applied, '
'duplicate (a known id: nothing changes), ignored (a type paycore does not handle) or failed '
'(stored with the reason, nothing applied: the webhook answers 200, since retrying cannot '
'help). Not an event at all: PT400. paycore_webhook and the owner.';

create function public.retry_stripe_event(p_event_id text)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not retry Stripe events', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    select e.status into v_status from paycore.stripe_events as e where e.id = p_event_id for update;
    if not found then
        raise exception 'Stripe event % was never received', p_event_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if v_status <> 'failed' then
        raise exception 'Stripe event % is %: only a failed event is retried', p_event_id, v_status
        using errcode = 'PT409', hint = 'invalid_state';
    end if;
    update paycore.stripe_events as e set attempts = e.attempts + 1 where e.id = p_event_id;
    return paycore.stripe_apply_stored(p_event_id);
end;
$$;
comment on function public.retry_stripe_event(text) is
'Applies a failed Stripe event again (after the data it lacked was fixed: a price added, a user '
'created) and returns the new outcome; an event not failed PT409, unknown PT404. service_role.';

-- Stripe: a user reads its checkout sessions, credit purchases, payment and invoice logs; the
-- event store is paycore's. The webhook's role calls apply_stripe_event and begins checkouts.

grant usage on schema paycore to paycore_webhook;

revoke all on table paycore.stripe_events from public;

alter table public.checkout_sessions enable row level security;
revoke all on table public.checkout_sessions from public, anon, authenticated, service_role;
grant select on table public.checkout_sessions to authenticated, service_role;
create policy checkout_sessions_select_own on public.checkout_sessions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.user_credit_purchases enable row level security;
revoke all on table public.user_credit_purchases from public, anon, authenticated, service_role;
grant select on table public.user_credit_purchases to authenticated, service_role;
create policy user_credit_purchases_select_own on public.user_credit_purchases
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.payment_logs enable row level security;
revoke all on table public.payment_logs from public, anon, authenticated, service_role;
grant select on table public.payment_logs to authenticated, service_role;
create policy payment_logs_select_own on public.payment_logs
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.invoice_logs enable row level security;
revoke all on table public.invoice_logs from public, anon, authenticated, service_role;
grant select on table public.invoice_logs to authenticated, service_role;
create policy invoice_logs_select_own on public.invoice_logs
for select to authenticated
using (user_id = (select auth.uid()));

revoke all on function paycore.stripe_time(jsonb) from public;
revoke all on function paycore.stripe_amount(jsonb) from public;
revoke all on function paycore.stripe_price_id(jsonb) from public;
revoke all on function paycore.stripe_known_line(jsonb) from public;
revoke all on function paycore.stripe_user(jsonb, text) from public;
revoke all on function paycore.platform_credits() from public;
revoke all on function paycore.stripe_checkout_session(jsonb) from public;
revoke all on function paycore.stripe_subscription(jsonb) from public;
revoke all on function paycore.stripe_invoice(jsonb) from public;
revoke all on function paycore.stripe_charge_refunded(jsonb) from public;
revoke all on function paycore.stripe_payment_log(jsonb, uuid, jsonb) from public;
revoke all on function paycore.stripe_dispatch(jsonb) from public;
revoke all on function paycore.stripe_apply_stored(text) from public;

revoke all on function paycore.apply_stripe_event(jsonb) from public;
grant execute on function paycore.apply_stripe_event(jsonb) to paycore_webhook;

revoke all on function public.begin_credit_checkout(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.begin_credit_checkout(uuid, text) to service_role, paycore_webhook;

revoke all on function public.get_platform_credit_status() from public, anon, authenticated, service_role;
grant execute on function public.get_platform_credit_status() to service_role;

revoke all on function public.retry_stripe_event(text) from public, anon, authenticated, service_role;
grant execute on function public.retry_stripe_event(text) to service_role;

revoke all on function public.begin_subscription_checkout(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.begin_subscription_checkout(uuid, text) to service_role, paycore_webhook;

revoke all on function public.attach_checkout_session(uuid, text, timestamptz)
from public, anon, authenticated, service_role;
grant execute on function public.attach_checkout_session(uuid, text, timestamptz) to service_role, paycore_webhook;

revoke all on function public.release_credit_checkout(uuid) from public, anon, authenticated, service_role;
grant execute on function public.release_credit_checkout(uuid) to service_role, paycore_webhook;
