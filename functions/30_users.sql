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
        if p_metadata ? 'service' then
            raise exception 'p_metadata must not contain the key service: only the service sets it'
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
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
    -- The service's part of the metadata (key service) stays whatever the user sends.
    if p_metadata is not null and v_profile.metadata ? 'service' then
        p_metadata := p_metadata || jsonb_build_object('service', v_profile.metadata -> 'service');
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
'replaces the stored one, except its key service, which only the service sets '
'(set_profile_service_metadata; a p_metadata with that key is PT400). full_name up to 200 '
'characters without control characters. A '
'change logs profile.updated (the names of the changed fields). '
'authenticated only.';

create function public.set_profile_service_metadata(p_user_id uuid, p_service jsonb)
returns public.profiles
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_profile public.profiles;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_service is not null then
        perform paycore.check_json_object('p_service', p_service, 8192);
    end if;
    -- A user whose profile is missing (deleted by hand) gets it back.
    insert into public.profiles (id, email)
    select u.id, u.email from auth.users as u where u.id = p_user_id
    on conflict (id) do nothing;
    update public.profiles as p
    set metadata = case
        when p_service is null then p.metadata - 'service'
        else p.metadata || jsonb_build_object('service', p_service)
    end
    where p.id = p_user_id
    returning p.* into v_profile;
    if not found then
        raise exception 'user % does not exist', p_user_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    perform paycore.log_event(
        'profile.service_metadata_set', p_user_id, 'profile', null, null, '{}'::jsonb
    );
    return v_profile;
end;
$$;
comment on function public.set_profile_service_metadata(uuid, jsonb) is
'Sets the service''s part of a profile''s metadata (the key service: a JSON object of at most '
'8 kB; null removes it), which the user sees but cannot change with update_profile. '
'service_role only.';

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
