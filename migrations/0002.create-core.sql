-- depends: 0001.create-base
-- create-core: schema/10_core.sql, functions/10_core.sql, policies/10_core.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- core: the event log every module appends to.

create table public.events (
    id uuid not null default gen_random_uuid(),
    app_id text,
    type text not null,
    actor_id uuid,
    subject_type text,
    subject_id text,
    meta jsonb not null default '{}',
    dedup_key text,
    created_at timestamptz not null default now(),
    constraint events_pkey primary key (id),
    constraint events_dedup_key_is_unique unique (dedup_key),
    constraint events_actor_id_fkey foreign key (actor_id)
    references auth.users (id) on delete set null,
    constraint type_is_not_blank check (btrim(type) <> '' and length(type) <= 100),
    constraint app_id_is_not_blank check (btrim(app_id) <> '' and length(app_id) <= 100),
    constraint meta_is_an_object check (jsonb_typeof(meta) = 'object')
);
create index events_actor_id_created_at_idx on public.events (actor_id, created_at);
create index events_type_created_at_idx on public.events (type, created_at);

comment on table public.events is
'Append-only log of what happened: one row per write that matters. A dedup_key is applied once.';
comment on column public.events.actor_id is
'The user who acted (auth.uid() of the caller) or whom a server-side write concerned.';
comment on column public.events.dedup_key is
'Idempotency key: a second event with the same key is not written. '
'Keys from track_event are stored as track:<user id>:<client key>.';

-- core: writing the event log.

create function paycore.log_event(
    p_type text,
    p_actor_id uuid default null,
    p_subject_type text default null,
    p_subject_id text default null,
    p_app_id text default null,
    p_meta jsonb default '{}',
    p_dedup_key text default null
)
returns uuid
language plpgsql volatile
as $$
declare
    v_id uuid;
begin
    insert into public.events (type, actor_id, subject_type, subject_id, app_id, meta, dedup_key)
    values (p_type, p_actor_id, p_subject_type, p_subject_id, p_app_id, coalesce(p_meta, '{}'), p_dedup_key)
    on conflict (dedup_key) do nothing
    returning id into v_id;
    if v_id is null then
        -- The key was used before (or concurrently, now committed): return the first id.
        select e.id into v_id from public.events as e where e.dedup_key = p_dedup_key;
    end if;
    return v_id;
end;
$$;
comment on function paycore.log_event(text, uuid, text, text, text, jsonb, text) is
'Appends an event and returns its id; with a dedup_key already used, writes nothing and '
'returns the id of the first event with that key. Internal: called by paycore functions.';

create function public.track_event(
    p_app_id text,
    p_type text,
    p_meta jsonb default '{}',
    p_dedup_key text default null
)
returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
    v_uid uuid := paycore.resolve_user_id(null);
begin
    if p_type is null or btrim(p_type) = '' or length(p_type) > 100 then
        raise exception 'p_type must be 1 to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_app_id is not null and (btrim(p_app_id) = '' or length(p_app_id) > 100) then
        raise exception 'p_app_id must be null or 1 to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_meta is not null and jsonb_typeof(p_meta) <> 'object' then
        raise exception 'p_meta must be a JSON object'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if pg_catalog.octet_length(p_meta::text) > 8192 then
        raise exception 'p_meta must be at most 8 kB'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_dedup_key is not null and (p_dedup_key = '' or length(p_dedup_key) > 200) then
        raise exception 'p_dedup_key must be null or 1 to 200 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return paycore.log_event(
        p_type => p_type,
        p_actor_id => v_uid,
        p_app_id => p_app_id,
        p_meta => coalesce(p_meta, '{}'),
        p_dedup_key => 'track:' || v_uid || ':' || p_dedup_key
    );
end;
$$;
comment on function public.track_event(text, text, jsonb, text) is
'Records an event by the signed-in caller (actor = auth.uid()). A repeated p_dedup_key '
'returns the id of the first event and writes nothing. SECURITY DEFINER: clients cannot '
'insert into public.events themselves.';

-- core: who reads the event log, who writes it.

alter table public.events enable row level security;
revoke all on table public.events from public, anon, authenticated, service_role;
grant select on table public.events to authenticated, service_role;
create policy events_select_own on public.events
for select to authenticated
using (actor_id = (select auth.uid()));

revoke all on function paycore.log_event(text, uuid, text, text, text, jsonb, text) from public;

revoke all on function public.track_event(text, text, jsonb, text) from public, anon, authenticated, service_role;
grant execute on function public.track_event(text, text, jsonb, text) to authenticated;
