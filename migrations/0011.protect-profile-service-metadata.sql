-- depends: 0010.index-events-by-time
-- protect-profile-service-metadata: functions/30_users.sql, policies/30_users.sql. The key
-- service of a profile's metadata is the service's: update_profile keeps it and refuses it.

-- Fail fast instead of queueing behind live traffic.
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- Before this migration any user could store a key service with update_profile: such values
-- are the user's, not the service's, and go (the service sets its own again).
update public.profiles
set metadata = metadata - 'service'
where metadata ? 'service';

create or replace function public.update_profile(
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

revoke all on function public.set_profile_service_metadata(uuid, jsonb)
from public, anon, authenticated, service_role;
grant execute on function public.set_profile_service_metadata(uuid, jsonb) to service_role;
