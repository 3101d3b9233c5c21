-- users, subscriptions, tiers and usage limits: profiles, the catalog of apps, tiers,
-- features, limits and prices, the subscriptions and invoices Stripe reports, and the
-- monthly usage counters.

create table public.profiles (
    id uuid not null,
    email text,
    full_name text,
    avatar_url text,
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint profiles_pkey primary key (id),
    constraint profiles_id_fkey foreign key (id) references auth.users (id) on delete cascade,
    constraint full_name_is_at_most_200_characters check (length(full_name) <= 200),
    constraint avatar_url_is_at_most_2048_characters check (length(avatar_url) <= 2048),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object')
);
comment on table public.profiles is
'One profile per auth user: created by a trigger when the user signs up, its email kept in '
'step with auth.users, deleted with the user. The user reads and updates (update_profile) '
'only its own.';
comment on column public.profiles.id is 'The auth user (auth.users.id) this profile belongs to.';
comment on column public.profiles.email is 'The user''s email, copied from auth.users on every change.';
comment on column public.profiles.full_name is
'Name to show, up to 200 characters; seeded from the sign-up metadata (full_name or name).';
comment on column public.profiles.avatar_url is
'http(s) URL of the avatar, up to 2048 characters; seeded from the sign-up metadata '
'(avatar_url or picture).';
comment on column public.profiles.metadata is
'JSON object the user keeps with update_profile, at most 8 kB.';

