-- depends: 0006.document-columns
-- create-users: schema/30_users.sql, functions/30_users.sql, policies/30_users.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

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

-- users, subscriptions, tiers and usage limits: the profile trigger on auth.users,
-- update_profile, the tier a user has in an app now, and the monthly usage check.

create function paycore.is_profile_text(p_value text, p_max_length integer, p_url boolean)
returns boolean
language sql immutable
as $$
    -- Not blank, at most p_max_length characters, no control or bidirectional-override
    -- characters, and for a URL an http(s) URL without quotes, angle brackets or spaces.
    select
        not paycore.is_blank(p_value)
        and length(p_value) <= p_max_length
        and p_value !~ '[[:cntrl:]\u200e\u200f\u202a-\u202e\u2066-\u2069]'
        and (not p_url or p_value ~ '^https?://[^[:space:]"''<>\\`]+$')
$$;
comment on function paycore.is_profile_text(text, integer, boolean) is
'Whether p_value may be a profile''s full_name (p_url false) or avatar_url (p_url true): the one '
'rule of update_profile and of the sign-up trigger. Null for null. Internal.';

create function paycore.profile_text(p_meta jsonb, p_keys text[], p_max_length integer, p_url boolean)
returns text
language sql immutable
as $$
    -- The first of p_keys whose value is a JSON string that update_profile would accept.
    select v.value
    from unnest(p_keys) with ordinality as k (key, n)
    cross join lateral (select p_meta ->> k.key as value) as v
    where jsonb_typeof(p_meta -> k.key) = 'string' and paycore.is_profile_text(v.value, p_max_length, p_url)
    order by k.n
    limit 1
$$;
comment on function paycore.profile_text(jsonb, text[], integer, boolean) is
'The first valid text among p_keys of sign-up metadata (a JSON string, 1 to p_max_length '
'characters, no control characters; an http(s) URL when p_url), else null. Internal.';

create function paycore.tg_auth_users__sync_profile()
returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Runs inside Supabase Auth's sign-up and email change: it must never make them fail.
    -- A name or an avatar URL that update_profile would refuse is left out; anything else
    -- that goes wrong leaves the profile as it was (update_profile recreates a missing one)
    -- with a warning in the database log.
    begin
        if tg_op = 'INSERT' then
            insert into public.profiles (id, email, full_name, avatar_url)
            values (
                new.id, new.email,
                paycore.profile_text(new.raw_user_meta_data, array['full_name', 'name'], 200, false),
                paycore.profile_text(new.raw_user_meta_data, array['avatar_url', 'picture'], 2048, true)
            )
            on conflict (id) do nothing;
        else
            update public.profiles as p set email = new.email
            where p.id = new.id and p.email is distinct from new.email;
        end if;
    exception when others then
        raise warning 'paycore: profile of auth user % not synced: % (%)', new.id, sqlerrm, sqlstate;
    end;
    return null;
end;
$$;
comment on function paycore.tg_auth_users__sync_profile() is
'AFTER INSERT OR UPDATE OF email on auth.users: creates the profile (full_name and avatar_url '
'from valid sign-up metadata) or copies the new email; never raises. SECURITY DEFINER because '
'Supabase Auth''s own role writes auth.users and has no right on public.profiles.';

create trigger paycore_sync_profile
after insert or update of email on auth.users
for each row execute function paycore.tg_auth_users__sync_profile();

-- The users that signed up before this module: a profile each, in one statement.
insert into public.profiles (id, email, full_name, avatar_url)
select
    u.id,
    u.email,
    paycore.profile_text(u.raw_user_meta_data, array['full_name', 'name'], 200, false) as full_name,
    paycore.profile_text(u.raw_user_meta_data, array['avatar_url', 'picture'], 2048, true) as avatar_url
from auth.users as u
on conflict (id) do nothing;

