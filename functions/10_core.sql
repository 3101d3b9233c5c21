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
    if p_dedup_key is null then
        -- Most events: a plain insert (no speculative insertion for a key that is not there).
        insert into public.events (type, actor_id, subject_type, subject_id, app_id, meta)
        values (p_type, p_actor_id, p_subject_type, p_subject_id, p_app_id, coalesce(p_meta, '{}'))
        returning id into v_id;
        return v_id;
    end if;
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

create function paycore.take_client_event_slot(p_user_id uuid)
returns void
language plpgsql volatile
as $$
declare
    v_limit integer := coalesce((paycore.setting('track_event_hourly_limit'))::integer, 600);
    v_hour timestamptz := date_trunc('hour', paycore.clock(), 'UTC');
    v_events integer;
begin
    -- One statement counts and checks: the row lock serialises a user's parallel calls, and
    -- a full hour matches no row, so the limit holds under any concurrency.
    insert into paycore.client_event_counters as c (user_id, window_start, events)
    values (p_user_id, v_hour, 1)
    on conflict (user_id) do update
    set
        window_start = excluded.window_start,
        events = case when c.window_start = excluded.window_start then c.events + 1 else 1 end
    where c.window_start <> excluded.window_start or c.events < v_limit
    returning c.events into v_events;
    if v_events is null then
        raise exception 'at most % events per hour may be tracked', v_limit
        using errcode = 'PT429', hint = 'rate_limited',
        detail = json_build_object('limit', v_limit, 'retry_after', v_hour + interval '1 hour')::text;
    end if;
end;
$$;
comment on function paycore.take_client_event_slot(uuid) is
'Counts one client event of p_user_id in the current clock hour; PT429 rate_limited (counting '
'nothing) when the hour already has track_event_hourly_limit events. Internal.';

create function public.track_event(
    p_app_id text,
    p_type text,
    p_meta jsonb default '{}',
    p_dedup_key text default null
)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(null);
    v_key text;
    v_id uuid;
begin
    perform paycore.check_text('p_type', p_type, 100, true);
    perform paycore.check_text('p_app_id', p_app_id, 100, false);
    perform paycore.check_json_object('p_meta', coalesce(p_meta, '{}'), 8192);
    perform paycore.check_text('p_dedup_key', p_dedup_key, 200, false);
    -- Types are identifiers: ASCII letters, digits and _ . : / - and spaces, so no look-alike
    -- (fullwidth, Cyrillic, zero-width) of a paycore type can pass for one.
    if p_type !~ '^[A-Za-z0-9_][A-Za-z0-9_.:/ -]*$' then
        raise exception 'p_type must be ASCII letters, digits and _ . : / - or spaces, starting with a letter, digit or _'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if exists (
        select 1 from paycore.reserved_event_namespaces as r
        -- The first word of the type, whatever precedes or follows it: '.', ':', '-', white space.
        where r.namespace = substring(lower(p_type) from '^[^a-z0-9_]*([a-z0-9_]*)')
    ) then
        raise exception 'event type % is in a namespace only paycore writes', p_type
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;

    v_key := 'track:' || v_uid || ':' || p_dedup_key;
    if v_key is not null then
        select e.id into v_id from public.events as e where e.dedup_key = v_key;
        if found then
            return v_id;
        end if;
    end if;

    perform paycore.take_client_event_slot(v_uid);
    insert into public.events (type, actor_id, app_id, meta, dedup_key, source)
    values (p_type, v_uid, p_app_id, coalesce(p_meta, '{}'), v_key, 'client')
    on conflict (dedup_key) do nothing
    returning id into v_id;
    if v_id is null then
        -- The same key, tracked concurrently and committed first.
        select e.id into v_id from public.events as e where e.dedup_key = v_key;
    end if;
    return v_id;
end;
$$;
comment on function public.track_event(text, text, jsonb, text) is
'Records an event by the signed-in caller (actor = auth.uid(), source = client). A repeated '
'p_dedup_key returns the id of the first event and writes nothing. Types in paycore''s own '
'namespaces (paycore.reserved_event_namespaces) are PT400; beyond track_event_hourly_limit '
'events per hour PT429 rate_limited. SECURITY DEFINER: clients cannot insert into '
'public.events themselves.';

create trigger client_event_counters_set_updated_at
before update on paycore.client_event_counters
for each row execute function paycore.tg__set_updated_at();
