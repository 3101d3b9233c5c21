-- coaching data: create a reading, add versions (1..n, no gap, under any concurrency), read
-- a reading with its versions, save the matching of a pair.

create trigger coach_readings_set_updated_at
before update on public.coach_readings
for each row execute function paycore.tg__set_updated_at();
create trigger partner_matchings_set_updated_at
before update on public.partner_matchings
for each row execute function paycore.tg__set_updated_at();

create function paycore.tg_reading_versions__append_only()
returns trigger
language plpgsql
as $$
begin
    -- Versions leave only with their reading or its user: a cascade, seen as a row whose
    -- reading or user no longer exists.
    if tg_op = 'DELETE' and (
        not exists (select 1 from public.coach_readings as r where r.id = old.reading_id)
        or not exists (select 1 from auth.users as u where u.id = old.user_id)
    ) then
        return old;
    end if;
    raise exception '% on public.reading_versions refused: versions are append-only', tg_op
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg_reading_versions__append_only() is
'Refuses UPDATE, DELETE and TRUNCATE of reading_versions, except the delete cascaded from '
'deleting the reading or its user.';

create trigger reading_versions_append_only
before update or delete on public.reading_versions
for each row execute function paycore.tg_reading_versions__append_only();
create trigger reading_versions_no_truncate
before truncate on public.reading_versions
for each statement execute function paycore.tg_reading_versions__append_only();

create function paycore.check_reading_content(p_content text)
returns void
language plpgsql immutable
as $$
begin
    if p_content is null or paycore.is_blank(p_content) or length(p_content) > 100000 then
        raise exception 'p_content must be 1 to 100000 characters, not only white space'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_reading_content(text) is
'Raises PT400 invalid_argument unless p_content is 1 to 100000 characters, not all white space. '
'Internal.';

create function paycore.reading_owner_filter()
returns uuid
language plpgsql stable
as $$
begin
    -- For the functions that take a reading id: a signed-in user reaches its own readings
    -- only (its id), trusted roles any reading (null); every other role PT403.
    if paycore.caller_role() = 'authenticated' then
        return paycore.resolve_user_id(null);
    end if;
    if not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', paycore.caller_role()
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    return null;
end;
$$;
comment on function paycore.reading_owner_filter() is
'The user whose readings the caller may reach: the signed-in user itself, or null (any) for '
'trusted roles; PT403 for every other role. Internal.';

create function public.create_reading(
    p_reading_type text,
    p_content text,
    p_metadata jsonb default '{}',
    p_user_id uuid default null
)
returns public.coach_readings
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_reading public.coach_readings;
begin
    if p_reading_type is null or p_reading_type !~ '^[a-z0-9][a-z0-9_.-]{0,99}$' then
        raise exception 'p_reading_type must be a slug: lowercase letters, digits, _ . -, up to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_reading_content(p_content);
    perform paycore.check_json_object('p_metadata', p_metadata, 8192);
    if not exists (select 1 from auth.users as u where u.id = v_uid) then
        raise exception 'user % does not exist', v_uid
        using errcode = 'PT404', hint = 'not_found';
    end if;

    insert into public.coach_readings (user_id, reading_type, metadata)
    values (v_uid, p_reading_type, p_metadata)
    returning * into v_reading;
    insert into public.reading_versions (reading_id, user_id, version_number, content)
    values (v_reading.id, v_uid, 1, p_content);
    perform paycore.log_event(
        'reading.created', v_uid, 'reading', v_reading.id::text, null,
        jsonb_build_object('reading_type', p_reading_type)
    );
    return v_reading;
end;
$$;
comment on function public.create_reading(text, text, jsonb, uuid) is
'Creates a reading of the caller with its version 1 and returns it. authenticated (itself: '
'p_user_id null or omitted) and service_role (p_user_id required). p_reading_type a slug, '
'p_content 1 to 100000 characters, p_metadata a JSON object of at most 8 kB.';

create function public.add_reading_version(p_reading_id uuid, p_content text)
returns public.reading_versions
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    -- A signed-in user reaches its own readings only; trusted roles any (null).
    v_uid uuid := paycore.reading_owner_filter();
    v_reading public.coach_readings;
    v_version public.reading_versions;