create trigger profiles_set_updated_at
before update on public.profiles
for each row execute function paycore.tg__set_updated_at();
create trigger apps_set_updated_at
before update on public.apps
for each row execute function paycore.tg__set_updated_at();
create trigger tiers_set_updated_at
before update on public.tiers
for each row execute function paycore.tg__set_updated_at();
create trigger features_set_updated_at
before update on public.features
for each row execute function paycore.tg__set_updated_at();
create trigger tier_limits_set_updated_at
before update on public.tier_limits
for each row execute function paycore.tg__set_updated_at();
create trigger prices_set_updated_at
before update on public.prices
for each row execute function paycore.tg__set_updated_at();
create trigger user_subscriptions_set_updated_at
before update on public.user_subscriptions
for each row execute function paycore.tg__set_updated_at();
create trigger payment_history_set_updated_at
before update on public.payment_history
for each row execute function paycore.tg__set_updated_at();
create trigger user_usage_limits_set_updated_at
before update on public.user_usage_limits
for each row execute function paycore.tg__set_updated_at();

create function public.update_profile(
    p_full_name text default null,
    p_avatar_url text default null,
    p_metadata jsonb default null
)
returns public.profiles
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid;
    v_profile public.profiles;
    v_changed text[] := '{}';
begin
    if paycore.caller_role() <> 'authenticated' then
        raise exception 'update_profile is for a signed-in user: role % has no profile', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    v_uid := paycore.resolve_user_id(null);
    -- null keeps a field; '' clears full_name or avatar_url.
    if p_full_name is not null and p_full_name <> '' and not paycore.is_profile_text(p_full_name, 200, false) then
        raise exception 'p_full_name must be 1 to 200 characters, not only white space, without control '
            'or bidirectional-override characters, or '''' to clear it'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_avatar_url is not null and p_avatar_url <> '' and not paycore.is_profile_text(p_avatar_url, 2048, true) then
        raise exception 'p_avatar_url must be an http(s) URL of at most 2048 characters, or '''' to clear it'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_metadata is not null then
        perform paycore.check_json_object('p_metadata', p_metadata, 8192);
    end if;

    -- A user whose profile is missing (deleted by hand) gets it back.
    insert into public.profiles (id, email)
    select u.id, u.email from auth.users as u where u.id = v_uid
    on conflict (id) do nothing;
    select p.* into v_profile from public.profiles as p where p.id = v_uid for update;

    if p_full_name is not null and v_profile.full_name is distinct from nullif(p_full_name, '') then
        v_changed := v_changed || 'full_name'::text;
    end if;
    if p_avatar_url is not null and v_profile.avatar_url is distinct from nullif(p_avatar_url, '') then
        v_changed := v_changed || 'avatar_url'::text;
    end if;
    if p_metadata is not null and v_profile.metadata is distinct from p_metadata then
        v_changed := v_changed || 'metadata'::text;
    end if;
    if cardinality(v_changed) = 0 then
        return v_profile;
    end if;

    update public.profiles as p
    set
        full_name = case when p_full_name is null then p.full_name else nullif(p_full_name, '') end,
        avatar_url = case when p_avatar_url is null then p.avatar_url else nullif(p_avatar_url, '') end,
        metadata = coalesce(p_metadata, p.metadata)
    where p.id = v_uid
    returning p.* into v_profile;
    perform paycore.log_event(
        'profile.updated', v_uid, 'profile', null, null,
        jsonb_build_object('fields', to_jsonb(v_changed))
    );
    return v_profile;
