-- depends: 0008.create-coaching
-- create-analytics: schema/50_analytics.sql, functions/50_analytics.sql, policies/50_analytics.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- analytics: the nudges sent to users (at most once per user and nudge key), the ecosystem
-- statistics of the event log, and its retention.

create table public.nudges_sent (
    id uuid not null default gen_random_uuid(),
    user_id uuid not null,
    app_id text not null,
    nudge_key text not null,
    channel text,
    meta jsonb not null default '{}',
    sent_at timestamptz not null,
    created_at timestamptz not null default now(),
    constraint nudges_sent_pkey primary key (id),
    constraint nudges_sent_user_id_nudge_key_key unique (user_id, nudge_key),
    constraint nudges_sent_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
    constraint nudges_sent_app_id_fkey foreign key (app_id) references public.apps (id),
    constraint nudge_key_is_a_key check (nudge_key ~ '^[a-z0-9][a-z0-9_.:-]{0,199}$'),
    constraint channel_is_a_slug check (channel ~ '^[a-z][a-z0-9_]{0,49}$'),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
comment on table public.nudges_sent is
'Which nudge (an upsell, a reminder, a cross-app suggestion) went to whom, for which app: at most '
'once per user and nudge key. Written by record_nudge (service_role); read by its user only.';
comment on column public.nudges_sent.nudge_key is
'The nudge''s key (lowercase letters, digits, _ . : -; up to 200), e.g. cv.limit_reached.2026-06: '
'a key is sent to a user once.';
comment on column public.nudges_sent.channel is 'How it was sent (email, push, in_app, ...), or null.';
comment on column public.nudges_sent.sent_at is 'When it was sent (paycore.clock()).';

insert into paycore.reserved_event_namespaces (namespace, description)
values ('nudge', 'nudges: sent');

-- analytics: record_nudge, get_ecosystem_stats, purge_events.

create function public.record_nudge(
    p_user_id uuid,
    p_app_id text,
    p_nudge_key text,
    p_channel text default null,
    p_meta jsonb default '{}'
)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_nudge public.nudges_sent;
    v_recorded boolean := true;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_nudge_key is null or p_nudge_key !~ '^[a-z0-9][a-z0-9_.:-]{0,199}$' then
        raise exception 'p_nudge_key must be 1 to 200 lowercase letters, digits or _ . : -'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_channel is not null and p_channel !~ '^[a-z][a-z0-9_]{0,49}$' then
        raise exception 'p_channel must be null or a slug of up to 50 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_json_object('p_meta', p_meta, 8192);
    if not exists (select 1 from public.apps as a where a.id = p_app_id) then
        raise exception 'app % does not exist', p_app_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    if not exists (select 1 from auth.users as u where u.id = p_user_id) then
        raise exception 'user % does not exist', p_user_id
        using errcode = 'PT404', hint = 'not_found';
    end if;

    insert into public.nudges_sent (user_id, app_id, nudge_key, channel, meta, sent_at)
    values (p_user_id, p_app_id, p_nudge_key, p_channel, p_meta, paycore.clock())
    on conflict (user_id, nudge_key) do nothing
    returning * into v_nudge;
    if not found then
        -- Sent before (or by a concurrent call, now committed): the first one stands.
        v_recorded := false;
        select n.* into v_nudge from public.nudges_sent as n
        where n.user_id = p_user_id and n.nudge_key = p_nudge_key;
    else
        perform paycore.log_event(
            'nudge.sent', p_user_id, 'nudge', v_nudge.id::text, p_app_id,
            jsonb_build_object('nudge_key', p_nudge_key, 'channel', p_channel)
        );
    end if;
    return jsonb_build_object('recorded', v_recorded) || to_jsonb(v_nudge);
end;
$$;
comment on function public.record_nudge(uuid, text, text, text, jsonb) is
'Records that a nudge went to a user, at most once per user and nudge key: returns the nudge '
'with recorded true the first time (and logs nudge.sent), recorded false and the first nudge '
'after. Ask first: a caller sends the nudge only when recorded is true. service_role only.';

create function public.get_ecosystem_stats(p_days integer)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set work_mem = '64MB'
as $$
declare
    v_until timestamptz := paycore.clock();
    v_since timestamptz;
    v_result jsonb;
begin
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not read the ecosystem statistics', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_days is null or p_days < 1 or p_days > 366 then
        raise exception 'p_days must be 1 to 366'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_since := v_until - make_interval(days => p_days);

    -- One index-only scan of the window (events_created_at_app_id_type_actor_id_idx), folded
    -- at once by grouping sets into the events per app and type and the (actor, app) pairs:
    -- every figure below comes from those few groups, not from the events again
    -- (bench/ecosystem.py: 1M events in the window). The function's work_mem keeps the hash
    -- tables in memory.
    with g as materialized (
        select e.app_id, e.type, e.actor_id, count(*) as events, grouping(e.type) as per_actor
        from public.events as e
        where e.created_at >= v_since and e.created_at < v_until
        group by grouping sets ((e.app_id, e.type), (e.actor_id, e.app_id))
    ),
    per_type as (
        select g.app_id, g.type, g.events from g where g.per_actor = 0
    ),
    per_user_app as (
        select g.actor_id, g.app_id from g
        where g.per_actor = 1 and g.actor_id is not null and g.app_id is not null
    ),
    pairs as (
        select a.app_id as app_a, b.app_id as app_b, count(*) as users
        from per_user_app as a
        join per_user_app as b on b.actor_id = a.actor_id and b.app_id > a.app_id
        group by a.app_id, b.app_id
    )
    select jsonb_build_object(
        'days', p_days,
        'since', v_since,
        'until', v_until,
        'events', (select coalesce(sum(t.events), 0) from per_type as t),
        'active_users', (select count(distinct g.actor_id) from g where g.per_actor = 1),
        'cross_app_users', (
            select count(*) from (
                select p.actor_id from per_user_app as p group by p.actor_id having count(*) > 1
            ) as x
        ),
        'users_per_app', coalesce((
            select jsonb_object_agg(x.app_id, x.users order by x.app_id)
            from (select p.app_id, count(*) as users from per_user_app as p group by p.app_id) as x
        ), '{}'::jsonb),
        'app_pairs', coalesce((
            select jsonb_agg(
                jsonb_build_object('apps', jsonb_build_array(pairs.app_a, pairs.app_b), 'users', pairs.users)
                order by pairs.users desc, pairs.app_a, pairs.app_b
            )
            from pairs
        ), '[]'::jsonb),
        'by_type', coalesce((
            select jsonb_agg(
                jsonb_build_object('app_id', t.app_id, 'type', t.type, 'events', t.events)
                order by t.app_id nulls first, t.type
            )
            from per_type as t
        ), '[]'::jsonb)
    ) into v_result;
    return v_result;
end;
$$;
comment on function public.get_ecosystem_stats(integer) is
'The event log over the last p_days (1 to 366) days of paycore.clock(): {days, since, until, '
'events, active_users (distinct actors), cross_app_users (active in more than one app: the CV <-> '
'Letters flywheel), users_per_app, app_pairs [{apps, users}], by_type [{app_id, type, '
'events}]}. service_role only.';

create function paycore.purge_events(
    p_older_than interval,
    p_batch_size integer default 10000,
    p_max_batches integer default null
)
returns bigint
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_before timestamptz;
    v_deleted bigint := 0;
    v_batch bigint;
    v_batches integer := 0;
begin
    if p_older_than is null or p_older_than < interval '1 day' then
        raise exception 'p_older_than must be at least 1 day'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_batch_size is null or p_batch_size < 1 or p_batch_size > 1000000 then
        raise exception 'p_batch_size must be 1 to 1000000'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_max_batches is not null and p_max_batches < 1 then
        raise exception 'p_max_batches must be null (no limit) or positive'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    v_before := paycore.clock() - p_older_than;
    -- Only public.events: the credit ledger, balances and every other table are never touched.
    loop
        delete from public.events as e
        where e.id in (
            select o.id from public.events as o
            where o.created_at < v_before
            order by o.created_at
            limit p_batch_size
            for update skip locked
        );
        get diagnostics v_batch = row_count;
        v_deleted := v_deleted + v_batch;
        v_batches := v_batches + 1;
        -- A short batch may only mean rows locked by others (skip locked): stop on none.
        exit when v_batch = 0 or v_batches = p_max_batches;
    end loop;
    return v_deleted;
end;
$$;
comment on function paycore.purge_events(interval, integer, integer) is
'Retention: deletes the events created before paycore.clock() - p_older_than (at least 1 day), '
'p_batch_size rows per statement, at most p_max_batches statements (null: until none is left), '
'and returns how many it deleted. Never touches the ledger or any other table. For a large '
'backlog call it from a job with p_max_batches => 1 until it returns 0 (each call its own '
'transaction). The owner only (e.g. pg_cron).';

-- analytics: a user reads the nudges it was sent; statistics and retention are the service's.

alter table public.nudges_sent enable row level security;
revoke all on table public.nudges_sent from public, anon, authenticated, service_role;
grant select on table public.nudges_sent to authenticated, service_role;
create policy nudges_sent_select_own on public.nudges_sent
for select to authenticated
using (user_id = (select auth.uid()));

revoke all on function public.record_nudge(uuid, text, text, text, jsonb)
from public, anon, authenticated, service_role;
grant execute on function public.record_nudge(uuid, text, text, text, jsonb) to service_role;

revoke all on function public.get_ecosystem_stats(integer) from public, anon, authenticated, service_role;
grant execute on function public.get_ecosystem_stats(integer) to service_role;

revoke all on function paycore.purge_events(interval, integer, integer) from public;