-- The catalog: data a deployment edits with SQL or a migration, as the owner.
create table public.apps (
    id text not null,
    name text not null,
    free_tier_id text not null default 'free',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint apps_pkey primary key (id),
    constraint id_is_a_slug check (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    constraint name_is_not_blank check (btrim(name) <> '' and length(name) <= 200),
    constraint free_tier_id_is_free check (free_tier_id = 'free')
);
comment on table public.apps is
'The apps of the deployment (e.g. cv, letters, rise). Each has a rank-0 tier named free, '
'which the schema enforces: apps_free_tier_fkey is checked at commit.';
comment on column public.apps.id is 'Stable app id (a slug), what functions take as p_app_id.';
comment on column public.apps.name is 'Name for people.';
comment on column public.apps.free_tier_id is
'Always free: the foreign key through it makes every app keep its free tier.';

create table public.tiers (
    app_id text not null,
    id text not null,
    rank integer not null,
    name text not null,
    monthly_credits bigint not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint tiers_pkey primary key (app_id, id),
    constraint tiers_app_id_rank_key unique (app_id, rank),
    constraint tiers_app_id_id_rank_key unique (app_id, id, rank),
    constraint tiers_app_id_fkey foreign key (app_id) references public.apps (id),
    constraint id_is_a_slug check (id ~ '^[a-z][a-z0-9_]{0,62}$'),
    constraint name_is_not_blank check (btrim(name) <> '' and length(name) <= 200),
    constraint rank_is_not_negative check (rank >= 0),
    constraint free_is_rank_0 check ((id = 'free') = (rank = 0)),
    constraint monthly_credits_is_not_negative check (monthly_credits >= 0)
);
comment on table public.tiers is
'The tiers of each app, ordered by rank: free is rank 0, a higher rank entitles more. A user''s '
'tier in an app is the highest rank among its entitling subscriptions (get_user_app_tier).';
comment on column public.tiers.rank is 'Order of the tiers of one app: 0 is free, higher wins.';
comment on column public.tiers.monthly_credits is
'Credits granted for each paid invoice of a subscription to this tier (the Stripe module).';

alter table public.apps
add constraint apps_free_tier_fkey foreign key (id, free_tier_id)
references public.tiers (app_id, id) deferrable initially deferred;

create table public.features (
    id text not null,
    app_id text not null,
    description text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint features_pkey primary key (id),
    constraint features_app_id_id_key unique (app_id, id),
    constraint features_app_id_fkey foreign key (app_id) references public.apps (id),
    constraint id_is_a_slug check (id ~ '^[a-z][a-z0-9_]{0,62}$')
);
comment on table public.features is
'What an app meters per month (e.g. cv_generations): one app each; check_usage_limit takes '
'its id as p_feature.';

create table public.tier_limits (
    app_id text not null,
    tier_id text not null,
    feature_id text not null,
    monthly_limit integer,
    is_soft boolean not null default false,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint tier_limits_pkey primary key (app_id, tier_id, feature_id),
    constraint tier_limits_tier_fkey foreign key (app_id, tier_id)
    references public.tiers (app_id, id) on delete cascade,
    constraint tier_limits_feature_fkey foreign key (app_id, feature_id)
    references public.features (app_id, id) on delete cascade,
    constraint monthly_limit_is_not_negative check (monthly_limit >= 0)
);
comment on table public.tier_limits is
'How much of a feature a tier allows per calendar month (UTC). Both foreign keys carry the '
'app, so a limit names a tier and a feature of one app. No row: the tier does not include '
'the feature (limit 0, hard).';
comment on column public.tier_limits.monthly_limit is
'Uses allowed per calendar month; null = unlimited.';
comment on column public.tier_limits.is_soft is
'false: a use beyond the limit is refused (allowed false). true: it is recorded and reported as '
'overage.';

create table public.prices (
    stripe_price_id text not null,
    app_id text not null,
    tier_id text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint prices_pkey primary key (stripe_price_id),
    constraint prices_tier_fkey foreign key (app_id, tier_id) references public.tiers (app_id, id),
    constraint stripe_price_id_is_an_id check (stripe_price_id ~ '^[A-Za-z0-9_]{1,255}$')
);
comment on table public.prices is
'Which app and tier a Stripe Price (price_...) sells: a subscription to it entitles that tier. '
'Set per deployment (no default rows).';

create table public.user_subscriptions (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    app_id text not null,
    tier_id text not null,
    package_id text,
    stripe_session_id text,
    stripe_customer_id text,
    stripe_subscription_id text,
    stripe_price_id text,
    status text not null,
    payment_status text,
    amount_total bigint,
    currency text,
    metadata jsonb not null default '{}',
    activated_at timestamptz,
    current_period_start timestamptz,
    current_period_end timestamptz,
    trial_end timestamptz,
    cancel_at_period_end boolean not null default false,
    canceled_at timestamptz,
    stripe_event_created_at timestamptz,
    tier_rank integer not null,
    entitled_until timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint user_subscriptions_pkey primary key (id),
    constraint user_subscriptions_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint user_subscriptions_tier_fkey foreign key (app_id, tier_id, tier_rank)
    references public.tiers (app_id, id, rank) on update cascade,
    constraint user_subscriptions_stripe_session_id_key unique (stripe_session_id),
    constraint user_subscriptions_stripe_subscription_id_key unique (stripe_subscription_id),
    constraint status_is_a_stripe_status check (status in (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled',
        'unpaid', 'paused'
    )),
    constraint payment_status_is_a_stripe_status check (
        payment_status in ('paid', 'unpaid', 'no_payment_required')
    ),
    constraint amount_total_is_not_negative check (amount_total >= 0),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint metadata_is_an_object check (jsonb_typeof(metadata) = 'object'),
    constraint period_ends_after_it_starts check (current_period_end >= current_period_start)
);
create index user_subscriptions_user_id_app_id_tier_rank_idx
on public.user_subscriptions (user_id, app_id, tier_rank desc);
comment on table public.user_subscriptions is
'A user''s Stripe subscription to one tier of one app, written by the Stripe module''s '
'functions; read by its user only. Whether it entitles now: get_user_app_tier.';
comment on column public.user_subscriptions.status is
'Stripe''s subscription status: incomplete, incomplete_expired, trialing, active, past_due, '
'canceled, unpaid or paused.';
comment on column public.user_subscriptions.package_id is
'The package the Checkout Session sold (its metadata), when there is one.';
comment on column public.user_subscriptions.payment_status is
'The Checkout Session''s payment_status: paid, unpaid or no_payment_required.';
comment on column public.user_subscriptions.amount_total is
'The Checkout Session''s total in minor units of currency.';
comment on column public.user_subscriptions.current_period_start is
'Start of the billing period Stripe reports (advanced at each renewal).';
comment on column public.user_subscriptions.current_period_end is
'End of the billing period Stripe reports; for trialing, the end of the trial.';
comment on column public.user_subscriptions.cancel_at_period_end is
'The subscription ends at current_period_end: it entitles until then, not after.';
comment on column public.user_subscriptions.tier_rank is
'The rank of the tier, set from public.tiers on every write and kept in step by the foreign key '
'(on update cascade): the tier lookup needs no join.';
comment on column public.user_subscriptions.entitled_until is
'Until when this subscription entitles its tier (null: it does not), computed on every write '
'from status, periods, cancel_at_period_end and the grace period '
'(paycore.subscription_entitled_until), and again for every row when the grace period setting '
'changes. get_user_app_tier compares it with paycore.clock().';
comment on column public.user_subscriptions.stripe_event_created_at is
'Creation time of the Stripe event this row was last written from: an older event never '
'overwrites a newer state.';

create table public.payment_history (
    id uuid not null default gen_random_uuid(),
    stripe_invoice_id text not null,
    user_id uuid not null,
    stripe_customer_id text,
    stripe_subscription_id text,
    amount bigint not null default 0,
    currency text not null default 'usd',
    status text not null,
    payment_intent text,
    paid_at timestamptz,
    failed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint payment_history_pkey primary key (id),
    constraint payment_history_stripe_invoice_id_key unique (stripe_invoice_id),
    constraint payment_history_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint status_is_known check (status in ('succeeded', 'failed')),
    constraint amount_is_not_negative check (amount >= 0),
    constraint currency_is_iso_lowercase check (currency ~ '^[a-z]{3}$'),
    constraint paid_at_is_set_when_succeeded check (status <> 'succeeded' or paid_at is not null),
    constraint failed_at_is_set_when_failed check (status <> 'failed' or failed_at is not null)
);
create index payment_history_user_id_created_at_idx on public.payment_history (user_id, created_at desc);
comment on table public.payment_history is
'One row per Stripe invoice paid or failed, written by the Stripe module''s functions; read by '
'its user only. amount is in minor units of currency.';
comment on column public.payment_history.status is
'succeeded (paid_at set) or failed (failed_at set); a failed invoice paid later becomes succeeded.';

create table public.user_usage_limits (
    user_id uuid not null,
    app_id text not null,
    feature_id text not null,
    period_start timestamptz not null,
    period_end timestamptz not null,
    used bigint not null default 0,
    limit_reached_tier text,
    soft_limit_exceeded_tier text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint user_usage_limits_pkey primary key (user_id, feature_id, period_start),
    constraint user_usage_limits_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint user_usage_limits_feature_fkey foreign key (app_id, feature_id)
    references public.features (app_id, id) on delete cascade,
    constraint used_is_not_negative check (used >= 0),
    constraint period_ends_after_it_starts check (period_end > period_start)
);
comment on table public.user_usage_limits is
'What a user used of a feature in one calendar month (UTC): one row per user, feature and '
'month, created by the first use, so a new month starts from zero without any job. Written by '
'check_usage_limit and release_usage; read by its user only.';
comment on column public.user_usage_limits.period_start is 'First instant of the month (UTC).';
comment on column public.user_usage_limits.period_end is 'First instant of the next month (UTC).';
comment on column public.user_usage_limits.used is
'Uses recorded this month; never negative; beyond the limit only for a soft limit.';
comment on column public.user_usage_limits.limit_reached_tier is
'The tier under which a use was last refused at the hard limit this month (usage.limit_reached '
'was logged); null if none.';
comment on column public.user_usage_limits.soft_limit_exceeded_tier is
'The tier under which the soft limit was last exceeded this month (usage.soft_limit_exceeded '
'was logged); null if none.';

-- Retries of check_usage_limit and release_usage with an idempotency key.
create table paycore.usage_operations (
    user_id uuid not null,
    idempotency_key text not null,
    operation text not null,
    feature_id text not null,
    amount integer not null,
    result jsonb not null,
    created_at timestamptz not null default now(),
    constraint usage_operations_pkey primary key (user_id, idempotency_key),
    constraint usage_operations_user_id_fkey foreign key (user_id)
    references auth.users (id) on delete cascade,
    constraint operation_is_known check (operation in ('use', 'release'))
);
comment on table paycore.usage_operations is
'The first result of each check_usage_limit or release_usage call made with an idempotency '
'key: a retry with the same key and arguments returns it and records nothing.';

insert into paycore.settings (key, value, description)
values (
    'subscription_grace_period', '"3 days"',
    'How long a past_due subscription keeps entitling, counted from current_period_start '
    '(and how long an active one outlives a current_period_end that no renewal event moved).'
);

insert into paycore.reserved_event_namespaces (namespace, description)
values
('profile', 'profiles: updated'),
('usage', 'usage limits: reached, exceeded'),
('subscription', 'subscriptions (the Stripe module)'),
('payment', 'payments (the Stripe module)');

-- The default catalog: three apps, free and premium each, example monthly limits. The
-- apps come first: their free tier is checked at the set constraints below (the check is
-- deferred to let an app and its tiers be inserted in any order, and it must run before any
-- later DDL on apps in this transaction).
insert into public.apps (id, name)
values
('cv', 'Phoenix CV'),
('letters', 'Phoenix Letters'),
('rise', 'Phoenix Rise');

insert into public.tiers (app_id, id, rank, name, monthly_credits)
values
('cv', 'free', 0, 'Free', 0),
('cv', 'premium', 1, 'Premium', 100),
('letters', 'free', 0, 'Free', 0),
('letters', 'premium', 1, 'Premium', 100),
('rise', 'free', 0, 'Free', 0),
('rise', 'premium', 1, 'Premium', 50);
set constraints public.apps_free_tier_fkey immediate;

insert into public.features (id, app_id, description)
values
('cv_generations', 'cv', 'CVs generated'),
('cv_exports', 'cv', 'CVs exported to PDF'),
('letters_generations', 'letters', 'Cover letters generated'),
('letters_analyses', 'letters', 'Job offers analysed'),
('rise_sessions', 'rise', 'Coaching sessions'),
('rise_journal_entries', 'rise', 'Journal entries');

insert into public.tier_limits (app_id, tier_id, feature_id, monthly_limit, is_soft)
values
('cv', 'free', 'cv_generations', 3, false),
('cv', 'premium', 'cv_generations', 100, false),
('cv', 'free', 'cv_exports', 5, true),
('cv', 'premium', 'cv_exports', null, false),
('letters', 'free', 'letters_generations', 3, false),
('letters', 'premium', 'letters_generations', 100, false),
('letters', 'free', 'letters_analyses', 10, true),
('letters', 'premium', 'letters_analyses', null, false),
('rise', 'free', 'rise_sessions', 2, false),
('rise', 'premium', 'rise_sessions', null, false),
('rise', 'free', 'rise_journal_entries', 30, true),
('rise', 'premium', 'rise_journal_entries', null, false);
