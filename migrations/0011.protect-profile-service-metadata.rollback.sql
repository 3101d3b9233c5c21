-- Undoes 0011.protect-profile-service-metadata: update_profile as 0007 created it.
drop function public.set_profile_service_metadata(uuid, jsonb);

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
