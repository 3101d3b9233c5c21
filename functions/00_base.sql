-- base: Supabase's auth helpers (only where absent), the clock, caller identity.

-- auth.uid(), auth.role(), auth.email(), auth.jwt() with Supabase's exact bodies:
-- the legacy per-claim settings win, then the JSON of request.jwt.claims.
do $$
begin
    if to_regprocedure('auth.uid()') is null then
        create function auth.uid()
        returns uuid
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $body$;
        comment on function auth.uid() is 'paycore: compat';
    end if;
    if to_regprocedure('auth.role()') is null then
        create function auth.role()
        returns text
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $body$;
        comment on function auth.role() is 'paycore: compat';
    end if;
    if to_regprocedure('auth.email()') is null then
        create function auth.email()
        returns text
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim.email', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
            )::text
        $body$;
        comment on function auth.email() is 'paycore: compat';
    end if;
    if to_regprocedure('auth.jwt()') is null then
        create function auth.jwt()
        returns jsonb
        language sql stable
        as $body$
            select coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $body$;
        comment on function auth.jwt() is 'paycore: compat';
    end if;
    if to_regprocedure('storage.foldername(text)') is null then
        create function storage.foldername(name text)
        returns text []
        language plpgsql
        as $body$
        declare
            _parts text[];
        begin
            select string_to_array(name, '/') into _parts;
            return _parts[1:array_length(_parts, 1) - 1];
        end
        $body$;
        comment on function storage.foldername(text) is 'paycore: compat';
    end if;
end;
$$;

create function paycore.clock()
returns timestamptz
language sql stable
as $$
    select coalesce(nullif(current_setting('paycore.now', true), '')::timestamptz, now())
$$;
comment on function paycore.clock() is
'The time every rule uses: now(), unless the setting paycore.now is set (tests use set local).';

create function paycore.caller_role()
returns text
language sql stable
as $$
    -- The role the request runs as (PostgREST: set local role). A SECURITY DEFINER
    -- function changes current_user but not the session's role setting.
    select coalesce(nullif(current_setting('role'), 'none'), session_user::text)
$$;
comment on function paycore.caller_role() is
'The role of the caller of the outermost function: anon, authenticated, service_role or a login role.';

create function paycore.resolve_user_id(p_user_id uuid)
returns uuid
language plpgsql stable
as $$
declare
    v_role text := paycore.caller_role();
    v_uid uuid;
begin
    if v_role = 'anon' then
        raise exception 'sign in first'
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if v_role = 'authenticated' then
        v_uid := auth.uid();
        if v_uid is null then
            raise exception 'no user in the request''s JWT'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        if p_user_id is not null and p_user_id <> v_uid then
            raise exception 'a user may act only on itself'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        return v_uid;
    end if;
    -- service_role, or a trusted login role (the webhook, a DBA, a job).
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return p_user_id;
end;
$$;
comment on function paycore.resolve_user_id(uuid) is
'The user a call acts on: the caller itself for authenticated (null or its own id, else PT403), '
'any given id for service_role and trusted roles (null is PT400), never anything for anon.';

create function paycore.tg__set_updated_at()
returns trigger
language plpgsql
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;
comment on function paycore.tg__set_updated_at() is
'Keeps updated_at at the time of the last change of a row.';