begin
    perform paycore.check_reading_content(p_content);
    -- The reading's row lock serialises its writers: each takes the next number, so versions
    -- stay 1..n with no gap or duplicate however many add at once.
    select r.* into v_reading
    from public.coach_readings as r
    where r.id = p_reading_id and (v_uid is null or r.user_id = v_uid)
    for update;
    if not found then
        raise exception 'reading % does not exist', p_reading_id
        using errcode = 'PT404', hint = 'not_found';
    end if;

    update public.coach_readings as r
    set current_version = r.current_version + 1
    where r.id = p_reading_id
    returning * into v_reading;
    insert into public.reading_versions (reading_id, user_id, version_number, content)
    values (p_reading_id, v_reading.user_id, v_reading.current_version, p_content)
    returning * into v_version;
    perform paycore.log_event(
        'reading.versioned', v_reading.user_id, 'reading', p_reading_id::text, null,
        jsonb_build_object('version_number', v_version.version_number)
    );
    return v_version;
end;
$$;
comment on function public.add_reading_version(uuid, text) is
'Adds the next version of a reading (current_version + 1, bumped in the same transaction) and '
'returns it. The reading''s user (authenticated) or service_role; another user''s reading is '
'PT404 as if it did not exist. p_content 1 to 100000 characters.';

create function public.get_reading(p_reading_id uuid)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.reading_owner_filter();
    v_reading public.coach_readings;
begin
    select r.* into v_reading
    from public.coach_readings as r
    where r.id = p_reading_id and (v_uid is null or r.user_id = v_uid);
    if not found then
        raise exception 'reading % does not exist', p_reading_id
        using errcode = 'PT404', hint = 'not_found';
    end if;
    return to_jsonb(v_reading) || jsonb_build_object(
        'versions', coalesce((
            select jsonb_agg(
                jsonb_build_object(
                    'id', v.id, 'version_number', v.version_number, 'content', v.content,
                    'created_at', v.created_at
                )
                order by v.version_number
            )
            from public.reading_versions as v
            where v.reading_id = p_reading_id
        ), '[]'::jsonb)
    );
end;
$$;
comment on function public.get_reading(uuid) is
'The reading with its versions: the columns of coach_readings and versions, an array of '
'{id, version_number, content, created_at} in version order. The reading''s user '
'(authenticated) or service_role; another user''s reading is PT404.';

create function public.save_matching(
    p_other_user uuid,
    p_matching_type text,
    p_result jsonb,
    p_metadata jsonb default '{}',
    p_user_id uuid default null
)
returns public.partner_matchings
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_uid uuid := paycore.resolve_user_id(p_user_id);
    v_matching public.partner_matchings;
begin
    if p_other_user is null or p_other_user = v_uid then
        raise exception 'p_other_user must be another user'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_matching_type is null or p_matching_type !~ '^[a-z0-9][a-z0-9_.-]{0,99}$' then
        raise exception 'p_matching_type must be a slug: lowercase letters, digits, _ . -, up to 100 characters'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    perform paycore.check_json_object('p_result', p_result, 65536);
    perform paycore.check_json_object('p_metadata', p_metadata, 8192);
    if paycore.caller_role() = 'authenticated' and p_metadata ? 'service' then
        raise exception 'p_metadata must not contain the key service: only the service sets it'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if (select count(*) from auth.users as u where u.id in (v_uid, p_other_user)) < 2 then
        raise exception 'user % does not exist', p_other_user
        using errcode = 'PT404', hint = 'not_found';
    end if;

    -- One row per pair and type, the pair in one order: A with B and B with A, saved at the
    -- same instant, meet on the unique key and the later write wins.
    insert into public.partner_matchings as m (
        user_id_1, user_id_2, matching_type, result, metadata, created_by
    )
    values (
        least(v_uid, p_other_user), greatest(v_uid, p_other_user), p_matching_type, p_result, p_metadata,
        case when paycore.caller_role() = 'authenticated' then v_uid end
    )
    on conflict (user_id_1, user_id_2, matching_type) do update
    set
        result = excluded.result, metadata = excluded.metadata, created_by = excluded.created_by,
        status = 'completed'
    -- A matching the service wrote (created_by null) is the service's to change.
    where m.created_by is not null or excluded.created_by is null
    returning * into v_matching;
    if not found then
        raise exception 'the service saved this matching: only the service changes it'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    perform paycore.log_event(
        'matching.saved', v_uid, 'matching', v_matching.id::text, null,
        jsonb_build_object('matching_type', p_matching_type)
    );
    return v_matching;
end;
$$;
comment on function public.save_matching(uuid, text, jsonb, jsonb, uuid) is
'Saves the matching of the caller with p_other_user for p_matching_type and returns it: one row '
'per pair and type whatever the order of the two users (the latest result wins; a matching the '
'service saved only the service changes: PT403). Both users read it. authenticated (itself) '
'and service_role (p_user_id required). p_result a JSON object of at most 64 kB, p_metadata at '
'most 8 kB (its key service is the service''s); the other user must exist (PT404) and differ '
'(PT400).';