end;
$$;
comment on function public.update_profile(text, text, jsonb) is
'Updates the caller''s profile and returns it: null keeps a field, '''' clears full_name or '
'avatar_url (http(s) URL, up to 2048 characters); p_metadata (a JSON object, at most 8 kB) '
'replaces the stored one. full_name up to 200 characters without control characters. A '
'change logs profile.updated (the names of the changed fields). '
'authenticated only.';

create function paycore.subscription_entitled_until(
    p_status text,
    p_cancel_at_period_end boolean,
    p_current_period_start timestamptz,
    p_current_period_end timestamptz,
    p_grace interval
)
returns timestamptz
language sql immutable
as $$
    -- The grace period is added in UTC: timestamptz + '3 days' would count days in the
    -- session's time zone (23 or 25 hours across a daylight saving change).
    select case
        -- active and trialing: until the period ends; a renewal moves current_period_end, and
        -- the grace period covers the renewal's events arriving late. Cancelled at period
        -- end (Stripe keeps the status active until then): until the period ends, no grace.
        -- A period Stripe has not reported (null) entitles nothing.
        when p_status in ('active', 'trialing') then
            case
                when p_cancel_at_period_end then p_current_period_end
                else ((p_current_period_end at time zone 'UTC') + p_grace) at time zone 'UTC'
            end
        -- past_due: Stripe advanced the period, then the renewal payment failed; the unpaid
        -- period began at current_period_start. Never past the end when cancelling.
        when p_status = 'past_due' then
            case
                when p_cancel_at_period_end then least(
                    ((p_current_period_start at time zone 'UTC') + p_grace) at time zone 'UTC',
                    p_current_period_end
                )
                else ((p_current_period_start at time zone 'UTC') + p_grace) at time zone 'UTC'
            end
        -- canceled (final: a subscription cancelled at period end is canceled only once the
        -- period is over), incomplete, incomplete_expired, unpaid, paused: never.
    end
$$;
comment on function paycore.subscription_entitled_until(text, boolean, timestamptz, timestamptz, interval) is
'Until when a subscription in this state entitles its tier (null: not at all): active and '
'trialing until current_period_end (+ p_grace unless cancel_at_period_end), past_due until '
'current_period_start + p_grace (and not past current_period_end when cancelling), every other '
'status, or a null period, never. Intervals are added in UTC. Internal.';

create function paycore.grace_period()
returns interval
language sql stable
as $$
    select coalesce(
        (select (s.value #>> '{}')::interval from paycore.settings as s where s.key = 'subscription_grace_period'),
        interval '3 days'
    )
$$;
comment on function paycore.grace_period() is
'The configured subscription_grace_period (default 3 days). Internal.';

create function paycore.tg_user_subscriptions__derive()
returns trigger
language plpgsql
as $$
begin
    -- The rank of the tier (checked by the foreign key), and until when the row entitles.
    -- An unknown tier gets rank -1, which no tier has: the foreign key then refuses the row.
    new.tier_rank := coalesce(
        (select t.rank from public.tiers as t where t.app_id = new.app_id and t.id = new.tier_id), -1
    );
    new.entitled_until := paycore.subscription_entitled_until(
        new.status, new.cancel_at_period_end, new.current_period_start, new.current_period_end,
        paycore.grace_period()
    );
    return new;
end;
$$;
comment on function paycore.tg_user_subscriptions__derive() is
'BEFORE INSERT OR UPDATE on user_subscriptions: sets tier_rank and entitled_until from the row '
'and the catalog, so that no write can leave them out of step.';

create function paycore.tg_settings__recompute_entitlements()
returns trigger
language plpgsql
as $$
declare
    v_grace interval := paycore.grace_period();
begin
    -- A new grace period applies to every subscription at once; rows it does not change are
    -- not written.
    update public.user_subscriptions as s
    set entitled_until = paycore.subscription_entitled_until(
        s.status, s.cancel_at_period_end, s.current_period_start, s.current_period_end, v_grace
    )
    where s.entitled_until is distinct from paycore.subscription_entitled_until(
        s.status, s.cancel_at_period_end, s.current_period_start, s.current_period_end, v_grace
    );
    return null;
end;
$$;
comment on function paycore.tg_settings__recompute_entitlements() is
'AFTER INSERT, UPDATE OR DELETE of the subscription_grace_period setting: recomputes '
'user_subscriptions.entitled_until for every row.';

create function paycore.is_grace_period(p_value jsonb)
returns boolean
language plpgsql immutable
as $$
begin
    return jsonb_typeof(p_value) = 'string'
        and (p_value #>> '{}')::interval between interval '0' and interval '90 days';
exception when invalid_datetime_format or datetime_field_overflow or interval_field_overflow then
    return false;
end;
$$;
comment on function paycore.is_grace_period(jsonb) is
'Whether a setting value is a JSON string that reads as an interval from 0 to 90 days. Internal: '
'the CHECK of subscription_grace_period.';

-- A grace period that is not an interval would break every tier lookup of paying users.
-- paycore.settings is a small configuration table: the check is validated at once.
alter table paycore.settings
-- squawk-ignore constraint-missing-not-valid
add constraint subscription_grace_period_is_an_interval check (
    key <> 'subscription_grace_period' or paycore.is_grace_period(value)
);

create trigger user_subscriptions_derive
before insert or update on public.user_subscriptions
for each row execute function paycore.tg_user_subscriptions__derive();
create trigger settings_recompute_entitlements
after insert or update or delete on paycore.settings
for each statement execute function paycore.tg_settings__recompute_entitlements();

create function paycore.effective_tier(p_user_id uuid, p_app_id text)
returns setof text
language sql stable
rows 1
as $$
    -- A set-returning SQL function, so that the planner inlines it into the caller's query
    -- (and plpgsql caches the plan): a scalar SQL function with a subquery is planned again
    -- on every call. One index scan: entitled_until and tier_rank are kept on the row.
    select coalesce(
        (
            select s.tier_id
            from public.user_subscriptions as s
            where s.user_id = p_user_id and s.app_id = p_app_id and s.entitled_until > paycore.clock()
            order by s.tier_rank desc
            limit 1
        ),
        'free'
    )
$$;
comment on function paycore.effective_tier(uuid, text) is
'The tier p_user_id has in p_app_id at paycore.clock() (one row): the highest rank among its '
'entitling subscriptions to that app, else free. Internal (no check of the app or the caller).';

create function public.get_user_app_tier(p_user_id uuid default null, p_app_id text default null)
returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_tier text;
    v_app_exists boolean;
    v_user_exists boolean;
begin
    if p_app_id is null then
        raise exception 'p_app_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- One statement: the tier, and whether the app and the user exist (each statement
    -- more is a measurable part of this hot path, bench/usage.py). A tier other than free
    -- comes from a subscription, whose foreign keys say both exist: no lookup then.
    select
        t.tier,
        t.tier <> 'free' or exists (select 1 from public.apps as a where a.id = p_app_id),
        t.tier <> 'free' or exists (select 1 from auth.users as u where u.id = v_uid)
    into v_tier, v_app_exists, v_user_exists
    from paycore.effective_tier(v_uid, p_app_id) as t (tier);
    if not v_app_exists then
        raise exception 'app % does not exist', p_app_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if not v_user_exists then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;
    return v_tier;
end;
$$;
comment on function public.get_user_app_tier(uuid, text) is
'The tier id the user has in the app now: the highest rank among its subscriptions that '
'entitle (active, trialing; past_due within the grace period from current_period_start, '
'setting subscription_grace_period, default 3 days; cancelled at period end until the period '
'ends), else free. authenticated (itself: p_user_id null or omitted, or its own id) and '
'service_role. Unknown app or user PT404.';

create function paycore.tier_limit(p_app_id text, p_tier text, p_feature text)
returns table (monthly_limit integer, is_soft boolean)
language sql stable
rows 1
as $$
    -- Always one row: the tier's limit of the feature (null = unlimited); no tier_limits row
    -- means the tier does not include the feature: limit 0, hard. A set-returning SQL
    -- function, so that the planner inlines it into the caller's query.
    select case when l.feature_id is null then 0 else l.monthly_limit end, coalesce(l.is_soft, false)
    from (values (1)) as one (n)
    left join public.tier_limits as l
        on l.app_id = p_app_id and l.tier_id = p_tier and l.feature_id = p_feature
$$;
comment on function paycore.tier_limit(text, text, text) is
'The monthly limit (null = unlimited) and softness of a feature in a tier, one row: 0 and hard '
'when the tier has no tier_limits row for it. Internal: the one place of that rule.';

create function paycore.feature_limit(p_user_id uuid, p_feature text)
returns table (app_id text, tier text, monthly_limit integer, is_soft boolean)
language sql stable
rows 1
as $$
    -- The feature's app, the user's tier in it at the moment of the call (an upgrade raises
    -- the limit at once; what was used this month still counts) and that tier's limit; no row
    -- for an unknown feature. Inlined into the caller's query; offset 0: the tier is computed
    -- once, not again for each place that names it.
    select f.app_id, t.tier, l.monthly_limit, l.is_soft
    from public.features as f
    cross join lateral (select e.tier from paycore.effective_tier(p_user_id, f.app_id) as e (tier) offset 0) as t
    cross join lateral paycore.tier_limit(f.app_id, t.tier, f.id) as l
    where f.id = p_feature
$$;
comment on function paycore.feature_limit(uuid, text) is
'The app of p_feature, the tier p_user_id has in it now and that tier''s limit of the feature '
'(paycore.tier_limit); no row for an unknown feature. Internal.';

create function paycore.usage_replay(
    p_user_id uuid,
    p_operation text,
    p_feature text,
    p_amount integer,
    p_idempotency_key text,
    out o_key text,
    out o_result jsonb
)
language plpgsql volatile
as $$
declare
    v_previous paycore.usage_operations;
begin
    perform paycore.check_idempotency_key('p_idempotency_key', p_idempotency_key);
    -- A signed-in user's keys live apart from the server's: a user cannot take the key a
    -- server will use for its own call first.
    o_key := case
        when paycore.caller_role() = 'authenticated' then 'paycore:client:' || p_idempotency_key
        else p_idempotency_key
    end;
    perform pg_advisory_xact_lock(hashtextextended(p_user_id::text || '/usage/' || o_key, 0));
    select o.* into v_previous
    from paycore.usage_operations as o
    where o.user_id = p_user_id and o.idempotency_key = o_key;
    if found then
        if v_previous.operation <> p_operation or v_previous.feature_id <> p_feature
            or v_previous.amount <> p_amount then
            raise exception 'idempotency key % was used with other arguments', p_idempotency_key
            using errcode = 'PT409', hint = 'idempotency_conflict';
        end if;
        o_result := v_previous.result;
    end if;
end;
$$;
comment on function paycore.usage_replay(uuid, text, text, integer, text) is
'For a check_usage_limit or release_usage call with an idempotency key: the key as stored '
'(a signed-in user''s under paycore:client:) and, when the key was used before with the same '
'operation, feature and amount, that first result; PT409 idempotency_conflict with other '
'arguments. Holds a transaction lock on the key until the caller records its result. Internal.';

create function paycore.usage_result(
    p_app_id text,
    p_feature text,
    p_tier text,
    p_allowed boolean,
    p_used bigint,
    p_limit integer,
    p_is_soft boolean,
    p_period_start timestamptz,
    p_period_end timestamptz
)
returns jsonb
language sql stable
as $$
    select jsonb_build_object(
        'allowed', p_allowed,
        'used', p_used,
        'limit', p_limit,
        'remaining', case when p_limit is not null then greatest(p_limit - p_used, 0) end,
        'overage', coalesce(greatest(p_used - p_limit, 0), 0),
        'is_soft', p_is_soft,
        'tier', p_tier,
        'app_id', p_app_id,
        'feature', p_feature,
        'period_start', p_period_start,
        'period_end', p_period_end
    )
$$;
comment on function paycore.usage_result(
    text, text, text, boolean, bigint, integer, boolean, timestamptz, timestamptz
) is
'The JSON that check_usage_limit and release_usage return (remaining null when unlimited). Internal.';

create function public.check_usage_limit(
    p_user_id uuid default null,
    p_feature text default null,
    p_amount integer default 1,
    p_idempotency_key text default null
)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_now timestamptz := paycore.clock();
    v_month timestamp := date_trunc('month', v_now at time zone 'UTC');
    v_start timestamptz := v_month at time zone 'UTC';
    v_end timestamptz := (v_month + interval '1 month') at time zone 'UTC';
    v_app text;
    v_tier text;
    v_limit integer;
    v_soft boolean;
    v_used bigint;
    v_allowed boolean := false;
    v_result jsonb;
    v_key text;
    v_first boolean;
    v_user_exists boolean;
begin
    -- Plain expressions, not paycore.check_* calls: this is the hot path.
    if p_feature is null then
        raise exception 'p_feature is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_amount is null or p_amount < 0 then
        raise exception 'p_amount must be 0 (only look) or a positive integer'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    -- One statement: the feature, its app, the tier and its limit, and the user.
    select l.app_id, l.tier, l.monthly_limit, l.is_soft, exists (select 1 from auth.users as u where u.id = v_uid)
    into v_app, v_tier, v_limit, v_soft, v_user_exists
    from paycore.feature_limit(v_uid, p_feature) as l;
    if not found then
        raise exception 'feature % does not exist', p_feature
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if not v_user_exists then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if p_idempotency_key is not null then
        select r.o_key, r.o_result into v_key, v_result
        from paycore.usage_replay(v_uid, 'use', p_feature, p_amount, p_idempotency_key) as r;
        if v_result is not null then
            return v_result;
        end if;
    end if;

    if p_amount > 0 and (v_limit is null or v_soft or p_amount <= v_limit) then
        -- Check and record in one statement: the row lock serialises a user's parallel
        -- calls, and a use beyond a hard limit matches no row, so the limit holds under any
        -- concurrency. A new month is a new row: it starts from zero.
        insert into public.user_usage_limits as u (user_id, app_id, feature_id, period_start, period_end, used)
        values (v_uid, v_app, p_feature, v_start, v_end, p_amount)
        on conflict (user_id, feature_id, period_start) do update
        set used = u.used + excluded.used
        where v_limit is null or v_soft or u.used + excluded.used <= v_limit
        returning u.used into v_used;
        v_allowed := v_used is not null;
    end if;
    if v_used is null then
        select u.used into v_used
        from public.user_usage_limits as u
        where u.user_id = v_uid and u.feature_id = p_feature and u.period_start = v_start;
        v_used := coalesce(v_used, 0);
        if p_amount = 0 then
            v_allowed := v_limit is null or v_soft or v_used < v_limit;
        end if;
    end if;

    -- What an upsell nudge listens to, once per user, feature, month and tier: the flag on
    -- the month's row (deleted with the user) says it was logged.
    if not v_allowed and p_amount > 0 and v_used >= v_limit then
        insert into public.user_usage_limits as u (
            user_id, app_id, feature_id, period_start, period_end, used, limit_reached_tier
        )
        values (v_uid, v_app, p_feature, v_start, v_end, 0, v_tier)
        on conflict (user_id, feature_id, period_start) do update
        set limit_reached_tier = excluded.limit_reached_tier
        where u.limit_reached_tier is distinct from excluded.limit_reached_tier
        returning true into v_first;
        if v_first then
            perform paycore.log_event(
                'usage.limit_reached', v_uid, 'feature', p_feature, v_app,
                jsonb_build_object('limit', v_limit, 'used', v_used, 'tier', v_tier, 'period_start', v_start)
            );
        end if;
    elsif v_soft and v_used > v_limit and v_used - p_amount <= v_limit then
        update public.user_usage_limits as u
        set soft_limit_exceeded_tier = v_tier
        where
            u.user_id = v_uid and u.feature_id = p_feature and u.period_start = v_start
            and u.soft_limit_exceeded_tier is distinct from v_tier
        returning true into v_first;
        if v_first then
            perform paycore.log_event(
                'usage.soft_limit_exceeded', v_uid, 'feature', p_feature, v_app,
                jsonb_build_object('limit', v_limit, 'used', v_used, 'tier', v_tier, 'period_start', v_start)
            );
        end if;
    end if;

    v_result := paycore.usage_result(
        v_app, p_feature, v_tier, v_allowed, v_used, v_limit, v_soft, v_start, v_end
    );
    if p_idempotency_key is not null then
        insert into paycore.usage_operations (user_id, idempotency_key, operation, feature_id, amount, result)
        values (v_uid, v_key, 'use', p_feature, p_amount, v_result);
    end if;
    return v_result;
end;
$$;
comment on function public.check_usage_limit(uuid, text, integer, text) is
'Checks and records p_amount uses of a feature in the current calendar month (UTC) in one '
'atomic step, under the limit of the user''s tier at the moment of the call. Returns {allowed, '
'used, limit, remaining, overage, is_soft, tier, app_id, feature, period_start, period_end}. '
'A hard limit refuses without recording (allowed false, no error); a soft limit records and '
'reports overage; a null limit is unlimited; p_amount 0 only looks (allowed: one more use '
'would be). The first refusal at a hard limit logs usage.limit_reached, the first use beyond '
'a soft limit usage.soft_limit_exceeded (once per month and tier). The same idempotency key '
'with the same arguments returns the first result and records nothing; with other arguments '
'PT409 (a signed-in user''s keys are apart from the server''s). authenticated (itself: '
'p_user_id null or omitted, or its own id) and service_role. Negative p_amount or no feature '
'PT400, unknown feature or user PT404.';

create function public.release_usage(
    p_user_id uuid,
    p_feature text,
    p_amount integer,
    p_idempotency_key text default null
)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := paycore.clock();
    v_month timestamp := date_trunc('month', v_now at time zone 'UTC');
    v_start timestamptz := v_month at time zone 'UTC';
    v_end timestamptz := (v_month + interval '1 month') at time zone 'UTC';
    v_app text;
    v_tier text;
    v_limit integer;
    v_soft boolean;
    v_used bigint;
    v_result jsonb;
    v_key text;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_feature is null then
        raise exception 'p_feature is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_amount is null or p_amount <= 0 then
        raise exception 'p_amount must be a positive integer'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    select l.app_id, l.tier, l.monthly_limit, l.is_soft into v_app, v_tier, v_limit, v_soft
    from paycore.feature_limit(p_user_id, p_feature) as l;
    if not found then
        raise exception 'feature % does not exist', p_feature
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if not exists (select 1 from auth.users as u where u.id = p_user_id) then
        raise exception 'user % does not exist', p_user_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if p_idempotency_key is not null then
        select r.o_key, r.o_result into v_key, v_result
        from paycore.usage_replay(p_user_id, 'release', p_feature, p_amount, p_idempotency_key) as r;
        if v_result is not null then
            return v_result;
        end if;
    end if;

    -- Only the current period: last month's usage is history.
    update public.user_usage_limits as u
    set used = greatest(u.used - p_amount, 0)
    where u.user_id = p_user_id and u.feature_id = p_feature and u.period_start = v_start and u.used > 0
    returning u.used into v_used;
    if not found then
        select u.used into v_used
        from public.user_usage_limits as u
        where u.user_id = p_user_id and u.feature_id = p_feature and u.period_start = v_start;
        v_used := coalesce(v_used, 0);
    end if;

    v_result := paycore.usage_result(
        v_app, p_feature, v_tier, v_limit is null or v_soft or v_used < v_limit, v_used, v_limit, v_soft,
        v_start, v_end
    );
    if p_idempotency_key is not null then
        insert into paycore.usage_operations (user_id, idempotency_key, operation, feature_id, amount, result)
        values (p_user_id, v_key, 'release', p_feature, p_amount, v_result);
    end if;
    return v_result;
end;
$$;
comment on function public.release_usage(uuid, text, integer, text) is
'Gives back p_amount uses of a feature in the current calendar month (a failed operation '
'returns what it consumed), never below zero, and returns the usage as check_usage_limit does '
'(allowed: whether one more use would be). The same idempotency key with the same arguments '
'returns the first result and gives back nothing more; with other arguments PT409. '
'service_role only. p_amount must be positive (PT400); unknown feature or user PT404.';

create function public.get_usage(p_app_id text, p_user_id uuid default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_month timestamp := date_trunc('month', paycore.clock() at time zone 'UTC');
    v_start timestamptz := v_month at time zone 'UTC';
    v_end timestamptz := (v_month + interval '1 month') at time zone 'UTC';
    v_tier text;
begin
    if p_app_id is null then
        raise exception 'p_app_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if not exists (select 1 from public.apps as a where a.id = p_app_id) then
        raise exception 'app % does not exist', p_app_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if paycore.caller_role() <> 'authenticated'
        and not exists (select 1 from auth.users as u where u.id = v_uid) then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;
    select t.tier into v_tier from paycore.effective_tier(v_uid, p_app_id) as t (tier);
    return jsonb_build_object(
        'app_id', p_app_id,
        'tier', v_tier,
        'period_start', v_start,
        'period_end', v_end,
        'features', coalesce((
            select jsonb_object_agg(f.id, jsonb_build_object(
                'used', coalesce(u.used, 0),
                'limit', l.monthly_limit,
                'remaining', case
                    when l.monthly_limit is not null then greatest(l.monthly_limit - coalesce(u.used, 0), 0)
                end,
                'is_soft', l.is_soft,
                'description', f.description
            ) order by f.id)
            from public.features as f
            cross join lateral paycore.tier_limit(f.app_id, v_tier, f.id) as l
            left join public.user_usage_limits as u
                on u.user_id = v_uid and u.feature_id = f.id and u.period_start = v_start
            where f.app_id = p_app_id
        ), '{}'::jsonb)
    );
end;
$$;
comment on function public.get_usage(text, uuid) is
'The caller''s tier in the app and, per feature of the app, used / limit / remaining / is_soft '
'in the current calendar month (UTC): {app_id, tier, period_start, period_end, features: '
'{<feature>: {...}}}; limit null = unlimited. authenticated (itself: p_user_id null or its own '
'id) and service_role (any user). Unknown app or user PT404.';

-- users, subscriptions, tiers and usage limits: a user reads its own profile,
-- subscriptions, invoices and usage; everyone reads the catalog; every write is a function
-- (or, for the catalog, the owner's SQL).

alter table public.profiles enable row level security;
revoke all on table public.profiles from public, anon, authenticated, service_role;
grant select on table public.profiles to authenticated, service_role;
create policy profiles_select_own on public.profiles
for select to authenticated
using (id = (select auth.uid()));

alter table public.user_subscriptions enable row level security;
revoke all on table public.user_subscriptions from public, anon, authenticated, service_role;
grant select on table public.user_subscriptions to authenticated, service_role;
create policy user_subscriptions_select_own on public.user_subscriptions
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.payment_history enable row level security;
revoke all on table public.payment_history from public, anon, authenticated, service_role;
grant select on table public.payment_history to authenticated, service_role;
create policy payment_history_select_own on public.payment_history
for select to authenticated
using (user_id = (select auth.uid()));

alter table public.user_usage_limits enable row level security;
revoke all on table public.user_usage_limits from public, anon, authenticated, service_role;
grant select on table public.user_usage_limits to authenticated, service_role;
create policy user_usage_limits_select_own on public.user_usage_limits
for select to authenticated
using (user_id = (select auth.uid()));

-- The catalog: public, read by anyone.
alter table public.apps enable row level security;
revoke all on table public.apps from public, anon, authenticated, service_role;
grant select on table public.apps to anon, authenticated, service_role;
create policy apps_select_all on public.apps
for select to anon, authenticated
using (true);

alter table public.tiers enable row level security;
revoke all on table public.tiers from public, anon, authenticated, service_role;
grant select on table public.tiers to anon, authenticated, service_role;
create policy tiers_select_all on public.tiers
for select to anon, authenticated
using (true);

alter table public.features enable row level security;
revoke all on table public.features from public, anon, authenticated, service_role;
grant select on table public.features to anon, authenticated, service_role;
create policy features_select_all on public.features
for select to anon, authenticated
using (true);

alter table public.tier_limits enable row level security;
revoke all on table public.tier_limits from public, anon, authenticated, service_role;
grant select on table public.tier_limits to anon, authenticated, service_role;
create policy tier_limits_select_all on public.tier_limits
for select to anon, authenticated
using (true);

alter table public.prices enable row level security;
revoke all on table public.prices from public, anon, authenticated, service_role;
grant select on table public.prices to anon, authenticated, service_role;
create policy prices_select_all on public.prices
for select to anon, authenticated
using (true);

revoke all on table paycore.usage_operations from public;

revoke all on function paycore.is_profile_text(text, integer, boolean) from public;
revoke all on function paycore.profile_text(jsonb, text[], integer, boolean) from public;
revoke all on function paycore.tg_auth_users__sync_profile() from public;
revoke all on function paycore.subscription_entitled_until(
    text, boolean, timestamptz, timestamptz, interval
) from public;
revoke all on function paycore.grace_period() from public;
revoke all on function paycore.tg_user_subscriptions__derive() from public;
revoke all on function paycore.tg_settings__recompute_entitlements() from public;
revoke all on function paycore.is_grace_period(jsonb) from public;
revoke all on function paycore.effective_tier(uuid, text) from public;
revoke all on function paycore.tier_limit(text, text, text) from public;
revoke all on function paycore.feature_limit(uuid, text) from public;
revoke all on function paycore.usage_replay(uuid, text, text, integer, text) from public;
revoke all on function paycore.usage_result(
    text, text, text, boolean, bigint, integer, boolean, timestamptz, timestamptz
) from public;

revoke all on function public.update_profile(text, text, jsonb) from public, anon, authenticated, service_role;
grant execute on function public.update_profile(text, text, jsonb) to authenticated;

revoke all on function public.get_user_app_tier(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.get_user_app_tier(uuid, text) to authenticated, service_role;

revoke all on function public.check_usage_limit(uuid, text, integer, text)
from public, anon, authenticated, service_role;
grant execute on function public.check_usage_limit(uuid, text, integer, text) to authenticated, service_role;

revoke all on function public.release_usage(uuid, text, integer, text)
from public, anon, authenticated, service_role;
grant execute on function public.release_usage(uuid, text, integer, text) to service_role;

revoke all on function public.get_usage(text, uuid) from public, anon, authenticated, service_role;
grant execute on function public.get_usage(text, uuid) to authenticated, service_role;
