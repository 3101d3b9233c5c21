-- depends: 0013.create-marketplace-ops
-- speed-up-log-event: paycore.log_event writes an event without a dedup key by a plain insert
-- (functions/10_core.sql); the events of every paycore function take that path.

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

create or replace function paycore.log_event(
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
