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

create function paycore.caller_is_trusted()
returns boolean
language sql stable
as $$
    -- Trusted: service_role (the Supabase secret key), members of paycore_webhook (the
    -- webhook's login), and the owner of paycore's functions (current_user inside them)
    -- with its members (a DBA, a job). Not a role that merely inherits from authenticated
    -- or service_role. Without arguments, so that it is inlined into its callers.
    select paycore.caller_role() = 'service_role'
        or pg_catalog.pg_has_role(paycore.caller_role(), 'paycore_webhook', 'MEMBER')
        or pg_catalog.pg_has_role(paycore.caller_role(), current_user, 'MEMBER')
$$;
comment on function paycore.caller_is_trusted() is
'Whether the caller''s role may act on any user: service_role, members of paycore_webhook, and '
'the owner of paycore''s functions with its members. Internal.';

create function paycore.resolve_user_id(p_user_id uuid)
returns uuid
language plpgsql stable
as $$
declare
    v_role text := paycore.caller_role();
    v_uid uuid;
begin
    if v_role = 'authenticated' then
        begin
            v_uid := auth.uid();
        exception when data_exception or program_limit_exceeded then
            raise exception 'the request''s JWT claims carry no valid user id'
            using errcode = 'PT403', hint = 'forbidden';
        end;
        if v_uid is null then
            raise exception 'no user in the request''s JWT'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        if p_user_id is not null and p_user_id <> v_uid then
            raise exception 'a user may act only on itself'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        -- A JWT outlives the user it was issued to (deleted, or soft-deleted by Supabase Auth).
        if not exists (
            select 1 from auth.users as u where u.id = v_uid and u.deleted_at is null
        ) then
            raise exception 'the user of this JWT no longer exists'
            using errcode = 'PT403', hint = 'forbidden';
        end if;
        return v_uid;
    end if;
    if v_role = 'anon' or not paycore.caller_is_trusted() then
        raise exception 'role % may not act on users', v_role
        using errcode = 'PT403', hint = 'forbidden';
    end if;
    if p_user_id is null then
        raise exception 'p_user_id is required'
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    return p_user_id;
end;
$$;
comment on function paycore.resolve_user_id(uuid) is
'The user a call acts on: for authenticated the caller itself (null or its own id, else PT403; '
'PT403 when the JWT''s user no longer exists); any given id for trusted roles '
'(paycore.caller_is_trusted; null is PT400); every other role, anon included, PT403.';

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

create function paycore.tg__leave_only_with_user()
returns trigger
language plpgsql
as $$
begin
    -- The one way out: a delete cascaded from deleting the auth user (GDPR erasure), seen
    -- as a row whose user no longer exists.
    if tg_op = 'DELETE' then
        if not exists (select 1 from auth.users as u where u.id = old.user_id) then
            return old;
        end if;
    end if;
    raise exception '% on %.% refused: its rows stay until their auth user is deleted',
        tg_op, tg_table_schema, tg_table_name
    using errcode = 'PT403', hint = 'forbidden';
end;
$$;
comment on function paycore.tg__leave_only_with_user() is
'Refuses the operation it fires on (UPDATE, DELETE, TRUNCATE of a table with user_id), except '
'the delete cascaded from deleting the row''s auth user: the ledger and the balances keep '
'their rows as long as the user exists.';

create function paycore.setting(p_key text)
returns jsonb
language sql stable
as $$
    select s.value from paycore.settings as s where s.key = p_key
$$;
comment on function paycore.setting(text) is
'The configured value of p_key in paycore.settings, null when absent. Internal.';

create function paycore.is_blank(p_value text)
returns boolean
language sql immutable
as $$
    -- Unicode white space too (next line, no-break, ideographic spaces), and the characters
    -- that show nothing (soft hyphen, zero-width and filler characters), not only ' '.
    select p_value ~ (
        '^[[:space:]\u0085\u00a0\u00ad\u115f\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f'
        || '\u205f-\u2064\u2800\u3000\u3164\ufeff\uffa0]*$'
    )
$$;
comment on function paycore.is_blank(text) is
'True when p_value is empty or only white space (Unicode spaces included); null for null. Internal.';

create function paycore.check_text(p_name text, p_value text, p_max_length integer, p_required boolean)
returns void
language plpgsql immutable
as $$
begin
    if p_value is null then
        if p_required then
            raise exception '% is required', p_name
            using errcode = 'PT400', hint = 'invalid_argument';
        end if;
        return;
    end if;
    if paycore.is_blank(p_value) or length(p_value) > p_max_length then
        raise exception '% must be 1 to % characters, not only white space', p_name, p_max_length
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_text(text, text, integer, boolean) is
'Raises PT400 invalid_argument unless p_value is null (when not required) or 1 to p_max_length '
'characters that are not all white space. Internal: the one rule for every text argument.';

create function paycore.check_json_object(p_name text, p_value jsonb, p_max_bytes integer)
returns void
language plpgsql immutable
as $$
begin
    if p_value is null or jsonb_typeof(p_value) <> 'object' then
        raise exception '% must be a JSON object', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if octet_length(p_value::text) > p_max_bytes then
        raise exception '% must be at most % bytes of JSON', p_name, p_max_bytes
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_json_object(text, jsonb, integer) is
'Raises PT400 invalid_argument unless p_value is a JSON object of at most p_max_bytes bytes '
'as text. Internal.';

create function paycore.check_idempotency_key(p_name text, p_key text)
returns void
language plpgsql immutable
as $$
begin
    if p_key is null then
        return;
    end if;
    if paycore.is_blank(p_key) or length(p_key) > 200 then
        raise exception '% must be null or 1 to 200 characters, not only white space', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
    if p_key like 'paycore:%' then
        raise exception '% must not start with paycore: (reserved for the keys paycore writes)', p_name
        using errcode = 'PT400', hint = 'invalid_argument';
    end if;
end;
$$;
comment on function paycore.check_idempotency_key(text, text) is
'Raises PT400 invalid_argument unless a caller''s key is null or 1 to 200 characters outside '
'the reserved prefix paycore: (the namespace of the keys paycore writes itself). Internal.';

create trigger settings_set_updated_at
before update on paycore.settings
for each row execute function paycore.tg__set_updated_at();
