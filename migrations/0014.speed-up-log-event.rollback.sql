-- Undoes 0014.speed-up-log-event: log_event as it was before.
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
