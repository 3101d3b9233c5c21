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
