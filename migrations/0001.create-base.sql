-- create-base: schema/00_base.sql, functions/00_base.sql, policies/00_base.sql

-- Fail fast instead of queueing behind live traffic (storage.objects is busy on Supabase).
set local lock_timeout = '10s';
set local statement_timeout = '5min';

-- base: the Supabase-compatible minimum, and the paycore schema.
--
-- On Supabase every object below already exists and this file changes nothing:
-- each object is created only where it is absent. On plain PostgreSQL (local runs,
-- tests, self-hosting) it creates the roles, auth.users and the storage tables with
-- Supabase's shapes, and the same default privileges Supabase sets on schema public,
-- so that paycore's explicit per-object REVOKEs are tested against the real defaults.
-- Whatever this file creates is marked with the comment 'paycore: compat', which is how
-- the rollback knows what it may drop.

-- Roles. Cluster-wide: created only where absent.
do $$
declare
    v_role text;
begin
    foreach v_role in array array['anon', 'authenticated', 'service_role', 'paycore_webhook'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = v_role) then
            execute format('create role %I nologin noinherit', v_role);
            execute format('comment on role %I is %L', v_role, 'paycore: compat');
            if v_role = 'service_role' then
                alter role service_role bypassrls;
            end if;
        end if;
    end loop;
end;
$$;

-- Supabase's default privileges on schema public, emulated only where this migration
-- created the client roles (plain PostgreSQL). On Supabase they are already in place.
do $$
begin
    if pg_catalog.shobj_description(
        (select oid from pg_catalog.pg_roles where rolname = 'anon'), 'pg_authid'
    ) = 'paycore: compat' then
        grant usage on schema public to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on tables to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on sequences to anon, authenticated, service_role;
        alter default privileges in schema public
        grant all on functions to anon, authenticated, service_role;
    end if;
end;
$$;

-- auth: the minimum of Supabase's auth schema that paycore references.
do $$
begin
    if to_regnamespace('auth') is null then
        create schema auth;
        comment on schema auth is 'paycore: compat';
        grant usage on schema auth to anon, authenticated, service_role;
    end if;
    if to_regclass('auth.users') is null then
        create table auth.users (
            instance_id uuid,
            id uuid not null primary key,
            aud varchar(255),
            role varchar(255),
            email varchar(255),
            raw_app_meta_data jsonb,
            raw_user_meta_data jsonb,
            is_anonymous boolean not null default false,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            deleted_at timestamptz
        );
        comment on table auth.users is 'paycore: compat';
    end if;
end;
$$;

-- storage: buckets and objects with Supabase's columns; RLS on, as on Supabase.
do $$
begin
    if to_regnamespace('storage') is null then
        create schema storage;
        comment on schema storage is 'paycore: compat';
        grant usage on schema storage to anon, authenticated, service_role;
    end if;
    if to_regclass('storage.buckets') is null then
        create table storage.buckets (
            id text not null primary key,
            name text not null,
            owner uuid,
            public boolean default false,
            avif_autodetection boolean default false,
            file_size_limit bigint,
            allowed_mime_types text [],
            created_at timestamptz default now(),
            updated_at timestamptz default now()
        );
        create unique index bname on storage.buckets using btree (name);
        alter table storage.buckets enable row level security;
        grant all on table storage.buckets to anon, authenticated, service_role;
        comment on table storage.buckets is 'paycore: compat';
    end if;
    if to_regclass('storage.objects') is null then
        create table storage.objects (
            id uuid not null default gen_random_uuid() primary key,
            bucket_id text references storage.buckets (id),
            name text,
            owner uuid,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            last_accessed_at timestamptz default now(),
            metadata jsonb,
            path_tokens text [] generated always as (string_to_array(name, '/')) stored,
            version text,
            owner_id text
        );
        create unique index bucketid_objname on storage.objects using btree (bucket_id, name);
        alter table storage.objects enable row level security;
        grant all on table storage.objects to anon, authenticated, service_role;
        comment on table storage.objects is 'paycore: compat';
    end if;
end;
$$;

-- paycore: internals, never exposed by PostgREST.
create schema paycore;
comment on schema paycore is
'paycore internals: configuration, the clock, helpers. Not exposed over PostgREST.';

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

-- base: privileges of the internals. paycore functions run only inside paycore's own
-- SECURITY DEFINER functions (as their owner): no client role executes them directly.

revoke all on schema paycore from public;

revoke all on function paycore.clock() from public;
revoke all on function paycore.caller_role() from public;
revoke all on function paycore.resolve_user_id(uuid) from public;
revoke all on function paycore.tg__set_updated_at() from public;
